package webhooks_test

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"callsig/calls"
	"callsig/internal/fakeclock"
	"callsig/webhooks"
)

// gatedClient is a delivery client whose dials wait for release: a slow
// DNS answer, a receiver's full backlog or a slow TLS handshake, during
// which the attempt holds its lease and has sent nothing yet. dialing
// gets a value as each dial starts.
func gatedClient(t *testing.T) (c *http.Client, dialing chan struct{}, release chan struct{}) {
	dialing, release = make(chan struct{}, 16), make(chan struct{})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	var d net.Dialer
	c = &http.Client{Timeout: webhooks.AttemptTimeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialing <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return d.DialContext(ctx, network, addr)
		},
	}}
	return c, dialing, release
}

// deleteDuringDial deletes an endpoint while the attempt of its only
// delivery is dialing, lets the dial go on, and fails t if the receiver
// got a request after Delete returned (the admin's 204): the endpoint is
// gone for the admin, maybe because its URL now belongs to someone else
// or its secret leaked, and must get nothing more. status is what the
// receiver answers; with a 5xx the attempt asks for a retry, which must
// never be sent either, however long the test waits past its time.
func deleteDuringDial(t *testing.T, store webhooks.Store, clock *fakeclock.Clock, invite func(), status int) {
	var answered atomic.Bool
	var got, late atomic.Int32
	srv, _ := countingServer(t, func(w http.ResponseWriter, _ *http.Request) {
		got.Add(1)
		if answered.Load() {
			late.Add(1)
		}
		w.WriteHeader(status)
	})
	reg := webhooks.NewRegistry(store, webhooks.RegistryOptions{Clock: clock, AllowPrivate: true})
	e, err := reg.Create(context.Background(), webhooks.CreateInput{URL: srv.URL, EventTypes: []calls.HookType{calls.HookCallCreated}})
	if err != nil {
		t.Fatal(err)
	}
	client, dialing, release := gatedClient(t)
	d, err := webhooks.NewDispatcher(store, webhooks.DispatcherOptions{Clock: clock, Client: client, Poll: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-ran
	})

	invite()
	within(t, dialing, "the attempt to dial")
	deleted := make(chan error, 1)
	go func() {
		err := reg.Delete(context.Background(), e.ID)
		answered.Store(true)
		deleted <- err
	}()
	// The DELETE either answers at once (the attempt then goes on after
	// it) or waits for the attempt; let the dial go on either way.
	select {
	case err := <-deleted:
		deleted <- err
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	if err := within(t, deleted, "the DELETE to answer"); err != nil {
		t.Fatal(err)
	}
	// Past every retry's time: a retry of the deleted endpoint, or its
	// lease lapsing, must not bring another request.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		clock.Advance(time.Hour)
		time.Sleep(20 * time.Millisecond)
	}
	if n := late.Load(); n > 0 {
		t.Fatalf("%d of %d requests reached the receiver after the DELETE answered", n, got.Load())
	}
}

// An attempt claimed before its endpoint was deleted, and still dialing
// when the deletion committed, went out after the DELETE's 204: the
// attempt had read the URL and the secret with its lease, and nothing
// looked at the endpoint again. DELETE now answers once the attempts in
// flight to the endpoint have ended, so nothing reaches it after the 204.
func TestNothingReachesADeletedEndpointAfterTheDelete(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
	}{{"delivered", http.StatusNoContent}, {"retry asked", http.StatusServiceUnavailable}} {
		t.Run("sqlite/"+tc.name, func(t *testing.T) {
			r := newRig(t)
			deleteDuringDial(t, r.store, r.clock, r.call, tc.status)
		})
		t.Run("postgres/"+tc.name, func(t *testing.T) {
			st, clock, svc, _ := postgresRig(t)
			deleteDuringDial(t, st, clock, func() {
				if _, err := svc.Invite(context.Background(), calls.Actor{UserID: "alice", Device: "d"}, calls.InviteInput{Invitees: []string{"bob"}}); err != nil {
					t.Fatal(err)
				}
			}, tc.status)
		})
	}
}
