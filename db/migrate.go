package db

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"strings"
)

// Migration is one numbered schema change of a backend. Each backend embeds
// its own files, named NNNN_what.sql: a released file is never edited, a
// change is a new file.
type Migration struct {
	Version int
	Name    string // the file name, for logs and errors
	SQL     string
}

// Migrations reads the *.sql files of dir in fsys, sorted by version (as
// numbers: 10 comes after 2).
func Migrations(fsys fs.FS, dir string) ([]Migration, error) {
	names, err := fs.Glob(fsys, path.Join(dir, "*.sql"))
	if err != nil {
		return nil, err
	}
	var list []Migration
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
		list = append(list, Migration{Version: v, Name: base, SQL: string(body)})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Version < list[j].Version })
	return list, nil
}

// Migrator is a backend's side of the migration runner: the SQL dialect
// and its transactions stay in the backend, the order and the checks here.
type Migrator interface {
	// Version creates the bookkeeping of applied versions if missing and
	// returns the highest version applied (0: none).
	Version(ctx context.Context) (int, error)
	// Apply runs m and records its version in one transaction, so a failed
	// migration leaves the schema at the previous version and the next
	// start retries it. It reports false, changing nothing, when the
	// version was applied meanwhile (another process opening the same
	// database).
	Apply(ctx context.Context, m Migration) (applied bool, err error)
}

// Migrate brings the schema up to date: it applies the migrations of list
// (sorted, as Migrations returns them) newer than the database's version,
// in order, each once. A database newer than the program is refused rather
// than misread.
func Migrate(ctx context.Context, m Migrator, list []Migration, log *slog.Logger) error {
	current, err := m.Version(ctx)
	if err != nil {
		return fmt.Errorf("db: read schema version: %w", err)
	}
	if n := len(list); n > 0 && current > list[n-1].Version {
		return fmt.Errorf("db: schema version %d is newer than this program's %d", current, list[n-1].Version)
	}
	for _, mig := range list {
		if mig.Version <= current {
			continue
		}
		applied, err := m.Apply(ctx, mig)
		if err != nil {
			return fmt.Errorf("db: migration %s: %w", mig.Name, err)
		}
		if applied {
			log.Info("database migration applied", "version", mig.Version, "name", mig.Name)
		}
	}
	return nil
}
