package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"callsig/internal/testkit"
)

// A client that writes into its open stream is cut off: an EventSource
// never sends anything after its request, and reading what a client sends
// cost the server a system call per 16 bytes for as long as it liked (a
// review: 64 MiB of zeros took 2.7 s of the server's CPU, the stream still
// open). A small body sent with the GET is let through.
func TestStreamWrittenIntoIsCutOff(t *testing.T) {
	s := testkit.Start(t)
	addr := strings.TrimPrefix(s.URL, "http://")
	open := func(user, body string) (net.Conn, *bufio.Reader) {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s",
			s.Token(user), len(body), body)
		br := bufio.NewReader(c)
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if line, err := br.ReadString('\n'); err != nil || !strings.Contains(line, " 200 ") {
			t.Fatalf("status line %q, %v", line, err)
		}
		return c, br
	}
	until := func(br *bufio.Reader, want string) error {
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return err
			}
			if strings.Contains(line, want) {
				return nil
			}
		}
	}

	// A body of a few bytes with the GET: the stream goes on.
	_, bobs := open("bob", `{"ignored":true}`)
	id := s.Client("alice").Invite(nil, "bob").CallID
	if err := until(bobs, id); err != nil {
		t.Fatalf("bob's stream, opened with a small body: %v before the invitation", err)
	}

	// Junk written into the stream: the server closes it.
	c, carols := open("carol", "")
	go func() {
		junk := make([]byte, 64<<10)
		for range 64 {
			if _, err := c.Write(junk); err != nil {
				return
			}
		}
	}()
	err := until(carols, "never sent")
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("a stream written into was still open 10 s later")
	}
}
