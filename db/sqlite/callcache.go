package sqlite

import "callsig/calls"

// The writer's call cache is bounded by the bytes of the calls it holds
// (callSize), not their count: a call's extended data, and each user's,
// may be kilobytes.
const (
	// cacheGeneration is what one committed generation holds: two of them,
	// at most 2 × cacheGeneration, stay in memory. A typical call is under
	// a kilobyte, so a call is found again if it changed within the last
	// several thousand calls to change: its whole ring-to-answer life under
	// any load this node takes.
	cacheGeneration = 8 << 20
	// cachePending bounds what one open batch adds (the req and batch
	// layers): a batch of requests that each touch hundreds of calls (a
	// caller's presence pages) caches only this much of them.
	cachePending = 8 << 20
)

// callCache keeps, for the writer goroutine only, the calls as the write
// transaction last left them, so that a change to a call the writer has
// just written (the delivery mark and the accept after an invitation, a
// deadline after it) does not read the call and user rows back: two
// statements that were a sixth of the writer's time under a call load.
//
// It mirrors the database exactly because every write to calls and
// call_users goes through callsTx.Save, on the writer goroutine, calls are
// never deleted, and Save caches a call only when it knows every row it
// holds (see saved). It is layered as the transaction is: what the
// running request saved or read (req, dropped when the request fails:
// its savepoint rolls back, or it wrote nothing), what the released requests of the open batch left (batch,
// dropped when the batch rolls back or its COMMIT fails), and what
// committed batches left (cur and old, two generations: when cur is full
// it becomes old and the old one is dropped). A Save that fails part way
// empties it all: what it wrote is then unknown.
//
// Entries are owned copies (calls.Call.Saved); get hands out copies too,
// so a transition never changes what is cached. A nil *callCache caches
// nothing.
type callCache struct {
	req, batch, cur, old map[string]*calls.Call
	// What req, batch and cur hold, in callSize bytes (an overestimate: a
	// replaced entry is counted twice).
	reqBytes, batchBytes, curBytes int
}

func newCallCache() *callCache {
	return &callCache{
		req:   make(map[string]*calls.Call),
		batch: make(map[string]*calls.Call),
		cur:   make(map[string]*calls.Call),
		old:   make(map[string]*calls.Call),
	}
}

// callSize is roughly the memory a cached call takes.
func callSize(c *calls.Call) int {
	n := 256 + len(c.ID) + len(c.Caller) + len(c.ExtendedData)
	for _, u := range c.Users {
		n += 192 + len(u.UserID) + len(u.Inviter) + len(u.ExtendedData) + len(u.MainDevice)
	}
	return n
}

// get returns a copy of the call as the transaction holds it, or nil when
// it is not cached.
func (cc *callCache) get(id string) *calls.Call {
	if c := cc.peek(id); c != nil {
		return c.Saved()
	}
	return nil
}

// peek is get without the copy: the caller must not change what it
// returns.
func (cc *callCache) peek(id string) *calls.Call {
	if cc == nil {
		return nil
	}
	for _, m := range [...]map[string]*calls.Call{cc.req, cc.batch, cc.cur, cc.old} {
		if c, ok := m[id]; ok {
			return c
		}
	}
	return nil
}

// put records c, as the running request just read or saved it: as its
// rows hold it. Past cachePending for the open batch, it forgets the call
// instead, so no older copy stands for it.
func (cc *callCache) put(c *calls.Call) {
	if cc == nil {
		return
	}
	size := callSize(c)
	if cc.reqBytes+cc.batchBytes+size > cachePending {
		cc.forget(c.ID)
		return
	}
	cc.reqBytes += size
	cc.req[c.ID] = c.Saved()
}

// saved records the call of ch, which Save has just written, when the
// cache can tell what its rows now hold: a new call as it is; a changed
// one when it was cached before (prev, as peek returned it) and ch changed
// no row Save leaves alone: a user not marked dirty, the caller, the
// creation time. Otherwise it forgets the call, and the next Call reads
// the rows.
func (cc *callCache) saved(ch *calls.Change, prev *calls.Call) {
	if cc == nil {
		return
	}
	if ch.Created || sameUnwritten(prev, ch.Call) {
		cc.put(ch.Call)
		return
	}
	cc.forget(ch.Call.ID)
}

// sameUnwritten reports whether c, saved over prev, leaves prev as it was
// in everything Save does not write: the columns sqlUpdateCall does not
// set, and the users not marked dirty (Save writes a dirty user's whole
// row, at its place in the list).
func sameUnwritten(prev, c *calls.Call) bool {
	if prev == nil || prev.ID != c.ID || prev.Seq != c.Seq || prev.Caller != c.Caller ||
		prev.CreateTime != c.CreateTime || len(c.Users) < len(prev.Users) {
		return false
	}
	for i, u := range c.Users {
		switch {
		case i >= len(prev.Users):
			if !u.Dirty() {
				return false // a new user that Save did not write
			}
		case prev.Users[i].UserID != u.UserID:
			return false
		case !u.Dirty() && *prev.Users[i] != *u:
			return false
		}
	}
	return true
}

// forget drops every copy of the call.
func (cc *callCache) forget(id string) {
	for _, m := range [...]map[string]*calls.Call{cc.req, cc.batch, cc.cur, cc.old} {
		delete(m, id)
	}
}

// released keeps what the running request left: it succeeded, its
// savepoint (if it had one) released into the batch.
func (cc *callCache) released() {
	if cc == nil {
		return
	}
	for id, c := range cc.req {
		cc.batch[id] = c
	}
	cc.req = emptied(cc.req)
	cc.batchBytes += cc.reqBytes
	cc.reqBytes = 0
}

// rolledBack forgets what the running request left: it failed, its
// savepoint rolled back or, without one, having written nothing.
func (cc *callCache) rolledBack() {
	if cc != nil {
		cc.req = emptied(cc.req)
		cc.reqBytes = 0
	}
}

// committed keeps what the batch left: its COMMIT succeeded.
func (cc *callCache) committed() {
	if cc == nil {
		return
	}
	for id, c := range cc.batch {
		if cc.curBytes >= cacheGeneration {
			cc.old, cc.cur = cc.cur, emptied(cc.old)
			cc.curBytes = 0
		}
		cc.cur[id] = c
		cc.curBytes += callSize(c)
		delete(cc.old, id) // cur shadows it; keep only one copy
	}
	cc.batch = emptied(cc.batch)
	cc.batchBytes = 0
}

// reset forgets everything: the transaction failed, or a write left the
// database in a state the cache does not know.
func (cc *callCache) reset() {
	if cc == nil {
		return
	}
	cc.req, cc.batch = emptied(cc.req), emptied(cc.batch)
	cc.cur, cc.old = emptied(cc.cur), emptied(cc.old)
	cc.reqBytes, cc.batchBytes, cc.curBytes = 0, 0, 0
}

// emptied returns m cleared, or a new map when m had grown large: a Go map
// keeps its buckets after clear, and one big batch must not pin them.
func emptied(m map[string]*calls.Call) map[string]*calls.Call {
	if len(m) > 1024 {
		return make(map[string]*calls.Call)
	}
	clear(m)
	return m
}
