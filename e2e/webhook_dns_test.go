package e2e

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"callsig/calls"
	"callsig/db/sqlite"
	"callsig/handlers"
	"callsig/webhooks"
)

// stallOnce resolves every name to a public address, except the first
// lookup, which waits for its context (a slow DNS server).
type stallOnce struct{ n atomic.Int32 }

func (r *stallOnce) LookupNetIP(ctx context.Context, _, _ string) ([]netip.Addr, error) {
	if r.n.Add(1) == 1 {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return []netip.Addr{netip.MustParseAddr("93.184.216.34")}, nil
}

// An admin's POST /webhooks with an Idempotency-Key whose client gives up
// while the server resolves the URL's host is not answered with a stored
// 400: CheckURL reported "host does not resolve" for the cancelled lookup,
// the middleware stored that 400 under the key, and every retry with the
// key got it for 24 h. A lookup that gives no answer about the name is
// now "not now" (503), never stored; the retry creates the endpoint.
func TestWebhookCreateCutShortByTheClientIsNotStored(t *testing.T) {
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "c.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	reg := webhooks.NewRegistry(store, webhooks.RegistryOptions{Resolver: &stallOnce{}})
	h, err := handlers.New(handlers.Deps{
		Service:     calls.NewService(calls.Options{Store: store}),
		Auth:        handlers.AuthConfig{Secret: []byte("test-secret-0123456789abcdef0123456789"), AdminToken: "admin-token-0123456789"},
		Idempotency: store,
		Webhooks:    reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	body := []byte(`{"url":"https://hooks.example.com/in"}`)
	post := func(timeout time.Duration) (int, string, string, error) {
		req, _ := http.NewRequest("POST", srv.URL+"/webhooks", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer admin-token-0123456789")
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "create-hook")
		res, err := (&http.Client{Timeout: timeout}).Do(req)
		if err != nil {
			return 0, "", "", err
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, res.Header.Get("Idempotent-Replayed"), string(b), nil
	}
	if _, _, _, err := post(300 * time.Millisecond); err == nil {
		t.Fatal("first attempt was answered; expected the client to give up")
	}
	time.Sleep(300 * time.Millisecond) // let the server finish the cancelled request
	status, replayed, b, err := post(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("retry with the same key: %d replayed=%q %s", status, replayed, b)
	if status != http.StatusCreated {
		t.Fatalf("retry of the identical request got %d (replayed=%q), want 201: the 400 caused by the client's own disconnect was stored under the key", status, replayed)
	}
}
