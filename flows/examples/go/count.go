// Counts words: the running count of each word lives in ctx.State, so it survives
// restarts and code swaps.
package count

import (
	"fmt"

	"fifoflow"
)

func Init(ctx *fifoflow.Ctx) {
	if _, ok := ctx.State["counts"]; !ok {
		ctx.State["counts"] = map[string]any{}
	}
}

func Handle(msg any, ctx *fifoflow.Ctx) (any, error) {
	word, ok := msg.(string)
	if !ok {
		return nil, fmt.Errorf("expected a word, got %v", msg)
	}
	counts := ctx.State["counts"].(map[string]any)
	n, _ := counts[word].(float64)
	counts[word] = n + 1
	return map[string]any{"word": word, "count": n + 1}, nil
}
