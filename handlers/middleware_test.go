package handlers

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRequestID(t *testing.T) {
	var seen string
	h := requestID(slog.New(slog.DiscardHandler))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = infoFrom(r.Context()).id
	}))
	tests := []struct {
		name, incoming string
		keep           bool
	}{
		{"sane incoming kept", "3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b", true},
		{"none generated", "", false},
		{"header injection replaced", "abc\r\nX-Evil: 1", false},
		{"spaces replaced", "a b", false},
		{"too long replaced", strings.Repeat("a", 129), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			if tt.incoming != "" {
				r.Header["X-Request-Id"] = []string{tt.incoming}
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			got := w.Header().Get("X-Request-ID")
			if got == "" || got != seen {
				t.Fatalf("header %q, context %q", got, seen)
			}
			if (got == tt.incoming) != tt.keep {
				t.Fatalf("X-Request-ID = %q for incoming %q, keep=%v", got, tt.incoming, tt.keep)
			}
		})
	}
}

func TestRecoverPanics(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	h := requestID(log)(recoverPanics(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("boom")
	})))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	decodeProblem(t, w, 500, "internal")
	if strings.Contains(w.Body.String(), "boom") {
		t.Fatalf("panic value leaked to the client: %s", w.Body)
	}
	if !strings.Contains(logs.String(), "boom") || !strings.Contains(logs.String(), "goroutine") {
		t.Fatalf("panic not logged with its stack: %s", logs.String())
	}

	// http.ErrAbortHandler is net/http's own abort: let it through.
	abort := recoverPanics(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) }))
	defer func() {
		if p := recover(); p != http.ErrAbortHandler {
			t.Fatalf("recovered %v, want http.ErrAbortHandler", p)
		}
	}()
	abort.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
}

// echoBody answers with the body it reads.
var echoBody = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	_, _ = w.Write(b)
})

func TestBodyLimit(t *testing.T) {
	h := bodyLimit(16)(echoBody)
	tests := []struct {
		name          string
		body          string
		unknownLength bool
		want          int
	}{
		{"under", `{"a":1}`, false, 200},
		{"exactly", strings.Repeat("x", 16), false, 200},
		{"over by Content-Length", strings.Repeat("x", 17), false, 413},
		{"over while reading", strings.Repeat("x", 100), true, 413},
		{"empty", "", false, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/", strings.NewReader(tt.body))
			if tt.unknownLength {
				r.ContentLength = -1
				r.Body = io.NopCloser(strings.NewReader(tt.body))
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if tt.want == 413 {
				p := decodeProblem(t, w, 413, "payload_too_large")
				if !strings.Contains(p.Detail, "16 bytes") {
					t.Fatalf("detail = %q", p.Detail)
				}
				return
			}
			if w.Code != tt.want || w.Body.String() != tt.body {
				t.Fatalf("got %d %q", w.Code, w.Body)
			}
		})
	}
}

func TestRequireJSON(t *testing.T) {
	h := bodyLimit(1 << 10)(requireJSON(echoBody))
	tests := []struct {
		name, contentType, body string
		want                    int
		encoding                []string // Content-Encoding header lines
	}{
		{"json", "application/json", `{}`, 200, nil},
		{"json with charset", "application/json; charset=utf-8", `{}`, 200, nil},
		{"json upper case", "Application/JSON", `{}`, 200, nil},
		{"other charset", "application/json; charset=latin1", `{}`, 415, nil},
		{"text", "text/plain", `{}`, 415, nil},
		{"form", "application/x-www-form-urlencoded", `a=1`, 415, nil},
		{"no type with body", "", `{}`, 415, nil},
		{"malformed type", "application/", `{}`, 415, nil},
		{"no type, empty body", "", ``, 200, nil},
		// The body is read as sent, so only the identity coding is.
		{"gzip", "application/json", "\x1f\x8b\x08", 415, []string{"gzip"}},
		{"labelled br, sent plain", "application/json", `{}`, 415, []string{"br"}},
		{"identity then gzip", "application/json", `{}`, 415, []string{"identity, gzip"}},
		{"second header line", "application/json", `{}`, 415, []string{"identity", "deflate"}},
		{"identity", "application/json", `{}`, 200, []string{"Identity"}},
		{"encoding, empty body", "", ``, 200, []string{"gzip"}},
		// Not repeated in the answer: a header can be long.
		{"long encoding", "application/json", `{}`, 415, []string{strings.Repeat("x", 64<<10)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/calls/x/accept", strings.NewReader(tt.body))
			if tt.contentType != "" {
				r.Header.Set("Content-Type", tt.contentType)
			}
			for _, e := range tt.encoding {
				r.Header.Add("Content-Encoding", e)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if tt.want == 415 {
				decodeProblem(t, w, 415, "unsupported_media_type")
				if tt.encoding != nil && w.Header().Get("Accept-Encoding") != "identity" {
					t.Fatalf("415 for a coding with Accept-Encoding %q, want identity", w.Header().Get("Accept-Encoding"))
				}
				if w.Body.Len() > 1<<10 {
					t.Fatalf("a 415 of %d bytes", w.Body.Len())
				}
			} else if w.Code != tt.want || w.Body.String() != tt.body {
				t.Fatalf("got %d %q", w.Code, w.Body)
			}
		})
	}
}

func TestDecodeJSON(t *testing.T) {
	type body struct {
		Invitees []string `json:"invitees"`
		Timeout  int      `json:"timeout"`
		Push     *struct {
			Title string `json:"title"`
		} `json:"pushConfig"`
	}
	tests := []struct {
		name, body string
		optional   bool
		field      string // "" = success
	}{
		{"ok", `{"invitees":["bob"],"timeout":5}`, false, ""},
		{"empty optional", ``, true, ""},
		{"empty required", ``, false, "body"},
		{"whitespace optional", " \n", true, ""},
		{"unknown field", `{"invitees":["bob"],"extra":1}`, false, "extra"},
		{"unknown nested field", `{"pushConfig":{"title":"x","sound":"y"}}`, false, "sound"},
		{"wrong type", `{"timeout":"5"}`, false, "timeout"},
		{"wrong nested type", `{"pushConfig":{"title":5}}`, false, "pushConfig/title"},
		{"not an object", `[1]`, false, "body"},
		{"malformed", `{"invitees":`, false, "body"},
		{"syntax error", `{"invitees" 1}`, false, "body"},
		{"trailing data", `{} {}`, false, "body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/", strings.NewReader(tt.body))
			var b body
			err := decodeJSON(r, &b, tt.optional)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("decodeJSON: %v", err)
				}
				return
			}
			p := toProblem(err)
			if p.Code != "invalid_request" || len(p.Errors) != 1 || p.Errors[0].Field != tt.field {
				t.Fatalf("problem = %+v, want field %q", p, tt.field)
			}
		})
	}
}

// An integer field takes what JSON Schema counts as an integer (the spec's
// validation lets 90.0 and 9e1 through), and refuses the rest with a
// message naming what came.
func TestWholeNumberFields(t *testing.T) {
	for _, tt := range []struct {
		json string
		want int
		msg  string // "" = decoded to want
	}{
		{`90`, 90, ""},
		{`90.0`, 90, ""},
		{`9e1`, 90, ""},
		{`-5`, -5, ""},
		{`null`, 0, ""},
		{`90.5`, 0, "must be an integer, not number 90.5"},
		{`"90"`, 0, "must be an integer, not string"},
		{`true`, 0, "must be an integer, not bool"},
		{`1e300`, 0, "must be an integer, not number 1e300"},
	} {
		t.Run(tt.json, func(t *testing.T) {
			var b struct {
				Timeout wholeNumber `json:"timeout"`
			}
			err := decodeJSON(httptest.NewRequest("POST", "/", strings.NewReader(`{"timeout":`+tt.json+`}`)), &b, false)
			if tt.msg == "" {
				if err != nil || int(b.Timeout) != tt.want {
					t.Fatalf("timeout %s: %d, %v; want %d", tt.json, b.Timeout, err, tt.want)
				}
				return
			}
			p := toProblem(err)
			if len(p.Errors) != 1 || p.Errors[0].Field != "timeout" || p.Errors[0].Message != tt.msg {
				t.Fatalf("timeout %s: %+v, want field timeout: %q", tt.json, p, tt.msg)
			}
		})
	}
}
