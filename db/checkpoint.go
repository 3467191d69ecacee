package db

import (
	"context"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// checkpointEvery is how often the checkpointer copies the WAL back into
// the database file. Between two runs the WAL grows by what was committed
// meanwhile (a few MB at full load), which readers handle fine.
const checkpointEvery = 250 * time.Millisecond

// checkpointer moves WAL checkpoints off the writer. SQLite's automatic
// checkpoint runs inside the COMMIT that crosses 1000 WAL pages, on the
// single writer, where it cost ~9% of the write path's time under load.
// With wal_autocheckpoint(0) on the writer, this goroutine runs PASSIVE
// checkpoints on a connection of its own: PASSIVE never waits for nor
// blocks the writer or readers, so the writer only appends to the WAL.
type checkpointer struct {
	db   *sqlx.DB
	stop chan struct{}
	done chan struct{}
}

func startCheckpointer(ctx context.Context, path string) (*checkpointer, error) {
	db, err := sqlx.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		return nil, fmt.Errorf("db: open checkpointer: %w", err)
	}
	db.SetMaxOpenConns(1)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("db: open checkpointer: %w", err)
	}
	c := &checkpointer{db: db, stop: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	return c, nil
}

func (c *checkpointer) run() {
	defer close(c.done)
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			// Best effort: a checkpoint that cannot finish now (a reader
			// still needs old frames) simply copies what it can.
			_, _ = c.db.Exec("PRAGMA wal_checkpoint(PASSIVE)")
		}
	}
}

// close stops the goroutine, runs a last full checkpoint and closes the
// connection. Called after the writer stopped.
func (c *checkpointer) close() error {
	close(c.stop)
	<-c.done
	_, _ = c.db.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
	return c.db.Close()
}
