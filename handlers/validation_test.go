package handlers

import (
	"context"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/go-chi/chi/v5"

	"callsig/api"
)

// smallSpec is a self-contained document, so these tests do not depend on
// the details of api/openapi.yaml.
const smallSpec = `
openapi: 3.0.3
info: {title: t, version: "1"}
servers: [{url: "https://api.example.com/v1"}]
paths:
  /things/{id}:
    parameters:
      - {name: id, in: path, required: true, schema: {type: string, pattern: '^[a-z]+$'}}
    post:
      parameters:
        - {name: limit, in: query, schema: {type: integer, minimum: 1}}
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              additionalProperties: false
              required: [names]
              properties:
                names:
                  type: array
                  maxItems: 2
                  items: {type: string, pattern: '^[a-z]+$'}
                mode: {type: string, enum: [a, b], default: a}
                nested:
                  type: object
                  additionalProperties: false
                  properties:
                    n: {type: integer}
      responses:
        '200': {description: ok}
`

func smallValidator(t *testing.T) *validator {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData([]byte(smallSpec))
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatal(err)
	}
	v, err := newValidator(doc)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// The validator on its own (matching each path against the document) and
// inside chi's routes, as the server mounts it (finding the route by chi's
// pattern, kept after the first request): the same answers either way.
func TestValidationErrors(t *testing.T) {
	var got string
	read := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = string(b)
	})
	bare := smallValidator(t)
	routed := smallValidator(t)
	mux := chi.NewRouter()
	mux.Group(func(r chi.Router) {
		r.Use(bodyLimit(1<<10), routed.middleware)
		r.Post("/things/{id}", read)
		r.Post("/other", read)
	})
	for _, setup := range []struct {
		name string
		h    http.Handler
	}{
		{"bare", bodyLimit(1 << 10)(bare.middleware(read))},
		{"in chi", mux},
	} {
		t.Run(setup.name, func(t *testing.T) { testValidationErrors(t, setup.h, &got) })
	}
}

// Every route that passes through the validator is an operation of the
// document under chi's very pattern: the validator finds operations by it,
// so a route spelled otherwise would be matched path by path instead.
func TestValidatedRoutesAreDocumentPaths(t *testing.T) {
	routes, ok := newTestHandler(t, nil).(chi.Routes)
	if !ok {
		t.Fatal("the handler is no chi.Routes")
	}
	doc, err := api.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	v, err := newValidator(doc)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	err = chi.Walk(routes, func(method, pattern string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if !strings.HasPrefix(pattern, "/calls") && !strings.HasPrefix(pattern, "/webhooks") {
			return nil // not in the validated groups
		}
		n++
		if v.routes[method+" "+pattern] == nil {
			t.Errorf("%s %s is routed but is no operation of the document", method, pattern)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Fatalf("walked %d validated routes, want the calls and webhooks API", n)
	}
}

// A path with an empty segment, which chi routes and the document's own
// router does not, is validated by chi's pattern, and refused the same way
// on a cold server as on a warm one.
func TestEmptyPathSegmentIsValidated(t *testing.T) {
	h := newTestHandler(t, nil)
	for range 2 {
		w := do(h, req{method: "POST", path: "/calls//accept", body: `{}`, header: authed(t, "alice")})
		p := decodeProblem(t, w, 400, "invalid_request")
		if len(p.Errors) == 0 || p.Errors[0].Field != "callID" {
			t.Fatalf("errors %+v, want callID", p.Errors)
		}
	}
}

func testValidationErrors(t *testing.T, h http.Handler, got *string) {
	tests := []struct {
		name, path, body string
		fields           []string // nil: valid
	}{
		{"valid, body untouched (no defaults written)", "/things/abc", `{"names":["x"]}`, nil},
		{"unknown path passes through", "/other", `{"zzz":1}`, nil},
		{"missing required", "/things/abc", `{}`, []string{"names"}},
		{"too many items", "/things/abc", `{"names":["a","b","c"]}`, []string{"names"}},
		{"bad item", "/things/abc", `{"names":["a","B!"]}`, []string{"names/1"}},
		{"unknown property", "/things/abc", `{"names":[],"zzz":1}`, []string{"zzz"}},
		{"unknown nested property", "/things/abc", `{"names":[],"nested":{"q":1}}`, []string{"nested/q"}},
		{"wrong type", "/things/abc", `{"names":"a"}`, []string{"names"}},
		{"enum", "/things/abc", `{"names":[],"mode":"c"}`, []string{"mode"}},
		{"several at once", "/things/abc", `{"names":["a","b","c"],"mode":"c"}`, []string{"mode", "names"}},
		{"path parameter", "/things/ABC", `{"names":[]}`, []string{"id"}},
		{"query parameter", "/things/abc?limit=x", `{"names":[]}`, []string{"limit"}},
		{"query minimum", "/things/abc?limit=0", `{"names":[]}`, []string{"limit"}},
		{"missing body", "/things/abc", ``, []string{"body"}},
		{"malformed body", "/things/abc", `{"names":`, []string{"body"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			*got = ""
			r := httptest.NewRequest("POST", tt.path, strings.NewReader(tt.body))
			r.Header.Set("Content-Type", "application/json; charset=utf-8")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if tt.fields == nil {
				if w.Code != 200 || *got != tt.body {
					t.Fatalf("got %d %s; handler read %q, want %q", w.Code, w.Body, *got, tt.body)
				}
				return
			}
			p := decodeProblem(t, w, 400, "invalid_request")
			var fields []string
			for _, f := range p.Errors {
				if f.Message == "" {
					t.Fatalf("empty message for %s", f.Field)
				}
				fields = append(fields, f.Field)
			}
			slices.Sort(fields)
			if !slices.Equal(fields, tt.fields) {
				t.Fatalf("fields = %v, want %v (%s)", fields, tt.fields, w.Body)
			}
			if !strings.Contains(p.Detail, tt.fields[0]+": ") {
				t.Fatalf("detail %q does not name %s", p.Detail, tt.fields[0])
			}
		})
	}
}

// TestValidationAgainstSpec checks the embedded document is wired in.
func TestValidationAgainstSpec(t *testing.T) {
	h := newTestHandler(t, nil)
	hdr := authed(t, "alice")
	tests := []struct {
		name, method, path, body, field string
		message                         string // "": any
	}{
		{"too many invitees", "POST", "/calls", `{"invitees":["a","b","c","d","e","f","g","h","i","j"]}`, "invitees", ""},
		{"unknown field", "POST", "/calls", `{"invitees":["bob"],"colour":"red"}`, "colour", "unknown field"},
		{"timeout range", "POST", "/calls", `{"invitees":["bob"],"timeout":601}`, "timeout", ""},
		// Past float64: said in the client's words, not Go's.
		{"timeout past float64", "POST", "/calls", `{"invitees":["bob"],"timeout":1e400}`, "timeout", "must be a number within range"},
		{"count not an integer", "GET", "/calls?count=many", ``, "count", ""},
		{"call ID charset", "POST", "/calls/abc$def/accept", ``, "callID", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := decodeProblem(t, do(h, req{method: tt.method, path: tt.path, body: tt.body, header: hdr}), 400, "invalid_request")
			if len(p.Errors) == 0 || p.Errors[0].Field != tt.field {
				t.Fatalf("errors = %+v, want field %s", p.Errors, tt.field)
			}
			if tt.message != "" && p.Errors[0].Message != tt.message {
				t.Fatalf("message %q, want %q", p.Errors[0].Message, tt.message)
			}
		})
	}
}

// A body with thousands of faults gets a short answer, and a large one is
// not checked item by item: each bad item was an error of its own, kept in
// memory and listed twice in the answer (a 150 KB array of empty strings
// made a 15 MB answer).
func TestValidationErrorsAreBounded(t *testing.T) {
	// A deployment's limit may be larger than the default: the large
	// bodies must reach the validator.
	h := newTestHandler(t, func(d *Deps) { d.BodyLimit = 1 << 20 })
	hdr := authed(t, "alice")
	invitees := func(n int) string {
		return `{"invitees":[` + strings.TrimSuffix(strings.Repeat(`"",`, n), ",") + `]}`
	}
	tests := []struct {
		name   string
		body   string
		listed int    // fields in errors
		more   string // the detail's count of the rest ("": none)
	}{
		// Under multiErrorBody: every fault found, the first 20 listed.
		{"many faults", invitees(5000), maxListedErrors, "; and "},
		// Over it: the first fault only.
		{"large body", invitees(100_000), 1, ""},
		// A name from the body is cut, not repeated whole (twice).
		{"long unknown property", `{"invitees":["bob"],"` + strings.Repeat("x", 100_000) + `":1}`, 1, ""},
		{"long unknown property, small body", `{"invitees":["bob"],"` + strings.Repeat("é", 5000) + `":1}`, 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := do(h, req{method: "POST", path: "/calls", body: tt.body, header: hdr})
			if w.Body.Len() > 8<<10 {
				t.Fatalf("answer of %d bytes to a body of %d", w.Body.Len(), len(tt.body))
			}
			p := decodeProblem(t, w, 400, "invalid_request")
			if len(p.Errors) != tt.listed {
				t.Fatalf("%d fields listed, want %d: %s", len(p.Errors), tt.listed, p.Detail)
			}
			if tt.more != "" && !strings.Contains(p.Detail, tt.more) || tt.more == "" && strings.Contains(p.Detail, " more") {
				t.Fatalf("detail %q, want it to count the rest: %v", p.Detail, tt.more != "")
			}
		})
	}
}

// Every server of a process validates against the one shared
// api.Document: building a validator must leave it as it is (the
// validator's servers are its own).
func TestValidatorLeavesTheSharedDocumentAlone(t *testing.T) {
	shared, err := api.Document()
	if err != nil {
		t.Fatal(err)
	}
	before := slices.Clone(shared.Servers)
	v, err := newValidator(shared)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(before, shared.Servers) { // the same *Server values
		t.Fatalf("servers of the shared document after newValidator: %v, want %v", shared.Servers, before)
	}
	for _, r := range v.routes {
		if r.Spec == shared || r.Server.URL != "/" {
			t.Fatalf("route %s %s: the shared document, or server %q; want a document of its own matching /", r.Method, r.Path, r.Server.URL)
		}
	}
}

// A count past int64 is a count above 100, and only digits are one:
// ParseInt gives the largest int64 as soon as the digits overflow, before
// it looks at what follows.
func TestParseUnbounded(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"5", 5, true},
		{"+7", 7, true},
		{"99999999999999999999", math.MaxInt64, true},
		{"+99999999999999999999", math.MaxInt64, true},
		{"99999999999999999999abc", 0, false},
		{"99999999999999999999.5", 0, false},
		{"99999999999999999999 ", 0, false},
		{"-99999999999999999999", 0, false},
		{"5abc", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		n, err := parseUnbounded(tt.in)
		if (err == nil) != tt.ok || tt.ok && n != tt.want {
			t.Errorf("parseUnbounded(%q) = %d, %v; want %d, ok %v", tt.in, n, err, tt.want, tt.ok)
		}
	}
}
