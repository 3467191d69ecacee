package e2e

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"callsig/internal/testkit"
)

// fuzzPaths are the POST endpoints whose bodies the fuzzer throws at. The
// call action paths use a real call, so bodies reach the domain code.
var fuzzPaths = []string{"/calls", "cancel", "accept", "reject", "invite", "join", "quit", "end"}

// FuzzRequestBodies: whatever the body, the answer is never a 5xx and an
// error is always problem+json. Seeds live in testdata/fuzz.
//
//	go test ./e2e -run '^$' -fuzz FuzzRequestBodies -fuzztime 60s
func FuzzRequestBodies(f *testing.F) {
	s := testkit.Start(f)
	alice := s.Client("alice")
	generalID := alice.Invite(map[string]any{"mode": "advanced"}, "bob").CallID
	tokens := map[string]string{"alice": s.Token("alice"), "bob": s.Token("bob")}

	f.Add(uint8(0), false, []byte(`{"invitees":["bob"],"mode":"advanced","timeout":600,"extendedData":"x","pushConfig":{"title":"t"},"enableNotReceivedCheck":true}`))
	f.Add(uint8(1), false, []byte(`{"invitees":[]}`))
	f.Add(uint8(2), true, []byte(`{"extendedData":"\u0000"}`))
	f.Add(uint8(4), false, []byte(`{"invitees":["carol","carol"]}`))
	f.Fuzz(func(t *testing.T, which uint8, asBob bool, body []byte) {
		path := fuzzPaths[int(which)%len(fuzzPaths)]
		if path != "/calls" {
			path = "/calls/" + generalID + "/" + path
		}
		user := "alice"
		if asBob {
			user = "bob"
		}
		req, err := http.NewRequest(http.MethodPost, s.URL+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tokens[user])
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		data, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode >= 500 {
			t.Fatalf("POST %s %q -> %d %s", path, body, res.StatusCode, data)
		}
		if res.StatusCode >= 400 && !strings.HasPrefix(res.Header.Get("Content-Type"), "application/problem+json") {
			t.Fatalf("POST %s %q -> %d with content type %q", path, body, res.StatusCode, res.Header.Get("Content-Type"))
		}
	})
}
