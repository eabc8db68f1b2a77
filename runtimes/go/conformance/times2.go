package times2

import "fifoflow"

func Handle(msg any, ctx *fifoflow.Ctx) (any, error) { return msg.(float64) * 2, nil }
