package testkit

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"callsig/api"
)

// specValidator checks responses against api/openapi.yaml, so the spec
// cannot drift from what the server really answers.
type specValidator struct {
	doc    *openapi3.T
	router routers.Router
}

var (
	specOnce sync.Once
	specVal  *specValidator
	specErr  error
)

func loadSpec(t testing.TB) *specValidator {
	specOnce.Do(func() {
		doc, err := api.Load(context.Background())
		if err != nil {
			specErr = err
			return
		}
		r, err := gorillamux.NewRouter(doc)
		if err != nil {
			specErr = err
			return
		}
		specVal = &specValidator{doc: doc, router: r}
	})
	if specErr != nil {
		t.Fatalf("load openapi spec: %v", specErr)
	}
	return specVal
}

// validate checks one exchange; reqBody is the body that was sent.
func (v *specValidator) validate(req *http.Request, reqBody []byte, status int, header http.Header, body []byte) error {
	// Route on the path alone: the spec's server is "/".
	r := req.Clone(context.Background())
	r.URL.Scheme, r.URL.Host, r.Host = "", "", ""
	// The spec lists no path with a trailing slash (Redocly's recommended
	// rules forbid it); the one such address, the demo page /demo/, is
	// documented as GET /demo/{file} with the name index.html.
	if r.URL.Path == "/demo/" {
		r.URL.Path, r.URL.RawPath = "/demo/index.html", ""
	}
	if reqBody != nil {
		r.Body = io.NopCloser(bytes.NewReader(reqBody))
	}
	route, params, err := v.router.FindRoute(r)
	if err != nil {
		// Only the answers for paths and methods the API does not have
		// (404 not_found, 405) may come from outside the spec.
		if (errors.Is(err, routers.ErrPathNotFound) && status == http.StatusNotFound) ||
			(errors.Is(err, routers.ErrMethodNotAllowed) && status == http.StatusMethodNotAllowed) {
			return nil
		}
		return err
	}
	in := &openapi3filter.RequestValidationInput{
		Request: r, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, IncludeResponseStatus: true, MultiError: true},
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: status, Header: header,
		Body: io.NopCloser(bytes.NewReader(body)), Options: in.Options,
	}
	if strings.HasPrefix(header.Get("Content-Type"), "text/event-stream") {
		return nil // streams are checked by the SSE client, event by event
	}
	return openapi3filter.ValidateResponse(context.Background(), out)
}
