package webhooks

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"callsig/calls"
	"callsig/internal/redact"
)

// ConfiguredID is the fixed ID of the endpoint configured by
// CALLSIG_WEBHOOK_URL and CALLSIG_WEBHOOK_SECRET rather than the API.
const ConfiguredID = "wh_config"

// MaxDescription is the longest endpoint description, in characters.
const MaxDescription = 256

// MaxEndpoints is how many endpoints (not deleted, disabled ones and the
// configured one included) may be registered at once. Every claim of
// deliveries reads each live endpoint's due ones on the store's writer:
// 5,000 endpoints with nothing due cost 109 ms a claim on SQLite (a
// review's measurement), taken from every call's change.
const MaxEndpoints = 100

// Registry is the admin side of webhooks (handlers.WebhookAdmin): it
// validates and stores endpoints and lists and retries their deliveries.
type Registry struct {
	store        Store
	clock        calls.Clock
	allowPrivate bool
	resolver     Resolver
	wake         func() // pokes the dispatcher after a manual retry
	// stopping is closed by BeginShutdown: Delete no longer waits.
	stopping chan struct{}
	stopOnce sync.Once
}

// RegistryOptions configures NewRegistry.
type RegistryOptions struct {
	Clock        calls.Clock // default: the system clock
	AllowPrivate bool        // accept URLs of loopback and private addresses
	Resolver     Resolver    // default: net.DefaultResolver
	// Wake is called after a delivery is put back to pending, so it is sent
	// at once (the Dispatcher's Wake).
	Wake func()
}

// NewRegistry returns the registry over store.
func NewRegistry(store Store, o RegistryOptions) *Registry {
	if o.Clock == nil {
		o.Clock = calls.SystemClock{}
	}
	if o.Wake == nil {
		o.Wake = func() {}
	}
	return &Registry{store: store, clock: o.Clock, allowPrivate: o.AllowPrivate, resolver: o.Resolver, wake: o.Wake,
		stopping: make(chan struct{})}
}

// BeginShutdown ends Delete's waits for attempts in flight, now and from
// now on: the server is stopping, and the dispatcher that runs them stops
// (cutting them short, see Dispatcher.Run) only once the requests have
// finished, a Delete's among them.
func (r *Registry) BeginShutdown() {
	r.stopOnce.Do(func() { close(r.stopping) })
}

func invalidField(field, format string, args ...any) *calls.Error {
	msg := fmt.Sprintf(format, args...)
	return &calls.Error{Code: calls.CodeInvalidRequest, Message: field + ": " + msg,
		Fields: []calls.FieldError{{Field: field, Message: msg}}}
}

// validate checks an endpoint's URL, event types and description.
func (r *Registry) validate(ctx context.Context, in CreateInput) (*CreateInput, error) {
	if err := CheckURL(ctx, in.URL, r.allowPrivate, r.resolver); errors.Is(err, calls.ErrUnavailable) {
		return nil, err
	} else if err != nil {
		return nil, invalidField("url", "%s", err)
	}
	seen := map[calls.HookType]bool{}
	types := []calls.HookType{}
	for i, t := range in.EventTypes {
		if !knownType(t) {
			return nil, invalidField(fmt.Sprintf("eventTypes/%d", i), "unknown event type %q", t)
		}
		if !seen[t] {
			seen[t] = true
			types = append(types, t)
		}
	}
	if !utf8.ValidString(in.Description) || utf8.RuneCountInString(in.Description) > MaxDescription {
		return nil, invalidField("description", "must be at most %d characters", MaxDescription)
	}
	if strings.IndexByte(in.Description, 0) >= 0 { // stored as text: PostgreSQL holds no NUL
		return nil, invalidField("description", "must not contain U+0000 (NUL)")
	}
	out := in
	out.EventTypes = types
	return &out, nil
}

func knownType(t calls.HookType) bool {
	for _, k := range calls.HookTypes {
		if t == k {
			return true
		}
	}
	return false
}

// Create registers an endpoint with a fresh secret. It honours the
// calls.Idempotency ctx carries as the call use-cases do: the key is looked
// up and the answer stored in the transaction that inserts the endpoint,
// so a retry after a crash replays it (id and secret included) or creates
// it now, never a second one. On a replay it returns nil and no error; the
// answer is the Idempotency's Response.
func (r *Registry) Create(ctx context.Context, in CreateInput) (*Endpoint, error) {
	v, err := r.validate(ctx, in)
	if err != nil {
		return nil, err
	}
	e := &Endpoint{
		ID: newEndpointID(), URL: v.URL, EventTypes: v.EventTypes, Description: v.Description,
		Secret: NewSecret(), CreatedAt: r.clock.Now().UnixMilli(), Enabled: true,
	}
	idem := calls.NewIdempotentRun(ctx)
	var out *Endpoint
	err = r.store.UpdateWebhooks(ctx, func(tx Tx) error {
		out = nil
		if replay, err := idem.Recorded(ctx, tx); replay || err != nil {
			return err
		}
		n, err := tx.WebhookEndpointCount(ctx)
		if err != nil {
			return err
		}
		if n >= MaxEndpoints {
			return &calls.Error{Code: calls.CodeWebhookLimit,
				Message: fmt.Sprintf("%d webhook endpoints are registered, the most there may be: delete one first", n)}
		}
		if err := tx.InsertWebhookEndpoint(ctx, e); err != nil {
			return err
		}
		out = e
		return idem.Record(ctx, tx, e)
	})
	if err != nil {
		return nil, fmt.Errorf("create webhook: %w", err)
	}
	idem.Committed()
	return out, nil
}

// Configure creates or updates the endpoint of the configuration
// (ConfiguredID) with every event type; an empty url removes it. The secret
// must be a valid whsec_ secret and the URL pass the same checks as Create.
func (r *Registry) Configure(ctx context.Context, rawURL, secret string) error {
	if rawURL == "" {
		if secret != "" {
			return errors.New("webhook secret given without a webhook URL")
		}
		err := r.store.DeleteWebhookEndpoint(ctx, ConfiguredID, r.clock.Now().UnixMilli())
		if calls.CodeOf(err) == calls.CodeNotFound {
			err = nil
		}
		return err
	}
	if secret == "" {
		return fmt.Errorf("webhook URL %s given without a webhook secret (whsec_...)", redact.URL(rawURL))
	}
	key, err := ParseSecret(secret)
	if err != nil {
		return err
	}
	// A name that does not resolve yet (DNS not up at boot) must not keep
	// the server from starting; every delivery is checked at dial time.
	if err := CheckURL(ctx, rawURL, r.allowPrivate, r.resolver); err != nil && !errors.Is(err, ErrUnresolvable) && !errors.Is(err, calls.ErrUnavailable) {
		return fmt.Errorf("webhook URL %s: %s", redact.URL(rawURL), redact.Err(err, rawURL))
	}
	return r.store.PutWebhookEndpoint(ctx, &Endpoint{
		ID: ConfiguredID, URL: rawURL, Secret: SecretPrefix + encodeKey(key),
		Description: "configured by CALLSIG_WEBHOOK_URL", CreatedAt: r.clock.Now().UnixMilli(), Enabled: true,
	})
}

// List returns the endpoints without their secrets.
func (r *Registry) List(ctx context.Context) ([]Endpoint, error) {
	list, err := r.store.WebhookEndpoints(ctx)
	if err != nil {
		return nil, err
	}
	for i := range list {
		list[i].Secret = ""
	}
	return list, nil
}

// Get returns one endpoint without its secret.
func (r *Registry) Get(ctx context.Context, id string) (*Endpoint, error) {
	e, err := r.store.WebhookEndpoint(ctx, id)
	if err != nil {
		return nil, err
	}
	e.Secret = ""
	return e, nil
}

// Delete removes an endpoint; its pending deliveries fail. It returns once
// the attempts in flight to it have ended: an attempt claimed before the
// deletion committed has read the URL and the secret already, and may not
// have sent anything yet (resolving, dialing, handshaking, up to its
// timeout). Answered at once, the admin who deleted the endpoint (its
// URL now someone else's, its secret leaked) saw a signed request go out
// after the 204. The wait ends after deleteDrain at most: a lease still
// held then is a dead node's, which sends nothing, and a deleted
// endpoint's deliveries are never claimed again (nor retried). A client
// that gives up ends the wait; the deletion stands.
func (r *Registry) Delete(ctx context.Context, id string) error {
	if err := r.store.DeleteWebhookEndpoint(ctx, id, r.clock.Now().UnixMilli()); err != nil {
		return err
	}
	deadline := time.Now().Add(deleteDrain) // real time: attempts time out by it
	for {
		n, err := r.store.WebhookAttemptsInFlight(ctx, id, r.clock.Now().UnixMilli())
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("webhook %s deleted; waiting for its attempts in flight: %w", id, err)
		}
		if n == 0 || time.Now().After(deadline) {
			return nil
		}
		t := time.NewTimer(deletePoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-r.stopping:
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// deleteDrain bounds Delete's wait for the attempts in flight to the
// endpoint it deleted: one attempt's timeout, and the time to record its
// outcome (deliver's). It is below the REST requests' deadline.
const deleteDrain = AttemptTimeout + 10*time.Second

// deletePoll is how often Delete looks whether those attempts ended.
const deletePoll = 25 * time.Millisecond

// Deliveries lists an endpoint's deliveries, newest first.
func (r *Registry) Deliveries(ctx context.Context, id string, q DeliveryQuery) ([]Delivery, error) {
	if q.Status != "" && !q.Status.Valid() {
		return nil, invalidField("status", "must be pending, delivered or failed")
	}
	if q.Limit <= 0 {
		q.Limit = DefaultDeliveryLimit
	}
	q.Limit = min(q.Limit, MaxDeliveryLimit)
	return r.store.WebhookDeliveries(ctx, id, q)
}

// Retry puts a delivery back to pending, due now, and wakes the dispatcher.
// Like Create it honours the calls.Idempotency ctx carries in its write
// transaction; on a replay it returns nil and no error.
func (r *Registry) Retry(ctx context.Context, id, deliveryID string) (*Delivery, error) {
	n, err := strconv.ParseInt(deliveryID, 10, 64)
	if err != nil || n <= 0 {
		return nil, &calls.Error{Code: calls.CodeNotFound, Message: fmt.Sprintf("delivery %s of webhook %s not found", deliveryID, id)}
	}
	idem := calls.NewIdempotentRun(ctx)
	var out *Delivery
	err = r.store.UpdateWebhooks(ctx, func(tx Tx) error {
		out = nil
		if replay, err := idem.Recorded(ctx, tx); replay || err != nil {
			return err
		}
		d, err := tx.RetryWebhookDelivery(ctx, id, n, r.clock.Now().UnixMilli())
		if err != nil {
			return err
		}
		out = d
		return idem.Record(ctx, tx, d)
	})
	if err != nil {
		return nil, fmt.Errorf("retry delivery %s of webhook %s: %w", deliveryID, id, err)
	}
	idem.Committed()
	if out != nil {
		r.wake()
	}
	return out, nil
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newEndpointID returns "wh_" and 80 random bits.
func newEndpointID() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return "wh_" + strings.ToLower(idEncoding.EncodeToString(b[:]))
}
