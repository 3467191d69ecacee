// Package pgtest gives tests their own PostgreSQL database on the local
// development server (127.0.0.1:5432, trust auth), created empty with a
// random name and dropped when the test ends, so tests run in parallel.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
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
	return NewDatabaseFrom(t, "")
}

// NewDatabaseFrom is NewDatabase with a copy of the database template
// (PostgreSQL's CREATE DATABASE … TEMPLATE), which no session may be
// connected to; "" is the server's empty template1.
func NewDatabaseFrom(t testing.TB, template string) string {
	t.Helper()
	name, err := Create("callsig_test_", template)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := Drop(name); err != nil {
			t.Error(err)
		}
	})
	return DSN(name)
}

// DSN is the URL of the local server's database name.
func DSN(name string) string {
	return "postgres://postgres@127.0.0.1:5432/" + name + "?sslmode=disable"
}

// Create creates a database named prefix and a random suffix, a copy of
// template ("" for an empty one), and returns its name. The caller drops
// it (Drop); NewDatabase ties that to a test.
func Create(prefix, template string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, AdminDSN)
	if err != nil {
		return "", fmt.Errorf("PostgreSQL is not reachable at 127.0.0.1:5432 (%v); start it (scripts/test starts it)", err)
	}
	defer admin.Close(context.Background())
	var b [8]byte
	rand.Read(b[:])
	name := prefix + hex.EncodeToString(b[:])
	q := "CREATE DATABASE " + name
	if template != "" {
		q += " TEMPLATE " + template
	}
	if _, err := admin.Exec(ctx, q); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return name, nil
}

// Drop drops the database name, whoever is still connected to it.
func Drop(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, AdminDSN)
	if err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}
