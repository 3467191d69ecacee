// Package handlers is callsig's HTTP adapter: a chi router, the middleware
// every request passes (request ID, access log, metrics, recovery, CORS,
// JWT auth (HS256, and the identity provider's keys through a JWKS),
// rate limit, body limit, content type, OpenAPI validation,
// idempotency) and thin handlers that decode a request, call calls.Service
// and encode its result.
//
// It must never decide anything about calls: rules live in package calls.
// Errors become application/problem+json in exactly one place (writeError).
// Streaming endpoints (GET /events) never sit behind a middleware that
// buffers or times out the response.
package handlers
