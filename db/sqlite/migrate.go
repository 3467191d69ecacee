package sqlite

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
)

// migrationFiles are the schema changes, applied once each in version order.
// A file is named NNNN_what.sql; a released file is never edited, a change is
// a new file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations sorted by version.
func migrations(fsys fs.FS) ([]migration, error) {
	names, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var list []migration
	seen := map[int]string{}
	for _, name := range names {
		base := path.Base(name)
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("db: migration %s: name must start with a positive number and _", base)
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("db: migrations %s and %s share version %d", prev, base, v)
		}
		seen[v] = base
		body, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		list = append(list, migration{version: v, name: base, sql: string(body)})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].version < list[j].version })
	return list, nil
}

// migrate brings the schema up to date. Each migration runs in its own
// transaction together with its schema_migrations row, so a failed one
// leaves the schema at the previous version and the next Open retries it.
func migrate(ctx context.Context, db *sqlx.DB, log *slog.Logger) error {
	return migrateFS(ctx, db, log, migrationFiles)
}

func migrateFS(ctx context.Context, db *sqlx.DB, log *slog.Logger, fsys fs.FS) error {
	list, err := migrations(fsys)
	if err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		applied_at INTEGER NOT NULL
	)`); err != nil {
		return fmt.Errorf("db: create schema_migrations: %w", err)
	}
	var current int
	if err := db.GetContext(ctx, &current, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`); err != nil {
		return fmt.Errorf("db: read schema version: %w", err)
	}
	if n := len(list); n > 0 && current > list[n-1].version {
		return fmt.Errorf("db: schema version %d is newer than this program's %d", current, list[n-1].version)
	}
	for _, m := range list {
		if m.version <= current {
			continue
		}
		if err := apply(ctx, db, m); err != nil {
			return err
		}
		log.Info("database migration applied", "version", m.version, "name", m.name)
	}
	return nil
}

func apply(ctx context.Context, db *sqlx.DB, m migration) error {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("db: migration %s: %w", m.name, err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	// Checked again under the write lock (BEGIN IMMEDIATE): another process
	// opening the same file may have applied it meanwhile.
	var done int
	if err := tx.GetContext(ctx, &done, `SELECT COUNT(*) FROM schema_migrations WHERE version = ?`, m.version); err != nil {
		return fmt.Errorf("db: migration %s: %w", m.name, err)
	}
	if done > 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return fmt.Errorf("db: migration %s: %w", m.name, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`,
		m.version, time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("db: migration %s: %w", m.name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("db: migration %s: %w", m.name, err)
	}
	return nil
}
