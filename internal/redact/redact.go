// Package redact keeps the password of a configured URL (a database DSN,
// NATS, a webhook) out of what a process prints: the configuration is the
// operator's, the log may be anyone's.
package redact

import (
	"errors"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// urlPassword finds the password of scheme://user:password@host, also in
// a URL url.Parse refuses (a bad port), whose error then quotes it whole.
var urlPassword = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*://[^/@:]*:([^@/]*)@`)

// Err returns err with rawURL's password, if any, replaced by xxxxx in
// its text (nil stays nil). The password is the one of user:password@ and
// that of a query parameter naming one (postgres://u@h/db?password=...,
// which pgx takes as well).
func Err(err error, rawURL string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	for _, pw := range passwords(rawURL) {
		msg = strings.ReplaceAll(msg, pw, "xxxxx")
	}
	if msg == err.Error() {
		return err
	}
	return errors.New(msg)
}

// passwords returns the passwords rawURL holds: in its user information
// and in query parameters whose name holds "password" (password,
// sslpassword), as written and unescaped, the longest first. The query is
// split by hand: url.ParseQuery refuses a pair with a ';' or a bad escape
// (a password such as "a;b" or "50%off"), and all of them once one pair is
// bad, and such a password was then left in the text.
func passwords(rawURL string) []string {
	var out []string
	if m := urlPassword.FindStringSubmatch(rawURL); m != nil && m[1] != "" {
		out = append(out, m[1])
	}
	if _, query, ok := strings.Cut(rawURL, "?"); ok {
		for _, pair := range strings.Split(query, "&") {
			k, v, _ := strings.Cut(pair, "=")
			if !IsPasswordParam(unescaped(k)) || v == "" {
				continue
			}
			out = append(out, v)
			if u := unescaped(v); u != v && u != "" {
				out = append(out, u)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// unescaped is s query-unescaped, or s itself when it holds a bad escape.
func unescaped(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

// IsPasswordParam says whether a URL query parameter named name holds a
// password (pgx reads password and sslpassword from a postgres:// URL's
// query).
func IsPasswordParam(name string) bool {
	return strings.Contains(strings.ToLower(name), "password")
}

// RedactedURL returns u's text with the password of its user information
// and of its query parameters replaced by xxxxx. The query is rewritten
// pair by pair, the others left as they were (url.Values would drop a
// pair it cannot parse, a password with a ';' or a bad escape among them,
// and so leave it in the text).
func RedactedURL(u *url.URL) string {
	c := *u
	if c.RawQuery != "" {
		pairs := strings.Split(c.RawQuery, "&")
		changed := false
		for i, pair := range pairs {
			if k, _, ok := strings.Cut(pair, "="); ok && IsPasswordParam(unescaped(k)) {
				pairs[i] = k + "=xxxxx"
				changed = true
			}
		}
		if changed {
			c.RawQuery = strings.Join(pairs, "&")
		}
	}
	return c.Redacted()
}

// URL returns rawURL quoted for a message, its password replaced, or a
// placeholder when it does not parse.
func URL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(an unparsable URL)"
	}
	return strconv.Quote(RedactedURL(u))
}

// Attr returns rawURL for a log attribute (not quoted: the handler
// quotes), its password replaced, or a placeholder when it does not
// parse.
func Attr(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(an unparsable URL)"
	}
	return RedactedURL(u)
}

// urlToken finds the user of scheme://user@host given without a password,
// which NATS takes for a token (nats://TOKEN@host:4222).
var urlToken = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*://([^/@:]+)@`)

// TokenErr is Err for a URL whose user, when given without a password,
// is a secret too: NATS's token form. rawURL may list servers separated
// by commas (as NATS takes them), each with its own secrets: an error
// about the second one quotes it.
func TokenErr(err error, rawURL string) error {
	for _, one := range strings.Split(rawURL, ",") {
		one = strings.TrimSpace(one)
		err = Err(err, one)
		if err == nil {
			return nil
		}
		m := urlToken.FindStringSubmatch(one)
		if m == nil || !strings.Contains(err.Error(), m[1]) {
			continue
		}
		err = errors.New(strings.ReplaceAll(err.Error(), m[1], "xxxxx"))
	}
	return err
}

// TokenAttr is Attr for a URL whose user, when given without a password,
// is a secret too (NATS's token form): that user is replaced as well.
func TokenAttr(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(an unparsable URL)"
	}
	if u.User != nil {
		if _, ok := u.User.Password(); !ok {
			u.User = url.User("xxxxx")
		}
	}
	return RedactedURL(u)
}
