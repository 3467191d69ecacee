package app

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"callsig/calls"
	"callsig/db/storetest"
	"callsig/internal/fakeclock"
	"callsig/internal/wait"
)

// One failing part stops the others, and Run says which part failed: a
// server whose deadlines no longer fire must not go on as if whole.
func TestRunStopsEveryPartWhenOneFails(t *testing.T) {
	stopped := make(chan struct{})
	a := &App{parts: []part{
		{"steady", func(ctx context.Context) error {
			<-ctx.Done()
			close(stopped)
			return nil
		}},
		{"broken", func(context.Context) error { return errors.New("boom") }},
	}}
	err := a.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "broken: boom") {
		t.Fatalf("Run = %v, want the broken part's error", err)
	}
	select {
	case <-stopped:
	default:
		t.Fatal("Run returned before the steady part stopped")
	}
}

// The real parts run until their context ends, then stop cleanly, and the
// store closes after them.
func TestRunStopsOnCancel(t *testing.T) {
	a := newTestApp(t, nil)
	var names []string
	for _, p := range a.parts {
		names = append(names, p.name)
	}
	if want := []string{"deadline scheduler", "event hub", "webhook dispatcher", "webhook retention", "idempotency pruner", "call retention"}; !slices.Equal(names, want) {
		t.Fatalf("background parts %q, want %q", names, want)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx) }()
	cancel()
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("Run = %v, want nil after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// CALLSIG_CALL_RETENTION=0 keeps ended calls: no retention part runs.
func TestCallRetentionZeroKeepsCalls(t *testing.T) {
	a := newTestApp(t, nil, "-call-retention", "0")
	defer a.Close()
	for _, p := range a.parts {
		if p.name == "call retention" {
			t.Fatal("a call retention part runs with -call-retention 0")
		}
	}
	if _, err := ParseConfig("test", []string{"-call-retention", "-1h"}, func(string) string { return "" }, nil); err == nil {
		t.Fatal("a negative call retention was accepted")
	}
}

// The call retention measures a call's age on the app's clock, the one its
// end time was taken from: on a fake clock 70 years ahead, a call that
// ended a day ago by the wall clock is past the 30 days and pruned at the
// pruner's first round (by the wall clock it would be kept).
func TestCallRetentionUsesTheAppClock(t *testing.T) {
	args := []string{"-db", filepath.Join(t.TempDir(), "callsig.db")}
	cfg, err := ParseConfig("test", args, func(string) string { return "" }, nil)
	if err != nil {
		t.Fatal(err)
	}
	clock := fakeclock.New(time.Now().AddDate(70, 0, 0))
	a, err := New(context.Background(), cfg, Options{Logger: slog.New(slog.DiscardHandler), Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	ended := storetest.NewCall("ended-a-day-ago-0001", "alice", time.Now().Add(-25*time.Hour).UnixMilli(), "bob")
	ended.Call.State, ended.Call.EndTime = calls.CallEnded, time.Now().Add(-24*time.Hour).UnixMilli()
	storetest.Save(t, a.Store, ended)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx) }()
	wait.For(t, 10*time.Second, "the call retention's first round", func() bool {
		_, err := a.Store.Call(context.Background(), ended.Call.ID)
		return errors.Is(err, calls.ErrCallNotFound)
	})
	cancel()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
}

// newTestApp builds an app on a fresh SQLite file from args and env (nil:
// none), as main would; the caller closes it.
func newTestApp(t *testing.T, env map[string]string, args ...string) *App {
	t.Helper()
	args = append([]string{"-db", filepath.Join(t.TempDir(), "callsig.db")}, args...)
	cfg, err := ParseConfig("test", args, func(k string) string { return env[k] }, nil)
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	a, err := New(context.Background(), cfg, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}
