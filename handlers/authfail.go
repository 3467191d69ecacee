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

// refuseFailing answers 429 when r's address has used up its failed
// logins, and reports whether it did.
func (a *authenticator) refuseFailing(w http.ResponseWriter, r *http.Request) bool {
	if a.failures == nil {
		return false
	}
	key, ok := failedAuthKey(r)
	if !ok {
		return false
	}
	wait := a.failures.wait(key)
	if wait <= 0 {
		return false
	}
	tooMany(w, r, wait, "too many failed logins from this address")
	return true
}

// failed counts a failed login against r's address.
func (a *authenticator) failed(r *http.Request) {
	if a.failures == nil {
		return
	}
	if key, ok := failedAuthKey(r); ok {
		a.failures.allow(key)
	}
}

// limitFailures turns the limit on, with now as its clock.
func (a *authenticator) limitFailures(now func() time.Time) {
	a.failures = newRateLimiter(failedAuthRate, failedAuthBurst, now)
}
