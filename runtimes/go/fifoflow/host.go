package fifoflow

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Version of this host (hello.version).
const Version = "1.0.0"

const maxLine = 64 << 20

// readSize is the buffer of one read of the runner pipe or a channel.
const readSize = 1 << 20

// writeEarly: a batch's runner frames are written before the batch ends once they
// hold this many bytes (the runner routes the first outputs meanwhile, and memory stays
// bounded); channelEarly: the same for the frames of the direct channels, which are
// written first (a channel's pipe holds 1 MiB: a larger write would be cut).
const (
	writeEarly   = 1 << 20
	channelEarly = 256 << 10
)

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
	// direct channels of the port (PROTOCOL.md section 11): one frame per channel
	direct []channelFrame
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
	// from-runtime; wmu is held while writing it (the watchdog writes hung frames too)
	out io.Writer
	wmu sync.Mutex
	// the runner frames of the batch being built (main goroutine only)
	buf     []byte
	modules map[string]*module
	routes  map[string]map[string]portRoute
	// modules that handled messages since the last snapshot
	touchedList []*module
	// reused buffers of run
	outs    []emitted
	scratch []byte
	ends    []int
	// the highest seq handled and not yet acknowledged (-1: none); the last one
	// acknowledged (a done that acknowledges only channel frames repeats it)
	doneSeq    int64
	seqHandled int64
	cmu        sync.Mutex
	current    call
	calls      uint64
	// the emit frame being built (main goroutine only); spare: a buffer to reuse
	emitting *emitFrame
	spare    []byte

	// what the host reads: the runner pipe and the channels it listens to (by fd:
	// byFD; epfd: the epoll set of them, -1 until the first listen), read into rbuf
	runner *source
	byFD   map[int]*source
	epfd   int
	rbuf   []byte
	// direct channels (direct.go)
	writers      map[string]*channelWriter
	dead         map[string]bool
	cuts         []string
	channelBytes int
	dcount       int64
	readers      map[string]*source
	acks         map[string]int64
	// messages delivered inside this host per wire since the last done (its "local",
	// PROTOCOL.md section 12)
	localCounts map[wireKey]int64
	lastD       map[dkey]int64
	cutEcho     []string
}

func newHost(out io.Writer) *host {
	return &host{
		out:     out,
		modules: map[string]*module{},
		routes:  map[string]map[string]portRoute{},
		doneSeq: -1,
		byFD:    map[int]*source{},
		epfd:    -1,
		writers: map[string]*channelWriter{},
		dead:    map[string]bool{},
		readers: map[string]*source{},
		acks:    map[string]int64{},
		lastD:   map[dkey]int64{},
	}
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
	// direct channels (section 11): route's channels, listen's path, the channel and
	// frame number of a deliver (from a channel, or the runner's copy), its also
	Channels map[string]any
	Path     *string
	Ch       *string
	D        *int64
	Also     []target
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
	integer := func(field string) (*int64, error) {
		raw, present := obj[field]
		if !present {
			return nil, nil
		}
		n, ok := raw.(float64)
		if !ok || n != float64(int64(n)) {
			return nil, bad(field, "an integer")
		}
		i := int64(n)
		return &i, nil
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
	if f.Seq, err = integer("seq"); err != nil {
		return nil, err
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
	if raw, present := obj["channels"]; present && raw != nil {
		if f.Channels, ok = raw.(map[string]any); !ok {
			return nil, bad("channels", "an object")
		}
	}
	if f.Path, err = str("path"); err != nil {
		return nil, err
	}
	if raw, present := obj["ch"]; present && raw != nil {
		s, ok := raw.(string)
		if !ok {
			return nil, bad("ch", "a string")
		}
		f.Ch = &s
	}
	if f.D, err = integer("d"); err != nil {
		return nil, err
	}
	if raw, present := obj["also"]; present && raw != nil {
		list, ok := raw.([]any)
		if !ok {
			return nil, bad("also", "an array of [module, port]")
		}
		for _, item := range list {
			pair, ok := item.([]any)
			if !ok || len(pair) != 2 {
				return nil, bad("also", "an array of [module, port]")
			}
			m, ok1 := pair[0].(string)
			p, ok2 := pair[1].(string)
			if !ok1 || !ok2 {
				return nil, bad("also", "an array of [module, port]")
			}
			f.Also = append(f.Also, target{m, p})
		}
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
	// a plain fd, read by the main goroutine itself (serve); the open blocks until the
	// runner opens the other end
	in, err := syscall.Open(os.Args[1], syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	for err == syscall.EINTR {
		in, err = syscall.Open(os.Args[1], syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot open", os.Args[1], err)
		os.Exit(1)
	}
	out, err := os.OpenFile(os.Args[2], os.O_WRONLY, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot open", os.Args[2], err)
		os.Exit(1)
	}
	h := newHost(out)
	h.frame(map[string]any{"op": "hello", "protocol": 1, "runtime": "go", "version": Version,
		"pid": os.Getpid(), "features": []string{"raw", "direct", "counts", "watchdog"}})
	h.flush()
	go h.watchdog()
	h.serve(in)
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

// serve handles what comes from the runner pipe and the channels, one read at a time
// in the order they were made: every complete line of a read, then the batch's frames
// (channels first, then the runner's: emits, errors, state, done) in one write each.
// The main goroutine reads itself (no goroutine between the pipe and the handlers: a
// hand-over between goroutines costs a hop ~30 us here): a blocking read of the runner
// pipe while no channel is open, else epoll on the runner pipe and the channels.
func (h *host) serve(rfd int) {
	h.runner = &source{fd: rfd}
	h.byFD[rfd] = h.runner
	h.rbuf = make([]byte, readSize)
	events := make([]syscall.EpollEvent, 16)
	for {
		if len(h.readers) == 0 {
			h.readRunner()
		} else {
			n, err := syscall.EpollWait(h.epfd, events, -1)
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				h.fatal("epoll: " + err.Error())
			}
			for _, event := range events[:n] {
				src := h.byFD[int(event.Fd)]
				switch {
				case src == nil || src.closed || src.ended:
					// cut (or ended) by a read before this one
				case src == h.runner:
					h.readRunner()
				default:
					h.readChannel(src)
				}
			}
		}
		h.finish()
		h.confirmCuts()
		h.flush()
	}
}

// readRunner reads what the runner pipe holds (waiting for it when it is empty) and
// handles its complete lines; its end shuts the host down.
func (h *host) readRunner() {
	n, err := syscall.Read(h.runner.fd, h.rbuf)
	for err == syscall.EINTR {
		n, err = syscall.Read(h.runner.fd, h.rbuf)
	}
	if err != nil {
		h.fatal("read error: " + err.Error())
	}
	if n == 0 {
		if len(bytes.TrimSpace(h.runner.rest)) > 0 {
			h.handleLine(h.runner.rest)
		}
		h.shutdown()
	}
	h.feed(h.runner, h.rbuf[:n])
}

// feed handles the complete lines of data (after src's partial line, if any) and keeps
// its last partial line.
func (h *host) feed(src *source, data []byte) {
	if len(src.rest) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			src.rest = append(src.rest, data...)
			if len(src.rest) > maxLine {
				h.fatal(src.what() + "a frame longer than 64 MiB")
			}
			return
		}
		src.rest = append(src.rest, data[:i]...)
		h.line(src, src.rest)
		src.rest = src.rest[:0]
		if cap(src.rest) > readSize {
			src.rest = nil
		}
		data = data[i+1:]
	}
	for len(data) > 0 && !src.closed {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			if len(data) > maxLine {
				h.fatal(src.what() + "a frame longer than 64 MiB")
			}
			src.rest = append(src.rest[:0], data...) // data's buffer is read into again
			return
		}
		h.line(src, data[:i])
		data = data[i+1:]
	}
}

func (h *host) line(src *source, line []byte) {
	if len(bytes.TrimSpace(line)) == 0 {
		return
	}
	if src.ch != "" {
		h.channelLine(src, line)
		return
	}
	h.handleLine(line)
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
		h.endEmit()
	}
	switch op {
	case "deliver":
		if f.Seq == nil || f.Module == nil || f.Port == nil || f.Msgs == nil {
			h.fatal("deliver needs seq, module, port and msgs")
		}
		seq := *f.Seq
		if f.Ch != nil && !h.firstCopy(f) {
			// the runner's copy of a channel frame handled already: acknowledged only
			if seq > h.doneSeq {
				h.doneSeq = seq
			}
			return
		}
		h.run(seq, []work{{*f.Module, *f.Port, *f.Msgs, true}})
		if seq > h.doneSeq {
			h.doneSeq = seq
		}
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
		h.setRoutes(f.Routes, f.Channels)
	case "listen":
		if f.Ch == nil || f.Path == nil {
			h.fatal("listen needs strings ch and path")
		}
		h.listen(*f.Ch, *f.Path)
	case "cut":
		if f.Ch == nil {
			h.fatal("cut needs a string ch")
		}
		h.cut(*f.Ch)
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

func (h *host) setRoutes(raw map[string]any, channels map[string]any) {
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
			if direct, present := s["direct"]; present && direct != nil {
				list, ok := direct.([]any)
				if !ok {
					h.fatal("route: " + mod + "." + port + ": direct must be a list of [channel, module, port]")
				}
				r.direct = h.channelFrames(mod+"."+port, list)
			}
			table[mod][port] = r
		}
	}
	h.openChannels(channels)
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

// run handles the work items (a runner frame's messages, or a channel frame's for
// each of its targets) and every same-host delivery they cause, breadth first: the
// outputs of one work item for one local target become one work item (per-wire order).
// seq is the runner frame they descend from (0 for a channel frame).
func (h *host) run(seq int64, queue []work) {
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
					var direct []channelFrame
					if r != nil {
						direct = r.direct
					}
					h.emit(m.id, o.port, direct, scratch[from:ends[k]])
					from = ends[k]
					k++
				}
				if r != nil {
					for _, t := range r.local {
						h.countLocal(m.id, o.port, t)
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
}

// wireKey names a wire inside this host: source module and port, target module and port.
type wireKey struct{ src, port, dst, dstPort string }

// countLocal counts one message delivered inside this host along a wire (reported in
// the next done's "local").
func (h *host) countLocal(src, port string, t target) {
	if h.localCounts == nil {
		h.localCounts = map[wireKey]int64{}
	}
	h.localCounts[wireKey{src, port, t.module, t.port}]++
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
// times calls itself (from when it first saw one), so a call costs no clock read. It
// writes the frame itself (the main goroutine is stuck in the call), a whole line under
// wmu, so it never lands inside a write of the main goroutine.
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
		data, _ := json.Marshal(map[string]any{"op": "hung", "module": c.module, "port": c.port,
			"msg": nil, "seq": c.seq, "index": index, "elapsed": elapsed})
		h.wmu.Lock()
		h.out.Write(append(data, '\n'))
		h.wmu.Unlock()
	}
}

// finish ends a batch of deliveries: state snapshots of changed modules, then done
// (with the channel frames handled, if any).
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
		h.seqHandled = h.doneSeq
	}
	if len(h.acks) > 0 || len(h.localCounts) > 0 {
		h.endEmit()
		b := append(h.buf, `{"op":"done","seq":`...)
		b = strconv.AppendInt(b, h.seqHandled, 10)
		if len(h.acks) > 0 {
			b = append(b, `,"direct":{`...)
			first := true
			for ch, d := range h.acks {
				if !first {
					b = append(b, ',')
				}
				first = false
				b = appendString(b, ch)
				b = append(b, ':')
				b = strconv.AppendInt(b, d, 10)
				delete(h.acks, ch)
			}
			b = append(b, '}')
		}
		if len(h.localCounts) > 0 {
			b = append(b, `,"local":[`...)
			first := true
			for k, n := range h.localCounts {
				if !first {
					b = append(b, ',')
				}
				first = false
				b = append(b, '[')
				for _, text := range [4]string{k.src, k.port, k.dst, k.dstPort} {
					b = appendString(b, text)
					b = append(b, ',')
				}
				b = strconv.AppendInt(b, n, 10)
				b = append(b, ']')
				delete(h.localCounts, k)
			}
			b = append(b, ']')
		}
		h.buf = append(b, "}\n"...)
		h.doneSeq = -1
	} else if h.doneSeq >= 0 {
		h.endEmit()
		b := append(h.buf, `{"op":"done","seq":`...)
		b = strconv.AppendInt(b, h.doneSeq, 10)
		h.buf = append(b, "}\n"...)
		h.doneSeq = -1
	}
}

// confirmCuts ends a batch: the confirmations of the channels the runner cut, after
// the done that acknowledges the last frames handled from them.
func (h *host) confirmCuts() {
	for _, ch := range h.cutEcho {
		h.cutFrame(ch)
	}
	h.cutEcho = h.cutEcho[:0]
}

// ---------------------------------------------------------------- output

// emit adds a message to the emit frame being built (one frame per run of the same
// module and port).
func (h *host) emit(module, port string, direct []channelFrame, msg []byte) {
	if h.emitting != nil && (h.emitting.module != module || h.emitting.port != port) {
		h.endEmit()
	}
	if h.emitting == nil {
		h.emitting = &emitFrame{module: module, port: port, direct: direct, buf: h.spare[:0]}
		h.spare = nil
	}
	if h.emitting.count > 0 {
		h.emitting.buf = append(h.emitting.buf, ',')
	}
	h.emitting.buf = append(h.emitting.buf, msg...)
	h.emitting.count++
}

type emitFrame struct {
	module, port string
	direct       []channelFrame
	buf          []byte // the messages, comma separated
	count        int
}

// endEmit writes the emit frame being built in the raw layout (PROTOCOL.md section 10:
// msgs last, n its length); on a port with direct channels, first the frame to each
// live channel, and d and ch in the runner's header (section 11).
func (h *host) endEmit() {
	e := h.emitting
	if e == nil {
		return
	}
	h.emitting = nil
	// written by hand: the messages are JSON already (encoding/json would check them again)
	b := append(h.buf, `{"op":"emit","module":`...)
	b = appendString(b, e.module)
	b = append(b, `,"port":`...)
	b = appendString(b, e.port)
	b = append(b, `,"n":`...)
	b = strconv.AppendInt(b, int64(e.count), 10)
	if len(e.direct) > 0 {
		if d, names := h.emitDirect(e); names != "" {
			b = append(b, `,"d":`...)
			b = strconv.AppendInt(b, d, 10)
			b = append(b, `,"ch":`...)
			b = appendString(b, names)
		}
	}
	b = append(b, `,"msgs":[`...)
	b = append(b, e.buf...)
	h.buf = append(b, "]}\n"...)
	if cap(e.buf) <= writeEarly {
		h.spare = e.buf[:0]
	}
	h.writeSoon()
}

// frame writes a frame after the emit frame being built (main goroutine only).
func (h *host) frame(v map[string]any) {
	h.endEmit()
	data, err := json.Marshal(v)
	if err != nil {
		data, _ = json.Marshal(map[string]any{"op": "log", "module": v["module"], "level": "error",
			"text": "a frame could not be encoded: " + err.Error()})
	}
	h.buf = append(append(h.buf, data...), '\n')
	h.writeSoon()
}

func (h *host) cutFrame(ch string) {
	h.endEmit()
	b := append(h.buf, `{"op":"cut","ch":`...)
	b = appendString(b, ch)
	h.buf = append(b, "}\n"...)
}

// writeSoon writes what the batch holds so far once it is large (never a done: that
// comes with the end of the batch).
func (h *host) writeSoon() {
	if len(h.buf) >= writeEarly || h.channelBytes >= channelEarly {
		h.flush()
	}
}

// flush writes what the batch holds: its frames to each direct channel first (one
// non-blocking write per channel), then the runner's frames in one write, headed by a
// cut for every channel given up meanwhile.
func (h *host) flush() {
	h.endEmit()
	if h.channelBytes > 0 {
		h.writeChannels()
	}
	data := h.buf
	if len(h.cuts) > 0 {
		var head []byte
		for _, ch := range h.cuts {
			head = append(head, `{"op":"cut","ch":`...)
			head = appendString(head, ch)
			head = append(head, "}\n"...)
		}
		h.cuts = h.cuts[:0]
		data = append(head, data...)
	}
	if len(data) == 0 {
		return
	}
	h.wmu.Lock()
	_, err := h.out.Write(data)
	h.wmu.Unlock()
	if err != nil {
		os.Exit(1) // the runner is gone
	}
	if cap(h.buf) > 4*writeEarly {
		h.buf = nil
	} else {
		h.buf = h.buf[:0]
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
