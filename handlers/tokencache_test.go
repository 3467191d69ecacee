package handlers

import (
	"fmt"
	"testing"
	"time"
)

func TestTokenCache(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	v := verifiedToken{user: "alice", exp: t0.Add(10 * time.Minute)}
	for _, tc := range []struct {
		name string
		exp  time.Duration // the token's exp after t0
		at   time.Duration // the lookup after t0
		hit  bool
	}{
		{"fresh", 10 * time.Minute, 30 * time.Second, true},
		{"past the entry's ttl", 10 * time.Minute, time.Minute, false},
		{"past the token's exp", 20 * time.Second, 30 * time.Second, false},
		{"at the token's exp", 30 * time.Second, 30 * time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTokenCache(time.Minute, 10, 1<<20)
			v.exp = t0.Add(tc.exp)
			c.put("tok", v, t0)
			got, ok := c.get("tok", t0.Add(tc.at))
			if ok != tc.hit {
				t.Fatalf("hit = %v, want %v", ok, tc.hit)
			}
			if ok && got.user != "alice" {
				t.Fatalf("user = %q", got.user)
			}
			if _, again := c.get("tok", t0.Add(tc.at)); !tc.hit && again {
				t.Fatal("an expired entry was kept")
			}
		})
	}
	if _, ok := newTokenCache(time.Minute, 10, 1<<20).get("never verified", t0); ok {
		t.Fatal("a token never verified is a hit")
	}
}

func TestTokenCacheIsBoundedInBytes(t *testing.T) {
	c := newTokenCache(time.Minute, 100, 10)
	t0 := time.Unix(1_000_000, 0)
	v := verifiedToken{user: "u", exp: t0.Add(time.Hour)}
	c.put("abcdef", v, t0)
	c.put("abcdef", v, t0) // the same token again takes no more room
	if _, ok := c.get("abcdef", t0); !ok || c.bytes != 6 {
		t.Fatalf("after the same token twice: cached %v, %d bytes; want cached, 6", ok, c.bytes)
	}
	c.put("ghijkl", v, t0)
	if _, ok := c.get("abcdef", t0); ok || c.bytes != 6 {
		t.Fatalf("past 10 bytes: the first kept %v, %d bytes; want emptied first, 6", ok, c.bytes)
	}
}

func TestTokenCacheIsBounded(t *testing.T) {
	c := newTokenCache(time.Minute, 100, 1<<20)
	t0 := time.Unix(1_000_000, 0)
	for i := range 1000 {
		c.put(fmt.Sprint("tok", i), verifiedToken{user: "u", exp: t0.Add(time.Hour)}, t0)
		if n := len(c.entries); n > 100 {
			t.Fatalf("%d entries, want at most 100", n)
		}
	}
	if _, ok := c.get("tok999", t0); !ok {
		t.Fatal("the newest token is not cached")
	}
}
