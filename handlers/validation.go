package handlers

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/go-chi/chi/v5"

	"callsig/calls"
)

// validator checks requests against the OpenAPI document, so the spec and
// the server cannot drift apart silently.
type validator struct {
	router routers.Router
	// opts lists every offending field; firstOnly stops at the first, for
	// bodies above multiErrorBody (see middleware).
	opts, firstOnly *openapi3filter.Options
	// routes maps "METHOD path" to every operation of the document, for
	// the lookup by chi's route pattern (see find). Built once, read only.
	routes map[string]*routers.Route
	// unbounded lists, per operation, its query parameters typed integer
	// with neither format nor maximum (see boundedForValidation).
	unbounded map[*openapi3.Operation][]string
}

// newValidator leaves shared unchanged: it is api.Document, which every
// server of the process reads.
func newValidator(shared *openapi3.T) (*validator, error) {
	// Match paths only: the document's servers may name hosts this process
	// is not reached by.
	own := *shared
	doc := &own
	doc.Servers = openapi3.Servers{{URL: "/"}}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, err
	}
	routes := make(map[string]*routers.Route)
	unbounded := make(map[*openapi3.Operation][]string)
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			routes[method+" "+path] = &routers.Route{Spec: doc, Server: doc.Servers[0],
				Path: path, PathItem: item, Method: method, Operation: op}
			for _, ps := range []openapi3.Parameters{item.Parameters, op.Parameters} {
				for _, p := range ps {
					if p.Value == nil || p.Value.In != openapi3.ParameterInQuery || p.Value.Schema == nil {
						continue
					}
					if sc := p.Value.Schema.Value; sc != nil && sc.Type.Is(openapi3.TypeInteger) && sc.Format == "" && sc.Max == nil {
						unbounded[op] = append(unbounded[op], p.Value.Name)
					}
				}
			}
		}
	}
	opts := &openapi3filter.Options{
		// Authentication is our own middleware's job.
		AuthenticationFunc: openapi3filter.NoopAuthenticationFunc,
		MultiError:         true,
		// The service applies defaults; the body the handler decodes stays
		// the bytes the client sent (and the idempotency fingerprint hashed).
		SkipSettingDefaults: true,
	}
	firstOnly := *opts
	firstOnly.MultiError = false
	return &validator{router: router, routes: routes, unbounded: unbounded, opts: opts, firstOnly: &firstOnly}, nil
}

// boundedForValidation returns r, or, when a query parameter of route
// typed integer with neither format nor maximum holds an integer past
// int64, a copy of r in which it reads as the largest int64. JSON Schema
// bounds no integer, and the contract treats any count above 100 as 100;
// kin-openapi parses every integer as an int64 and answered such a count
// "must be an integer". Only the copy is validated: the handler reads the
// value the client sent.
func (v *validator) boundedForValidation(r *http.Request, route *routers.Route) *http.Request {
	names := v.unbounded[route.Operation]
	if len(names) == 0 {
		return r
	}
	q, changed := r.URL.Query(), false
	for _, name := range names {
		for i, s := range q[name] {
			if n, err := parseUnbounded(s); err == nil && n == math.MaxInt64 {
				q[name][i], changed = strconv.FormatInt(n, 10), true
			}
		}
	}
	if !changed {
		return r
	}
	u := *r.URL
	u.RawQuery = q.Encode()
	rv := *r
	rv.URL = &u
	return &rv
}

// multiErrorBody is the largest body validated for every offending field.
// With MultiError, kin-openapi checks every item of an array even past a
// failed maxItems, and builds an error for each bad one: a 150 KB array of
// empty strings made a 15 MB answer, and a few such requests at once held
// hundreds of MB. A request of this API is well under 16 KiB (nine
// invitees, extendedData of at most 2 KiB); a larger one is told its first
// fault only, found without reading the rest.
const multiErrorBody = 16 << 10

// maxListedErrors bounds the fields an invalid_request lists, whatever
// the body: the rest are counted in the detail.
const maxListedErrors = 20

// middleware answers 400 invalid_request, listing every offending field,
// when the request breaks the document. Requests for operations the
// document does not describe pass through (routing answers them).
func (v *validator) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route, params := v.find(r)
		if route == nil {
			next.ServeHTTP(w, r)
			return
		}
		body, err := requestBody(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		opts := v.opts
		if len(body) > multiErrorBody {
			opts = v.firstOnly
		}
		err = openapi3filter.ValidateRequest(r.Context(), &openapi3filter.RequestValidationInput{
			Request: v.boundedForValidation(r, route), PathParams: params, Route: route, Options: opts,
		})
		setBody(r, body) // validation consumed it
		if err != nil {
			writeError(w, r, validationError(err))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// find returns r's route in the document and its path parameters, or a
// nil route when the document does not describe the operation. The
// validator runs inside chi's route groups, so chi has routed r already,
// and its route pattern is the document's path (a test walks the routes):
// the operation is one map lookup, where matching the path against every
// route of the document was most of the validator's cost, and the path
// parameters are chi's, the ones the handler reads. The same pattern
// always finds the same operation, whatever the path looks like (an empty
// segment that only chi matches is validated, and refused, every time).
// Outside chi's routes the document's own router matches the path.
func (v *validator) find(r *http.Request) (*routers.Route, map[string]string) {
	rctx := chi.RouteContext(r.Context())
	var route *routers.Route
	if rctx != nil {
		route = v.routes[r.Method+" "+rctx.RoutePattern()]
	}
	if route == nil {
		found, params, err := v.router.FindRoute(r)
		if err != nil {
			return nil, nil
		}
		return found, params
	}
	params := make(map[string]string, len(rctx.URLParams.Keys))
	for i, k := range rctx.URLParams.Keys {
		params[k] = rctx.URLParams.Values[i]
	}
	return route, params
}

// validationError turns kin-openapi's error tree into one invalid_request
// listing readable fields: "invitees/3", "pushConfig/title", a query
// parameter's or header's name, or "body" for the body as a whole.
func validationError(err error) *httpError {
	var fields []calls.FieldError
	collectFields(err, "", &fields)
	if len(fields) == 0 {
		fields = []calls.FieldError{{Field: "body", Message: "the request does not match the API description"}}
	}
	more := len(fields) - maxListedErrors
	if more > 0 {
		fields = fields[:maxListedErrors]
	}
	msgs := make([]string, len(fields), len(fields)+1)
	for i, f := range fields {
		msgs[i] = f.Field + ": " + f.Message
	}
	if more > 0 {
		msgs = append(msgs, fmt.Sprintf("and %d more", more))
	}
	return &httpError{code: codeInvalidRequest, detail: strings.Join(msgs, "; "), fields: fields}
}

func collectFields(err error, field string, out *[]calls.FieldError) {
	var (
		multi openapi3.MultiError
		reqE  *openapi3filter.RequestError
		schE  *openapi3.SchemaError
		parse *openapi3filter.ParseError
	)
	switch {
	case errors.As(err, &multi) && isMulti(err):
		for _, e := range multi {
			collectFields(e, field, out)
		}
	case errors.As(err, &reqE):
		switch {
		case reqE.Parameter != nil:
			field = reqE.Parameter.Name
		case reqE.RequestBody != nil:
			field = "body"
		}
		switch {
		case reqE.Err == nil:
			add(out, field, reqE.Reason)
		case errors.Is(reqE.Err, openapi3filter.ErrInvalidRequired):
			if reqE.Parameter != nil {
				add(out, field, "is required")
			} else {
				add(out, field, "request body is required")
			}
		default:
			collectFields(reqE.Err, field, out)
		}
	case errors.As(err, &schE):
		add(out, schemaField(field, schE), schemaMessage(schE))
	case errors.As(err, &parse):
		if path := parse.Path(); len(path) > 0 && field == "body" {
			parts := make([]string, len(path))
			for i, p := range path {
				parts[i] = fmt.Sprint(p)
			}
			field = strings.Join(parts, "/")
		}
		msg := parse.Reason
		if msg == "" && parse.Cause != nil {
			msg = parse.Cause.Error()
		}
		if field == "body" {
			msg = "malformed JSON: " + msg
		} else {
			msg = paramMessage(msg)
		}
		add(out, field, msg)
	default:
		add(out, field, err.Error())
	}
}

// isMulti reports whether err itself (not something it wraps) is a
// MultiError; MultiError.As matches any member, which would loop.
func isMulti(err error) bool {
	_, ok := err.(openapi3.MultiError)
	return ok
}

// schemaField is the JSON pointer of the failing value below the body or
// parameter; an unknown property is named itself.
func schemaField(base string, e *openapi3.SchemaError) string {
	path := e.JSONPointer()
	if name, ok := unknownProperty(e); ok {
		path = append(path, name)
	}
	if len(path) == 0 {
		return base
	}
	if base == "body" || base == "" {
		return strings.Join(path, "/")
	}
	return base + "/" + strings.Join(path, "/")
}

func schemaMessage(e *openapi3.SchemaError) string {
	if _, ok := unknownProperty(e); ok {
		return "unknown field"
	}
	if e.SchemaField == "required" {
		return "is required"
	}
	// kin-openapi's words for a number past float64 (1e400): the
	// client is told what is wrong, not how Go decodes.
	if strings.HasPrefix(e.Reason, "cannot convert json.Number") {
		return "must be a number within range"
	}
	return e.Reason
}

// unknownProperty recognises additionalProperties: false refusing a key.
func unknownProperty(e *openapi3.SchemaError) (string, bool) {
	name, ok := strings.CutPrefix(e.Reason, `property "`)
	if !ok {
		return "", false
	}
	return strings.CutSuffix(name, `" is unsupported`)
}

// paramMessage words a parameter that does not parse: "an invalid
// integer" becomes "must be an integer".
func paramMessage(reason string) string {
	if rest, ok := strings.CutPrefix(reason, "an invalid "); ok {
		return "must be " + article(rest) + rest
	}
	return reason
}

func article(word string) string {
	if word != "" && strings.ContainsRune("aeiou", rune(word[0])) {
		return "an "
	}
	return "a "
}

func add(out *[]calls.FieldError, field, msg string) {
	if field == "" {
		field = "request"
	}
	*out = append(*out, calls.FieldError{Field: clip(field), Message: clip(msg)})
}

// maxErrorText bounds a field name or message in an invalid_request: an
// unknown property's name comes from the body, and is repeated in detail
// and errors[] (a 900 KiB name made a 1.8 MB answer).
const maxErrorText = 256

// clip cuts s to maxErrorText bytes, on a character boundary, marking the
// cut.
func clip(s string) string {
	if len(s) <= maxErrorText {
		return s
	}
	cut := maxErrorText
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// parseUnbounded parses a decimal integer as ParseInt does, except that one
// past int64 reads as the largest int64. ParseInt gives that with ErrRange
// as soon as the digits overflow, before it looks at what follows: so
// "99999999999999999999abc" came back as the largest int64 too, and was
// taken for a count above 100 (a review).
func parseUnbounded(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if errors.Is(err, strconv.ErrRange) && n > 0 {
		digits := strings.TrimPrefix(s, "+")
		if digits != "" && strings.Trim(digits, "0123456789") == "" {
			return n, nil
		}
	}
	return n, err
}
