package fifoflow

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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
	h := newTestHost(io.Discard)
	loadIdentity(b, h, "f/a", "f/b", "f/c")
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

func loadIdentity(tb testing.TB, h *host, modules ...string) {
	tb.Helper()
	code := "identity"
	sum := sha256.Sum256([]byte(code))
	Register(hex.EncodeToString(sum[:]), Unit{Handle: identity})
	for _, m := range modules {
		h.handleLine([]byte(fmt.Sprintf(`{"op":"load","module":%q,"code":%q,"config":{},"state":null,"timeout":10}`, m, code)))
	}
}

// the frames written since the last call, parsed
func written(t *testing.T, out *bytes.Buffer) []map[string]any {
	var frames []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var f map[string]any
		if err := json.Unmarshal([]byte(line), &f); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		frames = append(frames, f)
	}
	out.Reset()
	return frames
}

// PROTOCOL.md section 11: a channel frame goes to its module and every also target; it
// is acknowledged in done's direct; a runner copy of it (per target) is skipped but
// acknowledged by seq, a newer copy handled.
func TestChannelFrameAlsoTargetsAndCopies(t *testing.T) {
	var out bytes.Buffer
	h := newTestHost(&out)
	loadIdentity(t, h, "f/b", "f/c")
	h.flush()
	out.Reset()
	src := &source{ch: "c1", fd: -1}
	h.channelLine(src, []byte(`{"op":"deliver","ch":"c1","d":3,"module":"f/b","port":"in","also":[["f/c","in"]],"msgs":[1,"two"]}`))
	h.finish()
	h.flush()
	got := written(t, &out)
	if len(got) != 3 {
		t.Fatalf("want the emits of f/b and f/c, then done; got %v", got)
	}
	for i, m := range []string{"f/b", "f/c"} {
		if got[i]["op"] != "emit" || got[i]["module"] != m || fmt.Sprint(got[i]["msgs"]) != "[1 two]" {
			t.Errorf("frame %d: want the emit of %s; got %v", i, m, got[i])
		}
	}
	if fmt.Sprint(got[2]) != "map[direct:map[c1:3] op:done seq:0]" {
		t.Errorf("want done seq 0 with direct c1: 3; got %v", got[2])
	}
	h.handleLine([]byte(`{"op":"deliver","seq":1,"ch":"c1","d":3,"module":"f/c","port":"in","msgs":[1,"two"]}`))
	h.handleLine([]byte(`{"op":"deliver","seq":2,"ch":"c1","d":4,"module":"f/c","port":"in","msgs":[5]}`))
	h.finish()
	h.flush()
	got = written(t, &out)
	if len(got) != 2 || got[0]["op"] != "emit" || fmt.Sprint(got[0]["msgs"]) != "[5]" ||
		fmt.Sprint(got[1]) != "map[op:done seq:2]" {
		t.Errorf("want the copy of d 3 skipped, d 4 handled, done seq 2; got %v", got)
	}
}
