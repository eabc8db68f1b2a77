package fifoflow

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sync"
	"syscall"
	"time"
)

// Version of this host (hello.version).
const Version = "1.0.0"

const maxLine = 64 << 20

type module struct {
	id      string
	unit    Unit
	ctx     *Ctx
	timeout float64
	// the last state sent to the runner (JSON), to send a snapshot only on change
	sent []byte
}

type target struct {
	module string
	port   string
}

type portRoute struct {
	local    []target
	external bool
}

type work struct {
	module string
	port   string
	msgs   []any
	index  bool // msgs come straight from the deliver frame (hung reports the index)
}

type call struct {
	module  string
	port    string
	seq     int64
	index   int
	direct  bool
	started time.Time
	timeout float64
	told    bool
}

type host struct {
	w       *bufio.Writer
	wmu     sync.Mutex
	modules map[string]*module
	routes  map[string]map[string]portRoute
	touched map[string]bool
	// the highest seq handled and not yet acknowledged (-1: none)
	doneSeq int64
	cmu     sync.Mutex
	current *call
	// the emit frame being built (main goroutine only)
	emitting *emitFrame
}

type frameIn struct {
	Op       *string                    `json:"op"`
	Module   *string                    `json:"module"`
	Code     *string                    `json:"code"`
	Filename string                     `json:"filename"`
	Config   map[string]any             `json:"config"`
	State    json.RawMessage            `json:"state"`
	Timeout  *float64                   `json:"timeout"`
	Seq      *int64                     `json:"seq"`
	Port     *string                    `json:"port"`
	Msgs     *[]any                     `json:"msgs"`
	Routes   map[string]json.RawMessage `json:"routes"`
	ID       json.RawMessage            `json:"id"`
	Migrate  *bool                      `json:"migrate"`
}

type errorInfo struct {
	Type      string `json:"type"`
	Message   string `json:"message"`
	Traceback string `json:"traceback"`
}

// Main runs the host: os.Args[1] is the to-runtime FIFO, os.Args[2] from-runtime.
func Main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: host <to-runtime fifo> <from-runtime fifo>")
		os.Exit(2)
	}
	go watchParent()
	in, err := os.OpenFile(os.Args[1], os.O_RDONLY, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot open", os.Args[1], err)
		os.Exit(1)
	}
	out, err := os.OpenFile(os.Args[2], os.O_WRONLY, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot open", os.Args[2], err)
		os.Exit(1)
	}
	h := &host{
		w:       bufio.NewWriterSize(out, 1<<20),
		modules: map[string]*module{},
		routes:  map[string]map[string]portRoute{},
		touched: map[string]bool{},
		doneSeq: -1,
	}
	h.frame(map[string]any{"op": "hello", "protocol": 1, "runtime": "go", "version": Version,
		"pid": os.Getpid(), "features": []string{"watchdog"}})
	h.flush()
	go h.watchdog()
	h.loop(bufio.NewReaderSize(in, 1<<20))
}

// watchParent ends the host when its runner is gone (PROTOCOL.md 1.6).
func watchParent() {
	parent := os.Getppid()
	runner := 0
	fmt.Sscanf(os.Getenv("FIFOFLOW_RUNNER_PID"), "%d", &runner)
	for {
		time.Sleep(time.Second)
		if os.Getppid() != parent {
			os.Exit(0)
		}
		if runner > 0 && syscall.Kill(runner, 0) == syscall.ESRCH {
			os.Exit(0)
		}
	}
}

func (h *host) loop(r *bufio.Reader) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			line = append(line, chunk...)
			if len(line) > maxLine {
				h.fatal("a frame longer than 64 MiB")
			}
			continue
		}
		if err != nil && err != io.EOF {
			h.fatal("read error: " + err.Error())
		}
		if line != nil {
			line = append(line, chunk...)
			chunk, line = line, nil
		}
		if err == io.EOF {
			if len(bytes.TrimSpace(chunk)) > 0 {
				h.handleLine(bytes.TrimRight(chunk, "\n"))
			}
			h.shutdown()
		}
		if len(bytes.TrimSpace(chunk)) > 0 {
			h.handleLine(bytes.TrimRight(chunk, "\n"))
		}
		if r.Buffered() == 0 || !bytes.Contains(peekAll(r), []byte{'\n'}) {
			// the batch is over: acknowledge it and write everything in one go
			h.finish()
			h.flush()
		}
	}
}

func peekAll(r *bufio.Reader) []byte {
	b, _ := r.Peek(r.Buffered())
	return b
}

func (h *host) fatal(what string) {
	h.frame(map[string]any{"op": "fatal", "error": what})
	h.flush()
	os.Exit(3)
}

func (h *host) handleLine(line []byte) {
	var f frameIn
	if err := json.Unmarshal(line, &f); err != nil {
		excerpt := string(line)
		if len(excerpt) > 200 {
			excerpt = excerpt[:200]
		}
		h.fatal(fmt.Sprintf("not a JSON object: %v: %q", err, excerpt))
	}
	if f.Op == nil {
		h.fatal("a frame without a string op")
	}
	op := *f.Op
	if op != "deliver" {
		h.finish() // a batch's snapshots and done go before anything else
	}
	switch op {
	case "deliver":
		if f.Seq == nil || f.Module == nil || f.Port == nil || f.Msgs == nil {
			h.fatal("deliver needs seq, module, port and msgs")
		}
		h.deliver(*f.Seq, *f.Module, *f.Port, *f.Msgs)
	case "load":
		if f.Module == nil {
			h.fatal("load needs module")
		}
		h.load(&f)
	case "unload":
		if f.Module == nil {
			h.fatal("unload needs module")
		}
		var state any
		if m := h.modules[*f.Module]; m != nil {
			state = m.ctx.State
			delete(h.modules, *f.Module)
		}
		h.frame(map[string]any{"op": "unloaded", "module": *f.Module, "state": state})
	case "route":
		if f.Routes == nil {
			h.fatal("route needs routes")
		}
		h.setRoutes(f.Routes)
	case "ping":
		var id any
		if f.ID != nil {
			json.Unmarshal(f.ID, &id)
		}
		h.frame(map[string]any{"op": "pong", "id": id})
	case "shutdown":
		h.shutdown()
	default:
		h.frame(map[string]any{"op": "unsupported", "ref": op})
	}
}

func (h *host) shutdown() {
	h.finish()
	h.frame(map[string]any{"op": "bye"})
	h.flush()
	os.Exit(0)
}

func (h *host) setRoutes(raw map[string]json.RawMessage) {
	table := map[string]map[string]portRoute{}
	for mod, ports := range raw {
		var spec map[string]struct {
			Local    [][]string `json:"local"`
			External bool       `json:"external"`
		}
		if err := json.Unmarshal(ports, &spec); err != nil {
			h.fatal("route: bad table for " + mod + ": " + err.Error())
		}
		table[mod] = map[string]portRoute{}
		for port, s := range spec {
			r := portRoute{external: s.External}
			for _, pair := range s.Local {
				if len(pair) != 2 {
					h.fatal("route: a local target is [module, port]")
				}
				r.local = append(r.local, target{pair[0], pair[1]})
			}
			table[mod][port] = r
		}
	}
	h.routes = table
}

// ---------------------------------------------------------------- load

func hashOf(code string) string {
	sum := sha256.Sum256([]byte(code))
	return hex.EncodeToString(sum[:])
}

func (h *host) loadError(module, kind, message, trace string) {
	h.frame(map[string]any{"op": "loaded", "module": module,
		"error": errorInfo{kind, message, trace}})
}

// guarded runs fn; a panic comes back as an error with the stack.
func guarded(fn func()) (info *errorInfo) {
	defer func() {
		if r := recover(); r != nil {
			info = &errorInfo{"panic", fmt.Sprint(r), string(debug.Stack())}
		}
	}()
	fn()
	return nil
}

func (h *host) load(f *frameIn) {
	id := *f.Module
	if f.Code == nil {
		h.loadError(id, "NoCode", "a go module needs code", "")
		return
	}
	unit, ok := units[hashOf(*f.Code)]
	if !ok {
		h.loadError(id, "NotBuilt", fmt.Sprintf("the code of %s (%s) is not in this host's binary:"+
			" the runner builds a binary holding a host's modules before it starts it", id, f.Filename), "")
		return
	}
	if unit.Broken != "" {
		h.loadError(id, "CompileError", unit.Broken, unit.Broken)
		return
	}
	var given map[string]any
	hasState := len(f.State) > 0 && string(f.State) != "null"
	if hasState {
		if err := json.Unmarshal(f.State, &given); err != nil {
			h.loadError(id, "BadState", "state must be a JSON object: "+err.Error(), "")
			return
		}
	}
	old := h.modules[id]
	var state map[string]any
	var err error
	switch {
	case hasState:
		state, err = copyState(given)
	case old != nil:
		state, err = copyState(old.ctx.State)
	default:
		state = map[string]any{}
	}
	if err != nil {
		h.loadError(id, "BadState", err.Error(), "")
		return
	}
	config := f.Config
	if config == nil {
		config = map[string]any{}
	}
	ctx := &Ctx{State: state, Config: config, Module: id, h: h}
	if old != nil && unit.Migrate != nil && (f.Migrate == nil || *f.Migrate) {
		previous, err := copyState(old.ctx.State)
		if err != nil {
			h.loadError(id, "BadState", err.Error(), "")
			return
		}
		var result map[string]any
		if e := guarded(func() { result = unit.Migrate(previous, ctx) }); e != nil {
			h.loadError(id, "MigrateError", "migrate: "+e.Message, e.Traceback)
			return
		}
		if result != nil {
			ctx.State = result
		}
	}
	if unit.Init != nil {
		if e := guarded(func() { unit.Init(ctx) }); e != nil {
			h.loadError(id, "InitError", "init: "+e.Message, e.Traceback)
			return
		}
	}
	if ctx.State == nil {
		ctx.State = map[string]any{}
	}
	timeout := 30.0
	if f.Timeout != nil {
		timeout = *f.Timeout
	}
	m := &module{id: id, unit: unit, ctx: ctx, timeout: timeout}
	now, err := json.Marshal(ctx.State)
	if err != nil {
		h.loadError(id, "BadState", "the state is not JSON: "+err.Error(), "")
		return
	}
	if hasState {
		m.sent, _ = json.Marshal(given)
	} else if old == nil {
		m.sent = []byte("{}")
	}
	h.modules[id] = m
	if !bytes.Equal(now, m.sent) {
		h.frame(map[string]any{"op": "state", "module": id, "state": json.RawMessage(now)})
		m.sent = now
	}
	h.frame(map[string]any{"op": "loaded", "module": id})
}

// ---------------------------------------------------------------- deliver

func (h *host) deliver(seq int64, module, port string, msgs []any) {
	queue := []work{{module, port, msgs, true}}
	for len(queue) > 0 {
		w := queue[0]
		queue = queue[1:]
		m := h.modules[w.module]
		for i, msg := range w.msgs {
			if m == nil {
				h.frame(map[string]any{"op": "error", "module": w.module, "port": w.port, "msg": msg,
					"seq": seq, "error": errorInfo{"UnknownModule", "no module " + w.module + " is loaded", ""}})
				continue
			}
			var outs []emitted
			result, info := h.call(m, w.port, msg, seq, i, w.index, &outs)
			if info == nil && result != nil {
				outs = append(outs, emitted{"out", result})
			}
			h.touched[m.id] = true
			var encoded []json.RawMessage
			if info == nil {
				// every external message must be JSON before anything of the call goes out
				for _, o := range outs {
					if r := h.routeOf(m.id, o.port); r == nil || r.external {
						data, err := json.Marshal(o.msg)
						if err != nil {
							info = &errorInfo{"EncodeError", fmt.Sprintf("port %s: the message is not JSON: %v", o.port, err), ""}
							break
						}
						encoded = append(encoded, data)
					}
				}
			}
			if info != nil {
				h.frame(map[string]any{"op": "error", "module": m.id, "port": w.port, "msg": safeJSON(msg),
					"seq": seq, "error": info})
				continue
			}
			k := 0
			for _, o := range outs {
				r := h.routeOf(m.id, o.port)
				if r == nil || r.external {
					h.emit(m.id, o.port, encoded[k])
					k++
				}
				if r != nil {
					for _, t := range r.local {
						queue = append(queue, work{t.module, t.port, []any{o.msg}, false})
					}
				}
			}
		}
	}
	if seq > h.doneSeq {
		h.doneSeq = seq
	}
}

func safeJSON(v any) any {
	if _, err := json.Marshal(v); err != nil {
		return fmt.Sprint(v)
	}
	return v
}

func (h *host) routeOf(module, port string) *portRoute {
	ports, ok := h.routes[module]
	if !ok {
		return nil
	}
	r, ok := ports[port]
	if !ok {
		return nil
	}
	return &r
}

func (h *host) call(m *module, port string, msg any, seq int64, index int, direct bool, outs *[]emitted) (result any, info *errorInfo) {
	h.cmu.Lock()
	h.current = &call{module: m.id, port: port, seq: seq, index: index, direct: direct,
		started: time.Now(), timeout: m.timeout}
	h.cmu.Unlock()
	defer func() {
		h.cmu.Lock()
		h.current = nil
		h.cmu.Unlock()
		m.ctx.out = nil
		if r := recover(); r != nil {
			result = nil
			info = &errorInfo{"panic", fmt.Sprint(r), string(debug.Stack())}
		}
	}()
	m.ctx.Port = port
	m.ctx.out = outs
	res, err := m.unit.Handle(msg, m.ctx)
	if err != nil {
		return nil, &errorInfo{"Error", err.Error(), ""}
	}
	return res, nil
}

// watchdog reports a handler call that runs past its module's timeout (hung).
func (h *host) watchdog() {
	for {
		time.Sleep(20 * time.Millisecond)
		h.cmu.Lock()
		c := h.current
		var frame map[string]any
		if c != nil && !c.told && time.Since(c.started).Seconds() > c.timeout {
			c.told = true
			var index any
			if c.direct {
				index = c.index
			}
			frame = map[string]any{"op": "hung", "module": c.module, "port": c.port, "msg": nil,
				"seq": c.seq, "index": index, "elapsed": time.Since(c.started).Seconds()}
		}
		h.cmu.Unlock()
		if frame != nil {
			h.raw(frame)
			h.wmu.Lock()
			h.w.Flush()
			h.wmu.Unlock()
		}
	}
}

// finish ends a batch of deliveries: state snapshots of changed modules, then done.
func (h *host) finish() {
	for id := range h.touched {
		m := h.modules[id]
		if m == nil {
			continue
		}
		if m.ctx.State == nil {
			m.ctx.State = map[string]any{}
		}
		now, err := json.Marshal(m.ctx.State)
		if err != nil {
			h.log(id, "error", "the state is not JSON, not saved: "+err.Error())
			continue
		}
		if !bytes.Equal(now, m.sent) {
			h.frame(map[string]any{"op": "state", "module": id, "state": json.RawMessage(now)})
			m.sent = now
		}
	}
	h.touched = map[string]bool{}
	if h.doneSeq >= 0 {
		h.frame(map[string]any{"op": "done", "seq": h.doneSeq})
		h.doneSeq = -1
	}
}

// ---------------------------------------------------------------- output

// emit adds a message to the emit frame being built (one frame per run of the same
// module and port).
func (h *host) emit(module, port string, msg json.RawMessage) {
	if h.emitting != nil && (h.emitting.module != module || h.emitting.port != port) {
		h.endEmit()
	}
	if h.emitting == nil {
		h.emitting = &emitFrame{module: module, port: port}
	}
	h.emitting.msgs = append(h.emitting.msgs, msg)
}

type emitFrame struct {
	module, port string
	msgs         []json.RawMessage
}

func (h *host) endEmit() {
	e := h.emitting
	if e == nil {
		return
	}
	h.emitting = nil
	// written by hand: the messages are JSON already (encoding/json would check them again)
	module, _ := json.Marshal(e.module)
	port, _ := json.Marshal(e.port)
	h.wmu.Lock()
	h.w.WriteString(`{"op":"emit","module":`)
	h.w.Write(module)
	h.w.WriteString(`,"port":`)
	h.w.Write(port)
	h.w.WriteString(`,"msgs":[`)
	for i, m := range e.msgs {
		if i > 0 {
			h.w.WriteByte(',')
		}
		h.w.Write(m)
	}
	h.w.WriteString("]}\n")
	h.wmu.Unlock()
}

// frame writes a frame after the emit frame being built (main goroutine only).
func (h *host) frame(v map[string]any) {
	h.endEmit()
	h.raw(v)
}

func (h *host) raw(v map[string]any) {
	data, err := json.Marshal(v)
	if err != nil {
		data, _ = json.Marshal(map[string]any{"op": "log", "module": v["module"], "level": "error",
			"text": "a frame could not be encoded: " + err.Error()})
	}
	h.wmu.Lock()
	h.w.Write(data)
	h.w.WriteByte('\n')
	h.wmu.Unlock()
}

func (h *host) flush() {
	h.endEmit()
	h.wmu.Lock()
	err := h.w.Flush()
	h.wmu.Unlock()
	if err != nil {
		os.Exit(1) // the runner is gone
	}
}

func (h *host) log(module, level, text string) {
	var mod any
	if module != "" {
		mod = module
	}
	h.frame(map[string]any{"op": "log", "module": mod, "level": level, "text": text})
}

func (h *host) logf(module, level, format string, args ...any) {
	h.log(module, level, fmt.Sprintf(format, args...))
}
