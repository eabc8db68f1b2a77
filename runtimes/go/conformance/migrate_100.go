package migrate100

import "fifoflow"

func Migrate(old map[string]any, ctx *fifoflow.Ctx) map[string]any {
	return map[string]any{"n": 100.0}
}

func Handle(msg any, ctx *fifoflow.Ctx) (any, error) {
	n, _ := ctx.State["n"].(float64)
	ctx.State["n"] = n + 1
	return n + 1, nil
}
