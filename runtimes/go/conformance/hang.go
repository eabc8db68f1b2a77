package hang

import (
	"time"

	"fifoflow"
)

func Handle(msg any, ctx *fifoflow.Ctx) (any, error) {
	if msg == "hang" {
		for {
			time.Sleep(time.Second)
		}
	}
	return msg, nil
}
