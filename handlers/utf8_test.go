package handlers

import "testing"

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
