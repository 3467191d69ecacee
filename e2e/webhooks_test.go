package e2e

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"callsig/calls"
	"callsig/handlers"
	"callsig/internal/testkit"
)

// Webhook data shapes, decoded from deliveries.
type (
	hookStateChanged struct {
		CallID       string               `json:"callID"`
		CallUserList []calls.CallUserInfo `json:"callUserList"`
	}
	hookEnded struct {
		CallID         string `json:"callID"`
		OperatedUserID string `json:"operatedUserID"`
		EndTime        int64  `json:"endTime"`
		Reason         string `json:"reason"`
	}
	hookPush struct {
		CallID     string           `json:"callID"`
		UserID     string           `json:"userID"`
		Kind       string           `json:"kind"`
		PushConfig calls.PushConfig `json:"pushConfig"`
	}
)

// quietPeriod is how long "nothing more arrives" is watched for.
const quietPeriod = 200 * time.Millisecond

// adminJWT mints a token with the admin role.
func adminJWT(t *testing.T, s *testkit.Server) string {
	tok, err := handlers.MintToken(s.App.Secret, handlers.TokenRequest{UserID: "ops", TTL: time.Hour, Admin: true}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// ofCall matches deliveries about one call.
func ofCall(callID string) func(testkit.Delivery) bool {
	return func(d testkit.Delivery) bool {
		var v struct {
			CallID string `json:"callID"`
		}
		return json.Unmarshal(d.Data, &v) == nil && v.CallID == callID
	}
}

// stateChanges returns the user → state pairs of a call's
// call.user_state_changed deliveries, in arrival order.
func stateChanges(t *testing.T, ds []testkit.Delivery) []string {
	var out []string
	for _, d := range ds {
		if d.Type != "call.user_state_changed" {
			continue
		}
		var v hookStateChanged
		d.Decode(t, &v)
		for _, u := range v.CallUserList {
			out = append(out, u.UserID+":"+string(u.State))
		}
	}
	slices.Sort(out)
	return out
}

// A backend registers an endpoint and receives every event of a general
// call and an advanced call, signed, with the contract's data.
func TestWebhooksDeliverEveryCallEvent(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		rcv := s.NewReceiver()
		wh := s.RegisterWebhook(rcv)
		if !wh.Enabled || len(wh.EventTypes) != 0 || wh.URL != rcv.URL() || len(wh.Secret) < len("whsec_")+32 {
			t.Fatalf("registered %+v", wh)
		}
		alice, bob, carol, dave := s.Client("alice"), s.Client("bob"), s.Client("carol"), s.Client("dave")

		// General: alice calls bob (offline, so a push is requested); bob accepts.
		push := map[string]any{"title": "Alice", "content": "is calling", "payload": "p1", "resourcesID": "ring"}
		res := alice.Invite(map[string]any{"extendedData": "video", "pushConfig": push}, "bob")
		bob.Action(res.CallID, "accept", map[string]any{"extendedData": "ok"}).Want(http.StatusOK)
		general := rcv.WaitFor(4, ofCall(res.CallID))

		created := rcv.WaitType("call.created", 1, ofCall(res.CallID))[0]
		var info calls.CallInfo
		created.Decode(t, &info)
		if info.CallID != res.CallID || info.Caller != "alice" || info.Mode != calls.ModeGeneral || info.State != calls.CallStarted ||
			info.ExtendedData != "video" || info.CreateTime != res.Call.CreateTime || len(info.CallUserList) != 2 {
			t.Fatalf("call.created data %s", created.Data)
		}
		var p hookPush
		rcv.WaitType("call.push_requested", 1, ofCall(res.CallID))[0].Decode(t, &p)
		if p.UserID != "bob" || p.Kind != "invitation" || p.PushConfig != (calls.PushConfig{Title: "Alice", Content: "is calling", Payload: "p1", ResourcesID: "ring"}) {
			t.Fatalf("call.push_requested data %+v", p)
		}
		if got := stateChanges(t, general); !slices.Equal(got, []string{"bob:accepted"}) {
			t.Fatalf("general call state changes %v", got)
		}
		var ended hookEnded
		rcv.WaitType("call.ended", 1, ofCall(res.CallID))[0].Decode(t, &ended)
		if ended.Reason != "completed" || ended.OperatedUserID != "bob" || ended.EndTime != s.Now() {
			t.Fatalf("call.ended data %+v", ended)
		}

		// Advanced: alice calls carol; carol accepts, dave joins, carol quits,
		// alice ends. No pushConfig, so no push request.
		adv := alice.Invite(map[string]any{"mode": "advanced"}, "carol").CallID
		carol.Action(adv, "accept", nil).Want(http.StatusOK)
		dave.Action(adv, "join", nil).Want(http.StatusOK)
		carol.Action(adv, "quit", nil).Want(http.StatusOK)
		alice.Action(adv, "end", nil).Want(http.StatusOK)
		rcv.WaitType("call.ended", 1, ofCall(adv))
		advanced := rcv.WaitFor(5, ofCall(adv))
		if got := stateChanges(t, advanced); !slices.Equal(got, []string{"carol:accepted", "carol:quit", "dave:accepted"}) {
			t.Fatalf("advanced call state changes %v", got)
		}
		rcv.WaitType("call.ended", 1, ofCall(adv))[0].Decode(t, &ended)
		if ended.Reason != "end" || ended.OperatedUserID != "alice" {
			t.Fatalf("advanced call.ended %+v", ended)
		}
		for _, d := range advanced {
			if d.Type == "call.push_requested" {
				t.Fatalf("push requested without pushConfig: %s", d.Data)
			}
		}

		// Every delivery has its own webhook-id, and is recorded as delivered.
		ids := map[string]bool{}
		for _, d := range rcv.Deliveries() {
			if ids[d.ID] {
				t.Fatalf("webhook-id %s delivered twice", d.ID)
			}
			ids[d.ID] = true
		}
		list := s.WaitDeliveries(wh.ID, func(l []testkit.WebhookDelivery) bool {
			for _, d := range l {
				if d.Status != "delivered" {
					return false
				}
			}
			return len(l) == len(ids)
		})
		for _, d := range list {
			if d.WebhookID != wh.ID || d.Attempts != 1 || d.LastStatusCode != http.StatusNoContent || d.DeliveredAt == 0 || d.NextAttemptAt != 0 {
				t.Fatalf("delivery record %+v", d)
			}
		}
	})
}

// An endpoint subscribed to some types gets only those.
func TestWebhookEventTypesFilter(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		ends, all := s.NewReceiver(), s.NewReceiver()
		wh := s.RegisterWebhook(ends, "call.ended", "call.push_requested")
		if !slices.Equal(wh.EventTypes, []string{"call.ended", "call.push_requested"}) {
			t.Fatalf("eventTypes %v", wh.EventTypes)
		}
		s.RegisterWebhook(all)

		alice, bob := s.Client("alice"), s.Client("bob")
		id := alice.Invite(nil, "bob").CallID
		bob.Action(id, "reject", nil).Want(http.StatusOK)

		all.WaitFor(3, ofCall(id)) // created, state changed, ended
		ends.WaitType("call.ended", 1, ofCall(id))
		ends.Quiet(quietPeriod)
		for _, d := range ends.Deliveries() {
			if d.Type != "call.ended" {
				t.Fatalf("filtered endpoint got %s", d.Type)
			}
		}
	})
}

// The admin API: create (secret shown once), list, get, deliveries,
// delete; validation and not_found errors; admin rights required.
func TestWebhookAdminAPI(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		admin := s.Admin()
		rcv := s.NewReceiver()

		// Authentication and rights.
		s.Client("alice").Get("/webhooks").WantProblem(http.StatusForbidden, "forbidden")
		s.Client("alice").Post("/webhooks", map[string]any{"url": rcv.URL()}).WantProblem(http.StatusForbidden, "forbidden")
		anon := s.Admin()
		anon.Token = ""
		anon.Get("/webhooks").WantProblem(http.StatusUnauthorized, "unauthorized")
		anon.Post("/webhooks", map[string]any{"url": rcv.URL()}).WantProblem(http.StatusUnauthorized, "unauthorized")
		// A JWT with role admin is as good as the admin token.
		roleAdmin := s.Admin()
		roleAdmin.Token = adminJWT(t, s)
		roleAdmin.Get("/webhooks").Want(http.StatusOK)

		// Validation.
		for _, u := range []string{"ftp://example.com/x", "example.com/hook", "http://", "javascript:alert(1)", "http://user:pw@example.com/",
			"http://93.184.216.34:99999/", "http://93.184.216.34:0/"} {
			p := admin.Post("/webhooks", map[string]any{"url": u}).WantProblem(http.StatusBadRequest, "invalid_request")
			if len(p.Errors) == 0 || p.Errors[0].Field != "url" {
				t.Errorf("%s: problem %+v", u, p)
			}
		}
		admin.Post("/webhooks", map[string]any{"url": rcv.URL(), "eventTypes": []string{"call.nope"}}).WantProblem(http.StatusBadRequest, "invalid_request")

		wh := s.RegisterWebhook(rcv, "call.created")
		var list struct {
			Webhooks []map[string]any `json:"webhooks"`
		}
		admin.Get("/webhooks").Want(http.StatusOK).JSON(&list)
		if len(list.Webhooks) != 1 || list.Webhooks[0]["id"] != wh.ID || list.Webhooks[0]["secret"] != nil || list.Webhooks[0]["enabled"] != true {
			t.Fatalf("list %+v", list)
		}
		var got map[string]any
		admin.Get("/webhooks/" + wh.ID).Want(http.StatusOK).JSON(&got)
		if got["url"] != rcv.URL() || got["secret"] != nil || got["description"] != "test receiver" || got["disabledReason"] != "" {
			t.Fatalf("get %+v", got)
		}
		if d := s.WebhookDeliveries(wh.ID); len(d) != 0 {
			t.Fatalf("deliveries before any event: %+v", d)
		}
		admin.Get("/webhooks/wh_unknown").WantProblem(http.StatusNotFound, "not_found")
		admin.Get("/webhooks/wh_unknown/deliveries").WantProblem(http.StatusNotFound, "not_found")
		admin.Post("/webhooks/"+wh.ID+"/deliveries/999/retry", nil).WantProblem(http.StatusNotFound, "not_found")
		admin.Post("/webhooks/"+wh.ID+"/deliveries/abc/retry", nil).WantProblem(http.StatusNotFound, "not_found")

		// Deliveries can be filtered by status.
		s.Client("alice").Invite(nil, "bob")
		rcv.WaitType("call.created", 1, nil)
		s.WaitDeliveries(wh.ID, func(l []testkit.WebhookDelivery) bool { return len(l) == 1 && l[0].Status == "delivered" })
		var filtered struct {
			Deliveries []testkit.WebhookDelivery `json:"deliveries"`
		}
		admin.Get("/webhooks/" + wh.ID + "/deliveries?status=pending").Want(http.StatusOK).JSON(&filtered)
		if len(filtered.Deliveries) != 0 {
			t.Fatalf("pending filter %+v", filtered)
		}
		admin.Get("/webhooks/" + wh.ID + "/deliveries?status=delivered&limit=1").Want(http.StatusOK).JSON(&filtered)
		if len(filtered.Deliveries) != 1 || filtered.Deliveries[0].Type != "call.created" {
			t.Fatalf("delivered filter %+v", filtered)
		}

		// Deleting stops deliveries.
		admin.Do(http.MethodDelete, "/webhooks/"+wh.ID, nil).Want(http.StatusNoContent)
		admin.Do(http.MethodDelete, "/webhooks/"+wh.ID, nil).WantProblem(http.StatusNotFound, "not_found")
		admin.Get("/webhooks/"+wh.ID).WantProblem(http.StatusNotFound, "not_found")
		s.Client("alice").Invite(nil, "carol")
		rcv.Quiet(quietPeriod)
		if n := len(rcv.Deliveries()); n != 1 {
			t.Fatalf("%d deliveries after delete, want 1", n)
		}
	})
}

// call.push_requested goes out only for recipients with no open event
// stream, for each action that carried a pushConfig.
func TestWebhookPushRequestedOnlyForOfflineUsers(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		rcv := s.NewReceiver()
		s.RegisterWebhook(rcv, "call.push_requested")
		carol := s.Stream("carol", "", "") // online; bob and dave are not
		defer carol.Close()

		alice := s.Client("alice")
		push := map[string]any{"title": "Alice", "content": "is calling"}
		id := alice.Invite(map[string]any{"pushConfig": push}, "bob", "carol", "dave").CallID
		carol.WaitFor("callInvitationReceived", nil, testkit.WaitTimeout)
		alice.Action(id, "cancel", map[string]any{"invitees": []string{"dave"}, "pushConfig": map[string]any{"title": "missed"}}).Want(http.StatusOK)

		got := rcv.WaitFor(3, ofCall(id))
		rcv.Quiet(quietPeriod)
		var pushes []string
		for _, d := range rcv.Deliveries() {
			var p hookPush
			d.Decode(t, &p)
			pushes = append(pushes, p.UserID+":"+p.Kind+":"+p.PushConfig.Title)
		}
		slices.Sort(pushes)
		if want := []string{"bob:invitation:Alice", "dave:cancellation:missed", "dave:invitation:Alice"}; !slices.Equal(pushes, want) || len(got) != 3 {
			t.Fatalf("push requests %v, want %v", pushes, want)
		}
	})
}

// A webhook id that is no id (a NUL, a byte that is not UTF-8) is refused
// before the store, on every backend: PostgreSQL answered it with an
// encoding error, a 500 (found by review).
func TestWebhookIDThatIsNoID(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend)
		admin := s.Admin()
		for _, r := range []struct{ method, path string }{
			{"GET", "/webhooks/%00"},
			{"GET", "/webhooks/%FF"},
			{"GET", "/webhooks/%00/deliveries"},
			{"DELETE", "/webhooks/wh%00x"},
			{"POST", "/webhooks/%00/deliveries/1/retry"},
		} {
			p := admin.Do(r.method, r.path, nil).WantProblem(http.StatusBadRequest, "invalid_request")
			if len(p.Errors) == 0 || p.Errors[0].Field != "id" {
				t.Errorf("%s %s: errors %+v, want id", r.method, r.path, p.Errors)
			}
		}
	})
}
