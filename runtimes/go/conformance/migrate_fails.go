package migratefails

import "fifoflow"

func Migrate(old map[string]any, ctx *fifoflow.Ctx) map[string]any {
	old["n"] = -1.0
	ctx.State["n"] = -1.0
	panic("migration failed")
}

func Handle(msg any, ctx *fifoflow.Ctx) (any, error) { return 0, nil }
