package sqlitetopg

import (
	"context"
	"strings"
	"testing"
	"time"
)

// No error of Copy repeats the password of the target's URL, whatever its
// shape (in the user info, as a parameter, percent-encoded) and wherever
// it fails (parsing, connecting, authenticating, a missing database), and
// Describe never shows it: the command prints both.
func TestCopyNeverRepeatsThePassword(t *testing.T) {
	src := sourceFile(t)
	const pw = "Sup3rSecretPw"
	for _, dsn := range []string{
		"postgres://postgres:" + pw + "@127.0.0.1:badport/x",
		"postgres://postgres:" + pw + "@127.0.0.1:1/x",
		"postgres://postgres@127.0.0.1:1/x?password=" + pw,
		"postgres://postgres:" + pw + "@127.0.0.1:5432/x?sslmode=bogus",
		"postgres://postgres@127.0.0.1:5432/x?sslmode=bogus&password=" + pw,
		"postgres://postgres:Sup3r%53ecretPw@127.0.0.1:1/x",
		"postgres://postgres:" + pw + "@127.0.0.1:5432/x?connect_timeout=abc",
		"postgres://postgres:" + pw + "@[::1/x",
		"postgres://postgres:" + pw + "@127.0.0.1:5432/x%zz",
		"postgres://postgres:" + pw + "@127.0.0.1:5432/callsig_no_such_database",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := Copy(ctx, src, dsn, Options{})
		cancel()
		switch {
		case err == nil:
			t.Errorf("%s: no error", dsn)
		case strings.Contains(err.Error(), pw):
			t.Errorf("the password is in the error: %v", err)
		}
		if d := Describe(dsn); strings.Contains(d, pw) {
			t.Errorf("the password is in Describe: %s", d)
		}
	}
}
