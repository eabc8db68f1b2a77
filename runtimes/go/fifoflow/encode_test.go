package fifoflow

import (
	"encoding/json"
	"math"
	"testing"
)

func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	values := []any{
		nil, true, false, 0.0, -0.0, 1.0, -2.0, 1.5, 1e-7, 1e21, 123456789012345.0, 1e15, 3.14159,
		"", "plain", "quote\" backslash\\ nl\n tab\t cr\r ctl\x01 é ✓ \xff end", "<&>",
		[]any{1.0, "a", nil, []any{}}, map[string]any{"k": []any{true}},
	}
	for _, v := range values {
		got, err := appendJSON(nil, v)
		if err != nil {
			t.Fatalf("%v: %v", v, err)
		}
		var back, want any
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("%q is not JSON: %v", got, err)
		}
		ref, _ := json.Marshal(v)
		json.Unmarshal(ref, &want)
		a, _ := json.Marshal(back)
		w, _ := json.Marshal(want)
		if string(a) != string(w) {
			t.Errorf("%v: got %s, encoding/json %s", v, got, ref)
		}
	}
	if _, err := appendJSON(nil, math.NaN()); err == nil {
		t.Error("NaN must not encode")
	}
	if got, err := appendJSON(nil, json.RawMessage("[1,\n 2]")); err != nil || string(got) != "[1,2]" {
		t.Errorf("a RawMessage is compacted: got %q, %v", got, err)
	}
	if _, err := appendJSON(nil, json.RawMessage("[1,,2]")); err == nil {
		t.Error("a RawMessage that is not JSON must not encode")
	}
}
