package sqlite

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/jmoiron/sqlx"
	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// The WAL VFS must leave the file as the unix VFS would after every
// commit: each commit's frames written before COMMIT returns, in order,
// through transactions that spill frames before they commit, that rewrite
// a frame of their own, that roll back, and WAL restarts after
// checkpoints. After each commit a reader on the default VFS (its own
// file descriptors) must see exactly what was committed, and a copy of
// the files taken then (what a SIGKILL leaves) must open whole.
func TestWALVFSKeepsEveryCommitInTheFile(t *testing.T) {
	if err := registerWALVFS(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "w.db")
	// cache_size(20): a transaction of a few hundred rows spills frames to
	// the WAL before its commit, and rewrites some of them.
	w, err := sqlx.Open("sqlite", path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=cache_size(20)&vfs="+walVFSName)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.SetMaxOpenConns(1)
	r, err := sqlx.Open("sqlite", path+"?_pragma=busy_timeout(5000)&_pragma=query_only(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := w.Exec("CREATE TABLE t (id INTEGER PRIMARY KEY, user TEXT NOT NULL, v BLOB NOT NULL); CREATE INDEX t_user ON t (user, id)"); err != nil {
		t.Fatal(err)
	}

	rng := rand.New(rand.NewPCG(1, 2))
	model := map[int64]int{} // id -> len(v): what is committed
	given0, made0 := walWrites.given.Load(), walWrites.made.Load()
	var next int64
	for i := range 80 {
		tx, err := w.Beginx()
		if err != nil {
			t.Fatal(err)
		}
		pending := map[int64]int{}
		for range 1 + rng.IntN(120) {
			if len(model) > 0 && rng.IntN(4) == 0 {
				// Rewrite a committed row: pages written earlier in this
				// transaction are written again.
				id := rng.Int64N(next) + 1
				if _, ok := model[id]; !ok {
					continue
				}
				n := rng.IntN(2000)
				if _, err := tx.Exec("UPDATE t SET v = ? WHERE id = ?", bytes.Repeat([]byte{byte(i)}, n), id); err != nil {
					t.Fatal(err)
				}
				pending[id] = n
				continue
			}
			next++
			n := rng.IntN(2000)
			if _, err := tx.Exec("INSERT INTO t (id, user, v) VALUES (?, ?, ?)", next, fmt.Sprintf("u%d", rng.IntN(500)), bytes.Repeat([]byte{byte(i)}, n)); err != nil {
				t.Fatal(err)
			}
			pending[next] = n
		}
		if rng.IntN(5) == 0 {
			if err := tx.Rollback(); err != nil {
				t.Fatal(err)
			}
		} else {
			if err := tx.Commit(); err != nil {
				t.Fatalf("commit %d: %v", i, err)
			}
			for id, n := range pending {
				model[id] = n
			}
		}
		if i%20 == 19 {
			mode := []string{"PASSIVE", "RESTART", "TRUNCATE"}[rng.IntN(3)]
			if _, err := w.Exec("PRAGMA wal_checkpoint(" + mode + ")"); err != nil {
				t.Fatal(err)
			}
		}
		checkRows(t, r, model, fmt.Sprintf("reader after transaction %d", i))
		if i%16 == 15 {
			// What a SIGKILL now leaves: the files as the kernel has them.
			cp := filepath.Join(t.TempDir(), "copy.db")
			copyFile(t, path, cp)
			copyFile(t, path+"-wal", cp+"-wal")
			c, err := sqlx.Open("sqlite", cp)
			if err != nil {
				t.Fatal(err)
			}
			var ok string
			if err := c.Get(&ok, "PRAGMA integrity_check"); err != nil || ok != "ok" {
				t.Fatalf("copy after transaction %d: integrity_check %q, %v", i, ok, err)
			}
			checkRows(t, c, model, fmt.Sprintf("copy after transaction %d", i))
			c.Close()
		}
	}
	t.Logf("WAL writes: %d given by SQLite, %d made", walWrites.given.Load()-given0, walWrites.made.Load()-made0)
}

// Commits of many small rows over many users, as the writer's group
// commits are: their frames are written with a call or so each, not two
// per frame.
func TestWALVFSGathersACommitsFrames(t *testing.T) {
	s := openTest(t)
	if err := s.write(context.Background(), func(tx *sqlx.Tx) error {
		_, err := tx.Exec("CREATE TABLE gathered (user TEXT NOT NULL, k TEXT NOT NULL, PRIMARY KEY (user, k))")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	given0, made0, commits := walWrites.given.Load(), walWrites.made.Load(), 0
	for i := range 50 {
		if err := s.write(context.Background(), func(tx *sqlx.Tx) error {
			for j := range 100 {
				if _, err := tx.Exec("INSERT INTO gathered (user, k) VALUES (?, ?)",
					fmt.Sprintf("user-%d", (i*100+j)*7919%5000), fmt.Sprintf("k-%d-%d", i, j)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		commits++
	}
	given, made := walWrites.given.Load()-given0, walWrites.made.Load()-made0
	t.Logf("%d commits: %d WAL writes given by SQLite, %d made", commits, given, made)
	if given < int64(commits)*10 || made > int64(commits)*3 {
		t.Errorf("%d commits: %d WAL writes given, %d made: not gathered into a few a commit", commits, given, made)
	}
}

// checkRows compares the rows q sees with model by count and by sums
// that a missing, extra or stale row changes.
func checkRows(t *testing.T, q sqlx.Queryer, model map[int64]int, what string) {
	t.Helper()
	var want struct{ n, sumN, sumIDN int64 }
	for id, n := range model {
		want.n++
		want.sumN += int64(n)
		want.sumIDN += id * int64(n+1)
	}
	var got struct{ n, sumN, sumIDN int64 }
	if err := q.QueryRowx("SELECT count(*), coalesce(sum(length(v)), 0), coalesce(sum(id * (length(v) + 1)), 0) FROM t").Scan(&got.n, &got.sumN, &got.sumIDN); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if got != want {
		t.Fatalf("%s: rows, bytes, id-weighted bytes %v, want %v", what, got, want)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// walWriteFails makes the writes the WAL VFS makes to its files fail with
// SQLITE_FULL, as a full disk does, once failWALWrites has put
// failingWALWrite in their place; walWriteFailAt makes the one whose
// number (walWritesSeen, counted from 0) it holds fail.
var (
	walWriteFails  atomic.Bool
	walWriteFailAt atomic.Int64
	walWritesSeen  atomic.Int64
	walWriteOrig   uintptr // the base write, while failingWALWrite is in its place
)

func failingWALWrite(tls *libc.TLS, pFile, buf uintptr, amt int32, off int64) int32 {
	if i := walWritesSeen.Add(1) - 1; walWriteFails.Load() || i == walWriteFailAt.Load() {
		return sqlite3.SQLITE_FULL
	}
	return (*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&struct{ uintptr }{walWriteOrig})))(tls, pFile, buf, amt, off)
}

// failWALWrites puts failingWALWrite under the WAL VFS (after a WAL file
// has been opened through it) until the test ends; called again, it
// leaves it there.
func failWALWrites(t *testing.T) {
	walMu.Lock()
	defer walMu.Unlock()
	if base.FxWrite == 0 {
		t.Fatal("no WAL file opened through the WAL VFS yet")
	}
	if walWriteOrig != 0 {
		return
	}
	walWriteOrig = base.FxWrite
	walWriteFailAt.Store(-1)
	*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&base.FxWrite)) = failingWALWrite
	t.Cleanup(func() {
		walMu.Lock()
		defer walMu.Unlock()
		walWriteFails.Store(false)
		walWriteFailAt.Store(-1)
		base.FxWrite = walWriteOrig
		walWriteOrig = 0
	})
}

func walBuffered() int64 {
	walMu.Lock()
	defer walMu.Unlock()
	var n int64
	for _, w := range walFiles {
		n += w.n
	}
	return n
}

// A deferred write that fails (a disk full for a moment) must fail the
// whole transaction, as the write itself failing did: frames a
// transaction spilled stay buffered, and their write failing inside a
// read was a SQLITE_FULL that SQLite took as the statement's alone, then
// committed a transaction whose frames the file lacked (reproduced by a
// review on a full tmpfs). And once the disk has room, the connection
// goes on.
func TestWALVFSAFailedDeferredWriteFailsTheTransaction(t *testing.T) {
	if err := registerWALVFS(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "f.db")
	w, err := sqlx.Open("sqlite", path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=cache_size(10)&vfs="+walVFSName)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.SetMaxOpenConns(1)
	w.MustExec("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL); CREATE TABLE u (id INTEGER PRIMARY KEY, k TEXT UNIQUE)")
	failWALWrites(t)

	tx, err := w.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	// A request (a savepoint of a group commit) spills frames.
	tx.MustExec("SAVEPOINT a")
	for i := 1; i <= 60; i++ {
		tx.MustExec("INSERT INTO t (id, v) VALUES (?, ?)", i, bytes.Repeat([]byte{byte(i)}, 3000))
	}
	tx.MustExec("RELEASE a")
	if walBuffered() == 0 {
		t.Fatal("premise: no spilled frames buffered")
	}
	// The next one reads a spilled page while the disk is full.
	walWriteFails.Store(true)
	tx.MustExec("SAVEPOINT b")
	if _, err := tx.Exec("INSERT INTO u (k) SELECT 'k' || id FROM t"); err == nil {
		t.Fatal("reading spilled frames whose write failed succeeded")
	}
	tx.Exec("ROLLBACK TO b") // gone with the transaction, if rolled back
	tx.Exec("RELEASE b")
	walWriteFails.Store(false)
	if err := tx.Commit(); err == nil {
		var n int
		err := w.Get(&n, "SELECT count(*) FROM t")
		t.Fatalf("the transaction whose spilled frames were lost committed (a reader counts %d rows of 60, %v)", n, err)
	}

	// The disk has room again: the connection writes and reads on.
	w.MustExec("INSERT INTO t (id, v) VALUES (1000, x'01')")
	r, err := sqlx.Open("sqlite", path+"?_pragma=query_only(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	checkRows(t, r, map[int64]int{1000: 1}, "a reader after the next commit")
	var ok string
	if err := r.Get(&ok, "PRAGMA integrity_check"); err != nil || ok != "ok" {
		t.Fatalf("integrity_check: %q, %v", ok, err)
	}
}

// The same through the writer's group commit: requests answered OK are in
// the file; a full disk under one request's read of another's spilled
// frames fails the batch.
func TestWALVFSAFailedDeferredWriteFailsTheBatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "callsig.db")
	s := openAt(t, path)
	failWALWrites(t)
	if err := s.write(context.Background(), func(tx *sqlx.Tx) error {
		_, err := tx.Exec("PRAGMA cache_size = 10")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	a := func(tx *sqlx.Tx) error {
		for range 60 {
			if _, err := tx.Exec(`INSERT INTO events (user_id, type, data, time) VALUES ('a', 't', ?, 1)`, strings.Repeat("x", 3000)); err != nil {
				return err
			}
		}
		if walBuffered() == 0 {
			t.Error("premise: no spilled frames buffered")
		}
		return nil
	}
	b := func(tx *sqlx.Tx) error {
		walWriteFails.Store(true)
		defer walWriteFails.Store(false)
		_, err := tx.Exec(`INSERT INTO events (user_id, type, data, time) SELECT 'b', type, data, time FROM events WHERE user_id = 'a'`)
		return err
	}
	errs := inOneBatch(t, s, a, b, insertEvent("c"))
	if errs[1] == nil {
		t.Fatal("B read frames whose write failed, and succeeded")
	}
	for i, user := range []string{"a", "", "c"} {
		if user == "" || errs[i] != nil {
			continue
		}
		var n int
		if err := s.rdb.Get(&n, "SELECT count(*) FROM events WHERE user_id = ?", user); err != nil || n == 0 {
			t.Errorf("request %s was answered OK; a reader counts %d of its rows, %v", user, n, err)
		}
	}
	if err := s.write(context.Background(), insertEvent("d")); err != nil {
		t.Fatalf("a write after the disk has room again: %v", err)
	}
	var ok string
	if err := s.rdb.Get(&ok, "PRAGMA integrity_check"); err != nil || ok != "ok" {
		t.Fatalf("integrity_check: %.200q, %v", ok, err)
	}
}

// A write that fails at any point of a transaction (its spills, the pages
// it rewrites in place, its commit's frames and checksums, the WAL's
// header after a restart) never comes with a COMMIT that succeeds; what
// committed is what a reader, the writer, and the files reopened show;
// and the connection goes on: a healthy write, or none and a checkpoint
// of each kind. Each write position is failed in turn. (From the second
// review of the VFS's failure handling, which found no defect.)
func TestWALVFSAWriteFailedAtAnyPoint(t *testing.T) {
	if err := registerWALVFS(); err != nil {
		t.Fatal(err)
	}
	for _, writeAfter := range []bool{true, false} {
		for _, restart := range []bool{false, true} {
			for k := int64(0); ; k++ {
				if k == 400 {
					t.Fatalf("restart=%v: the transaction still failed at its 400th write", restart)
				}
				if !failAtWrite(t, restart, writeAfter, k) {
					t.Logf("restart=%v, write after=%v: %d write positions failed in turn", restart, writeAfter, k)
					break // the k-th write was past the transaction's
				}
			}
		}
	}
}

// failAtWrite runs one transaction whose kth write through the VFS fails,
// checks what it left, and says whether a write failed.
func failAtWrite(t *testing.T, restart, writeAfter bool, k int64) (failed bool) {
	path := filepath.Join(t.TempDir(), "s.db")
	open := func() *sqlx.DB {
		w, err := sqlx.Open("sqlite", path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=cache_size(8)&vfs="+walVFSName)
		if err != nil {
			t.Fatal(err)
		}
		w.SetMaxOpenConns(1)
		return w
	}
	w := open()
	defer func() { w.Close() }()
	w.MustExec("CREATE TABLE t (id INTEGER PRIMARY KEY, user TEXT NOT NULL DEFAULT '', v BLOB NOT NULL)")
	model := map[int64]int{}
	for i := int64(1); i <= 20; i++ {
		w.MustExec("INSERT INTO t (id, v) VALUES (?, ?)", i, bytes.Repeat([]byte{1}, 1500))
		model[i] = 1500
	}
	if restart {
		w.MustExec("PRAGMA wal_checkpoint(RESTART)")
	}
	failWALWrites(t)
	walWriteFailAt.Store(walWritesSeen.Load() + k)
	tx, err := w.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	pending := map[int64]int{}
	for round := range 3 { // the same rows again: spilled pages written again in place
		for i := int64(1); i <= 40 && err == nil; i++ {
			n := 1000 + round*300 + int(i)
			_, err = tx.Exec("INSERT OR REPLACE INTO t (id, v) VALUES (?, ?)", i, bytes.Repeat([]byte{byte(round)}, n))
			pending[i] = n
		}
	}
	cerr := tx.Commit()
	failed = walWritesSeen.Load() > walWriteFailAt.Load()
	walWriteFailAt.Store(-1)
	what := fmt.Sprintf("restart=%v k=%d", restart, k)
	if cerr == nil {
		if failed {
			t.Fatalf("%s: a write failed (the statement's error: %v) and COMMIT succeeded", what, err)
		}
		for id, n := range pending {
			model[id] = n
		}
	}
	r, err := sqlx.Open("sqlite", path+"?_pragma=query_only(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	checkRows(t, r, model, what+": a reader")
	checkRows(t, w, model, what+": the writer")
	if writeAfter {
		if _, err := w.Exec("INSERT INTO t (id, v) VALUES (1000, x'01')"); err != nil {
			t.Fatalf("%s: a healthy write after: %v", what, err)
		}
		model[1000] = 1
	} else {
		if _, err := w.Exec("PRAGMA wal_checkpoint(" + []string{"PASSIVE", "RESTART", "TRUNCATE"}[k%3] + ")"); err != nil {
			t.Fatalf("%s: a checkpoint after: %v", what, err)
		}
		checkRows(t, w, model, what+": the writer after a checkpoint")
	}
	w.MustExec("PRAGMA wal_checkpoint(PASSIVE)")
	w.Close()
	w = open()
	var ok string
	if err := w.Get(&ok, "PRAGMA integrity_check"); err != nil || ok != "ok" {
		t.Fatalf("%s: integrity_check after reopening: %q, %v", what, ok, err)
	}
	checkRows(t, w, model, what+": reopened")
	return failed
}
