// Package redact keeps the password of a configured URL (a database DSN,
// NATS, a webhook) out of what a process prints: the configuration is the
// operator's, the log may be anyone's.
package redact

import (
	"errors"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// urlPassword finds the password of scheme://user:password@host, also in
// a URL url.Parse refuses (a bad port), whose error then quotes it whole.
var urlPassword = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*://[^/@:]*:([^@/]*)@`)

// Err returns err with rawURL's password, if any, replaced by xxxxx in
// its text (nil stays nil).
func Err(err error, rawURL string) error {
	if err == nil {
		return nil
	}
	m := urlPassword.FindStringSubmatch(rawURL)
	if m == nil || m[1] == "" || !strings.Contains(err.Error(), m[1]) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), m[1], "xxxxx"))
}

// URL returns rawURL quoted for a message, its password replaced, or a
// placeholder when it does not parse.
func URL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(an unparsable URL)"
	}
	return strconv.Quote(u.Redacted())
}
