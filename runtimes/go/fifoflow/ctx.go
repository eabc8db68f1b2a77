// Package fifoflow is the Go side of a fifoflow runtime host: the protocol loop
// (runtimes/PROTOCOL.md), the framing and the Ctx handed to module code.
//
// A module is a Go file of its own package that defines
//
//	func Handle(msg any, ctx *fifoflow.Ctx) (any, error)
//
// and optionally Init(ctx *fifoflow.Ctx) and
// Migrate(old map[string]any, ctx *fifoflow.Ctx) map[string]any. The runner
// generates a main package that registers every module of a host's set
// (Register) and calls Main. Standard library only.
package fifoflow

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Ctx is what a handler sees of its module: its state, its configuration, the port
// of the current message, and ways to emit and log.
type Ctx struct {
	// State is kept across messages, restarts and code swaps (JSON values only).
	State map[string]any
	// Config is the module's configuration (read-only by convention).
	Config map[string]any
	// Port is the input port of the current message.
	Port string
	// Module is the module id.
	Module string

	h   *host
	out *[]emitted
}

type emitted struct {
	port string
	msg  any
}

// Emit sends msg on port (any number of times per call; order kept).
func (c *Ctx) Emit(port string, msg any) {
	if c.out == nil {
		c.h.logf(c.Module, "warning", "ctx.Emit outside a handler call is ignored (port %s)", port)
		return
	}
	*c.out = append(*c.out, emitted{port, msg})
}

// Log writes a log line attributed to the module (words joined by spaces).
func (c *Ctx) Log(args ...any) {
	parts := make([]string, len(args))
	for i, a := range args {
		parts[i] = fmt.Sprint(a)
	}
	c.h.log(c.Module, "info", strings.Join(parts, " "))
}

// Unit is one compiled module source: its functions (Init and Migrate may be nil).
type Unit struct {
	Handle  func(msg any, ctx *Ctx) (any, error)
	Init    func(ctx *Ctx)
	Migrate func(old map[string]any, ctx *Ctx) map[string]any
	// Broken: the source did not compile; a load of it answers this error.
	Broken string
}

var units = map[string]Unit{}

// Register makes a compiled source known under the sha256 (hex) of its text: a load
// whose code has that hash uses it.
func Register(hash string, u Unit) { units[hash] = u }

func copyState(v map[string]any) (map[string]any, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, err
	}
	if out == nil {
		out = map[string]any{}
	}
	return out, nil
}
