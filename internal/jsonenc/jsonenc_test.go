package jsonenc

import (
	"encoding/json"
	"testing"
)

func TestMarshal(t *testing.T) {
	for _, tc := range []struct {
		in   any
		want string
	}{
		{map[string]string{"x": "<b>&</b>"}, `{"x":"<b>&</b>"}`},
		{"line\nbreak", `"line\nbreak"`},
		{"sep\u2028par\u2029", `"sep\u2028par\u2029"`},
		{json.RawMessage(`{"a": "<"}`), `{"a":"<"}`},
		{[]int{1, 2}, `[1,2]`},
	} {
		got, err := Marshal(tc.in)
		if err != nil || string(got) != tc.want {
			t.Errorf("Marshal(%#v) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}
