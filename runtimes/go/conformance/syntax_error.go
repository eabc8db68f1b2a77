package broken

import "fifoflow"

func Handle(msg any, ctx *fifoflow.Ctx) (any, error) {
	return msg nil
}
