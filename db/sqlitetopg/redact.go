package sqlitetopg

import (
	"fmt"
	"net/url"
	"strings"
)

// redact keeps the password of dsn out of err's text: pgx's own messages
// do not repeat it, but a driver error may quote the connection string,
// and the command prints every error.
func redact(err error, dsn string) error {
	if err == nil {
		return nil
	}
	u, perr := url.Parse(dsn)
	if perr != nil || u.User == nil {
		return err
	}
	pw, ok := u.User.Password()
	if !ok || pw == "" || !strings.Contains(err.Error(), pw) {
		return err
	}
	return &redacted{msg: strings.ReplaceAll(err.Error(), pw, "xxxxx"), err: err}
}

// redacted is an error whose text hides a password but which still
// matches what it wraps (errors.Is(err, ErrTargetNotEmpty)).
type redacted struct {
	msg string
	err error
}

func (r *redacted) Error() string { return r.msg }
func (r *redacted) Unwrap() error { return r.err }

// Describe names the database a postgres:// URL points at, as
// "host/database", for messages: never the user or password.
func Describe(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable URL)"
	}
	host := u.Host
	if host == "" {
		host = "localhost"
	}
	return fmt.Sprintf("%s/%s", host, strings.TrimPrefix(u.Path, "/"))
}
