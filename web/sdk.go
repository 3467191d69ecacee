package web

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"net/http"
	"time"
)

// sdkSource is the JavaScript client, web/sdk/callsig.js: one ES module
// with no build step, served as is.
//
//go:embed sdk/callsig.js
var sdkSource []byte

// SDKPath is where the client is served, so a page can
// `import { CallsigClient } from '/sdk/callsig.js'`.
const SDKPath = "/sdk/callsig.js"

// SDKHandler serves the JavaScript client at SDKPath with Cache-Control:
// no-cache and an ETag: the URL has no version in it, so a browser must
// revalidate (a 304 when unchanged) and never keeps running a client older
// than the server it talks to.
func SDKHandler() http.Handler {
	sum := sha256.Sum256(sdkSource)
	etag := `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", contentTypes[".js"])
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", etag)
		h.Set("X-Content-Type-Options", "nosniff")
		http.ServeContent(w, r, "callsig.js", time.Time{}, bytes.NewReader(sdkSource))
	})
}
