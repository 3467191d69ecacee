package sqlite

import (
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// The writer's WAL writes, gathered.
//
// SQLite writes a WAL frame with two pwrite calls, its 24-byte header and
// then its page, and a commit of the writer's group dirties some 30 (16
// senders) to 110 (64 callers) pages: 60 to 220 system calls a commit. On
// this project's 2-core VM a pwrite costs about 4 µs of CPU whatever its
// size, so they were 12 % of the server's CPU under load, all of it on the
// writer goroutine, the server's bottleneck. A Go program writing 33
// frames that way took 145 µs of CPU a commit, and 16 µs as one pwrite
// of the same bytes.
//
// walVFSName is a VFS that is the default one (unix) but for the WAL
// files it opens: their writes that follow each other in the file are
// gathered in a buffer and written with one call, at the latest when the
// page of a commit frame (a frame header whose database size is not 0)
// has been given. SQLite writes a commit frame last, and publishes the
// frames to readers (the wal-index header) only after its writes
// returned, so every committed frame is in the file, as with the unix
// VFS, before COMMIT returns, hence before the syncer's fsync that the
// answers wait for. Any other operation on the file (a read, a sync, a
// truncation, its size, a file control, its close) and any write that
// does not follow the buffer writes the buffer first, so the file sees
// the same writes in the same order, only fewer calls. What is still
// buffered when the process dies is frames of a transaction that had not
// committed: SQLite ignores them as it ignores a torn write.
//
// Only the writer connection opens its database with this VFS; the read
// pool never writes the WAL.
const walVFSName = "callsig-wal"

// walBufferSize bounds a WAL file's buffer: a commit's frames at 64
// callers are about 450 KiB with 4 KiB pages; a larger write goes
// straight through.
const walBufferSize = 1 << 20

// walWriteMax is the most one xWrite of the unix VFS may be given: its
// seekAndWriteFd keeps the low 17 bits of the length (SQLite asserts that
// no write is larger), so 128 KiB would be written as 0 bytes.
const walWriteMax = 1<<17 - 1

var (
	walVFSOnce sync.Once
	walVFSErr  error

	// walVFS and walMethods (*sqlite3.Tsqlite3_vfs, *Tsqlite3_io_methods)
	// are read by SQLite for as long as the process lives: C memory, never
	// freed (SQLite walks them with pointer arithmetic, which Go's checkptr
	// refuses on Go memory).
	walVFS     uintptr
	walMethods uintptr

	baseVFS     uintptr // the default VFS (*sqlite3.Tsqlite3_vfs)
	baseOpen    uintptr
	baseMethods uintptr // the io methods of the first WAL file opened: only files with these are wrapped
	base        sqlite3.Tsqlite3_io_methods

	walMu    sync.Mutex
	walFiles = map[uintptr]*walFile{} // by the sqlite3_file's address

	// walWrites counts the writes SQLite gave wrapped WAL files (given)
	// and the ones made to the files (made).
	walWrites struct{ given, made atomic.Int64 }
)

// walFile is a WAL file's buffer: n bytes at mem (C memory, given to the
// base xWrite as it is) that belong at off in the file.
type walFile struct {
	mem    uintptr
	n      int64
	off    int64
	commit bool // the last write was a commit frame's header: its page ends the commit

	// lost: a flush failed, and the frames it held from lostAt on are not
	// in the file: frames of a transaction that has not committed (a
	// commit's own flush fails its COMMIT). Until SQLite writes a frame
	// header (or the WAL's) at or before lostAt, starting over from there
	// after the rollback the error brings, the writes and the reads of
	// anything from lostAt on fail: that transaction can neither read the
	// lost frames back nor commit, since its commit frame comes after them.
	lost   bool
	lostAt int64
}

// registerWALVFS registers walVFSName once.
func registerWALVFS() error {
	walVFSOnce.Do(func() {
		tls := libc.NewTLS()
		defer tls.Close()
		baseVFS = sqlite3.Xsqlite3_vfs_find(tls, 0)
		if baseVFS == 0 {
			walVFSErr = fmt.Errorf("db: no default SQLite VFS")
			return
		}
		name, err := libc.CString(walVFSName)
		if err != nil {
			walVFSErr = fmt.Errorf("db: the WAL VFS's name: %w", err)
			return
		}
		walVFS = libc.Xmalloc(tls, sqlite3.Tsize_t(unsafe.Sizeof(sqlite3.Tsqlite3_vfs{})))
		walMethods = libc.Xmalloc(tls, sqlite3.Tsize_t(unsafe.Sizeof(sqlite3.Tsqlite3_io_methods{})))
		if walVFS == 0 || walMethods == 0 {
			walVFSErr = fmt.Errorf("db: the WAL VFS: out of memory")
			return
		}
		v := (*sqlite3.Tsqlite3_vfs)(cptr(walVFS))
		*v = *(*sqlite3.Tsqlite3_vfs)(cptr(baseVFS))
		baseOpen = v.FxOpen
		v.FpNext = 0
		v.FzName = name
		*(*func(*libc.TLS, uintptr, uintptr, uintptr, int32, uintptr) int32)(unsafe.Pointer(&v.FxOpen)) = walOpen
		if rc := sqlite3.Xsqlite3_vfs_register(tls, walVFS, 0); rc != sqlite3.SQLITE_OK {
			walVFSErr = fmt.Errorf("db: register the WAL VFS: SQLite error %d", rc)
		}
	})
	return walVFSErr
}

// cptr turns an address SQLite gave (C memory) into a pointer. Read
// through memory so that vet's unsafeptr check, which is right about Go
// memory, does not flag what is not.
func cptr(p uintptr) unsafe.Pointer {
	return *(*unsafe.Pointer)(unsafe.Pointer(&p))
}

// walOpen opens a file as the default VFS does and, when it is a WAL,
// wraps its methods.
func walOpen(tls *libc.TLS, pVfs, zName, pFile uintptr, flags int32, pOutFlags uintptr) int32 {
	rc := (*(*func(*libc.TLS, uintptr, uintptr, uintptr, int32, uintptr) int32)(unsafe.Pointer(&struct{ uintptr }{baseOpen})))(tls, baseVFS, zName, pFile, flags, pOutFlags)
	if rc != sqlite3.SQLITE_OK || flags&sqlite3.SQLITE_OPEN_WAL == 0 {
		return rc
	}
	f := (*sqlite3.Tsqlite3_file)(cptr(pFile))
	walMu.Lock()
	defer walMu.Unlock()
	if baseMethods == 0 && f.FpMethods != 0 {
		baseMethods = f.FpMethods
		base = *(*sqlite3.Tsqlite3_io_methods)(cptr(baseMethods))
		m := (*sqlite3.Tsqlite3_io_methods)(cptr(walMethods))
		*m = base
		*(*func(*libc.TLS, uintptr) int32)(unsafe.Pointer(&m.FxClose)) = walClose
		*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&m.FxRead)) = walRead
		*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&m.FxWrite)) = walWrite
		*(*func(*libc.TLS, uintptr, int64) int32)(unsafe.Pointer(&m.FxTruncate)) = walTruncate
		*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&m.FxSync)) = walSync
		*(*func(*libc.TLS, uintptr, uintptr) int32)(unsafe.Pointer(&m.FxFileSize)) = walFileSize
		*(*func(*libc.TLS, uintptr, int32, uintptr) int32)(unsafe.Pointer(&m.FxFileControl)) = walFileControl
	}
	if f.FpMethods != baseMethods {
		return rc // another kind of file: left as the default VFS opened it
	}
	mem := libc.Xmalloc(tls, walBufferSize)
	if mem == 0 {
		return rc // unbuffered: as the default VFS
	}
	walFiles[pFile] = &walFile{mem: mem}
	f.FpMethods = walMethods
	return rc
}

func walFileOf(pFile uintptr) *walFile {
	walMu.Lock()
	defer walMu.Unlock()
	return walFiles[pFile]
}

// flush writes w's buffer, if any, with the base xWrite.
func (w *walFile) flush(tls *libc.TLS, pFile uintptr) int32 {
	w.commit = false
	if w.n == 0 {
		return sqlite3.SQLITE_OK
	}
	n := w.n
	w.n = 0
	for done := int64(0); done < n; done += walWriteMax {
		if rc := baseWrite(tls, pFile, w.mem+uintptr(done), int32(min(walWriteMax, n-done)), w.off+done); rc != sqlite3.SQLITE_OK {
			w.lost, w.lostAt = true, w.off
			return rc
		}
	}
	return sqlite3.SQLITE_OK
}

// settle writes the buffer before an operation other than a write, and
// fails it with SQLITE_IOERR_WRITE when that write fails. Not the write's
// own code: a SQLITE_FULL from a read made SQLite roll back only the
// statement reading, and commit the transaction with frames the
// wal-index lists and the file lacks (a review reproduced it on a full
// disk); an I/O error rolls back the whole transaction, as the write's
// failure did when it was not deferred.
func (w *walFile) settle(tls *libc.TLS, pFile uintptr) int32 {
	if w.flush(tls, pFile) != sqlite3.SQLITE_OK {
		return sqlite3.SQLITE_IOERR_WRITE
	}
	return sqlite3.SQLITE_OK
}

func baseWrite(tls *libc.TLS, pFile, buf uintptr, amt int32, off int64) int32 {
	walWrites.made.Add(1)
	return (*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&struct{ uintptr }{base.FxWrite})))(tls, pFile, buf, amt, off)
}

// walWrite gathers a write that follows the buffer (or starts one), and
// writes the buffer once a commit frame is complete.
func walWrite(tls *libc.TLS, pFile, zBuf uintptr, amt int32, off int64) int32 {
	walWrites.given.Add(1)
	w := walFileOf(pFile)
	if w.lost {
		if !((amt == 24 || amt == 32 && off == 0) && off <= w.lostAt) {
			return sqlite3.SQLITE_IOERR_WRITE
		}
		w.lost = false // SQLite writes frames again from before what was lost
	}
	if w.n > 0 && (off != w.off+w.n || w.n+int64(amt) > walBufferSize) {
		if rc := w.flush(tls, pFile); rc != sqlite3.SQLITE_OK {
			return rc
		}
	}
	// A frame header: page number, then the database's size in pages
	// after the commit for a commit frame (0 otherwise), big-endian.
	commit := amt == 24 && *(*uint32)(cptr(zBuf + 4)) != 0
	if w.n == 0 {
		// A run starts with the WAL's header or a new frame's header, and
		// never with a commit frame's: a commit's checksums rewritten in
		// place (SQLite reads each frame back and writes its header again,
		// the commit frame's last) have no page after them, so they would
		// stay buffered past the commit. Anything else that starts
		// nowhere (a page rewritten in place, a commit of one frame) is
		// written as the unix VFS writes it.
		if !(amt == 32 && off == 0 || amt == 24 && !commit) {
			return baseWrite(tls, pFile, zBuf, amt, off)
		}
		w.off = off
	}
	endsCommit := w.commit
	copy(unsafe.Slice((*byte)(cptr(w.mem+uintptr(w.n))), amt), unsafe.Slice((*byte)(cptr(zBuf)), amt))
	w.n += int64(amt)
	w.commit = commit
	if endsCommit {
		return w.flush(tls, pFile)
	}
	return sqlite3.SQLITE_OK
}

func walRead(tls *libc.TLS, pFile, zBuf uintptr, amt int32, off int64) int32 {
	w := walFileOf(pFile)
	if rc := w.settle(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	if w.lost && off+int64(amt) > w.lostAt {
		return sqlite3.SQLITE_IOERR_READ
	}
	return (*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&struct{ uintptr }{base.FxRead})))(tls, pFile, zBuf, amt, off)
}

func walTruncate(tls *libc.TLS, pFile uintptr, size int64) int32 {
	w := walFileOf(pFile)
	if rc := w.settle(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	if size <= w.lostAt {
		w.lost = false // what was lost is cut off
	}
	return (*(*func(*libc.TLS, uintptr, int64) int32)(unsafe.Pointer(&struct{ uintptr }{base.FxTruncate})))(tls, pFile, size)
}

func walSync(tls *libc.TLS, pFile uintptr, flags int32) int32 {
	if rc := walFileOf(pFile).settle(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return (*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&struct{ uintptr }{base.FxSync})))(tls, pFile, flags)
}

func walFileSize(tls *libc.TLS, pFile, pSize uintptr) int32 {
	if rc := walFileOf(pFile).settle(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return (*(*func(*libc.TLS, uintptr, uintptr) int32)(unsafe.Pointer(&struct{ uintptr }{base.FxFileSize})))(tls, pFile, pSize)
}

func walFileControl(tls *libc.TLS, pFile uintptr, op int32, pArg uintptr) int32 {
	if rc := walFileOf(pFile).settle(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return (*(*func(*libc.TLS, uintptr, int32, uintptr) int32)(unsafe.Pointer(&struct{ uintptr }{base.FxFileControl})))(tls, pFile, op, pArg)
}

// walClose writes the buffer and closes the file; the buffer's error, if
// any, is the close's.
func walClose(tls *libc.TLS, pFile uintptr) int32 {
	walMu.Lock()
	w := walFiles[pFile]
	delete(walFiles, pFile)
	walMu.Unlock()
	rc := w.flush(tls, pFile)
	libc.Xfree(tls, w.mem)
	if crc := (*(*func(*libc.TLS, uintptr) int32)(unsafe.Pointer(&struct{ uintptr }{base.FxClose})))(tls, pFile); rc == sqlite3.SQLITE_OK {
		rc = crc
	}
	return rc
}
