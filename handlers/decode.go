package handlers

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"reflect"
	"strconv"
	"strings"
)

// decodeJSON decodes the request body into dst strictly: unknown fields,
// wrong types, malformed JSON and trailing data are 400 invalid_request
// naming the field. An empty body leaves dst untouched when optional.
func decodeJSON(r *http.Request, dst any, optional bool) error {
	body, err := requestBody(r)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if optional {
			return nil
		}
		return invalidField("body", "request body is required")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return invalidField("body", "must hold a single JSON object")
	}
	return nil
}

func decodeError(err error) error {
	var (
		syntax    *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
		maxBytes  *http.MaxBytesError
		unknownFx = "json: unknown field "
	)
	switch {
	case errors.As(err, &maxBytes):
		return err
	case errors.As(err, &syntax):
		return invalidField("body", "malformed JSON at byte %d: %s", syntax.Offset, strings.TrimPrefix(syntax.Error(), "json: "))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalidField("body", "malformed JSON: unexpected end of input")
	case errors.As(err, &typeErr):
		field := strings.ReplaceAll(typeErr.Field, ".", "/")
		if field == "" {
			return invalidField("body", "must be a JSON object, not %s", typeErr.Value)
		}
		return invalidField(field, "must be %s, not %s", jsonType(typeErr.Type.Kind().String()), typeErr.Value)
	case strings.HasPrefix(err.Error(), unknownFx):
		name := strings.Trim(strings.TrimPrefix(err.Error(), unknownFx), `"`)
		return invalidField(name, "unknown field")
	}
	return invalidField("body", "malformed JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
}

// jsonType names a Go kind the way a JSON client thinks of it.
func jsonType(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "slice", "array":
		return "an array"
	case "struct", "map":
		return "an object"
	case "float32", "float64":
		return "a number"
	}
	if strings.HasPrefix(kind, "int") || strings.HasPrefix(kind, "uint") {
		return "an integer"
	}
	return "a " + kind
}

// wholeNumber is an integer field of a request body. JSON Schema, and so
// api/openapi.yaml's validation, counts 90.0 and 9e1 as the integer 90
// (Python's json.dumps writes a float so), where encoding/json refuses
// them for an int: the spec let them through and the decoder answered
// 400. A fraction, or a value past int's range, is still refused.
type wholeNumber int

func (n *wholeNumber) UnmarshalJSON(b []byte) error {
	s := string(b)
	if s == "null" {
		return nil
	}
	if i, err := strconv.ParseInt(s, 10, 0); err == nil {
		*n = wholeNumber(i)
		return nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		kind := "number " + s
		if err != nil {
			kind = jsonKindOf(s)
		}
		return &json.UnmarshalTypeError{Value: kind, Type: reflect.TypeFor[int]()}
	}
	*n = wholeNumber(f)
	return nil
}

// jsonKindOf names the JSON value s as encoding/json's type errors do.
func jsonKindOf(s string) string {
	switch {
	case strings.HasPrefix(s, `"`):
		return "string"
	case s == "true" || s == "false":
		return "bool"
	case strings.HasPrefix(s, "["):
		return "array"
	case strings.HasPrefix(s, "{"):
		return "object"
	}
	return "number " + s
}
