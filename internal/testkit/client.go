package testkit

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"
)

// Client calls the server as one user from one device.
type Client struct {
	s      *Server
	User   string
	Device string
	Token  string
	// Header is added to every request (e.g. Idempotency-Key).
	Header http.Header
	// SkipSpec turns off response validation, for tests that deliberately
	// send what the spec does not describe.
	SkipSpec bool
	// base is the node the client talks to ("": the server's URL, the
	// balancer in a cluster).
	base string
}

// Client returns a client for user on the default device.
func (s *Server) Client(user string) *Client {
	return &Client{s: s, User: user, Token: s.Token(user), Header: http.Header{}}
}

// Admin returns a client authenticated with the admin token.
func (s *Server) Admin() *Client {
	return &Client{s: s, User: "admin", Token: AdminToken, Header: http.Header{}}
}

// OnDevice returns a copy of the client acting from device.
func (c *Client) OnDevice(device string) *Client {
	cp := *c
	cp.Device = device
	cp.Header = c.Header.Clone()
	return &cp
}

// OnNode returns a copy of the client that talks to node i of a cluster
// directly, for stories that say which node serves what.
func (c *Client) OnNode(i int) *Client {
	cp := *c
	cp.base = c.s.Nodes()[i]
	cp.Header = c.Header.Clone()
	return &cp
}

func (c *Client) url() string {
	if c.base != "" {
		return c.base
	}
	return c.s.URL
}

// Response is a fully read HTTP response.
type Response struct {
	t      testing.TB
	Status int
	Header http.Header
	Body   []byte
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

// Do sends a request with a JSON body (nil: none; []byte or string: raw)
// and validates the response against the spec.
func (c *Client) Do(method, path string, body any) *Response {
	c.s.T.Helper()
	var raw []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		raw = b
	case string:
		raw = []byte(b)
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			c.s.T.Fatalf("encode body: %v", err)
		}
	}
	req, err := http.NewRequest(method, c.url()+path, bytes.NewReader(raw))
	if err != nil {
		c.s.T.Fatalf("new request: %v", err)
	}
	if body == nil {
		req.Body, req.ContentLength = http.NoBody, 0
	} else {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if c.Device != "" {
		req.Header.Set("X-Device-ID", c.Device)
	}
	for k, v := range c.Header {
		req.Header[k] = v
	}
	res, err := httpClient.Do(req)
	if err != nil {
		c.s.T.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		c.s.T.Fatalf("%s %s: read body: %v", method, path, err)
	}
	if !c.SkipSpec {
		if err := c.s.spec.validate(req, raw, res.StatusCode, res.Header, data); err != nil {
			c.s.T.Errorf("%s %s -> %d %s\nresponse does not match api/openapi.yaml: %v", method, path, res.StatusCode, data, err)
		}
	}
	return &Response{t: c.s.T, Status: res.StatusCode, Header: res.Header, Body: data}
}

// Post is Do with POST.
func (c *Client) Post(path string, body any) *Response { return c.Do(http.MethodPost, path, body) }

// Get is Do with GET.
func (c *Client) Get(path string) *Response { return c.Do(http.MethodGet, path, nil) }

// Want fails the test unless the status is want; it returns r for chaining.
func (r *Response) Want(want int) *Response {
	r.t.Helper()
	if r.Status != want {
		r.t.Fatalf("status %d, want %d; body: %s", r.Status, want, r.Body)
	}
	return r
}

// JSON decodes the body into v.
func (r *Response) JSON(v any) {
	r.t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		r.t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Problem is an application/problem+json body.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
	Errors []struct {
		Field   string `json:"field"`
		Message string `json:"message"`
	} `json:"errors"`
}

// WantProblem fails unless the response is a problem with status and code.
func (r *Response) WantProblem(status int, code string) Problem {
	r.t.Helper()
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		r.t.Fatalf("content type %q, want application/problem+json; status %d body %s", ct, r.Status, r.Body)
	}
	var p Problem
	r.JSON(&p)
	if r.Status != status || p.Code != code || p.Status != status {
		r.t.Fatalf("got %d %q (problem status %d), want %d %q; body %s", r.Status, p.Code, p.Status, status, code, r.Body)
	}
	return p
}

// WantProblemIn fails unless the response is a problem with status and one
// of codes.
func (r *Response) WantProblemIn(status int, codes ...string) Problem {
	r.t.Helper()
	var p Problem
	r.JSON(&p)
	for _, c := range codes {
		if p.Code == c {
			return r.WantProblem(status, c)
		}
	}
	r.t.Fatalf("got %d %q, want %d with one of %v; body %s", r.Status, p.Code, status, codes, r.Body)
	return p
}
