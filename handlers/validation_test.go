package handlers

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/go-chi/chi/v5"
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
	if _, ok := routed.routes.Load("POST /things/{id}"); !ok {
		t.Error("the routed validator kept no route for POST /things/{id}")
	}
	n := 0
	routed.routes.Range(func(key, _ any) bool { n++; return true })
	if n != 1 {
		t.Errorf("the routed validator kept %d routes, want 1 (/other is not in the document)", n)
	}
}

// A route is kept for chi's pattern only when it is the document's route
// of that very path: should the two routers ever disagree on a path (chi
// routes on the raw path, the document's router may not), the request is
// validated against what the document's router found, and that route is
// not kept where it would stand for another operation.
func TestValidatorKeepsOnlyTheRouteOfThePattern(t *testing.T) {
	v := smallValidator(t)
	request := func(pattern string) *http.Request {
		r := httptest.NewRequest("POST", "/things/abc", nil)
		rctx := chi.NewRouteContext()
		rctx.RoutePatterns = []string{pattern}
		rctx.URLParams.Add("id", "abc")
		return r.WithContext(context.WithValue(r.Context(), chi.RouteCtxKey, rctx))
	}
	route, params := v.find(request("/elsewhere/{id}"))
	if route == nil || route.Path != "/things/{id}" || params["id"] != "abc" {
		t.Fatalf("find = %v %v, want the route of /things/{id}", route, params)
	}
	if kept, ok := v.routes.Load("POST /elsewhere/{id}"); ok {
		t.Fatalf("kept %v for another pattern", kept)
	}
	if route, _ := v.find(request("/things/{id}")); route == nil {
		t.Fatal("no route for /things/{id}")
	}
	if _, ok := v.routes.Load("POST /things/{id}"); !ok {
		t.Fatal("the route of POST /things/{id} was not kept")
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
	}{
		{"too many invitees", "POST", "/calls", `{"invitees":["a","b","c","d","e","f","g","h","i","j"]}`, "invitees"},
		{"unknown field", "POST", "/calls", `{"invitees":["bob"],"colour":"red"}`, "colour"},
		{"timeout range", "POST", "/calls", `{"invitees":["bob"],"timeout":601}`, "timeout"},
		{"count not an integer", "GET", "/calls?count=many", ``, "count"},
		{"call ID charset", "POST", "/calls/abc$def/accept", ``, "callID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := decodeProblem(t, do(h, req{method: tt.method, path: tt.path, body: tt.body, header: hdr}), 400, "invalid_request")
			if len(p.Errors) == 0 || p.Errors[0].Field != tt.field {
				t.Fatalf("errors = %+v, want field %s", p.Errors, tt.field)
			}
		})
	}
}
