package fifoflow

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

func identity(msg any, ctx *Ctx) (any, error) { return msg, nil }

func newTestHost(w io.Writer) *host { return newHost(w) }

// a frame of 1,000 messages through three modules of one host (two in-host hops)
func BenchmarkDeliverChain(b *testing.B) {
	code := "identity"
	sum := sha256.Sum256([]byte(code))
	Register(hex.EncodeToString(sum[:]), Unit{Handle: identity})
	h := newTestHost(io.Discard)
	for _, m := range []string{"f/a", "f/b", "f/c"} {
		h.handleLine([]byte(fmt.Sprintf(`{"op":"load","module":%q,"code":%q,"config":{},"state":null,"timeout":10}`, m, code)))
	}
	h.handleLine([]byte(`{"op":"route","routes":{"f/a":{"out":{"local":[["f/b","in"]],"external":false}},"f/b":{"out":{"local":[["f/c","in"]],"external":false}},"f/c":{"out":{"local":[],"external":true}}}}`))
	msgs := strings.TrimSuffix(strings.Repeat(`{"n":1,"payload":"xxxxxxxxxxxxxxxx"},`, 1000), ",")
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		h.handleLine([]byte(fmt.Sprintf(`{"op":"deliver","seq":%d,"module":"f/a","port":"in","msgs":[%s]}`, i+1, msgs)))
		h.finish()
		h.flush()
	}
	b.ReportMetric(float64(b.N*1000)/time.Since(start).Seconds(), "msgs/s")
}
