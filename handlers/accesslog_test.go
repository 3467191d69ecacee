package handlers

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// A request's line is at Info, Error for a server fault, and Warn for a
// 503: the state the server is in, logged where it starts, which a level
// set to error holds back during an outage.
func TestAccessLogLevels(t *testing.T) {
	for _, c := range []struct {
		status int
		level  string
	}{
		{http.StatusOK, "INFO"},
		{http.StatusNotFound, "INFO"},
		{http.StatusServiceUnavailable, "WARN"},
		{http.StatusInternalServerError, "ERROR"},
	} {
		var out strings.Builder
		log := slog.New(slog.NewTextHandler(&out, nil))
		h := requestID(log)(accessLog(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(c.status)
		})))
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/healthz", nil))
		if line := out.String(); !strings.Contains(line, "level="+c.level+" ") || !strings.Contains(line, "status="+strconv.Itoa(c.status)) {
			t.Errorf("status %d: %q, want level %s", c.status, line, c.level)
		}
	}
}
