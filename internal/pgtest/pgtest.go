// Package pgtest gives tests their own PostgreSQL database on the local
// development server (127.0.0.1:5432, trust auth), created empty with a
// random name and dropped when the test ends, so tests run in parallel.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// AdminDSN reaches the local development server (trust auth), where each
// test creates and drops its own database.
const AdminDSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// NewDatabase creates an empty database with a random name for t and
// returns its DSN. It is dropped when t ends, pass or fail; a connection
// left open (a store not closed) does not keep it (WITH (FORCE)). A server
// that does not answer fails the test: the suite never silently skips a
// backend.
func NewDatabase(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, AdminDSN)
	if err != nil {
		t.Fatalf("PostgreSQL is not reachable at 127.0.0.1:5432 (%v); start it (scripts/test starts it)", err)
	}
	defer admin.Close(context.Background())
	var b [8]byte
	rand.Read(b[:])
	name := "callsig_test_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := pgx.Connect(ctx, AdminDSN)
		if err != nil {
			t.Errorf("drop database %s: %v", name, err)
			return
		}
		defer admin.Close(context.Background())
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	return "postgres://postgres@127.0.0.1:5432/" + name + "?sslmode=disable"
}
