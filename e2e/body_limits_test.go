package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"callsig/internal/app"
	"callsig/internal/testkit"
)

// rawPost writes a whole request, headers and body, before reading
// anything, as Node's http client and curl without Expect do, and returns
// the answer it then reads.
func rawPost(t *testing.T, s *testkit.Server, head string, body []byte) (*http.Response, []byte, error) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second)) // a hang fails, never blocks the suite
	if _, err := io.WriteString(conn, head); err != nil {
		return nil, nil, fmt.Errorf("write head: %w", err)
	}
	if _, err := conn.Write(body); err != nil {
		return nil, nil, fmt.Errorf("write body: %w", err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, nil, fmt.Errorf("read answer: %w", err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	return res, data, err
}

// A body over the limit is answered 413 problem+json, and the client
// reads that answer even when it sends the whole 8 MB body before reading:
// the server drains the rest (a lingering close) instead of resetting the
// connection under the answer.
func TestOversizedBodyGets413BeforeClose(t *testing.T) {
	s := testkit.Start(t)
	tok := s.Token("alice")
	body := bytes.Repeat([]byte("x"), 8<<20)
	chunked := func() []byte {
		var b bytes.Buffer
		for off := 0; off < len(body); off += 64 << 10 {
			part := body[off:min(off+64<<10, len(body))]
			fmt.Fprintf(&b, "%x\r\n%s\r\n", len(part), part)
		}
		b.WriteString("0\r\n\r\n")
		return b.Bytes()
	}()
	heads := map[string]struct {
		head string
		body []byte
	}{
		// Refused from Content-Length, before reading anything.
		"content-length": {fmt.Sprintf("POST /calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", tok, len(body)), body},
		// Refused once the limit is read.
		"chunked": {fmt.Sprintf("POST /calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n", tok), chunked},
	}
	for name, h := range heads {
		t.Run(name, func(t *testing.T) {
			for i := range 20 {
				res, data, err := rawPost(t, s, h.head, h.body)
				if err != nil {
					t.Fatalf("attempt %d: %v", i, err)
				}
				var p testkit.Problem
				if err := json.Unmarshal(data, &p); err != nil {
					t.Fatalf("attempt %d: body %q: %v", i, data, err)
				}
				if res.StatusCode != http.StatusRequestEntityTooLarge || p.Code != "payload_too_large" ||
					res.Header.Get("Content-Type") != "application/problem+json" {
					t.Fatalf("attempt %d: %d %s %s", i, res.StatusCode, res.Header.Get("Content-Type"), data)
				}
			}
		})
	}
}

// A body that trickles in past the server's read timeout is 408
// request_timeout: the client was slow, its request was not malformed.
func TestTrickledBodyGets408(t *testing.T) {
	s := testkit.Start(t, testkit.WithConfig(func(c *app.Config) { c.ReadTimeout = 300 * time.Millisecond }))
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	// Half the declared body, then nothing: the read timeout passes.
	fmt.Fprintf(conn, "POST /calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"invitees\":", s.Token("alice"))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	var p testkit.Problem
	if err := json.Unmarshal(data, &p); err != nil {
		t.Fatalf("body %q: %v", data, err)
	}
	if res.StatusCode != http.StatusRequestTimeout || p.Code != "request_timeout" || p.Status != 408 {
		t.Fatalf("got %d %s, want 408 request_timeout", res.StatusCode, data)
	}
}

// A header block over 64 KiB is refused by the HTTP layer (431) before any
// handler reads it; a token over 16 KiB, within that, is refused unread.
func TestHeaderLimits(t *testing.T) {
	s := testkit.Start(t)
	res, _, err := rawPost(t, s, "GET /calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+strings.Repeat("a", 70<<10)+"\r\n\r\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("a 70 KiB header: status %d, want 431", res.StatusCode)
	}
	alice := s.Client("alice")
	alice.Token = strings.Repeat("a", 20<<10)
	if p := alice.Get("/calls").WantProblem(http.StatusUnauthorized, "unauthorized"); !strings.Contains(p.Detail, "16 KiB") {
		t.Fatalf("a 20 KiB token: %q", p.Detail)
	}
}
