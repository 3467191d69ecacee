package handlers

import (
	"runtime"
	"strings"
	"testing"
)

func TestInvalidText(t *testing.T) {
	tests := []struct {
		name, body, field string
		bad               bool
	}{
		{"ascii", `{"extendedData":"hi"}`, "", false},
		{"utf-8", `{"extendedData":"héllo ☎ 🙂"}`, "", false},
		{"escaped pair", `{"extendedData":"\ud83d\ude42"}`, "", false},
		{"literal replacement char", `{"extendedData":"a` + "\uFFFD" + `"}`, "", false},
		{"escaped replacement char", `{"extendedData":"a\uFFFD"}`, "", false},
		{"invalid byte", "{\"extendedData\":\"a\xffb\"}", "extendedData", true},
		{"truncated sequence", "{\"extendedData\":\"\xe2\x98\"}", "extendedData", true},
		{"unpaired high surrogate", `{"extendedData":"\ud83d"}`, "extendedData", true},
		{"unpaired low surrogate", `{"extendedData":"\uDE42x"}`, "extendedData", true},
		{"nested", "{\"mode\":\"general\",\"pushConfig\":{\"title\":\"ok\",\"content\":\"\xc3\"}}", "pushConfig/content", true},
		{"array element", "{\"invitees\":[\"bob\",\"carol\",\"\xff\"]}", "invitees/2", true},
		{"after a nested array", "{\"invitees\":[\"bob\",[1,2]],\"extendedData\":\"\xff\"}", "extendedData", true},
		{"in a key", "{\"ext\xff\":1}", "ext\uFFFD", true},
		{"top-level string", "\"\xff\"", "body", true},
		{"nested too deep", strings.Repeat("[", 40) + "\"\xff\"", "body", true},
		{"too deep, valid", strings.Repeat("[", 40) + `"\ud83d\ude42"`, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			field, bad := invalidText([]byte(tt.body))
			if bad != tt.bad || field != tt.field {
				t.Fatalf("invalidText = %q, %v; want %q, %v", field, bad, tt.field, tt.bad)
			}
		})
	}
}

// A deeply nested body costs the walk its depth cap, not a level per
// bracket: a 1 MiB body of "[" with one bad byte used to allocate 150 MB.
func TestInvalidTextDeepBodyIsCheap(t *testing.T) {
	body := []byte(strings.Repeat("[", DefaultBodyLimit-16) + "\"\xff\"")
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	field, bad := invalidText(body)
	runtime.ReadMemStats(&after)
	if field != "body" || !bad {
		t.Fatalf("invalidText = %q, %v; want body, true", field, bad)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4*uint64(len(body)) {
		t.Fatalf("a %d-byte body nested deep allocated %d bytes", len(body), alloc)
	}
}
