package sqlite

import "callsig/calls"

// cacheCalls is how many calls a generation of the writer's call cache
// holds: with two generations, at most twice that many calls (a few KiB
// each at the most) stay in memory, and a call is found again if it
// changed within roughly the last cacheCalls calls to change, which
// covers a call's whole ring-to-answer life under any load this node
// takes.
const cacheCalls = 4096

// callCache keeps, for the writer goroutine only, the calls as the write
// transaction last left them, so that a change to a call the writer has
// just written (the delivery mark and the accept after an invitation, a
// deadline after it) does not read the call and user rows back: two
// statements that were a sixth of the writer's time under a call load.
//
// It mirrors the database exactly because every write to calls and
// call_users goes through callsTx.Save, on the writer goroutine, and
// calls are never deleted. It is layered as the transaction is: what the
// running request saved or read (req, dropped when its savepoint rolls
// back), what the released requests of the open batch left (batch,
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
}

func newCallCache() *callCache {
	return &callCache{
		req:   make(map[string]*calls.Call),
		batch: make(map[string]*calls.Call),
		cur:   make(map[string]*calls.Call),
		old:   make(map[string]*calls.Call),
	}
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

// put records c, as the running request just read or saved it.
func (cc *callCache) put(c *calls.Call) {
	if cc != nil {
		cc.req[c.ID] = c.Saved()
	}
}

// released keeps what the running request left: its savepoint was
// released into the batch.
func (cc *callCache) released() {
	if cc == nil {
		return
	}
	for id, c := range cc.req {
		cc.batch[id] = c
	}
	clear(cc.req)
}

// rolledBack forgets what the running request left: its savepoint was
// rolled back.
func (cc *callCache) rolledBack() {
	if cc != nil {
		clear(cc.req)
	}
}

// committed keeps what the batch left: its COMMIT succeeded.
func (cc *callCache) committed() {
	if cc == nil {
		return
	}
	for id, c := range cc.batch {
		if len(cc.cur) >= cacheCalls {
			cc.old, cc.cur = cc.cur, cc.old
			clear(cc.cur)
		}
		cc.cur[id] = c
		delete(cc.old, id) // cur shadows it; keep only one copy
	}
	clear(cc.batch)
}

// reset forgets everything: the transaction failed, or a write left the
// database in a state the cache does not know.
func (cc *callCache) reset() {
	if cc == nil {
		return
	}
	clear(cc.req)
	clear(cc.batch)
	clear(cc.cur)
	clear(cc.old)
}
