// Package web embeds callsig's browser demo: one page of plain HTML, CSS
// and JavaScript (no framework, no build step) that signs in with
// POST /dev/token, listens with EventSource on GET /events and drives every
// call action through the REST API with fetch. Handler serves it under
// /demo/ with strict caching and security headers.
//
// The page is a client of the public HTTP contract and nothing else: this
// package must never import the server's own packages, and the page must
// never load anything from outside the server it came from.
package web
