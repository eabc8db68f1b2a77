package ports

import "fifoflow"

func Handle(msg any, ctx *fifoflow.Ctx) (any, error) {
	ctx.Emit("side", msg)
	return msg, nil
}
