package handlers

import (
	"sync"
	"time"
)

// tokenCache remembers the tokens verified lately, so a client sending
// the same token with every request (a user's app does, for as long as
// the token lives) pays its signature check and claim parsing once, not
// per request: they were 3 % of the server's CPU under a call load.
//
// A hit is only ever a token verified before, byte for byte, and is
// accepted until the earlier of its exp and the entry's ttl: exp is
// checked again at every use, nbf and iat passed when it was verified and
// cannot become false later. The ttl bounds how long a token stays
// accepted after its identity provider's key leaves the JWKS. Failures are
// not cached: a bad token pays the full check every time, which costs the
// sender as much as the server.
type tokenCache struct {
	ttl      time.Duration
	max      int // entries
	maxBytes int // of the tokens, which are the keys

	mu      sync.Mutex
	entries map[string]verifiedToken
	bytes   int
}

// verifiedToken is what parse returned for a token.
type verifiedToken struct {
	user  string
	admin bool
	exp   time.Time
	until time.Time // the entry's own expiry: verified at + ttl
}

func newTokenCache(ttl time.Duration, max, maxBytes int) *tokenCache {
	return &tokenCache{ttl: ttl, max: max, maxBytes: maxBytes, entries: map[string]verifiedToken{}}
}

// get returns the entry of token while both it and the token are live.
func (c *tokenCache) get(token string, now time.Time) (verifiedToken, bool) {
	c.mu.Lock()
	v, ok := c.entries[token]
	if ok && (!now.Before(v.until) || !now.Before(v.exp)) {
		delete(c.entries, token)
		c.bytes -= len(token)
		ok = false
	}
	c.mu.Unlock()
	return v, ok
}

// put remembers a verified token. At max entries or maxBytes the cache is
// emptied first: a crude bound, but a cheap one, and a full cache only
// costs one verification per active token to refill.
func (c *tokenCache) put(token string, v verifiedToken, now time.Time) {
	v.until = now.Add(c.ttl)
	c.mu.Lock()
	if _, ok := c.entries[token]; ok {
		c.bytes -= len(token)
	}
	if len(c.entries) >= c.max || c.bytes+len(token) > c.maxBytes {
		clear(c.entries)
		c.bytes = 0
	}
	c.entries[token] = v
	c.bytes += len(token)
	c.mu.Unlock()
}
