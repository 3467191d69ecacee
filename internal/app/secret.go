package app

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// devSecret loads the development secret kept beside the database, creating
// it on first start, so tokens minted in development survive restarts.
func devSecret(dbPath string) ([]byte, string, error) {
	path := dbPath + ".secret"
	b, err := os.ReadFile(path)
	if err == nil {
		s := strings.TrimSpace(string(b))
		if len(s) < 32 {
			return nil, path, fmt.Errorf("development secret %s is too short; delete it to make a new one", path)
		}
		// Anyone who reads it mints tokens for any user: one made
		// readable by others (copied, or written by hand) is refused.
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
			return nil, path, fmt.Errorf("development secret %s is readable by others (%v): chmod 600 it, or delete it to make a new one", path, fi.Mode().Perm())
		}
		return []byte(s), path, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, path, fmt.Errorf("read development secret: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, path, err
	}
	s := base64.RawURLEncoding.EncodeToString(raw)
	// Written whole to a file of its own, then linked into place, which
	// fails if the secret exists: two servers (or a server and `callsig
	// token`) started at once on one database agree on one secret, and
	// neither reads a secret half written (created with O_EXCL and then
	// written, the other process read it empty and called it too short).
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".new-*")
	if err != nil {
		return nil, path, fmt.Errorf("create development secret: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(s + "\n"); err != nil {
		tmp.Close()
		return nil, path, fmt.Errorf("write development secret: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, path, fmt.Errorf("write development secret: %w", err)
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, fs.ErrExist) {
		return devSecret(dbPath)
	} else if err != nil {
		return nil, path, fmt.Errorf("create development secret: %w", err)
	}
	return []byte(s), path, nil
}

// ResolveSecret returns the configured secret, or the development one (and
// dev=true) when none is configured.
func ResolveSecret(c Config) (secret []byte, dev bool, path string, err error) {
	if c.JWTSecret != "" {
		return []byte(c.JWTSecret), false, "", nil
	}
	secret, path, err = devSecret(c.DB)
	return secret, true, path, err
}
