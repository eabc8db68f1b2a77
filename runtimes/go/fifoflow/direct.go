package fifoflow

// Direct channels (runtimes/PROTOCOL.md section 11): FIFOs from this host to another
// host of the same runner, and from others to this one. The runner keeps a copy of
// every message that goes through one (the sender always sends it the emit too) and
// cuts a channel when anything goes wrong; the receiver then gets the copies and skips
// those it handled already.
//
// Sending: the route table names each port's channels and their paths; the host opens
// them O_WRONLY|O_NONBLOCK, numbers every emit frame that goes through one (d), adds its
// frame to each channel's buffer and writes the buffers, first, with one non-blocking
// write each when the batch is written. A write that fails or is partial gives the
// channel up for good: closed, never written again, and `cut` heads the runner batch.
//
// Receiving: `listen` opens a channel O_RDONLY|O_NONBLOCK and the main goroutine reads
// it beside the runner pipe (host.go: serve waits on both with epoll while a channel is
// open, and blocks in a plain read of the runner pipe otherwise), so reads are handled
// one at a time, in the order they were made, without a goroutine between the pipe and
// the handlers. Frames of a channel are handled like deliveries and acknowledged in
// done's `direct`; `cut` closes the channel (a partial line is dropped: the runner
// delivers its copies) and is confirmed after the next done.

import (
	"fmt"
	"strconv"
	"syscall"
)

// channelFrame is the frame of one port's emits on one channel: head + d + tail +
// messages + "]}\n", tail naming every target of the port there (module, port, also).
type channelFrame struct {
	ch   string
	head []byte
	tail []byte
}

// channelWriter is a channel this host writes: its fd and this batch's frames.
type channelWriter struct {
	fd  int
	buf []byte
}

// dkey names the highest d handled per channel and target (the skip rule).
type dkey struct {
	ch, module, port string
}

// source is something the host reads: the runner pipe (ch "") or a channel.
type source struct {
	ch string
	fd int
	// a partial line
	rest []byte
	// the channel was cut (its fd is closed)
	closed bool
	// the channel's writers are gone: no longer polled (its cut follows)
	ended bool
}

func (s *source) what() string {
	if s.ch == "" {
		return ""
	}
	return fmt.Sprintf("direct channel %q: ", s.ch)
}

// ---------------------------------------------------------------- sending

// channelFrames makes the frames of a port's direct targets ([channel, module, port]),
// one per channel, in the order the channels first appear.
func (h *host) channelFrames(where string, list []any) []channelFrame {
	var order []string
	targets := map[string][]target{}
	for _, item := range list {
		triple, ok := item.([]any)
		if !ok || len(triple) != 3 {
			h.fatal("route: " + where + ": a direct target is [channel, module, port]")
		}
		ch, ok1 := triple[0].(string)
		m, ok2 := triple[1].(string)
		p, ok3 := triple[2].(string)
		if !ok1 || !ok2 || !ok3 {
			h.fatal("route: " + where + ": a direct target is [channel, module, port] (strings)")
		}
		if _, seen := targets[ch]; !seen {
			order = append(order, ch)
		}
		targets[ch] = append(targets[ch], target{m, p})
	}
	frames := make([]channelFrame, 0, len(order))
	for _, ch := range order {
		ts := targets[ch]
		head := appendString([]byte(`{"op":"deliver","ch":`), ch)
		head = append(head, `,"d":`...)
		tail := appendString([]byte(`,"module":`), ts[0].module)
		tail = append(tail, `,"port":`...)
		tail = appendString(tail, ts[0].port)
		if len(ts) > 1 {
			tail = append(tail, `,"also":[`...)
			for i, t := range ts[1:] {
				if i > 0 {
					tail = append(tail, ',')
				}
				tail = append(tail, '[')
				tail = appendString(tail, t.module)
				tail = append(tail, ',')
				tail = appendString(tail, t.port)
				tail = append(tail, ']')
			}
			tail = append(tail, ']')
		}
		tail = append(tail, `,"msgs":[`...)
		frames = append(frames, channelFrame{ch, head, tail})
	}
	return frames
}

// openChannels follows a route table's channels: those no longer listed are closed
// (for good), new ones opened; one that cannot be opened is given up.
func (h *host) openChannels(channels map[string]any) {
	for ch, w := range h.writers {
		if _, listed := channels[ch]; !listed {
			h.channelBytes -= len(w.buf) // the runner cut it: it delivers the copies
			syscall.Close(w.fd)
			delete(h.writers, ch)
			h.dead[ch] = true
		}
	}
	for ch, raw := range channels {
		if h.writers[ch] != nil || h.dead[ch] {
			continue
		}
		path, ok := raw.(string)
		if !ok {
			h.fatal("route: the path of channel " + ch + " must be a string")
		}
		fd, err := syscall.Open(path, syscall.O_WRONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
		if err != nil {
			h.dead[ch] = true
			h.cuts = append(h.cuts, ch)
			continue
		}
		h.writers[ch] = &channelWriter{fd: fd}
	}
}

// emitDirect adds emit frame e to each of its live channels: its number d and the
// names of those channels ("" when none is live: the emit goes to the runner only).
func (h *host) emitDirect(e *emitFrame) (int64, string) {
	d := h.dcount + 1
	var names []byte
	for _, cf := range e.direct {
		w := h.writers[cf.ch]
		if w == nil {
			continue
		}
		before := len(w.buf)
		w.buf = append(w.buf, cf.head...)
		w.buf = strconv.AppendInt(w.buf, d, 10)
		w.buf = append(w.buf, cf.tail...)
		w.buf = append(w.buf, e.buf...)
		w.buf = append(w.buf, "]}\n"...)
		h.channelBytes += len(w.buf) - before
		if names != nil {
			names = append(names, ' ')
		}
		names = append(names, cf.ch...)
	}
	if names == nil {
		return 0, ""
	}
	h.dcount = d
	return d, string(names)
}

// writeChannels writes each channel's frames with one non-blocking write; a channel
// that does not take them all is given up.
func (h *host) writeChannels() {
	for ch, w := range h.writers {
		if len(w.buf) == 0 {
			continue
		}
		n, err := syscall.Write(w.fd, w.buf)
		for err == syscall.EINTR {
			n, err = syscall.Write(w.fd, w.buf)
		}
		if err != nil || n != len(w.buf) {
			h.giveUp(ch)
			continue
		}
		if cap(w.buf) > 4*channelEarly {
			w.buf = nil
		} else {
			w.buf = w.buf[:0]
		}
	}
	h.channelBytes = 0
}

// giveUp closes a channel for good; the runner is told with the next write.
func (h *host) giveUp(ch string) {
	if w := h.writers[ch]; w != nil {
		syscall.Close(w.fd)
		delete(h.writers, ch)
	}
	h.dead[ch] = true
	h.cuts = append(h.cuts, ch)
}

// ---------------------------------------------------------------- receiving

// listen starts reading channel ch (a missing path: the runner cut it already).
func (h *host) listen(ch, path string) {
	if h.readers[ch] != nil {
		return
	}
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		if err != syscall.ENOENT {
			h.logf("", "warning", "direct channel %s: cannot open %s: %v (its messages come through the runner)", ch, path, err)
		}
		return
	}
	if h.epfd < 0 {
		if h.epfd, err = syscall.EpollCreate1(syscall.EPOLL_CLOEXEC); err != nil {
			h.fatal("epoll: " + err.Error())
		}
		h.poll(h.runner, syscall.EPOLL_CTL_ADD)
	}
	src := &source{ch: ch, fd: fd}
	h.readers[ch] = src
	h.byFD[fd] = src
	h.poll(src, syscall.EPOLL_CTL_ADD)
}

// poll adds a source to the epoll set or removes it.
func (h *host) poll(src *source, op int) {
	event := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(src.fd)}
	if err := syscall.EpollCtl(h.epfd, op, src.fd, &event); err != nil {
		h.fatal(src.what() + "epoll: " + err.Error())
	}
}

// cut stops reading channel ch (the runner's cut), confirmed after the next done.
func (h *host) cut(ch string) {
	h.cutEcho = append(h.cutEcho, ch)
	src := h.readers[ch]
	if src == nil {
		return
	}
	delete(h.readers, ch)
	delete(h.byFD, src.fd)
	if !src.ended {
		h.poll(src, syscall.EPOLL_CTL_DEL)
	}
	syscall.Close(src.fd)
	src.closed = true
	src.rest = nil
}

// readChannel reads what channel src holds and handles its complete lines.
func (h *host) readChannel(src *source) {
	n, err := syscall.Read(src.fd, h.rbuf)
	for err == syscall.EINTR {
		n, err = syscall.Read(src.fd, h.rbuf)
	}
	switch {
	case err == syscall.EAGAIN:
	case err != nil:
		h.fatal(src.what() + "read error: " + err.Error())
	case n == 0:
		// no writer left: the runner holds every channel open until it cuts it, so
		// this comes only with a cut (its op follows on the runner pipe); a partial
		// line is torn, not an error
		src.ended = true
		h.poll(src, syscall.EPOLL_CTL_DEL)
	default:
		h.feed(src, h.rbuf[:n])
	}
}

// channelLine handles a line read from a channel: a deliver of that channel, for its
// module and port and every also target; anything else is a protocol error.
func (h *host) channelLine(src *source, line []byte) {
	f, err := decodeFrame(line)
	if err != nil {
		excerpt := string(line)
		if len(excerpt) > 200 {
			excerpt = excerpt[:200]
		}
		h.fatal(fmt.Sprintf("%sbad frame: %v: %q", src.what(), err, excerpt))
	}
	if f.Op == nil || *f.Op != "deliver" || f.Ch == nil || *f.Ch != src.ch || f.D == nil ||
		f.Module == nil || f.Port == nil || f.Msgs == nil {
		h.fatal(src.what() + "a frame is not a deliver with ch, d, module, port and msgs")
	}
	d := *f.D
	items := make([]work, 0, 1+len(f.Also))
	items = append(items, work{*f.Module, *f.Port, *f.Msgs, false})
	for _, t := range f.Also {
		items = append(items, work{t.module, t.port, *f.Msgs, false})
	}
	for _, it := range items {
		h.lastD[dkey{src.ch, it.module, it.port}] = d
	}
	// not a runner delivery: no seq of its own, and a hang names no index
	h.run(0, items)
	h.acks[src.ch] = d
}

// firstCopy says whether a runner deliver marked with a channel (its copy of frame d
// of that channel) is to be handled: not if this host handled that frame already.
func (h *host) firstCopy(f *frameIn) bool {
	if f.D == nil {
		h.fatal("deliver with ch needs an integer d")
	}
	key := dkey{*f.Ch, *f.Module, *f.Port}
	if *f.D <= h.lastD[key] {
		return false
	}
	h.lastD[key] = *f.D
	return true
}
