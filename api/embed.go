// Package api holds callsig's OpenAPI 3.0 specification, the single source
// of truth for the HTTP contract. The handlers validate every request against
// it and the tests validate responses against it, so it must describe exactly
// what the server does. This package only embeds and loads the document; it
// must never import the server's own packages.
package api

import (
	"context"
	_ "embed"
	"fmt"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
)

// Spec is the raw OpenAPI document, served as GET /openapi.yaml.
//
//go:embed openapi.yaml
var Spec []byte

// Load parses and validates Spec. Each call returns a fresh document, so a
// caller may mutate it (for example to set servers in a test) without
// affecting others.
func Load(ctx context.Context) (*openapi3.T, error) {
	loader := openapi3.NewLoader()
	loader.Context = ctx
	doc, err := loader.LoadFromData(Spec)
	if err != nil {
		return nil, fmt.Errorf("load openapi.yaml: %w", err)
	}
	if err := doc.Validate(ctx); err != nil {
		return nil, fmt.Errorf("validate openapi.yaml: %w", err)
	}
	return doc, nil
}

// Document returns Spec parsed and validated once per process and shared:
// callers must not modify it (Load gives a document of one's own). Every
// server a process starts reads the same embedded bytes, and parsing them
// is not free: about 25 ms, and 125–200 ms under the race detector, paid by
// each app a test starts (a cluster test starts three).
func Document() (*openapi3.T, error) { return document() }

var document = sync.OnceValues(func() (*openapi3.T, error) { return Load(context.Background()) })
