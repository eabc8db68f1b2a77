package raises

import (
	"errors"

	"fifoflow"
)

func Handle(msg any, ctx *fifoflow.Ctx) (any, error) {
	if msg == 2.0 {
		return nil, errors.New("two is not allowed")
	}
	return msg, nil
}
