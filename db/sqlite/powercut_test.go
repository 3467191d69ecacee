package sqlite

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
)

// A power cut loses what a SIGKILL keeps: the WAL frames the kernel has
// not written out. Every request answered, and every event fed to the
// streams, must be in the part of the WAL the fsyncs before it covered.
// The test runs invitations and cancels at once, notes after each answer
// and each feed how many WAL bytes were durable then (the WAL's size when
// the last completed fsync began), and then opens copies of the database
// with the WAL cut at those sizes, as a power cut at that instant would
// leave it: everything answered or fed by then must be there.
//
// Cutting the WAL by size models a power cut only while the WAL grows and
// the database file stays as it was, so the test turns off checkpoints
// and checks both.
func TestPowerCutKeepsWhatWasAnswered(t *testing.T) {
	path := filepath.Join(t.TempDir(), "callsig.db")
	s := openAt(t, path)
	ctx := context.Background()
	noCheckpoints(t, s)
	dbBefore := readFile(t, path)

	// durable is the WAL bytes a completed fsync covers: at first the
	// migrations, which Open synced.
	var durable atomic.Int64
	durable.Store(int64(len(readFile(t, s.wal.path))))
	var shrank atomic.Bool
	real := s.syncWAL
	s.syncWAL = func() error {
		var size int64
		if fi, err := os.Stat(s.wal.path); err == nil {
			size = fi.Size()
		}
		if err := real(); err != nil {
			return err
		}
		if size < durable.Load() {
			shrank.Store(true)
		}
		durable.Store(max(durable.Load(), size))
		return nil
	}

	// Every answer and every feed, with the durable size when it happened.
	type fact struct {
		what  string // "call c… cancelled", "event 12"
		check string // SQL that counts 1 when it survived
		arg   any
		at    int64
	}
	var (
		mu   sync.Mutex
		seen []fact
	)
	note := func(what, check string, arg any) {
		at := durable.Load()
		mu.Lock()
		seen = append(seen, fact{what, check, arg, at})
		mu.Unlock()
	}
	s.OnDurable(func(evs []calls.Event) {
		for _, ev := range evs {
			note(fmt.Sprintf("event %d fed", ev.ID), "SELECT COUNT(*) FROM events WHERE id = ?", ev.ID)
		}
	})

	svc := calls.NewService(calls.Options{Store: s})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			caller, callee := fmt.Sprint("caller", w), fmt.Sprint("callee", w)
			for range 25 {
				res, err := svc.Invite(ctx, calls.Actor{UserID: caller}, calls.InviteInput{Invitees: []string{callee}})
				if err != nil {
					t.Error(err)
					return
				}
				note("call "+res.CallID+" created", "SELECT COUNT(*) FROM calls WHERE id = ?", res.CallID)
				if _, err := svc.Cancel(ctx, calls.Actor{UserID: caller}, res.CallID, calls.CancelInput{}); err != nil {
					t.Error(err)
					return
				}
				note("call "+res.CallID+" cancelled", "SELECT COUNT(*) FROM calls WHERE id = ? AND state = 'ended'", res.CallID)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	wal := readFile(t, s.wal.path)
	if shrank.Load() || !bytes.Equal(readFile(t, path), dbBefore) {
		t.Fatal("the WAL was checkpointed during the run: cutting it by size no longer models a power cut")
	}

	// One cut at each durable size something was answered or fed at.
	mu.Lock()
	defer mu.Unlock()
	var cuts []int64
	for _, e := range seen {
		cuts = append(cuts, e.at)
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	// Each copy costs a recovery; a sample of them, always with the first
	// (where an early answer has the least durable WAL under it).
	if len(cuts) > 16 {
		rng := rand.New(rand.NewPCG(uint64(len(cuts)), 0))
		rest := cuts[1:]
		rng.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
		cuts = append(cuts[:1], rest[:15]...)
	}
	checked := 0
	for _, cut := range cuts {
		if cut > int64(len(wal)) {
			t.Fatalf("an fsync covered %d WAL bytes, the WAL has %d", cut, len(wal))
		}
		copyDB := powerCut(t, dbBefore, wal[:cut])
		var lost []string
		for _, e := range seen {
			if e.at > cut {
				continue
			}
			checked++
			var n int
			if err := copyDB.Get(&n, e.check, e.arg); err != nil {
				t.Fatalf("%s: %v", e.check, err)
			}
			if n != 1 {
				lost = append(lost, e.what)
			}
		}
		if lost != nil {
			t.Errorf("a power cut with %d WAL bytes durable loses %d things answered or fed by then, e.g. %v", cut, len(lost), lost[:min(len(lost), 5)])
		}
	}
	t.Logf("%d answers and feeds, %d WAL bytes; %d checks over %d cuts", len(seen), len(wal), checked, len(cuts))
}

// powerCut opens a copy of a database made of its file and a WAL cut
// short, and checks SQLite recovers it whole.
func powerCut(t *testing.T, db, wal []byte) *sqlx.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cut.db")
	if err := os.WriteFile(path, db, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+"-wal", wal, 0o600); err != nil {
		t.Fatal(err)
	}
	cdb, err := sqlx.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cdb.Close() })
	var check string
	if err := cdb.Get(&check, "PRAGMA integrity_check"); err != nil || check != "ok" {
		t.Fatalf("integrity_check of the database cut at %d WAL bytes: %q, %v", len(wal), check, err)
	}
	return cdb
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// noCheckpoints turns the writer's automatic checkpoints off, so that the
// WAL only grows and the database file stays as it is.
func noCheckpoints(t *testing.T, s *Store) {
	t.Helper()
	if err := s.write(context.Background(), func(tx *sqlx.Tx) error {
		_, err := tx.Exec("PRAGMA wal_autocheckpoint=0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
}
