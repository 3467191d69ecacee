package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"callsig/calls"
	"callsig/db"
	"callsig/webhooks"
)

// putEndpoint configures an endpoint subscribed to types (none: all).
func putEndpoint(t testing.TB, s db.Store, id string, createdAt int64, types ...calls.HookType) {
	t.Helper()
	e := &webhooks.Endpoint{ID: id, URL: "https://" + id + ".example/hook", Secret: "whsec_" + id,
		EventTypes: types, Description: "endpoint " + id, CreatedAt: createdAt}
	if err := s.PutWebhookEndpoint(context.Background(), e); err != nil {
		t.Fatalf("PutWebhookEndpoint(%s): %v", id, err)
	}
}

// hook saves a new call whose change carries one webhook message of typ at
// time at; the store fans it out to the subscribed endpoints.
func hook(t testing.TB, s db.Store, callID string, typ calls.HookType, at int64) {
	t.Helper()
	ch := NewCall(callID, "alice", at)
	ch.Hooks = []calls.HookEvent{{Type: typ, CallID: callID, Data: json.RawMessage(`{"callID":"` + callID + `"}`), Time: at}}
	Save(t, s, ch)
}

// deliveries lists an endpoint's deliveries, oldest first.
func deliveries(t testing.TB, s db.Store, endpointID string) []webhooks.Delivery {
	t.Helper()
	list, err := s.WebhookDeliveries(context.Background(), endpointID, webhooks.DeliveryQuery{Limit: webhooks.MaxDeliveryLimit})
	if err != nil {
		t.Fatalf("WebhookDeliveries(%s): %v", endpointID, err)
	}
	slices.Reverse(list)
	return list
}

// deliveryIDs returns the ids of an endpoint's deliveries, oldest first.
func deliveryIDs(t testing.TB, s db.Store, endpointID string) []int64 {
	t.Helper()
	var ids []int64
	for _, d := range deliveries(t, s, endpointID) {
		id, err := strconv.ParseInt(d.ID, 10, 64)
		if err != nil {
			t.Fatalf("delivery id %q: %v", d.ID, err)
		}
		ids = append(ids, id)
	}
	return ids
}

// claim runs one claim and returns the attempts, their delivery ids, and
// whether the limit left due deliveries behind. Every attempt must carry
// the claim's lease.
func claim(t testing.TB, s db.Store, c webhooks.Claim) ([]webhooks.Attempt, []int64, bool) {
	t.Helper()
	got, err := s.ClaimWebhookDeliveries(context.Background(), c)
	if err != nil {
		t.Fatalf("ClaimWebhookDeliveries: %v", err)
	}
	var ids []int64
	for _, a := range got.Attempts {
		ids = append(ids, a.DeliveryID)
		if a.Lease != c.LeaseUntil {
			t.Fatalf("attempt of delivery %d carries lease %d, want the claim's %d", a.DeliveryID, a.Lease, c.LeaseUntil)
		}
	}
	return got.Attempts, ids, got.More
}

func finish(t testing.TB, s db.Store, o webhooks.Outcome) {
	t.Helper()
	if err := finishOne(context.Background(), s, o); err != nil {
		t.Fatalf("FinishWebhookAttempts(%d): %v", o.DeliveryID, err)
	}
}

// finishOne records one outcome, a lost lease as webhooks.ErrLeaseLost.
func finishOne(ctx context.Context, s db.Store, o webhooks.Outcome) error {
	lost, err := s.FinishWebhookAttempts(ctx, []webhooks.Outcome{o})
	if err == nil && lost[0] {
		err = webhooks.ErrLeaseLost
	}
	return err
}

func queueStats(t testing.TB, s db.Store) string {
	t.Helper()
	pending, oldest, err := s.WebhookQueueStats(context.Background())
	if err != nil {
		t.Fatalf("WebhookQueueStats: %v", err)
	}
	return fmt.Sprintf("%d pending, oldest %d", pending, oldest)
}

// The registry's side: endpoints created through the API and configured
// at start-up, read, disabled by a 410, re-enabled only by a changed URL or
// secret, deleted (softly) and revived.
func testWebhookEndpointsAdmin(t *testing.T, s db.Store) {
	ctx := context.Background()
	api := &webhooks.Endpoint{ID: "wh_api", URL: "https://api.example/hook", Secret: "whsec_api",
		EventTypes: []calls.HookType{calls.HookCallCreated, calls.HookCallEnded}, Description: "from the API", CreatedAt: 100}
	insert := func(e *webhooks.Endpoint) error {
		return s.UpdateWebhooks(ctx, func(tx webhooks.Tx) error { return tx.InsertWebhookEndpoint(ctx, e) })
	}
	if err := insert(api); err != nil {
		t.Fatal(err)
	}
	got, err := s.WebhookEndpoint(ctx, "wh_api")
	want := *api
	want.Enabled = true
	if err != nil || fmt.Sprint(*got) != fmt.Sprint(want) {
		t.Fatalf("WebhookEndpoint = %+v (%v), want %+v", got, err, want)
	}
	if err := insert(api); err == nil {
		t.Error("inserting an endpoint with an existing id succeeded")
	}
	putEndpoint(t, s, "wh_cfg", 200)
	list, err := s.WebhookEndpoints(ctx)
	if err != nil || len(list) != 2 || list[0].ID != "wh_api" || list[1].ID != "wh_cfg" ||
		list[1].Secret != "whsec_wh_cfg" || len(list[1].EventTypes) != 0 || !list[1].Enabled {
		t.Fatalf("WebhookEndpoints = %+v (%v), want wh_api then wh_cfg, enabled, with secrets", list, err)
	}
	if _, err := s.WebhookEndpoint(ctx, "nope"); !errors.Is(err, calls.ErrNotFound) {
		t.Errorf("WebhookEndpoint(unknown) = %v, want ErrNotFound", err)
	}

	// A 410 disables wh_cfg.
	hook(t, s, "c1", calls.HookPushRequested, 300)
	_, ids, _ := claim(t, s, webhooks.Claim{Now: 300, LeaseUntil: 1000, Limit: 10, Share: 10})
	if len(ids) != 1 {
		t.Fatalf("claimed %v, want wh_cfg's one delivery (wh_api is not subscribed)", ids)
	}
	finish(t, s, webhooks.Outcome{DeliveryID: ids[0], Lease: 1000, EndpointID: "wh_cfg", At: 310, StatusCode: 410, Error: "gone", DisableReason: "410 Gone"})
	if e, _ := s.WebhookEndpoint(ctx, "wh_cfg"); e.Enabled || e.DisabledReason != "410 Gone" {
		t.Fatalf("after a 410: %+v, want disabled with the reason", e)
	}
	// The same configuration again leaves it disabled (and keeps its
	// creation time); a new URL enables it again.
	e := &webhooks.Endpoint{ID: "wh_cfg", URL: "https://wh_cfg.example/hook", Secret: "whsec_wh_cfg", Description: "renamed", CreatedAt: 999}
	if err := s.PutWebhookEndpoint(ctx, e); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.WebhookEndpoint(ctx, "wh_cfg"); got.Enabled || got.Description != "renamed" || got.CreatedAt != 200 {
		t.Fatalf("same configuration again: %+v, want still disabled, renamed, created at 200", got)
	}
	e.URL = "https://moved.example/hook"
	if err := s.PutWebhookEndpoint(ctx, e); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.WebhookEndpoint(ctx, "wh_cfg"); !got.Enabled || got.DisabledReason != "" || got.URL != e.URL {
		t.Fatalf("new URL: %+v, want enabled again", got)
	}

	// Deleting hides it everywhere; deleting again is not found; the
	// configuration can bring it back.
	if err := s.DeleteWebhookEndpoint(ctx, "wh_cfg", 400); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WebhookEndpoint(ctx, "wh_cfg"); !errors.Is(err, calls.ErrNotFound) {
		t.Errorf("WebhookEndpoint(deleted) = %v, want ErrNotFound", err)
	}
	if _, err := s.WebhookDeliveries(ctx, "wh_cfg", webhooks.DeliveryQuery{}); !errors.Is(err, calls.ErrNotFound) {
		t.Errorf("WebhookDeliveries(deleted) = %v, want ErrNotFound", err)
	}
	if err := s.DeleteWebhookEndpoint(ctx, "wh_cfg", 400); !errors.Is(err, calls.ErrNotFound) {
		t.Errorf("deleting twice = %v, want ErrNotFound", err)
	}
	if list, _ := s.WebhookEndpoints(ctx); len(list) != 1 || list[0].ID != "wh_api" {
		t.Errorf("WebhookEndpoints after delete = %+v, want wh_api only", list)
	}
	if err := s.PutWebhookEndpoint(ctx, e); err != nil {
		t.Fatal(err)
	}
	if got, err := s.WebhookEndpoint(ctx, "wh_cfg"); err != nil || !got.Enabled {
		t.Errorf("configured again after delete: %+v (%v), want live and enabled", got, err)
	}
}

// An admin write guarded by an Idempotency-Key records its answer in the
// transaction of its change: both commit, or (the write failing) neither.
func testIdempotentWebhookCreate(t *testing.T, s db.Store) {
	ctx := context.Background()
	create := func(id, key string, fail error) error {
		return s.UpdateWebhooks(ctx, func(tx webhooks.Tx) error {
			rec, err := tx.IdempotencyRecord(ctx, "admin POST /webhooks", key, 1000)
			if err != nil || rec != nil {
				return fmt.Errorf("record before the create: %+v, %v", rec, err)
			}
			if err := tx.InsertWebhookEndpoint(ctx, &webhooks.Endpoint{ID: id, URL: "https://x.example", Secret: "whsec_x", CreatedAt: 1000}); err != nil {
				return err
			}
			if err := tx.PutIdempotencyRecord(ctx, record("admin POST /webhooks", key, "fp", 201, `{"id":"`+id+`"}`, 1000, 9000)); err != nil {
				return err
			}
			if rec, err := tx.IdempotencyRecord(ctx, "admin POST /webhooks", key, 1000); err != nil || rec == nil {
				return fmt.Errorf("the transaction does not see its own record: %+v, %v", rec, err)
			}
			return fail
		})
	}
	if err := create("wh_1", "k1", nil); err != nil {
		t.Fatal(err)
	}
	rec, err := s.LookupIdempotency(ctx, "admin POST /webhooks", "k1", 1000)
	if err != nil || rec == nil || string(rec.Response.Body) != `{"id":"wh_1"}` {
		t.Fatalf("record after the create: %+v (%v)", rec, err)
	}
	if _, err := s.WebhookEndpoint(ctx, "wh_1"); err != nil {
		t.Fatalf("endpoint after the create: %v", err)
	}
	boom := errors.New("boom")
	if err := create("wh_2", "k2", boom); !errors.Is(err, boom) {
		t.Fatalf("failing create = %v, want %v", err, boom)
	}
	if rec, _ := s.LookupIdempotency(ctx, "admin POST /webhooks", "k2", 1000); rec != nil {
		t.Errorf("a failed create left its record %+v", rec)
	}
	if _, err := s.WebhookEndpoint(ctx, "wh_2"); !errors.Is(err, calls.ErrNotFound) {
		t.Errorf("a failed create left its endpoint (%v)", err)
	}
}

// A webhook message of a change goes, in that change's transaction, to
// every enabled, live endpoint subscribed to its type (an exact type, never
// a prefix), due at once, and its body is the one package webhooks builds.
func testHooksFanOutToSubscribedEnabledEndpoints(t *testing.T, s db.Store) {
	ctx := context.Background()
	putEndpoint(t, s, "disabled", 1)
	hook(t, s, "pre", calls.HookCallCreated, 10)
	_, ids, _ := claim(t, s, webhooks.Claim{Now: 10, LeaseUntil: 100, Limit: 10, Share: 10})
	if len(ids) != 1 {
		t.Fatalf("claimed %v, want the one delivery of 'disabled'", ids)
	}
	finish(t, s, webhooks.Outcome{DeliveryID: ids[0], Lease: 100, EndpointID: "disabled", At: 11, StatusCode: 410, DisableReason: "410 Gone"})
	putEndpoint(t, s, "all", 2)
	putEndpoint(t, s, "created", 3, calls.HookCallCreated, calls.HookCallEnded)
	putEndpoint(t, s, "prefix", 4, calls.HookType("call.created_x"))
	putEndpoint(t, s, "ended", 5, calls.HookCallEnded)
	putEndpoint(t, s, "deleted", 6)
	if err := s.DeleteWebhookEndpoint(ctx, "deleted", 12); err != nil {
		t.Fatal(err)
	}

	const at = 1_700_000_000_123
	hook(t, s, "c1", calls.HookCallCreated, at)
	for id, want := range map[string]int{"all": 1, "created": 1, "prefix": 0, "ended": 0, "disabled": 0} {
		n := 0
		for _, d := range deliveries(t, s, id) {
			if d.CreatedAt != at {
				continue
			}
			n++
			if d.Status != webhooks.DeliveryPending || d.Type != calls.HookCallCreated || d.NextAttemptAt != at || d.Attempts != 0 {
				t.Errorf("%s: delivery %+v, want pending call.created due at once", id, d)
			}
		}
		if n != want {
			t.Errorf("%s got %d deliveries of the message, want %d", id, n, want)
		}
	}
	got, _, _ := claim(t, s, webhooks.Claim{Now: at, LeaseUntil: at + 1000, Limit: 10, Share: 10})
	if len(got) != 2 {
		t.Fatalf("claimed %+v, want the deliveries to all and created", got)
	}
	slices.SortFunc(got, func(a, b webhooks.Attempt) int { return strings.Compare(a.EndpointID, b.EndpointID) })
	want := `{"type":"call.created","timestamp":"2023-11-14T22:13:20.123Z","data":{"callID":"c1"}}`
	for i, a := range got {
		ep := []string{"all", "created"}[i]
		if a.EndpointID != ep || a.URL != "https://"+ep+".example/hook" || a.Secret != "whsec_"+ep ||
			a.Type != calls.HookCallCreated || a.Attempts != 0 || a.CreatedAt != at || string(a.Payload) != want {
			t.Errorf("attempt %d = %+v (payload %s), want %s's with %s", i, a, a.Payload, ep, want)
		}
		if !strings.HasPrefix(a.MsgID, "msg_") || a.MsgID != got[0].MsgID {
			t.Errorf("attempt %d message id %q, want one msg_ id for the message", i, a.MsgID)
		}
	}
	// A message nobody is subscribed to is not queued anywhere.
	before := queueStats(t, s)
	hook(t, s, "c2", calls.HookType("call.unheard_of"), at+1)
	hook(t, s, "c3", calls.HookPushRequested, at+1) // only "all" takes it
	if got := queueStats(t, s); got == before {
		t.Errorf("queue %s unchanged by a subscribed message", got)
	}
	if n := len(deliveries(t, s, "created")); n != 1 {
		t.Errorf("created has %d deliveries, want 1", n)
	}
}

// A change with several messages queues those an endpoint is subscribed
// to, counts them in HooksQueued, and skips the rest, whichever way the
// backend writes them (PostgreSQL asks for all types at once).
func testChangeQueuesItsSubscribedHooks(t *testing.T, s db.Store) {
	putEndpoint(t, s, "ended", 1, calls.HookCallEnded)
	ch := NewCall("mixed", "alice", 100, "bob")
	for i, typ := range []calls.HookType{calls.HookCallEnded, calls.HookCallCreated, calls.HookCallEnded, calls.HookPushRequested} {
		ch.Hooks = append(ch.Hooks, calls.HookEvent{Type: typ, CallID: "mixed",
			Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)), Time: 100})
	}
	Save(t, s, ch)
	if ch.HooksQueued != 2 {
		t.Errorf("HooksQueued = %d, want 2 (the two call.ended)", ch.HooksQueued)
	}
	got, _, _ := claim(t, s, webhooks.Claim{Now: 100, LeaseUntil: 1000, Limit: 10, Share: 10})
	if len(got) != 2 {
		t.Fatalf("claimed %d deliveries, want 2", len(got))
	}
	for i, a := range got {
		want := fmt.Sprintf(`"data":{"n":%d}`, 2*i)
		if a.Type != calls.HookCallEnded || !strings.Contains(string(a.Payload), want) {
			t.Errorf("delivery %d = %s %s, want call.ended with %s, in the change's order", i, a.Type, a.Payload, want)
		}
	}
	// No endpoint subscribed at all: nothing queued, the change saved.
	none := NewCall("none", "alice", 200, "bob")
	none.Hooks = []calls.HookEvent{{Type: calls.HookCallCreated, CallID: "none", Data: json.RawMessage(`{}`), Time: 200}}
	Save(t, s, none)
	if none.HooksQueued != 0 {
		t.Errorf("HooksQueued = %d for a type nobody takes, want 0", none.HooksQueued)
	}
}

// A claim gives each live endpoint at most its free share, skips what is
// in flight here (renewing its lease), orders the claim by due time within
// the limit; the schedule and statistics follow the leases.
func testClaimWebhookDeliveriesPerEndpoint(t *testing.T, s db.Store) {
	putEndpoint(t, s, "slow", 1, calls.HookCallCreated)
	putEndpoint(t, s, "fast", 2, calls.HookCallEnded)
	for i, at := range []int64{10, 11, 12, 13} {
		hook(t, s, fmt.Sprint("s", i), calls.HookCallCreated, at)
	}
	for i, at := range []int64{14, 15, 500} {
		hook(t, s, fmt.Sprint("f", i), calls.HookCallEnded, at)
	}
	slow, fast := deliveryIDs(t, s, "slow"), deliveryIDs(t, s, "fast")
	if len(slow) != 4 || len(fast) != 3 {
		t.Fatalf("deliveries: slow %v, fast %v", slow, fast)
	}
	if got := queueStats(t, s); got != "7 pending, oldest 10" {
		t.Errorf("queue: %s", got)
	}

	// slow already has 1 in flight here (its first, leased at 10 to 50,
	// lease run out): it may get 1 more; fast its whole share of 2, but
	// the limit is 2, which goes to the earliest due.
	if _, ids, _ := claim(t, s, webhooks.Claim{Now: 10, LeaseUntil: 50, Limit: 1, Share: 1}); fmt.Sprint(ids) != fmt.Sprint(slow[:1]) {
		t.Fatalf("claimed %v at 10, want slow's first %v", ids, slow[:1])
	}
	claimed, err := s.ClaimWebhookDeliveries(context.Background(), webhooks.Claim{Now: 100, LeaseUntil: 1000, Limit: 2, Share: 2,
		Free: map[string]int{"slow": 1}, InFlight: map[int64]int64{slow[0]: 50}})
	if err != nil {
		t.Fatal(err)
	}
	got, ids := claimed.Attempts, []int64{}
	for _, a := range got {
		ids = append(ids, a.DeliveryID)
	}
	if fmt.Sprint(ids) != fmt.Sprint([]int64{slow[1], fast[0]}) || !claimed.More {
		t.Fatalf("claimed %v (more %v), want [%d %d] and more", ids, claimed.More, slow[1], fast[0])
	}
	if fmt.Sprint(claimed.Renewed) != fmt.Sprint([]int64{slow[0]}) {
		t.Errorf("renewed %v, want the one in flight [%d]", claimed.Renewed, slow[0])
	}
	if a := got[0]; a.EndpointID != "slow" || a.URL != "https://slow.example/hook" || a.Type != calls.HookCallCreated || a.CreatedAt != 11 {
		t.Errorf("attempt %+v", a)
	}
	// The schedule: the next unleased of slow is its third (due 12), of
	// fast its second (15); the earliest lease ends at 1000.
	due, err := s.NextWebhookDue(context.Background(), 100)
	if err != nil {
		t.Fatal(err)
	}
	if g := fmt.Sprint(due.Endpoints, due.LeaseEnd); g != "map[fast:15 slow:12] 1000" {
		t.Errorf("due %s", g)
	}
	// An endpoint with no free share (its breaker open) gets nothing; what
	// is not due yet (fast's third, at 500) is not claimed.
	if _, ids, _ := claim(t, s, webhooks.Claim{Now: 100, LeaseUntil: 1000, Limit: 10, Share: 2, Free: map[string]int{"slow": 0}}); fmt.Sprint(ids) != fmt.Sprint([]int64{fast[1]}) {
		t.Fatalf("claimed %v, want only fast's [%d]", ids, fast[1])
	}
	// slow's first was renewed, its second leased: only the other two.
	if _, ids, _ := claim(t, s, webhooks.Claim{Now: 100, LeaseUntil: 1000, Limit: 10, Share: 4, Free: map[string]int{"fast": 0}}); fmt.Sprint(ids) != fmt.Sprint(slow[2:]) {
		t.Fatalf("claimed %v, want slow's %v (the one in flight was renewed)", ids, slow[2:])
	}
	// Leased deliveries are still pending; once the leases end they are
	// claimable again.
	if got := queueStats(t, s); got != "7 pending, oldest 10" {
		t.Errorf("queue: %s", got)
	}
	if _, ids, _ := claim(t, s, webhooks.Claim{Now: 1000, LeaseUntil: 2000, Limit: 10, Share: 10}); len(ids) != 7 {
		t.Errorf("after the leases ended, claimed %v, want all 7", ids)
	}
}

// The last Reserve attempts of a claim go only to endpoints with none in
// flight, one each, whatever is due before: endpoints that hang cannot
// take every worker. What the reserve holds back is not More (a claim
// again at once would hold it back again).
func testClaimKeepsTheReserveForFirstAttempts(t *testing.T, s db.Store) {
	putEndpoint(t, s, "hung", 1, calls.HookCallCreated)
	putEndpoint(t, s, "new", 2, calls.HookCallEnded)
	putEndpoint(t, s, "other", 3, calls.HookCallMissed)
	for i, at := range []int64{10, 11, 12, 13} {
		hook(t, s, fmt.Sprint("h", i), calls.HookCallCreated, at)
	}
	for i, at := range []int64{20, 21} {
		hook(t, s, fmt.Sprint("n", i), calls.HookCallEnded, at)
	}
	hook(t, s, "o0", calls.HookCallMissed, 30)
	hung, fresh, other := deliveryIDs(t, s, "hung"), deliveryIDs(t, s, "new"), deliveryIDs(t, s, "other")

	// hung has an attempt in flight: of a limit of 3 with a reserve of 2,
	// it gets one more, though its deliveries are due first; new and
	// other get their first attempts, and new's second is held back.
	claimed, err := s.ClaimWebhookDeliveries(context.Background(), webhooks.Claim{Now: 100, LeaseUntil: 1000,
		Limit: 3, Share: 4, Reserve: 2, Free: map[string]int{"hung": 3}, Sending: map[string]int{"hung": 1}})
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for _, a := range claimed.Attempts {
		ids = append(ids, a.DeliveryID)
	}
	if want := []int64{hung[0], fresh[0], other[0]}; fmt.Sprint(ids) != fmt.Sprint(want) || claimed.More {
		t.Fatalf("claimed %v (more %v), want %v and no more", ids, claimed.More, want)
	}
	// Only the reserve free: nothing for the endpoints now in flight.
	if _, ids, more := claim(t, s, webhooks.Claim{Now: 100, LeaseUntil: 1000, Limit: 2, Share: 4, Reserve: 2,
		Sending: map[string]int{"hung": 2, "new": 1, "other": 1}}); len(ids) != 0 || more {
		t.Fatalf("claimed %v (more %v) from the reserve, want nothing", ids, more)
	}
	// One worker outside the reserve: the earliest due of those in flight.
	if _, ids, more := claim(t, s, webhooks.Claim{Now: 100, LeaseUntil: 1000, Limit: 3, Share: 4, Reserve: 2,
		Sending: map[string]int{"hung": 2, "new": 1, "other": 1}}); fmt.Sprint(ids) != fmt.Sprint(hung[1:2]) || more {
		t.Fatalf("claimed %v (more %v), want %v", ids, more, hung[1:2])
	}
}

// The pending deliveries of an endpoint deleted or disabled are failed,
// never sent: at once for those not in flight, and by the next claim for
// one whose attempt in flight then asked for a retry.
func testClaimFailsDeadEndpointsDeliveries(t *testing.T, s db.Store) {
	ctx := context.Background()
	for i, id := range []string{"gone", "off", "live"} {
		putEndpoint(t, s, id, int64(i+1), calls.HookPushRequested)
	}
	hook(t, s, "p1", calls.HookPushRequested, 10)
	hook(t, s, "p2", calls.HookPushRequested, 10)
	got, _, _ := claim(t, s, webhooks.Claim{Now: 10, LeaseUntil: 1000, Limit: 10, Share: 1, Free: map[string]int{"live": 0}})
	if len(got) != 2 {
		t.Fatalf("claimed %+v, want one of gone and one of off", got)
	}
	byEndpoint := map[string]int64{}
	for _, a := range got {
		byEndpoint[a.EndpointID] = a.DeliveryID
	}
	if err := s.DeleteWebhookEndpoint(ctx, "gone", 20); err != nil {
		t.Fatal(err)
	}
	finish(t, s, webhooks.Outcome{DeliveryID: byEndpoint["off"], Lease: 1000, EndpointID: "off", At: 20, StatusCode: 410, Error: "gone", DisableReason: "410 Gone"})
	// gone's attempt in flight is left to finish; off's other one failed.
	if got := queueStats(t, s); got != "3 pending, oldest 10" {
		t.Errorf("queue after delete and disable: %s, want gone's in flight and live's two", got)
	}
	for _, d := range deliveries(t, s, "off") {
		if d.Status != webhooks.DeliveryFailed || d.NextAttemptAt != 0 {
			t.Errorf("off's delivery %+v, want failed", d)
		}
	}
	// gone's receiver asks for a retry: pending again, yet never claimed.
	finish(t, s, webhooks.Outcome{DeliveryID: byEndpoint["gone"], Lease: 1000, EndpointID: "gone", At: 20, StatusCode: 503, NextAttemptAt: 30})
	got, _, _ = claim(t, s, webhooks.Claim{Now: 100, LeaseUntil: 2000, Limit: 10, Share: 10})
	for _, a := range got {
		if a.EndpointID != "live" {
			t.Errorf("claimed %+v of a dead endpoint", a)
		}
	}
	if len(got) != 2 {
		t.Errorf("claimed %d, want live's 2", len(got))
	}
	if got := queueStats(t, s); got != "2 pending, oldest 10" {
		t.Errorf("queue after the claim: %s, want only live's two (leased)", got)
	}
	due, err := s.NextWebhookDue(ctx, 100)
	if err != nil || len(due.Endpoints) != 0 || due.LeaseEnd != 2000 {
		t.Errorf("NextWebhookDue = %+v (%v), want nothing unleased, a lease ending at 2000", due, err)
	}
}

// An attempt's outcome is recorded and ends its lease; a released attempt
// is due again at once without counting; a retry by hand puts any delivery
// back to pending, but is refused for one in flight or of a disabled
// endpoint.
func testFinishReleaseAndRetryDeliveries(t *testing.T, s db.Store) {
	ctx := context.Background()
	putEndpoint(t, s, "a", 1)
	hook(t, s, "c1", calls.HookCallCreated, 10)
	c := func(now int64) webhooks.Claim {
		return webhooks.Claim{Now: now, LeaseUntil: now + 100, Limit: 10, Share: 10}
	}
	got, ids, _ := claim(t, s, c(10))
	if len(ids) != 1 || got[0].Attempts != 0 {
		t.Fatalf("claimed %+v", got)
	}
	d := ids[0]
	if _, ids, _ := claim(t, s, c(10)); len(ids) != 0 {
		t.Fatalf("a leased delivery was claimed again: %v", ids)
	}
	if err := s.ReleaseWebhookDelivery(ctx, d, 110); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := claim(t, s, c(10)); len(got) != 1 || got[0].DeliveryID != d || got[0].Attempts != 0 {
		t.Fatalf("after release: claimed %+v, want %d again with no attempt counted", got, d)
	}
	finish(t, s, webhooks.Outcome{DeliveryID: d, Lease: 110, EndpointID: "a", At: 20, StatusCode: 500, Error: "boom", NextAttemptAt: 50})
	if l := deliveries(t, s, "a"); len(l) != 1 || l[0].Status != webhooks.DeliveryPending || l[0].Attempts != 1 ||
		l[0].LastStatusCode != 500 || l[0].LastError != "boom" || l[0].NextAttemptAt != 50 {
		t.Fatalf("after a failed attempt: %+v", l)
	}
	if _, ids, _ := claim(t, s, c(40)); len(ids) != 0 {
		t.Fatalf("claimed %v before the retry is due", ids)
	}
	if due, _ := s.NextWebhookDue(ctx, 40); fmt.Sprint(due.Endpoints, due.LeaseEnd) != "map[a:50] 0" {
		t.Errorf("NextWebhookDue(40) = %+v", due)
	}
	if got, _, _ := claim(t, s, c(50)); len(got) != 1 || got[0].Attempts != 1 {
		t.Fatalf("at the retry: claimed %+v, want it with 1 attempt", got)
	}
	finish(t, s, webhooks.Outcome{DeliveryID: d, Lease: 150, EndpointID: "a", At: 60, StatusCode: 200, Delivered: true})
	if l := deliveries(t, s, "a"); l[0].Status != webhooks.DeliveryDelivered || l[0].DeliveredAt != 60 || l[0].NextAttemptAt != 0 || l[0].Attempts != 2 {
		t.Fatalf("after delivery: %+v", l[0])
	}
	if got := queueStats(t, s); got != "0 pending, oldest 0" {
		t.Errorf("queue: %s", got)
	}

	retry := func(endpointID string, id, now int64) (*webhooks.Delivery, error) {
		var out *webhooks.Delivery
		err := s.UpdateWebhooks(ctx, func(tx webhooks.Tx) (err error) {
			out, err = tx.RetryWebhookDelivery(ctx, endpointID, id, now)
			return err
		})
		return out, err
	}
	r, err := retry("a", d, 70)
	if err != nil || r.Status != webhooks.DeliveryPending || r.NextAttemptAt != 70 || r.Attempts != 2 || r.DeliveredAt != 0 ||
		r.ID != strconv.FormatInt(d, 10) || r.WebhookID != "a" {
		t.Fatalf("RetryWebhookDelivery = %+v (%v)", r, err)
	}
	if _, err := retry("a", d+1000, 70); !errors.Is(err, calls.ErrNotFound) {
		t.Errorf("retry of an unknown delivery = %v, want ErrNotFound", err)
	}
	if _, err := retry("b", d, 70); !errors.Is(err, calls.ErrNotFound) {
		t.Errorf("retry under another endpoint = %v, want ErrNotFound", err)
	}
	if got, _, _ := claim(t, s, c(70)); len(got) != 1 || got[0].Attempts != 2 {
		t.Fatalf("after the retry: claimed %+v", got)
	}
	// Retried while in flight: refused, since the attempt's outcome would
	// overwrite the retry; the lease and the schedule stay as they were.
	if r, err := retry("a", d, 80); !errors.Is(err, calls.ErrDeliveryInFlight) {
		t.Fatalf("retry of a delivery in flight = %+v (%v), want ErrDeliveryInFlight", r, err)
	}
	if l := deliveries(t, s, "a"); l[0].Status != webhooks.DeliveryPending || l[0].NextAttemptAt != 70 {
		t.Fatalf("after a refused retry: %+v, want it as the claim left it", l[0])
	}
	if _, ids, _ := claim(t, s, c(80)); len(ids) != 0 {
		t.Fatalf("a delivery in flight was claimed again after a retry: %v", ids)
	}
	// Once the lease has passed (an attempt that died), the retry is taken.
	if r, err := retry("a", d, 70+100); err != nil || r.Status != webhooks.DeliveryPending || r.NextAttemptAt != 170 {
		t.Fatalf("retry after the lease = %+v (%v)", r, err)
	}
	// The attempt that held the lease records its outcome late: nothing
	// took the delivery over, so it still counts, over the retry.
	finish(t, s, webhooks.Outcome{DeliveryID: d, Lease: 170, EndpointID: "a", At: 90, StatusCode: 400})
	hook(t, s, "c2", calls.HookCallCreated, 100)
	for status, want := range map[webhooks.DeliveryStatus]int{webhooks.DeliveryFailed: 1, webhooks.DeliveryPending: 1, webhooks.DeliveryDelivered: 0, "": 2} {
		l, err := s.WebhookDeliveries(ctx, "a", webhooks.DeliveryQuery{Status: status})
		if err != nil || len(l) != want {
			t.Errorf("deliveries with status %q: %+v (%v), want %d", status, l, err, want)
		}
	}
	if l, _ := s.WebhookDeliveries(ctx, "a", webhooks.DeliveryQuery{Limit: 1}); len(l) != 1 || l[0].CreatedAt != 100 {
		t.Errorf("newest delivery: %+v, want c2's", l)
	}

	// An endpoint disabled (410 Gone): a retry of its delivery is refused,
	// since the delivery would be failed unsent.
	got, _, _ = claim(t, s, c(200))
	if len(got) != 1 {
		t.Fatalf("claimed %+v, want c2's delivery", got)
	}
	gone := got[0].DeliveryID
	finish(t, s, webhooks.Outcome{DeliveryID: gone, Lease: 300, EndpointID: "a", At: 210, StatusCode: 410, DisableReason: "endpoint answered 410 Gone"})
	if r, err := retry("a", gone, 220); !errors.Is(err, calls.ErrEndpointDisabled) {
		t.Fatalf("retry on a disabled endpoint = %+v (%v), want ErrEndpointDisabled", r, err)
	}
	if l := deliveries(t, s, "a"); l[len(l)-1].Status != webhooks.DeliveryFailed {
		t.Fatalf("after a refused retry on a disabled endpoint: %+v, want it still failed", l[len(l)-1])
	}
}

// Several outcomes are recorded in one call, each fenced on its own lease:
// one whose lease was taken over changes nothing and is reported lost,
// the others count.
func testFinishSeveralAttemptsAtOnce(t *testing.T, s db.Store) {
	ctx := context.Background()
	putEndpoint(t, s, "a", 1)
	for _, id := range []string{"c1", "c2", "c3"} {
		hook(t, s, id, calls.HookCallCreated, 10)
	}
	got, ids, _ := claim(t, s, webhooks.Claim{Now: 10, LeaseUntil: 110, Limit: 10, Share: 10})
	if len(ids) != 3 {
		t.Fatalf("claimed %+v, want 3", got)
	}
	lost, err := s.FinishWebhookAttempts(ctx, []webhooks.Outcome{
		{DeliveryID: ids[0], Lease: 110, EndpointID: "a", At: 20, StatusCode: 204, Delivered: true},
		{DeliveryID: ids[1], Lease: 999, EndpointID: "a", At: 20, StatusCode: 204, Delivered: true}, // not its lease
		{DeliveryID: ids[2], Lease: 110, EndpointID: "a", At: 20, StatusCode: 503, Error: "busy", NextAttemptAt: 80},
	})
	if err != nil || fmt.Sprint(lost) != "[false true false]" {
		t.Fatalf("FinishWebhookAttempts = %v, %v; want [false true false]", lost, err)
	}
	byID := map[string]webhooks.Delivery{}
	for _, d := range deliveries(t, s, "a") {
		byID[d.ID] = d
	}
	one, two, three := byID[strconv.FormatInt(ids[0], 10)], byID[strconv.FormatInt(ids[1], 10)], byID[strconv.FormatInt(ids[2], 10)]
	if one.Status != webhooks.DeliveryDelivered || one.Attempts != 1 {
		t.Errorf("first: %+v, want delivered", one)
	}
	if two.Status != webhooks.DeliveryPending || two.Attempts != 0 || two.LastStatusCode != 0 {
		t.Errorf("second (lost lease): %+v, want untouched", two)
	}
	if three.Status != webhooks.DeliveryPending || three.Attempts != 1 || three.NextAttemptAt != 80 {
		t.Errorf("third: %+v, want pending again at 80", three)
	}
	if lost, err := s.FinishWebhookAttempts(ctx, nil); err != nil || len(lost) != 0 {
		t.Errorf("no outcome: %v, %v", lost, err)
	}
}

// A 410 in a batch of outcomes disables the endpoint and fails its
// pending deliveries in the batch's transaction, whatever the order the
// outcomes come in (they are written in delivery-id order): an earlier
// delivery set pending again by the batch fails with it, a later one
// delivered stays delivered, and one still in flight keeps its lease.
func testFinishBatchWithGone(t *testing.T, s db.Store) {
	ctx := context.Background()
	putEndpoint(t, s, "a", 1)
	for _, id := range []string{"c1", "c2", "c3", "c4"} {
		hook(t, s, id, calls.HookCallCreated, 10)
	}
	got, ids, _ := claim(t, s, webhooks.Claim{Now: 10, LeaseUntil: 110, Limit: 10, Share: 10})
	if len(ids) != 4 {
		t.Fatalf("claimed %+v, want 4", got)
	}
	const reason = "endpoint answered 410 Gone"
	lost, err := s.FinishWebhookAttempts(ctx, []webhooks.Outcome{ // newest first
		{DeliveryID: ids[2], Lease: 110, EndpointID: "a", At: 20, StatusCode: 204, Delivered: true},
		{DeliveryID: ids[1], Lease: 110, EndpointID: "a", At: 20, StatusCode: 410, DisableReason: reason},
		{DeliveryID: ids[0], Lease: 110, EndpointID: "a", At: 20, StatusCode: 503, Error: "busy", NextAttemptAt: 80},
	})
	if err != nil || fmt.Sprint(lost) != "[false false false]" {
		t.Fatalf("FinishWebhookAttempts = %v, %v; want none lost", lost, err)
	}
	e, err := s.WebhookEndpoint(ctx, "a")
	if err != nil || e.DisabledReason != reason {
		t.Fatalf("endpoint after the batch: %+v (%v), want disabled: %q", e, err, reason)
	}
	byID := map[string]webhooks.Delivery{}
	for _, d := range deliveries(t, s, "a") {
		byID[d.ID] = d
	}
	for i, want := range []webhooks.DeliveryStatus{webhooks.DeliveryFailed, webhooks.DeliveryFailed, webhooks.DeliveryDelivered, webhooks.DeliveryPending} {
		if d := byID[strconv.FormatInt(ids[i], 10)]; d.Status != want {
			t.Errorf("delivery %d after the batch: %+v, want %s", i, d, want)
		}
	}
	if d := byID[strconv.FormatInt(ids[0], 10)]; d.LastError != "endpoint disabled: "+reason {
		t.Errorf("the delivery set pending by the batch: last error %q, want the endpoint's disabling", d.LastError)
	}
	// The one in flight still holds its lease: its attempt's outcome counts.
	finish(t, s, webhooks.Outcome{DeliveryID: ids[3], Lease: 110, EndpointID: "a", At: 30, StatusCode: 200, Delivered: true})
	if d := deliveries(t, s, "a")[3]; d.Status != webhooks.DeliveryDelivered {
		t.Errorf("the delivery in flight during the batch, after its outcome: %+v, want delivered", d)
	}
}

// Expiry fails pending deliveries created before the cut-off and not
// leased, a bounded batch per call, with the reason as their last error;
// finished, newer and leased ones are left as they are.
func testExpireWebhookDeliveries(t *testing.T, s db.Store) {
	ctx := context.Background()
	putEndpoint(t, s, "a", 1)
	hook(t, s, "m1", calls.HookCallCreated, 100)
	hook(t, s, "m2", calls.HookCallCreated, 200)
	hook(t, s, "m3", calls.HookCallCreated, 300)
	hook(t, s, "m4", calls.HookCallCreated, 400)
	hook(t, s, "m5", calls.HookCallCreated, 900)
	a := deliveryIDs(t, s, "a")
	// m1 delivered, m2 leased until 3000; m3 and m4 pending and free.
	if _, ids, _ := claim(t, s, webhooks.Claim{Now: 1000, LeaseUntil: 3000, Limit: 2, Share: 2}); len(ids) != 2 {
		t.Fatalf("claimed %v, want 2", ids)
	}
	finish(t, s, webhooks.Outcome{DeliveryID: a[0], Lease: 3000, EndpointID: "a", At: 1000, StatusCode: 200, Delivered: true})
	for i, want := range []int{1, 1, 0} {
		n, err := s.ExpireWebhookDeliveries(ctx, 500, 2000, 1)
		if err != nil || n != want {
			t.Fatalf("expire %d: failed %d (%v), want %d", i, n, err, want)
		}
	}
	var got []string
	for _, d := range deliveries(t, s, "a") {
		got = append(got, fmt.Sprint(d.CreatedAt, "/", d.Status))
		if d.CreatedAt == 300 && d.LastError != webhooks.ExpiredReason {
			t.Errorf("expired delivery's last error %q, want %q", d.LastError, webhooks.ExpiredReason)
		}
	}
	slices.Sort(got)
	if want := []string{"100/delivered", "200/pending", "300/failed", "400/failed", "900/pending"}; !slices.Equal(got, want) {
		t.Errorf("deliveries after expiry: %v, want %v (the leased one kept until its lease ends)", got, want)
	}
	// An expired one retried by hand is due again: its time is to come, so
	// it is not expired again before it is sent. Its lease over, the leased
	// one expires too.
	err := s.UpdateWebhooks(ctx, func(tx webhooks.Tx) error {
		_, err := tx.RetryWebhookDelivery(ctx, "a", a[2], 2500)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.ExpireWebhookDeliveries(ctx, 500, 3000, 10); err != nil || n != 1 {
		t.Errorf("expire after the lease: failed %d (%v), want 1 (not the retried one)", n, err)
	}
	for _, d := range deliveries(t, s, "a") {
		if d.CreatedAt == 300 && (d.Status != webhooks.DeliveryPending || d.NextAttemptAt != 2500) {
			t.Errorf("the retried delivery after another expiry: %+v, want pending, due at 2500", d)
		}
	}
}

// Pruning deletes finished deliveries created before the cut-off, a
// bounded batch per call, never a pending one however old.
func testPruneWebhookDeliveries(t *testing.T, s db.Store) {
	ctx := context.Background()
	putEndpoint(t, s, "a", 1)
	putEndpoint(t, s, "b", 2)
	hook(t, s, "m1", calls.HookCallCreated, 100)
	hook(t, s, "m2", calls.HookCallCreated, 100)
	hook(t, s, "m3", calls.HookCallCreated, 900)
	a, b := deliveryIDs(t, s, "a"), deliveryIDs(t, s, "b")
	if _, ids, _ := claim(t, s, webhooks.Claim{Now: 1000, LeaseUntil: 2000, Limit: 10, Share: 10}); len(ids) != 6 {
		t.Fatalf("claimed %v, want all 6", ids)
	}
	for _, o := range []webhooks.Outcome{
		{DeliveryID: a[0], Lease: 2000, EndpointID: "a", At: 1000, StatusCode: 200, Delivered: true},
		{DeliveryID: b[0], Lease: 2000, EndpointID: "b", At: 1000, StatusCode: 503, NextAttemptAt: 5000},
		{DeliveryID: a[1], Lease: 2000, EndpointID: "a", At: 1000, StatusCode: 200, Delivered: true},
		{DeliveryID: b[1], Lease: 2000, EndpointID: "b", At: 1000, StatusCode: 400},
		{DeliveryID: a[2], Lease: 2000, EndpointID: "a", At: 1000, StatusCode: 200, Delivered: true},
		{DeliveryID: b[2], Lease: 2000, EndpointID: "b", At: 1000, StatusCode: 200, Delivered: true},
	} {
		finish(t, s, o)
	}
	for i, want := range []int{2, 1, 0} {
		n, err := s.PruneWebhookDeliveries(ctx, 500, 2)
		if err != nil || n != want {
			t.Fatalf("prune %d: deleted %d (%v), want %d", i, n, err, want)
		}
	}
	left := func(id string) string {
		var out []string
		for _, d := range deliveries(t, s, id) {
			out = append(out, fmt.Sprint(d.CreatedAt, "/", d.Status))
		}
		return strings.Join(out, " ")
	}
	if got := left("a"); got != "900/delivered" {
		t.Errorf("a's deliveries left: %s", got)
	}
	if got := left("b"); got != "100/pending 900/delivered" {
		t.Errorf("b's deliveries left: %s, want the old pending one kept", got)
	}
	// The pending one is still sent.
	if got, _, _ := claim(t, s, webhooks.Claim{Now: 5000, LeaseUntil: 6000, Limit: 10, Share: 10}); len(got) != 1 || got[0].DeliveryID != b[0] || len(got[0].Payload) == 0 {
		t.Errorf("claimed %+v after pruning, want b's pending one with its message", got)
	}
}

// An endpoint deleted through the API stays a row while a delivery refers
// to it (a pending one, or a finished one the retention keeps), and is
// purged once none does and it was deleted before the given time; a live
// endpoint never is. The id can be put
// again afterwards (the configured endpoint coming back).
func testPurgeDeletedWebhookEndpoints(t *testing.T, s db.Store) {
	ctx := context.Background()
	putEndpoint(t, s, "gone", 1)
	putEndpoint(t, s, "kept", 2)
	putEndpoint(t, s, "leased", 3)
	hook(t, s, "p1", calls.HookCallCreated, 100)
	putEndpoint(t, s, "idle", 4) // after the message: no delivery
	gone := deliveryIDs(t, s, "gone")
	if _, ids, _ := claim(t, s, webhooks.Claim{Now: 1000, LeaseUntil: 2000, Limit: 10, Share: 10}); len(ids) != 3 {
		t.Fatalf("claimed %v, want 3", ids)
	}
	finish(t, s, webhooks.Outcome{DeliveryID: gone[0], Lease: 2000, EndpointID: "gone", At: 1000, StatusCode: 200, Delivered: true})
	// leased: deleted while its attempt is in flight, the delivery
	// pending under its lease.
	for _, id := range []string{"gone", "idle", "leased"} {
		if err := s.DeleteWebhookEndpoint(ctx, id, 1500); err != nil {
			t.Fatal(err)
		}
	}
	purgeBefore := func(before int64, want int) {
		t.Helper()
		if n, err := s.PurgeDeletedWebhookEndpoints(ctx, before, before, 10); err != nil || n != want {
			t.Fatalf("PurgeDeletedWebhookEndpoints(%d) = %d (%v), want %d", before, n, err, want)
		}
	}
	purge := func(want int) { t.Helper(); purgeBefore(2000, want) }
	purgeBefore(1500, 0) // deleted at 1500: not before it
	purge(1)             // idle: deleted, no delivery; gone keeps its delivered one
	if n, err := s.PruneWebhookDeliveries(ctx, 500, 10); err != nil || n != 1 {
		t.Fatalf("PruneWebhookDeliveries = %d (%v), want gone's delivery", n, err)
	}
	purge(1) // gone
	purge(0)
	if _, err := s.WebhookEndpoint(ctx, "kept"); err != nil {
		t.Fatalf("the live endpoint: %v", err)
	}
	putEndpoint(t, s, "gone", 5)
	if e, err := s.WebhookEndpoint(ctx, "gone"); err != nil || !e.Enabled {
		t.Fatalf("gone put again: %+v (%v)", e, err)
	}
	// Put back, the endpoint forgets its first deletion: deleted again at
	// 3000, it is not purged as deleted at 1500.
	if err := s.DeleteWebhookEndpoint(ctx, "gone", 3000); err != nil {
		t.Fatal(err)
	}
	purge(0)
	purgeBefore(3001, 1)
}

// The count of endpoints not deleted that guards the registry's limit
// holds a second transaction that asks back until the first, which counted
// and then registered one, has committed: two admins (on two nodes)
// registering the last endpoint allowed at once see each other's.
func testWebhookEndpointCount(t *testing.T, s db.Store) {
	ctx := context.Background()
	count := func() int {
		t.Helper()
		var n int
		if err := s.UpdateWebhooks(ctx, func(tx webhooks.Tx) (err error) { n, err = tx.WebhookEndpointCount(ctx); return err }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 0 {
		t.Fatalf("count of an empty store = %d", n)
	}
	putEndpoint(t, s, "a", 1)
	putEndpoint(t, s, "b", 1)
	if err := s.DeleteWebhookEndpoint(ctx, "a", 10); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 1 {
		t.Fatalf("count after two endpoints and a deletion = %d, want 1", n)
	}

	counted, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- s.UpdateWebhooks(ctx, func(tx webhooks.Tx) error {
			if _, err := tx.WebhookEndpointCount(ctx); err != nil {
				return err
			}
			close(counted)
			<-release
			return tx.InsertWebhookEndpoint(ctx, &webhooks.Endpoint{ID: "c", URL: "https://c.example", Secret: "whsec_c", CreatedAt: 20})
		})
	}()
	<-counted
	second := make(chan int, 1)
	go func() { second <- count() }()
	// The second asks while the first holds its count; it must not answer
	// before the first ends (SQLite's one writer runs them in turn too).
	time.Sleep(100 * time.Millisecond)
	select {
	case n := <-second:
		t.Fatalf("a count answered (%d) while another transaction held its own", n)
	default:
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if n := <-second; n != 2 {
		t.Fatalf("the count that waited = %d, want 2 (the first transaction's endpoint)", n)
	}
}
