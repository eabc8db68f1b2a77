package count

import "fifoflow"

func Handle(msg any, ctx *fifoflow.Ctx) (any, error) {
	n, _ := ctx.State["n"].(float64)
	ctx.State["n"] = n + 1
	return n + 1, nil
}
