package wait

import (
	"time"

	"fifoflow"
)

// Handle takes 0.3 s on "wait": the host is busy with a delivery meanwhile (a go
// handler blocks its host's one handling goroutine, as an awaited handler does).
func Handle(msg any, ctx *fifoflow.Ctx) (any, error) {
	if msg == "wait" {
		time.Sleep(300 * time.Millisecond)
	}
	return msg, nil
}
