package fifoflow

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
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
	// handled messages since the last snapshot
	touched bool
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
	id      uint64
	module  string
	port    string
	seq     int64
	index   int
	direct  bool
	timeout float64
	active  bool
}

type host struct {
	w       *bufio.Writer
	wmu     sync.Mutex
	modules map[string]*module
	routes  map[string]map[string]portRoute
	// modules that handled messages since the last snapshot
	touchedList []*module
	// reused buffers of deliver
	outs    []emitted
	scratch []byte
	ends    []int
	// the highest seq handled and not yet acknowledged (-1: none)
	doneSeq int64
	cmu     sync.Mutex
	current call
	calls   uint64
	// the emit frame being built (main goroutine only)
	emitting *emitFrame
}

// frameIn is a decoded runner frame: the fields of PROTOCOL.md section 4 (nil: absent).
type frameIn struct {
	Op       *string
	Module   *string
	Code     *string
	Filename string
	Config   map[string]any
	State    any // an object, or nil (absent or null)
	Timeout  *float64
	Seq      *int64
	Port     *string
	Msgs     *[]any
	Routes   map[string]any
	ID       any
	Migrate  *bool
}

// decodeFrame reads a line into a frameIn; an error for what is no JSON object or has
// a field of the wrong type.
func decodeFrame(line []byte) (*frameIn, error) {
	v, err := parseJSON(line)
	if err != nil {
		return nil, err
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("a frame must be a JSON object")
	}
	f := &frameIn{ID: obj["id"], State: obj["state"]}
	bad := func(field, kind string) error { return fmt.Errorf("field %q must be %s", field, kind) }
	str := func(field string) (*string, error) {
		raw, present := obj[field]
		if !present {
			return nil, nil
		}
		s, ok := raw.(string)
		if !ok {
			return nil, bad(field, "a string")
		}
		return &s, nil
	}
	if f.Op, err = str("op"); err != nil {
		return nil, err
	}
	if f.Module, err = str("module"); err != nil {
		return nil, err
	}
	if f.Port, err = str("port"); err != nil {
		return nil, err
	}
	if raw, present := obj["code"]; present && raw != nil {
		s, ok := raw.(string)
		if !ok {
			return nil, bad("code", "a string")
		}
		f.Code = &s
	}
	f.Filename, _ = obj["filename"].(string)
	if raw, present := obj["config"]; present && raw != nil {
		if f.Config, ok = raw.(map[string]any); !ok {
			return nil, bad("config", "an object")
		}
	}
	if f.State != nil {
		if _, ok := f.State.(map[string]any); !ok {
			return nil, bad("state", "an object or null")
		}
	}
	if raw, present := obj["timeout"]; present && raw != nil {
		t, ok := raw.(float64)
		if !ok {
			return nil, bad("timeout", "a number")
		}
		f.Timeout = &t
	}
	if raw, present := obj["seq"]; present {
		n, ok := raw.(float64)
		if !ok || n != float64(int64(n)) {
			return nil, bad("seq", "an integer")
		}
		seq := int64(n)
		f.Seq = &seq
	}
	if raw, present := obj["msgs"]; present {
		msgs, ok := raw.([]any)
		if !ok {
			return nil, bad("msgs", "an array")
		}
		f.Msgs = &msgs
	}
	if raw, present := obj["routes"]; present {
		if f.Routes, ok = raw.(map[string]any); !ok {
			return nil, bad("routes", "an object")
		}
	}
	if raw, present := obj["migrate"]; present && raw != nil {
		b, ok := raw.(bool)
		if !ok {
			return nil, bad("migrate", "a boolean")
		}
		f.Migrate = &b
	}
	return f, nil
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
	f, err := decodeFrame(line)
	if err != nil {
		excerpt := string(line)
		if len(excerpt) > 200 {
			excerpt = excerpt[:200]
		}
		h.fatal(fmt.Sprintf("bad frame: %v: %q", err, excerpt))
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
		h.load(f)
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
		h.frame(map[string]any{"op": "pong", "id": f.ID})
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

func (h *host) setRoutes(raw map[string]any) {
	table := map[string]map[string]portRoute{}
	for mod, ports := range raw {
		spec, ok := ports.(map[string]any)
		if !ok {
			h.fatal("route: the table of " + mod + " must be an object")
		}
		table[mod] = map[string]portRoute{}
		for port, entry := range spec {
			s, ok := entry.(map[string]any)
			if !ok {
				h.fatal("route: " + mod + "." + port + " must be an object")
			}
			r := portRoute{}
			r.external, _ = s["external"].(bool)
			local, _ := s["local"].([]any)
			for _, item := range local {
				pair, ok := item.([]any)
				if !ok || len(pair) != 2 {
					h.fatal("route: a local target is [module, port]")
				}
				m, ok1 := pair[0].(string)
				p, ok2 := pair[1].(string)
				if !ok1 || !ok2 {
					h.fatal("route: a local target is [module, port]")
				}
				r.local = append(r.local, target{m, p})
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
	given, hasState := f.State.(map[string]any)
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

// deliver handles a frame and every same-host delivery it causes, breadth first: the
// outputs of one work item for one local target become one work item (per-wire order).
func (h *host) deliver(seq int64, module, port string, msgs []any) {
	queue := []work{{module, port, msgs, true}}
	for len(queue) > 0 {
		w := queue[0]
		queue = queue[1:]
		m := h.modules[w.module]
		if m == nil {
			for _, msg := range w.msgs {
				h.frame(map[string]any{"op": "error", "module": w.module, "port": w.port, "msg": msg,
					"seq": seq, "error": errorInfo{"UnknownModule", "no module " + w.module + " is loaded", ""}})
			}
			continue
		}
		if !m.touched {
			m.touched = true
			h.touchedList = append(h.touchedList, m)
		}
		var local map[target][]any
		var order []target
		for i, msg := range w.msgs {
			outs := h.outs[:0]
			result, info := h.call(m, w.port, msg, seq, i, w.index, &outs)
			if info == nil && result != nil {
				outs = append(outs, emitted{"out", result})
			}
			h.outs = outs
			// every external message must be JSON before anything of the call goes out
			scratch := h.scratch[:0]
			ends := h.ends[:0]
			if info == nil {
				for _, o := range outs {
					if r := h.routeOf(m.id, o.port); r == nil || r.external {
						var err error
						if scratch, err = appendJSON(scratch, o.msg); err != nil {
							info = &errorInfo{"EncodeError", fmt.Sprintf("port %s: the message is not JSON: %v", o.port, err), ""}
							break
						}
						ends = append(ends, len(scratch))
					}
				}
			}
			h.scratch, h.ends = scratch, ends
			if info != nil {
				h.frame(map[string]any{"op": "error", "module": m.id, "port": w.port, "msg": safeJSON(msg),
					"seq": seq, "error": info})
				continue
			}
			k, from := 0, 0
			for _, o := range outs {
				r := h.routeOf(m.id, o.port)
				if r == nil || r.external {
					h.emit(m.id, o.port, scratch[from:ends[k]])
					from = ends[k]
					k++
				}
				if r != nil {
					for _, t := range r.local {
						if local == nil {
							local = map[target][]any{}
						}
						if _, seen := local[t]; !seen {
							order = append(order, t)
						}
						local[t] = append(local[t], o.msg)
					}
				}
			}
		}
		for _, t := range order {
			queue = append(queue, work{t.module, t.port, local[t], false})
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
	h.calls++
	h.current = call{id: h.calls, module: m.id, port: port, seq: seq, index: index, direct: direct,
		timeout: m.timeout, active: true}
	h.cmu.Unlock()
	defer func() {
		h.cmu.Lock()
		h.current.active = false
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

// watchdog reports a handler call that runs past its module's timeout (hung). It
// times calls itself (from when it first saw one), so a call costs no clock read.
func (h *host) watchdog() {
	const tick = 10 * time.Millisecond
	var seen uint64
	var since time.Time
	told := false
	for {
		time.Sleep(tick)
		now := time.Now()
		h.cmu.Lock()
		c := h.current
		h.cmu.Unlock()
		if !c.active {
			continue
		}
		if c.id != seen {
			seen, since, told = c.id, now.Add(-tick/2), false
			continue
		}
		elapsed := now.Sub(since).Seconds()
		if told || elapsed <= c.timeout {
			continue
		}
		told = true
		var index any
		if c.direct {
			index = c.index
		}
		h.raw(map[string]any{"op": "hung", "module": c.module, "port": c.port, "msg": nil,
			"seq": c.seq, "index": index, "elapsed": elapsed})
		h.wmu.Lock()
		h.w.Flush()
		h.wmu.Unlock()
	}
}

// finish ends a batch of deliveries: state snapshots of changed modules, then done.
func (h *host) finish() {
	for _, m := range h.touchedList {
		m.touched = false
		id := m.id
		if h.modules[id] != m {
			continue // unloaded or replaced meanwhile
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
	h.touchedList = h.touchedList[:0]
	if h.doneSeq >= 0 {
		h.frame(map[string]any{"op": "done", "seq": h.doneSeq})
		h.doneSeq = -1
	}
}

// ---------------------------------------------------------------- output

// emit adds a message to the emit frame being built (one frame per run of the same
// module and port).
func (h *host) emit(module, port string, msg []byte) {
	if h.emitting != nil && (h.emitting.module != module || h.emitting.port != port) {
		h.endEmit()
	}
	if h.emitting == nil {
		h.emitting = &emitFrame{module: module, port: port}
	}
	if h.emitting.count > 0 {
		h.emitting.buf = append(h.emitting.buf, ',')
	}
	h.emitting.buf = append(h.emitting.buf, msg...)
	h.emitting.count++
}

type emitFrame struct {
	module, port string
	buf          []byte // the messages, comma separated
	count        int
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
	h.w.Write(e.buf)
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
