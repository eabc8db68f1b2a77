package fifoflow

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestParseJSONMatchesEncodingJSON(t *testing.T) {
	good := []string{
		`{"op":"deliver","seq":3,"msgs":[1,-2.5e3,"x\"y\\z\n\u00e9\ud83d\ude00\/",true,false,null,{},[]]}`,
		` [ 1 , 2 ] `, `"\ud800"`, `"é✓"`, `0`, `-0.5`, `1E+2`, `{"a":{"b":[{"c":null}]}}`,
	}
	for _, text := range good {
		got, err := parseJSON([]byte(text))
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		var want any
		if err := json.Unmarshal([]byte(text), &want); err != nil {
			t.Fatalf("%s: encoding/json: %v", text, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %#v, want %#v", text, got, want)
		}
	}
	bad := []string{``, `{`, `{"a"}`, `{"a":1,}`, `[1,]`, `01`, `1.`, `-`, `"a`, "\"\x01\"", `tru`, `{} x`, `"\x"`, `1e999`, `nan`}
	for _, text := range bad {
		if _, err := parseJSON([]byte(text)); err == nil {
			t.Errorf("%q must not parse", text)
		}
	}
}
