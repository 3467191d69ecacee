package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed demo
var files embed.FS

// Prefix is the path the demo is served under.
const Prefix = "/demo/"

// contentTypes are the only kinds of file the demo holds; anything else in
// demo/ is a mistake that Handler refuses to start with.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
}

// securityPolicy allows the page its own script, style sheet and API, and
// nothing else: no inline script, no third-party origin, no framing.
const securityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

type asset struct {
	body        []byte
	contentType string
	etag        string
}

// Handler serves the demo: GET /demo/ is index.html, GET /demo/<file> the
// other files. Unknown names get a plain 404 (the API's router turns it
// into its problem+json). Responses carry Cache-Control: no-cache with an
// ETag, so a browser revalidates and always runs the page the server has.
func Handler() http.Handler {
	assets, err := load(files)
	if err != nil {
		panic(err) // the embedded files are fixed at build time; the tests load them
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, Prefix)
		if name == "" {
			name = "index.html"
		}
		a, ok := assets[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.contentType)
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", a.etag)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		if a.contentType == contentTypes[".html"] {
			h.Set("Content-Security-Policy", securityPolicy)
		}
		// ServeContent answers If-None-Match with 304 and honours HEAD.
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.body))
	})
}

// load reads every file of the embedded demo directory.
func load(fsys fs.FS) (map[string]asset, error) {
	sub, err := fs.Sub(fsys, "demo")
	if err != nil {
		return nil, err
	}
	out := map[string]asset{}
	err = fs.WalkDir(sub, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ct, ok := contentTypes[path.Ext(name)]
		if !ok {
			return &fs.PathError{Op: "serve", Path: name, Err: fs.ErrInvalid}
		}
		body, err := fs.ReadFile(sub, name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		out[name] = asset{body: body, contentType: ct, etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	return out, err
}
