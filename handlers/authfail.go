package handlers

import (
	"net/http"
	"time"
)

// Failed logins are limited per client address: the rate limiter keys on
// the user a request signed in as, so one that never signs in was not
// limited at all, and a client could verify as many wrong tokens as it
// could send (guessing the admin token, or spending the server's CPU on
// signatures). An address has failedAuthBurst failures at once, then one
// per second; over that, its requests get 429 before their token is
// looked at. Loopback, private and link-local addresses are not limited
// (a proxy's, shared by all its clients), as for the connection cap.
const (
	failedAuthRate  = 1.0
	failedAuthBurst = 20
)

// remoteAddr is an http.Request's RemoteAddr as a net.Addr, for addrKey.
type remoteAddr string

func (a remoteAddr) Network() string { return "tcp" }
func (a remoteAddr) String() string  { return string(a) }

// failedAuthKey is the share of failed logins r's address counts against;
// false when it is not limited.
func failedAuthKey(r *http.Request) (string, bool) {
	key, capped := addrKey(remoteAddr(r.RemoteAddr))
	if !capped {
		return "", false
	}
	return key.String(), true
}

// reserveFailure takes one of r's address's failed logins before its
// token is verified, or answers 429 and reports false when they are used
// up. Taken before, not counted after: requests arriving together all
// passed a check made before any of them was counted, and each was
// verified (tokens of an unknown kid wait seconds for the provider's key
// set, so any number of them did). A token that turns out not to be a
// failure gives its reservation back (spare).
func (a *authenticator) reserveFailure(w http.ResponseWriter, r *http.Request) bool {
	if a.failures == nil {
		return true
	}
	key, ok := failedAuthKey(r)
	if !ok {
		return true
	}
	if ok, wait := a.failures.allow(key); !ok {
		tooMany(w, r, wait, "too many failed logins from this address")
		return false
	}
	return true
}

// spare gives back the failed login reserveFailure took for r, whose
// token verified, or whose signature did (signedRefusal): not a guess.
func (a *authenticator) spare(r *http.Request) {
	if a.failures == nil {
		return
	}
	if key, ok := failedAuthKey(r); ok {
		a.failures.refund(key)
	}
}

// signedRefusal is verify's error for a token whose signature verified
// but whose claims were refused (expired, not yet valid, another
// audience): it was made by the issuer, so it is not a guess and does not
// count as a failed login of its address. Users behind one NAT whose
// tokens expired together (laptops waking up) used up its failed logins,
// and their colleagues' fresh tokens got 429. Verifying one costs a
// signature check, as a valid token's first use does.
type signedRefusal struct{ error }

func (e signedRefusal) Unwrap() error { return e.error }

// limitFailures turns the limit on, with now as its clock.
func (a *authenticator) limitFailures(now func() time.Time) {
	a.failures = newRateLimiter(failedAuthRate, failedAuthBurst, now)
}
