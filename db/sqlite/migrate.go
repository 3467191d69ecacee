package sqlite

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/jmoiron/sqlx"

	"callsig/db"
)

// migrationFiles are SQLite's schema changes, applied once each in version
// order by db.Migrate. A file is named NNNN_what.sql; a released file is
// never edited, a change is a new file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrate brings the schema up to date.
func migrate(ctx context.Context, wdb *sqlx.DB, log *slog.Logger) error {
	return migrateFS(ctx, wdb, log, migrationFiles)
}

// migrateFS applies the migrations/*.sql of fsys (tests pass their own).
func migrateFS(ctx context.Context, wdb *sqlx.DB, log *slog.Logger, fsys fs.FS) error {
	list, err := db.Migrations(fsys, "migrations")
	if err != nil {
		return err
	}
	return db.Migrate(ctx, migrator{wdb}, list, log)
}

// migrator is the db.Migrator of a SQLite file: the applied versions are
// rows of schema_migrations, each written in its migration's transaction.
type migrator struct{ db *sqlx.DB }

func (m migrator) Version(ctx context.Context) (int, error) {
	if _, err := m.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		applied_at INTEGER NOT NULL
	)`); err != nil {
		return 0, fmt.Errorf("create schema_migrations: %w", err)
	}
	var current int
	if err := m.db.GetContext(ctx, &current, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`); err != nil {
		return 0, err
	}
	return current, nil
}

func (m migrator) Apply(ctx context.Context, mig db.Migration) (bool, error) {
	tx, err := m.db.BeginTxx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	// Checked again under the write lock (BEGIN IMMEDIATE): another process
	// opening the same file may have applied it meanwhile.
	var done int
	if err := tx.GetContext(ctx, &done, `SELECT COUNT(*) FROM schema_migrations WHERE version = ?`, mig.Version); err != nil {
		return false, err
	}
	if done > 0 {
		return false, nil
	}
	if _, err := tx.ExecContext(ctx, mig.SQL); err != nil {
		return false, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`,
		mig.Version, time.Now().UnixMilli()); err != nil {
		return false, err
	}
	if err := tx.Commit(); err != nil {
		return false, err
	}
	return true, nil
}

// SchemaVersion is the version of the newest migration this build has: a
// file whose schema_migrations says otherwise was written by another
// version of callsig (db/sqlitetopg reads only files at this version).
func SchemaVersion() (int, error) {
	list, err := db.Migrations(migrationFiles, "migrations")
	if err != nil {
		return 0, err
	}
	if len(list) == 0 {
		return 0, nil
	}
	return list[len(list)-1].Version, nil
}
