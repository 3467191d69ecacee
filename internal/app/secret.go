package app

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// devSecret loads the development secret kept beside the database, creating
// it on first start, so tokens minted in development survive restarts.
func devSecret(dbPath string) ([]byte, string, error) {
	path := dbPath + ".secret"
	b, err := os.ReadFile(path)
	if err == nil {
		s := strings.TrimSpace(string(b))
		if len(s) >= 32 {
			return []byte(s), path, nil
		}
		return nil, path, fmt.Errorf("development secret %s is too short; delete it to make a new one", path)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, path, fmt.Errorf("read development secret: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, path, err
	}
	s := base64.RawURLEncoding.EncodeToString(raw)
	// O_EXCL: two servers started at once on one database agree on one secret.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return devSecret(dbPath)
	}
	if err != nil {
		return nil, path, fmt.Errorf("create development secret: %w", err)
	}
	if _, err := f.WriteString(s + "\n"); err != nil {
		f.Close()
		return nil, path, fmt.Errorf("write development secret: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, path, fmt.Errorf("write development secret: %w", err)
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
