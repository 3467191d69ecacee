package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"callsig/handlers"
)

// client makes the REST requests of the load: one shared connection pool,
// large enough that every worker keeps its own keep-alive connection.
type client struct {
	base   string
	http   *http.Client
	tokens *tokens
	keyed  bool // every POST carries a fresh Idempotency-Key
}

func newClient(base string, tok *tokens) *client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        0, // no global cap
		MaxIdleConnsPerHost: 4096,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &client{base: strings.TrimRight(base, "/"), http: &http.Client{Transport: tr, Timeout: 60 * time.Second}, tokens: tok}
}

func (c *client) close() { c.http.CloseIdleConnections() }

// httpError is a request that did not get the expected status.
type httpError struct {
	method, path string
	status       int
	body         string
}

func (e *httpError) Error() string {
	return fmt.Sprintf("%s %s: %d %s", e.method, e.path, e.status, e.body)
}

// post sends body as user and decodes the answer into out when the status
// is want. It returns the time the request was handed to the transport.
func (c *client) post(ctx context.Context, user, path string, body []byte, want int, out any) (time.Time, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
	if err != nil {
		return time.Time{}, err
	}
	req.Header.Set("Authorization", c.tokens.bearer(user))
	req.Header.Set("Content-Type", "application/json")
	if c.keyed {
		req.Header.Set("Idempotency-Key", rand.Text())
	}
	sent := time.Now()
	res, err := c.http.Do(req)
	if err != nil {
		return sent, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return sent, err
	}
	if res.StatusCode != want {
		return sent, &httpError{method: http.MethodPost, path: path, status: res.StatusCode, body: strings.TrimSpace(string(b))}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return sent, fmt.Errorf("POST %s: decode: %w", path, err)
		}
	}
	return sent, nil
}

// get fetches path without authentication (health, metrics).
func (c *client) get(ctx context.Context, path string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return 0, nil, err
	}
	res, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, err
}

// inviteResult is the part of POST /calls's answer the load needs.
type inviteResult struct {
	CallID string `json:"callID"`
	Call   struct {
		CreateTime int64 `json:"createTime"`
	} `json:"call"`
}

// invite creates a general call from caller to invitee.
func (c *client) invite(ctx context.Context, caller, invitee string, timeout time.Duration) (res inviteResult, sent time.Time, err error) {
	body := fmt.Appendf(nil, `{"invitees":[%q],"timeout":%d}`, invitee, int(timeout/time.Second))
	sent, err = c.post(ctx, caller, "/calls", body, http.StatusCreated, &res)
	if err == nil && res.CallID == "" {
		err = fmt.Errorf("POST /calls: no callID in the answer")
	}
	return res, sent, err
}

// accept accepts callID as user.
func (c *client) accept(ctx context.Context, user, callID string) (time.Time, error) {
	return c.post(ctx, user, "/calls/"+callID+"/accept", []byte(`{}`), http.StatusOK, nil)
}

// tokens mints one JWT per user up front, so the load does not pay for
// signing while it runs.
type tokens struct {
	secret           []byte
	issuer, audience string
	ttl              time.Duration
	bearers, raw     map[string]string
}

func newTokens(secret []byte, issuer, audience string, ttl time.Duration) *tokens {
	return &tokens{secret: secret, issuer: issuer, audience: audience, ttl: ttl, bearers: map[string]string{}, raw: map[string]string{}}
}

// mint makes the tokens of users. Not safe to call during the load.
func (t *tokens) mint(users ...string) error {
	now := time.Now()
	for _, u := range users {
		if _, ok := t.raw[u]; ok {
			continue
		}
		tok, err := handlers.MintToken(t.secret, handlers.TokenRequest{UserID: u, TTL: t.ttl, Issuer: t.issuer, Audience: t.audience}, now)
		if err != nil {
			return fmt.Errorf("mint token for %s: %w", u, err)
		}
		t.raw[u] = tok
		t.bearers[u] = "Bearer " + tok
	}
	return nil
}

func (t *tokens) bearer(user string) string { return t.bearers[user] }
func (t *tokens) token(user string) string  { return t.raw[user] }
