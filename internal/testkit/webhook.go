package testkit

import (
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// WaitTimeout is how long the webhook helpers wait, in real time, for
// something that should happen at once (a delivery, a recorded attempt).
const WaitTimeout = 10 * time.Second

// Receiver is a real HTTP webhook receiver on a loopback port. It verifies
// every delivery's Standard Webhooks signature with its own HMAC code (not
// package webhooks, which it checks), checks the timestamp against the
// server's clock and the body against the spec's WebhookPayload, records
// each delivery, and answers as the test tells it: 204 by default, or fail
// a number of times, answer a fixed status, redirect, hold requests, or be
// down altogether.
type Receiver struct {
	t    testing.TB
	s    *Server // nil for a receiver of a process the test runs
	spec *specValidator
	mu   sync.Mutex
	srv  *http.Server
	ln   net.Listener

	addr       string
	secret     string
	deliveries []Delivery
	changed    chan struct{} // closed and replaced on every new delivery

	failLeft   int
	failStatus int
	failHeader http.Header
	status     int    // fixed answer when not 0
	redirect   string // 302 Location when not ""
	hold       chan struct{}

	inflight    map[string]int // per webhook-id, requests being answered
	maxPerID    int
	total       int
	maxInflight int

	maxSkew time.Duration // of webhook-timestamp from the server's clock (0: 5 minutes)
}

// Delivery is one request the receiver got.
type Delivery struct {
	ID        string // webhook-id
	Timestamp int64  // webhook-timestamp
	Signature string
	Body      []byte
	Type      string          // the body's type
	Time      string          // the body's timestamp
	Data      json.RawMessage // the body's data
	Status    int             // what the receiver answered
	Valid     bool            // the signature, timestamp and body checked out
	Received  time.Time       // when the request arrived (wall clock)
}

// Decode decodes the delivery's data into v.
func (d Delivery) Decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(d.Data, v); err != nil {
		t.Fatalf("decode %s data %s: %v", d.Type, d.Data, err)
	}
}

// NewReceiver starts a receiver; it stops when the test ends.
func (s *Server) NewReceiver() *Receiver {
	s.T.Helper()
	r := NewReceiver(s.T)
	r.s = s
	return r
}

// NewReceiver starts a receiver of t's own, for servers the test runs
// itself (processes); it stops when t ends.
func NewReceiver(t testing.TB) *Receiver {
	t.Helper()
	r := &Receiver{t: t, spec: loadSpec(t), changed: make(chan struct{}), inflight: map[string]int{}}
	r.Up()
	t.Cleanup(r.Down)
	return r
}

// URL is the receiver's address, e.g. http://127.0.0.1:41234/hook.
func (r *Receiver) URL() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return "http://" + r.addr + "/hook"
}

// SetSecret tells the receiver the endpoint's signing secret.
func (r *Receiver) SetSecret(secret string) {
	r.mu.Lock()
	r.secret = secret
	r.mu.Unlock()
}

// FailNext answers the next n deliveries with status (and header, e.g. a
// Retry-After), then goes back to the normal answer.
func (r *Receiver) FailNext(n, status int, header http.Header) {
	r.mu.Lock()
	r.failLeft, r.failStatus, r.failHeader = n, status, header
	r.mu.Unlock()
}

// AnswerStatus answers every delivery from now on with status (0: back to
// 204 No Content).
func (r *Receiver) AnswerStatus(status int) {
	r.mu.Lock()
	r.status = status
	r.mu.Unlock()
}

// RedirectTo answers every delivery with 302 Found to location ("": stop).
func (r *Receiver) RedirectTo(location string) {
	r.mu.Lock()
	r.redirect = location
	r.mu.Unlock()
}

// Hold makes requests wait, unanswered, until the returned func is called
// (or the request is abandoned).
func (r *Receiver) Hold() (release func()) {
	ch := make(chan struct{})
	r.mu.Lock()
	r.hold = ch
	r.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			if r.hold == ch {
				r.hold = nil
			}
			r.mu.Unlock()
			close(ch)
		})
	}
}

// Down stops listening: deliveries meet a refused connection.
func (r *Receiver) Down() {
	r.mu.Lock()
	srv := r.srv
	r.srv, r.ln = nil, nil
	r.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// Up listens again, on the same address once one was given.
func (r *Receiver) Up() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv != nil {
		return
	}
	addr := r.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := listen(addr)
	if err != nil {
		r.t.Fatalf("webhook receiver: listen %s: %v", addr, err)
	}
	r.ln, r.addr = ln, ln.Addr().String()
	r.srv = &http.Server{Handler: http.HandlerFunc(r.serve), ReadHeaderTimeout: 5 * time.Second}
	go r.srv.Serve(ln) //nolint:errcheck // ends with ErrServerClosed on Down
}

// Deliveries returns what was received so far, in arrival order.
func (r *Receiver) Deliveries() []Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Delivery(nil), r.deliveries...)
}

// AllowSkew lets webhook-timestamp be up to d from the server's clock (5
// minutes otherwise, as a production receiver would allow): for a test
// that moves a fake clock by more while an attempt may be on its way,
// signed before the move and checked after it.
func (r *Receiver) AllowSkew(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.maxSkew = d
}

// InFlight returns how many requests are being answered now.
func (r *Receiver) InFlight() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}

// WaitInFlight waits until exactly n requests are being answered at once.
func (r *Receiver) WaitInFlight(n int) {
	r.t.Helper()
	deadline := time.Now().Add(WaitTimeout)
	for r.InFlight() != n {
		if time.Now().After(deadline) {
			r.t.Fatalf("webhook receiver: %d requests in flight after %s, want %d", r.InFlight(), WaitTimeout, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Concurrency returns the most requests ever in flight at once for a
// single webhook-id, and in total.
func (r *Receiver) Concurrency() (perID, total int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.maxPerID, r.maxInflight
}

// WaitFor waits until at least n received deliveries satisfy match (nil:
// any) and returns those, failing the test after WaitTimeout.
func (r *Receiver) WaitFor(n int, match func(Delivery) bool) []Delivery {
	r.t.Helper()
	deadline := time.NewTimer(WaitTimeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		var got []Delivery
		for _, d := range r.deliveries {
			if match == nil || match(d) {
				got = append(got, d)
			}
		}
		changed := r.changed
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-changed:
		case <-deadline.C:
			r.t.Fatalf("webhook receiver: %d matching deliveries after %s, want %d; received: %s",
				len(got), WaitTimeout, n, r.summary())
			return nil
		}
	}
}

// WaitType waits for n deliveries of type typ (and match, if given).
func (r *Receiver) WaitType(typ string, n int, match func(Delivery) bool) []Delivery {
	r.t.Helper()
	return r.WaitFor(n, func(d Delivery) bool { return d.Type == typ && (match == nil || match(d)) })
}

// Quiet checks that nothing more arrives for a moment: for "this must not
// be delivered" assertions, which can only wait a bounded time.
func (r *Receiver) Quiet(d time.Duration) {
	r.t.Helper()
	before := len(r.Deliveries())
	time.Sleep(d)
	if after := r.Deliveries(); len(after) != before {
		r.t.Fatalf("webhook receiver: unexpected deliveries: %s", r.summary())
	}
}

func (r *Receiver) summary() string {
	var b strings.Builder
	for _, d := range r.Deliveries() {
		fmt.Fprintf(&b, "\n  %s %s -> %d %s", d.ID, d.Type, d.Status, d.Data)
	}
	return b.String()
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return
	}
	d := Delivery{
		ID: req.Header.Get("webhook-id"), Signature: req.Header.Get("webhook-signature"), Body: body,
		Received: time.Now(),
	}
	d.Timestamp, _ = strconv.ParseInt(req.Header.Get("webhook-timestamp"), 10, 64)

	r.mu.Lock()
	secret, hold := r.secret, r.hold
	r.inflight[d.ID]++
	r.total++
	r.maxPerID = max(r.maxPerID, r.inflight[d.ID])
	r.maxInflight = max(r.maxInflight, r.total)
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.inflight[d.ID]--
		r.total--
		r.mu.Unlock()
	}()

	if err := r.check(req, secret, &d); err != nil {
		r.t.Errorf("webhook receiver: invalid delivery %s: %v\nheaders: %v\nbody: %s", d.ID, err, req.Header, body)
	} else {
		d.Valid = true
	}
	if hold != nil {
		select {
		case <-hold:
		case <-req.Context().Done():
		}
	}

	r.mu.Lock()
	status, header := http.StatusNoContent, http.Header{}
	switch {
	case !d.Valid:
		status = http.StatusBadRequest
	case r.failLeft > 0:
		r.failLeft--
		status, header = r.failStatus, r.failHeader
	case r.redirect != "":
		status = http.StatusFound
		header = http.Header{"Location": {r.redirect}}
	case r.status != 0:
		status = r.status
	}
	d.Status = status
	r.deliveries = append(r.deliveries, d)
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()

	for k, v := range header {
		w.Header()[k] = v
	}
	w.WriteHeader(status)
}

// check verifies a delivery as a careful receiver would, and fills in the
// parsed body. The HMAC is computed here from the specification, so a bug
// in the server's signer cannot hide behind the same bug in the check.
func (r *Receiver) check(req *http.Request, secret string, d *Delivery) error {
	if req.Method != http.MethodPost {
		return fmt.Errorf("method %s, want POST", req.Method)
	}
	if ct := req.Header.Get("Content-Type"); ct != "application/json" {
		return fmt.Errorf("Content-Type %q, want application/json", ct)
	}
	if d.ID == "" || d.Signature == "" || d.Timestamp == 0 {
		return errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	}
	if secret == "" {
		return errors.New("the receiver was given no secret (SetSecret)")
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil || !strings.HasPrefix(secret, "whsec_") || len(key) < 24 {
		return fmt.Errorf("secret %q is not whsec_ and the base64 of at least 24 bytes", secret)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(d.ID + "." + strconv.FormatInt(d.Timestamp, 10) + "."))
	mac.Write(d.Body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	found := false
	for _, sig := range strings.Fields(d.Signature) {
		if hmac.Equal([]byte(sig), []byte(want)) {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("webhook-signature %q does not match (want %q)", d.Signature, want)
	}
	now := time.Now().Unix()
	if r.s != nil {
		now = r.s.Now() / 1000
	}
	r.mu.Lock()
	maxSkew := int64(cmp.Or(r.maxSkew, 5*time.Minute) / time.Second)
	r.mu.Unlock()
	if skew := now - d.Timestamp; skew > maxSkew || skew < -maxSkew {
		return fmt.Errorf("webhook-timestamp %d is %d s away from the server's clock", d.Timestamp, skew)
	}

	var env map[string]json.RawMessage
	if err := json.Unmarshal(d.Body, &env); err != nil {
		return fmt.Errorf("body is not a JSON object: %v", err)
	}
	if len(env) != 3 || env["type"] == nil || env["timestamp"] == nil || env["data"] == nil {
		return fmt.Errorf("body must be exactly {type, timestamp, data}")
	}
	if err := json.Unmarshal(env["type"], &d.Type); err != nil {
		return fmt.Errorf("type: %v", err)
	}
	if err := json.Unmarshal(env["timestamp"], &d.Time); err != nil {
		return fmt.Errorf("timestamp: %v", err)
	}
	if _, err := time.Parse(time.RFC3339, d.Time); err != nil {
		return fmt.Errorf("timestamp %q is not RFC 3339", d.Time)
	}
	d.Data = env["data"]
	return r.spec.validateSchema("WebhookPayload", d.Body)
}

// Webhook is a registered endpoint as the API shows it.
type Webhook struct {
	ID             string   `json:"id"`
	URL            string   `json:"url"`
	EventTypes     []string `json:"eventTypes"`
	Description    string   `json:"description"`
	Secret         string   `json:"secret"`
	CreatedAt      int64    `json:"createdAt"`
	Enabled        bool     `json:"enabled"`
	DisabledReason string   `json:"disabledReason"`
}

// WebhookDelivery is a delivery as the API shows it.
type WebhookDelivery struct {
	ID             string `json:"id"`
	WebhookID      string `json:"webhookID"`
	Type           string `json:"type"`
	Status         string `json:"status"`
	Attempts       int    `json:"attempts"`
	LastStatusCode int    `json:"lastStatusCode"`
	LastError      string `json:"lastError"`
	NextAttemptAt  int64  `json:"nextAttemptAt"`
	CreatedAt      int64  `json:"createdAt"`
	DeliveredAt    int64  `json:"deliveredAt"`
}

// RegisterWebhook registers the receiver as an endpoint (as admin) for
// eventTypes (none: all) and hands it the secret.
func (s *Server) RegisterWebhook(r *Receiver, eventTypes ...string) Webhook {
	s.T.Helper()
	body := map[string]any{"url": r.URL(), "description": "test receiver"}
	if len(eventTypes) > 0 {
		body["eventTypes"] = eventTypes
	}
	var wh Webhook
	s.Admin().Post("/webhooks", body).Want(http.StatusCreated).JSON(&wh)
	r.SetSecret(wh.Secret)
	return wh
}

// WebhookDeliveries lists an endpoint's deliveries (newest first).
func (s *Server) WebhookDeliveries(webhookID string) []WebhookDelivery {
	s.T.Helper()
	var out struct {
		Deliveries []WebhookDelivery `json:"deliveries"`
	}
	s.Admin().Get("/webhooks/" + webhookID + "/deliveries").Want(http.StatusOK).JSON(&out)
	return out.Deliveries
}

// WaitDeliveries polls an endpoint's deliveries until match holds for the
// list (newest first) and returns it, failing after WaitTimeout. Tests use
// it to know an attempt's outcome is recorded (and its retry scheduled)
// before they move the clock.
func (s *Server) WaitDeliveries(webhookID string, match func([]WebhookDelivery) bool) []WebhookDelivery {
	s.T.Helper()
	deadline := time.Now().Add(WaitTimeout)
	for {
		list := s.WebhookDeliveries(webhookID)
		if match(list) {
			return list
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(list, "", "  ")
			s.T.Fatalf("webhook %s: deliveries not as expected after %s:\n%s", webhookID, WaitTimeout, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// validateSchema checks a JSON document against a component schema.
func (v *specValidator) validateSchema(name string, doc []byte) error {
	ref := v.doc.Components.Schemas[name]
	if ref == nil || ref.Value == nil {
		return fmt.Errorf("the spec has no schema %s", name)
	}
	var value any
	if err := json.Unmarshal(doc, &value); err != nil {
		return err
	}
	if err := ref.Value.VisitJSON(value); err != nil {
		return fmt.Errorf("does not match the spec's %s: %w", name, err)
	}
	return nil
}
