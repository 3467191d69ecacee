package handlers

import (
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TokenRequest describes a user token to mint.
type TokenRequest struct {
	UserID   string
	TTL      time.Duration
	Admin    bool   // adds the claim role=admin
	Issuer   string // iss, when the server checks it
	Audience string // aud, when the server checks it
	// UserClaim, when set and not "sub", also carries the user ID: the
	// server reads it from there (CALLSIG_JWT_USER_CLAIM).
	UserClaim string
}

// MintToken returns an HS256 JWT that authenticator.parse accepts: minting
// lives beside the verification so the two cannot drift apart. Used by the
// token subcommand, POST /dev/token and tests.
func MintToken(secret []byte, r TokenRequest, now time.Time) (string, error) {
	claims := jwt.MapClaims{"sub": r.UserID, "iat": now.Unix(), "exp": now.Add(r.TTL).Unix()}
	if r.UserClaim != "" {
		claims[r.UserClaim] = r.UserID
	}
	if r.Admin {
		claims["role"] = "admin"
	}
	if r.Issuer != "" {
		claims["iss"] = r.Issuer
	}
	if r.Audience != "" {
		claims["aud"] = r.Audience
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
}
