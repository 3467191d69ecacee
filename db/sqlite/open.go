package sqlite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/jmoiron/sqlx"
	msqlite "modernc.org/sqlite" // also registers the "sqlite" driver

	"callsig/db"
)

// ErrInUse is Open's error for a database file another process holds: a
// SQLite file serves one node.
var ErrInUse = errors.New("db: the database file is in use by another callsig process (a SQLite file serves one node: stop that one first)")

// Open opens (creating if needed) the SQLite database at path, applies the
// pending migrations, prepares the hot statements and starts the writer.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	if path == "" || strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("db: invalid database path %q", path)
	}
	sync := strings.ToUpper(opts.Synchronous)
	switch sync {
	case "":
		sync = "FULL"
	case "FULL", "NORMAL":
	default:
		return nil, fmt.Errorf("db: synchronous must be FULL or NORMAL, not %q", opts.Synchronous)
	}
	if opts.ReadConns <= 0 {
		opts.ReadConns = 4
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	if err := createPrivate(path); err != nil {
		return nil, err
	}
	var lock io.Closer = io.NopCloser(nil)
	if path != ":memory:" {
		var err error
		if lock, err = Lock(path); err != nil {
			return nil, err
		}
	}
	opened := false
	defer func() {
		if !opened {
			lock.Close()
		}
	}()
	// FULL is kept by the syncer (see syncer.go): the connection commits
	// with NORMAL and the WAL is fsynced before the answers.
	connSync := sync
	if sync == "FULL" && !opts.InlineSync {
		connSync = "NORMAL"
	}
	if err := registerWALVFS(); err != nil {
		return nil, err
	}
	wdb, err := sqlx.Open("sqlite", path+"?"+writerParams(connSync))
	if err != nil {
		return nil, fmt.Errorf("db: open writer: %w", err)
	}
	// One connection: SQLite allows one writer per file anyway, and a single
	// connection makes every write go through the group-commit queue instead
	// of fighting over the lock with busy retries. Kept open forever so the
	// statements prepared on it stay valid.
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	wdb.SetConnMaxLifetime(0)
	wdb.SetConnMaxIdleTime(0)
	// Opening the writer first puts the file in WAL mode before any reader
	// connects, and migrating before the readers open means they never see
	// an old schema.
	if err := wdb.PingContext(ctx); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("db: open %s: %w", path, err)
	}
	if err := migrate(ctx, wdb, log); err != nil {
		wdb.Close()
		return nil, err
	}
	if err := releaseLeases(ctx, wdb, log); err != nil {
		wdb.Close()
		return nil, err
	}
	if err := startRestored(ctx, wdb, log); err != nil {
		wdb.Close()
		return nil, err
	}

	rdb, err := sqlx.Open("sqlite", path+"?"+readerParams())
	if err != nil {
		wdb.Close()
		return nil, fmt.Errorf("db: open readers: %w", err)
	}
	rdb.SetMaxOpenConns(opts.ReadConns)
	rdb.SetMaxIdleConns(opts.ReadConns)
	if err := rdb.PingContext(ctx); err != nil {
		rdb.Close()
		wdb.Close()
		return nil, fmt.Errorf("db: open readers %s: %w", path, err)
	}

	s := &Store{
		lock:     lock,
		wdb:      wdb,
		rdb:      rdb,
		log:      log,
		wake:     make(chan struct{}, 1),
		stopped:  make(chan struct{}),
		toSync:   make(chan committedBatch, syncQueue),
		idle:     make(chan struct{}, 1),
		syncedCh: make(chan struct{}),
		subs:     make(subscriptions),
	}
	if !opts.NoCallCache {
		s.cache = newCallCache()
	}
	if connSync != sync {
		if err := s.pipelineSync(ctx); err != nil {
			rdb.Close()
			wdb.Close()
			return nil, err
		}
	}
	head, err := s.readLastEventID(ctx)
	if err != nil {
		rdb.Close()
		wdb.Close()
		return nil, err
	}
	s.durableEvent.Store(head)
	s.Webhooks = db.NewWebhooks(webhookSQL, s.write, s.read).WithStatementContext(detached).
		WithPrepared(s.preparedWrite, s.preparedRead)
	s.EventLog = s.eventLog()
	if err = s.watchRollbacks(ctx); err == nil {
		s.wst, err = prepareWrite(ctx, wdb)
	}
	if err == nil {
		s.rst, err = prepareRead(ctx, rdb, s.EventLog.Queries())
	}
	if err == nil {
		err = s.EventLog.LoadRestores(ctx)
	}
	if err != nil {
		s.wst.close()
		rdb.Close()
		wdb.Close()
		return nil, err
	}
	go s.runWriter()
	opened = true
	return s, nil
}

// watchRollbacks sets txEnded whenever the writer connection's
// transaction is rolled back. A change to calls runs without a savepoint
// (see openBatch.run): if SQLite rolled the transaction back under it (on
// SQLITE_FULL, an I/O error) and its fn went on, no RELEASE would fail to
// say so, and the requests after it would run outside any transaction.
// The writer is one connection kept for the store's life, so one
// registration holds.
func (s *Store) watchRollbacks(ctx context.Context) error {
	conn, err := s.wdb.Conn(ctx)
	if err != nil {
		return fmt.Errorf("db: watch rollbacks: %w", err)
	}
	defer conn.Close()
	err = conn.Raw(func(dc any) error {
		h, ok := dc.(msqlite.HookRegisterer)
		if !ok {
			return fmt.Errorf("driver connection %T has no hooks", dc)
		}
		h.RegisterRollbackHook(func() { s.txEnded.Store(true) })
		return nil
	})
	if err != nil {
		return fmt.Errorf("db: watch rollbacks: %w", err)
	}
	return nil
}

// syncQueue bounds how many committed batches wait for their fsync: the
// writer stops running new ones when the disk is that far behind.
const syncQueue = 64

// pipelineSync sets the syncer to fsync the WAL before answering, after
// checking the file really is in WAL mode (a filesystem without shared
// memory support refuses it; :memory: has no WAL): otherwise COMMIT must
// sync by itself, and the connection is set back to FULL. What a crashed
// process left in the WAL may be in the page cache only: it is made
// durable now, before anything reads it as durable.
func (s *Store) pipelineSync(ctx context.Context) error {
	var mode string
	if err := s.wdb.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("db: read journal mode: %w", err)
	}
	// The file SQLite opened, which is not path when path is a symlink:
	// its WAL is beside the target. Empty for an in-memory database.
	file, err := mainFile(ctx, s.wdb)
	if err != nil {
		return err
	}
	if !strings.EqualFold(mode, "wal") || file == "" {
		if _, err := s.wdb.ExecContext(ctx, "PRAGMA synchronous=FULL"); err != nil {
			return fmt.Errorf("db: set synchronous: %w", err)
		}
		return nil
	}
	s.wal.path = file + "-wal"
	s.syncWAL = s.wal.sync
	return s.wal.sync()
}

// mainFile returns the file of the main database as SQLite opened it.
func mainFile(ctx context.Context, wdb *sqlx.DB) (string, error) {
	rows, err := wdb.QueryContext(ctx, "PRAGMA database_list")
	if err != nil {
		return "", fmt.Errorf("db: list databases: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var seq int
		var name, file string
		if err := rows.Scan(&seq, &name, &file); err != nil {
			return "", fmt.Errorf("db: list databases: %w", err)
		}
		if name == "main" {
			return file, rows.Close()
		}
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("db: list databases: %w", err)
	}
	return "", nil
}

// createPrivate creates the database file readable by its owner only
// (0600), like the development secret beside it: it holds webhook signing
// secrets and stored responses. SQLite gives the -wal and -shm files it
// creates the database file's permissions. An existing file is left as the
// operator set it.
func createPrivate(path string) error {
	if path == ":memory:" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("db: create %s: %w", path, err)
	}
	return f.Close()
}

// walSizeLimit is the length a WAL is cut back to when it restarts
// (journal_size_limit): 64 MiB, well above the 4 MiB a checkpoint keeps it
// at under load, so the truncation costs nothing then.
const walSizeLimit = 64 << 20

// writerParams are the DSN parameters of the writer connection. The driver
// runs busy_timeout first and the other _pragma values after it in name
// order; none of them depends on running before another.
func writerParams(sync string) string {
	return strings.Join([]string{
		// Another process (a backup, the sqlite3 shell) may hold the lock
		// briefly: wait up to 5 s instead of failing with SQLITE_BUSY. First,
		// so the pragmas below that touch the file wait too.
		"_pragma=busy_timeout(5000)",
		// Readers never block the writer nor the writer readers, and a commit
		// appends to the WAL (one fsync) instead of rewriting pages in place.
		"_pragma=journal_mode(WAL)",
		// FULL fsyncs the WAL at every commit, so an acknowledged request
		// survives power loss; NORMAL (opt-in) syncs only at checkpoints and
		// may lose the last commits, never consistency.
		"_pragma=synchronous(" + sync + ")",
		// A WAL grows past its usual few MiB while a reader holds an old
		// snapshot (a backup, a long replay): SQLite writes from its start
		// again once a checkpoint caught up, but keeps the file's length.
		// Truncated to this when it restarts, it gives the disk back.
		"_pragma=journal_size_limit(" + strconv.Itoa(walSizeLimit) + ")",
		// call_users and webhook_deliveries must point at existing parents;
		// SQLite leaves enforcement off unless asked, per connection.
		"_pragma=foreign_keys(1)",
		// Every request of a group commit runs in its own SAVEPOINT, and
		// SQLite copies each page a savepoint first touches to a statement
		// journal: a temp file by default, i.e. a write syscall per page.
		// In memory it costs a memcpy; it is discarded at commit anyway and
		// holds nothing durable.
		"_pragma=temp_store(MEMORY)",
		// BEGIN IMMEDIATE takes the write lock at BEGIN, so a transaction can
		// never fail halfway when upgrading a read lock (a SQLITE_BUSY that
		// busy_timeout cannot retry).
		"_txlock=immediate",
		// Its WAL writes are gathered into one call per commit (walvfs.go).
		"vfs=" + walVFSName,
	}, "&")
}

// readerParams are the DSN parameters of the read pool.
func readerParams() string {
	return strings.Join([]string{
		// A reader can meet a lock while the WAL index is being rebuilt.
		"_pragma=busy_timeout(5000)",
		// A bug that writes through the read pool fails loudly instead of
		// racing the writer for the lock.
		"_pragma=query_only(1)",
	}, "&")
}

// releaseLeases ends the webhook leases a process that died mid-attempt
// left (SIGKILL, a power cut): a SQLite file is one node's, so at open
// nobody is making those attempts, and waiting out the lease (minutes)
// would only delay them. They are sent again at once, under the same
// webhook-id, which receivers dedupe on. A clean stop released its own.
func releaseLeases(ctx context.Context, wdb *sqlx.DB, log *slog.Logger) error {
	res, err := wdb.ExecContext(ctx, `UPDATE webhook_deliveries SET locked_until = 0 WHERE locked_until > 0`)
	if err != nil {
		return fmt.Errorf("db: release the webhook leases of a process that died: %w", err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		log.Info("webhook attempts a process that died left in flight are due again", "deliveries", n)
	}
	return nil
}
