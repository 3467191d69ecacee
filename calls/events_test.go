package calls

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"testing"
)

// Events and webhooks checked against the contract's event table: who gets
// which event, with exactly which fields, on which device.

func eventsOf(ch *Change, typ EventType) []Event {
	if ch == nil {
		return nil
	}
	var evs []Event
	for _, e := range ch.Events {
		if e.Type == typ {
			evs = append(evs, e)
		}
	}
	return evs
}

// recipientsOf lists the users the events go to, sorted.
func recipientsOf(evs []Event) []string {
	ids := []string{}
	for _, e := range evs {
		ids = append(ids, e.UserID)
	}
	slices.Sort(ids)
	return ids
}

func decode(t *testing.T, raw json.RawMessage) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("data %s is not a JSON object: %v", raw, err)
	}
	return m
}

func keysOf(m map[string]any) []string { return slices.Sorted(maps.Keys(m)) }

func sorted(s ...string) []string { return slices.Sorted(slices.Values(s)) }

var (
	callUserInfoFields = sorted("userID", "state", "inviter", "extendedData", "updateTime")
	callInfoFields     = sorted("callID", "caller", "mode", "state", "timeout", "extendedData", "createTime", "endTime", "callUserList")

	eventFields = map[EventType][]string{
		EventCreated:          sorted("callID", "caller", "mode", "timeout", "createTime", "extendedData", "callUserList"),
		EventReceived:         sorted("callID", "caller", "inviter", "mode", "timeout", "createTime", "extendedData", "callUserList"),
		EventCancelled:        sorted("callID", "inviter", "mode", "extendedData"),
		EventTimeout:          sorted("callID", "mode"),
		EventEnded:            sorted("callID", "caller", "operatedUserID", "mode", "endTime", "extendedData"),
		EventUserStateChanged: sorted("callID", "callUserList"),
	}
	hookFields = map[HookType][]string{
		HookCallCreated:      callInfoFields,
		HookUserStateChanged: sorted("callID", "callUserList"),
		HookCallEnded:        sorted("callID", "operatedUserID", "endTime", "reason"),
		HookCallMissed:       sorted("callID", "userID", "caller", "inviter", "reason", "time"),
	}
)

// wantFields checks one decoded payload has exactly the fields, and that
// its callUserList (if any) has exactly CallUserInfo's.
func wantFields(t *testing.T, what string, d map[string]any, want []string) {
	t.Helper()
	if got := keysOf(d); !slices.Equal(got, want) {
		t.Errorf("%s fields %v, want exactly %v", what, got, want)
	}
	list, _ := d["callUserList"].([]any)
	if _, has := d["callUserList"]; has && list == nil {
		t.Errorf("%s callUserList is %v, want a list", what, d["callUserList"])
	}
	for _, item := range list {
		m, _ := item.(map[string]any)
		if got := keysOf(m); !slices.Equal(got, callUserInfoFields) {
			t.Errorf("%s callUserList item fields %v, want exactly %v", what, got, callUserInfoFields)
		}
	}
}

// wantShape checks every event and hook of a change against the contract.
func wantShape(t *testing.T, ch *Change, now int64) {
	t.Helper()
	if ch == nil {
		return
	}
	id := ch.Call.ID
	for _, e := range ch.Events {
		want, known := eventFields[e.Type]
		if !known {
			t.Errorf("event type %q is not in the contract", e.Type)
			continue
		}
		d := decode(t, e.Data)
		wantFields(t, string(e.Type), d, want)
		if e.CallID != id || d["callID"] != id || e.Time != now || e.UserID == "" {
			t.Errorf("%s to %q: callID %q/%v time %d, want %s at %d", e.Type, e.UserID, e.CallID, d["callID"], e.Time, id, now)
		}
	}
	for _, h := range ch.Hooks {
		want, pure := hookFields[h.Type]
		if !pure {
			t.Errorf("pure transition produced hook %q; push requests are resolved by the Service", h.Type)
			continue
		}
		d := decode(t, h.Data)
		wantFields(t, string(h.Type), d, want)
		if h.CallID != id || d["callID"] != id || h.Time != now {
			t.Errorf("%s: callID %q/%v time %d, want %s at %d", h.Type, h.CallID, d["callID"], h.Time, id, now)
		}
	}
}

// userList decodes a callUserList into comparable values.
func userList(t *testing.T, raw json.RawMessage) []CallUserInfo {
	t.Helper()
	var d struct {
		CallUserList []CallUserInfo `json:"callUserList"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("decode callUserList: %v", err)
	}
	return d.CallUserList
}

// TestEventShapes walks a call through every kind of change and checks each
// event and hook has exactly the contract's fields.
func TestEventShapes(t *testing.T) {
	push := &PushConfig{Title: "t", Content: "c", Payload: "p", ResourcesID: "r"}
	ch, _, err := NewCall("call0123456789abcdef", as("alice"), InviteInput{
		Mode: ModeAdvanced, Invitees: []string{"bob", "carol", "dave", "erin"}, Timeout: 60, ExtendedData: "x",
		PushConfig: push, EnableNotReceivedCheck: true,
	}, now0, testCfg, true, nil)
	c := mustChange(t, ch, err)
	wantShape(t, ch, now0)
	seen := map[EventType]bool{}
	note := func(ch *Change) {
		for _, e := range ch.Events {
			seen[e.Type] = true
		}
	}
	note(ch)
	steps := []struct {
		name string
		now  int64
		run  func(c *Call, now int64) (*Change, error)
	}{
		{"bob's invitation is delivered", now0 + 100, func(c *Call, now int64) (*Change, error) { return Delivered(c, "bob", 0, now), nil }},
		{"carol's invitation is not received in time", now0 + 5_000, func(c *Call, now int64) (*Change, error) {
			return Expire(c, Deadline{CallID: c.ID, UserID: "carol", Kind: DeadlineNotReceived}, now), nil
		}},
		{"bob accepts", now0 + 6_000, func(c *Call, now int64) (*Change, error) { return Answer(c, on("bob", "phone"), true, "y", now) }},
		{"carol rejects", now0 + 7_000, func(c *Call, now int64) (*Change, error) { return Answer(c, as("carol"), false, "n", now) }},
		{"alice cancels dave", now0 + 8_000, func(c *Call, now int64) (*Change, error) {
			ch, _, err := Cancel(c, as("alice"), CancelInput{Invitees: []string{"dave"}, ExtendedData: "sorry", PushConfig: push}, now)
			return ch, err
		}},
		{"erin times out", now0 + 60_000, func(c *Call, now int64) (*Change, error) {
			return Expire(c, Deadline{CallID: c.ID, UserID: "erin", Kind: DeadlineTimeout}, now), nil
		}},
		{"bob invites frank", now0 + 61_000, func(c *Call, now int64) (*Change, error) {
			ch, _, err := CallingInvite(c, as("bob"), CallingInviteInput{Invitees: []string{"frank"}, PushConfig: push}, now, testCfg, nil)
			return ch, err
		}},
		{"carol joins", now0 + 62_000, func(c *Call, now int64) (*Change, error) { return Join(c, on("carol", "laptop"), "j", now, testCfg) }},
		{"bob switches to his tablet", now0 + 63_000, func(c *Call, now int64) (*Change, error) { return Join(c, on("bob", "tablet"), "j2", now, testCfg) }},
		{"carol quits", now0 + 64_000, func(c *Call, now int64) (*Change, error) {
			return Quit(c, as("carol"), LeaveInput{ExtendedData: "q"}, now)
		}},
		{"bob ends the call", now0 + 65_000, func(c *Call, now int64) (*Change, error) {
			return End(c, as("bob"), LeaveInput{ExtendedData: "e", PushConfig: push}, now)
		}},
	}
	for _, s := range steps {
		ch, err := s.run(c, s.now)
		c = mustChange(t, ch, err)
		t.Run(s.name, func(t *testing.T) { wantShape(t, ch, s.now) })
		note(ch)
	}
	for typ := range eventFields {
		if !seen[typ] {
			t.Errorf("the walk produced no %s event", typ)
		}
	}
}

func TestCallInvitationCreated(t *testing.T) {
	ch, c := newCall(t, ModeAdvanced, InviteInput{Timeout: 30, ExtendedData: "hello"}, "bob", "carol")
	evs := eventsOf(ch, EventCreated)
	if got := recipientsOf(evs); !slices.Equal(got, []string{"alice"}) {
		t.Fatalf("callInvitationCreated sent to %v, want the caller only", got)
	}
	d := decode(t, evs[0].Data)
	want := map[string]any{"callID": c.ID, "caller": "alice", "mode": "advanced", "timeout": 30.0, "createTime": float64(now0), "extendedData": "hello"}
	for k, v := range want {
		if d[k] != v {
			t.Errorf("%s = %v, want %v", k, d[k], v)
		}
	}
	wantList := []CallUserInfo{
		{UserID: "alice", State: StateAccepted, Inviter: "alice", ExtendedData: "hello", UpdateTime: now0},
		{UserID: "bob", State: StateInviting, Inviter: "alice", UpdateTime: now0},
		{UserID: "carol", State: StateInviting, Inviter: "alice", UpdateTime: now0},
	}
	if got := userList(t, evs[0].Data); !reflect.DeepEqual(got, wantList) {
		t.Errorf("callUserList %+v, want %+v", got, wantList)
	}
	if len(eventsOf(ch, EventUserStateChanged)) != 0 {
		t.Errorf("creating a call sent callUserStateChanged")
	}
}

func TestCallInvitationReceived(t *testing.T) {
	ch, c := newCall(t, ModeAdvanced, InviteInput{Timeout: 30, ExtendedData: "hello"}, "bob", "carol")
	t.Run("sent to each invitee of a new call, with the caller as inviter", func(t *testing.T) {
		evs := eventsOf(ch, EventReceived)
		if got := recipientsOf(evs); !slices.Equal(got, []string{"bob", "carol"}) {
			t.Fatalf("callInvitationReceived sent to %v, want bob and carol once each", got)
		}
		for _, e := range evs {
			d := decode(t, e.Data)
			want := map[string]any{"callID": c.ID, "caller": "alice", "inviter": "alice", "mode": "advanced", "timeout": 30.0, "createTime": float64(now0), "extendedData": "hello"}
			for k, v := range want {
				if d[k] != v {
					t.Errorf("to %s: %s = %v, want %v", e.UserID, k, d[k], v)
				}
			}
			if got := userList(t, e.Data); len(got) != 3 {
				t.Errorf("to %s: callUserList %+v, want the whole call (3 users)", e.UserID, got)
			}
		}
	})
	t.Run("sent to each new invitee of a callingInvite, with the member who invited as inviter", func(t *testing.T) {
		ch, err := Answer(c, on("bob", "phone"), true, "", now0+1000)
		c := mustChange(t, ch, err)
		ch, _, err = CallingInvite(c, as("bob"), CallingInviteInput{Invitees: []string{"dave", "alice"}}, now0+2000, testCfg, nil)
		mustChange(t, ch, err)
		evs := eventsOf(ch, EventReceived)
		if got := recipientsOf(evs); !slices.Equal(got, []string{"dave"}) {
			t.Fatalf("callInvitationReceived sent to %v, want dave only", got)
		}
		d := decode(t, evs[0].Data)
		want := map[string]any{"caller": "alice", "inviter": "bob", "mode": "advanced", "timeout": 30.0, "createTime": float64(now0), "extendedData": "hello"}
		for k, v := range want {
			if d[k] != v {
				t.Errorf("%s = %v, want %v", k, d[k], v)
			}
		}
		list := userList(t, evs[0].Data)
		if i := slices.IndexFunc(list, func(u CallUserInfo) bool { return u.UserID == "dave" }); len(list) != 4 || i < 0 || list[i].State != StateInviting || list[i].Inviter != "bob" {
			t.Errorf("callUserList %+v, want the whole call with dave inviting, invited by bob", list)
		}
	})
}

func TestCallInvitationCancelled(t *testing.T) {
	_, c := newCall(t, ModeGeneral, InviteInput{}, "bob", "carol", "dave")
	ch, err := Answer(c, as("dave"), false, "", now0+500)
	c = mustChange(t, ch, err)
	ch, _, err = Cancel(c, as("alice"), CancelInput{ExtendedData: "sorry"}, now0+1000)
	mustChange(t, ch, err)
	evs := eventsOf(ch, EventCancelled)
	if got := recipientsOf(evs); !slices.Equal(got, []string{"bob", "carol"}) {
		t.Fatalf("callInvitationCancelled sent to %v, want each cancelled invitee (bob, carol)", got)
	}
	for _, e := range evs {
		want := map[string]any{"callID": c.ID, "inviter": "alice", "mode": "general", "extendedData": "sorry"}
		if d := decode(t, e.Data); !reflect.DeepEqual(d, want) {
			t.Errorf("to %s: %v, want %v", e.UserID, d, want)
		}
	}
}

// The caller-offline rule withdraws everyone's pending invitations, not
// only the caller's: each invitee is told the inviter its
// callInvitationReceived named (dave was invited by bob), as call.missed
// does.
func TestCallInvitationCancelledByTheCallerOfflineRule(t *testing.T) {
	c := tableCall(ModeGeneral, StateNotYetReceived)
	c.CallerTracked, c.CallerOfflineAt = true, tableNow
	ch := Expire(c, Deadline{CallID: c.ID, Kind: DeadlineCallerOffline}, tableNow)
	mustChange(t, ch, nil)
	evs := eventsOf(ch, EventCancelled)
	if got := recipientsOf(evs); len(got) != 3 {
		t.Fatalf("callInvitationCancelled sent to %v, want bob, carol and dave", got)
	}
	want := map[string]string{"bob": "alice", "carol": "alice", "dave": "bob"}
	for _, e := range evs {
		if d := decode(t, e.Data); d["inviter"] != want[e.UserID] {
			t.Errorf("to %s: inviter %v, want %s", e.UserID, d["inviter"], want[e.UserID])
		}
	}
}

func TestCallInvitationTimeout(t *testing.T) {
	_, c := newCall(t, ModeGeneral, InviteInput{}, "bob", "carol")
	ch := Expire(c, Deadline{CallID: c.ID, UserID: "bob", Kind: DeadlineTimeout}, now0+90_000)
	mustChange(t, ch, nil)
	evs := eventsOf(ch, EventTimeout)
	if got := recipientsOf(evs); !slices.Equal(got, []string{"bob"}) {
		t.Fatalf("callInvitationTimeout sent to %v, want the timed-out invitee only", got)
	}
	if d, want := decode(t, evs[0].Data), map[string]any{"callID": c.ID, "mode": "general"}; !reflect.DeepEqual(d, want) {
		t.Errorf("data %v, want %v", d, want)
	}
}

func TestCallInvitationEnded(t *testing.T) {
	c := richCall()
	const now = now0 + 20_000
	ch, err := End(c, on("bob", "phone"), LeaveInput{ExtendedData: "bye"}, now)
	mustChange(t, ch, err)
	evs := eventsOf(ch, EventEnded)
	if got, want := recipientsOf(evs), []string{"alice", "bob", "carol", "dave", "erin"}; !slices.Equal(got, want) {
		t.Fatalf("callInvitationEnded sent to %v, want the users inviting, received, notYetReceived or accepted: %v", got, want)
	}
	want := map[string]any{"callID": c.ID, "caller": "alice", "operatedUserID": "bob", "mode": "advanced", "endTime": float64(now), "extendedData": "bye"}
	for _, e := range evs {
		if d := decode(t, e.Data); !reflect.DeepEqual(d, want) {
			t.Errorf("to %s: %v, want %v", e.UserID, d, want)
		}
	}
	if len(ch.Events) != len(evs) {
		t.Errorf("end sent other events too: %v", ch.Events)
	}
}

// richCall is an advanced call with a user in every state: alice (caller,
// accepted), bob (accepted on his phone), carol inviting, dave received,
// erin notYetReceived (invited by bob), frank rejected, greta cancelled,
// hank timeout, ivan quit.
func richCall() *Call {
	c := buildCall(ModeAdvanced,
		row("bob", StateAccepted, "alice"),
		row("carol", StateInviting, "alice"),
		row("dave", StateReceived, "alice"),
		row("erin", StateNotYetReceived, "bob"),
		row("frank", StateRejected, "alice"),
		row("greta", StateCancelled, "alice"),
		row("hank", StateTimeout, "alice"),
		row("ivan", StateQuit, "alice"),
	)
	c.NotReceivedCheck = true
	c.User("carol").NotReceivedAt = now0 + 5_000
	return c
}

func TestCallUserStateChangedRecipients(t *testing.T) {
	const now = now0 + 10_000
	active := []string{"alice", "bob", "carol", "dave", "erin"}
	cases := []struct {
		name    string
		run     func(c *Call) (*Change, error)
		changed map[string]UserState // the callUserList, by user
		to      []string
	}{
		{"carol accepts", func(c *Call) (*Change, error) { return Answer(c, as("carol"), true, "", now) },
			map[string]UserState{"carol": StateAccepted}, active},
		{"carol rejects", func(c *Call) (*Change, error) { return Answer(c, as("carol"), false, "", now) },
			map[string]UserState{"carol": StateRejected}, active},
		{"bob cancels erin", func(c *Call) (*Change, error) {
			ch, _, err := Cancel(c, as("bob"), CancelInput{Invitees: []string{"erin"}}, now)
			return ch, err
		}, map[string]UserState{"erin": StateCancelled}, active},
		{"alice cancels all her pending invitees", func(c *Call) (*Change, error) {
			ch, _, err := Cancel(c, as("alice"), CancelInput{}, now)
			return ch, err
		}, map[string]UserState{"carol": StateCancelled, "dave": StateCancelled}, active},
		{"dave times out", func(c *Call) (*Change, error) {
			return Expire(c, Deadline{CallID: c.ID, UserID: "dave", Kind: DeadlineTimeout}, now0+90_000), nil
		}, map[string]UserState{"dave": StateTimeout}, active},
		{"carol's invitation is delivered", func(c *Call) (*Change, error) { return Delivered(c, "carol", 0, now), nil },
			map[string]UserState{"carol": StateReceived}, active},
		{"carol's invitation is not received in time", func(c *Call) (*Change, error) {
			return Expire(c, Deadline{CallID: c.ID, UserID: "carol", Kind: DeadlineNotReceived}, now), nil
		}, map[string]UserState{"carol": StateNotYetReceived}, active},
		{"bob quits", func(c *Call) (*Change, error) { return Quit(c, as("bob"), LeaveInput{}, now) },
			map[string]UserState{"bob": StateQuit}, active},
		{"frank, who rejected, joins", func(c *Call) (*Change, error) { return Join(c, as("frank"), "", now, testCfg) },
			map[string]UserState{"frank": StateAccepted}, append(slices.Clone(active), "frank")},
		{"ivan, who quit, joins again", func(c *Call) (*Change, error) { return Join(c, as("ivan"), "", now, testCfg) },
			map[string]UserState{"ivan": StateAccepted}, append(slices.Clone(active), "ivan")},
		{"jane, never invited, joins", func(c *Call) (*Change, error) { return Join(c, as("jane"), "", now, testCfg) },
			map[string]UserState{"jane": StateAccepted}, append(slices.Clone(active), "jane")},
		{"bob invites greta (cancelled earlier) and kate", func(c *Call) (*Change, error) {
			ch, _, err := CallingInvite(c, as("bob"), CallingInviteInput{Invitees: []string{"greta", "kate"}}, now, testCfg, nil)
			return ch, err
		}, map[string]UserState{"greta": StateInviting, "kate": StateInviting}, append(slices.Clone(active), "greta", "kate")},
	}
	for _, tc := range cases {
		t.Run(tc.name+" tells "+fmt.Sprint(sorted(tc.to...)), func(t *testing.T) {
			ch, err := tc.run(richCall())
			after := mustChange(t, ch, err)
			evs := eventsOf(ch, EventUserStateChanged)
			if got, want := recipientsOf(evs), sorted(tc.to...); !slices.Equal(got, want) {
				t.Errorf("callUserStateChanged sent to %v, want %v (users pending or accepted, and the changed ones), once each", got, want)
			}
			for _, e := range evs {
				list := userList(t, e.Data)
				got := map[string]UserState{}
				for _, u := range list {
					got[u.UserID] = u.State
					if want := after.User(u.UserID).Info(); u != want {
						t.Errorf("to %s: callUserList entry %+v, want %+v", e.UserID, u, want)
					}
				}
				if len(list) != len(tc.changed) || !maps.Equal(got, tc.changed) {
					t.Errorf("to %s: callUserList %v, want only the changed users %v", e.UserID, got, tc.changed)
				}
			}
			var hooks []HookEvent
			for _, h := range ch.Hooks {
				if h.Type == HookUserStateChanged {
					hooks = append(hooks, h)
				}
			}
			if len(hooks) != 1 || len(evs) == 0 || string(hooks[0].Data) != string(evs[0].Data) {
				t.Errorf("call.user_state_changed hooks %d, want one carrying the event's data", len(hooks))
			}
		})
	}
}

func TestMainDevice(t *testing.T) {
	devices := func(ch *Change, userID string) map[EventType][]string {
		m := map[EventType][]string{}
		for _, e := range ch.Events {
			if e.UserID == userID {
				m[e.Type] = append(m[e.Type], e.Device)
			}
		}
		return m
	}
	wantDevice := func(t *testing.T, ch *Change, userID, device string) {
		t.Helper()
		n := 0
		for _, e := range ch.Events {
			if e.UserID == userID {
				n++
				if e.Device != device {
					t.Errorf("%s for %s goes to device %q, want %q", e.Type, userID, e.Device, device)
				}
			}
		}
		if n == 0 {
			t.Errorf("no event for %s", userID)
		}
	}

	t.Run("advanced call", func(t *testing.T) {
		ch, c := newCall(t, ModeAdvanced, InviteInput{}, "bob", "carol")
		wantDevice(t, ch, "bob", "") // not accepted yet: every device rings

		ch, err := Answer(c, on("bob", "phone"), true, "", now0+1000)
		c = mustChange(t, ch, err)
		if got := devices(ch, "bob"); !reflect.DeepEqual(got, map[EventType][]string{EventUserStateChanged: {""}}) {
			t.Errorf("accept from the phone: bob's events %v, want one callUserStateChanged to every device", got)
		}

		ch, err = Answer(c, as("carol"), false, "", now0+2000)
		c = mustChange(t, ch, err)
		wantDevice(t, ch, "bob", "phone")

		ch, _, err = CallingInvite(c, as("alice"), CallingInviteInput{Invitees: []string{"dave"}}, now0+3000, testCfg, nil)
		c = mustChange(t, ch, err)
		wantDevice(t, ch, "bob", "phone")
		wantDevice(t, ch, "dave", "")

		ch = Expire(c, Deadline{CallID: c.ID, UserID: "dave", Kind: DeadlineTimeout}, now0+93_000)
		c = mustChange(t, ch, nil)
		wantDevice(t, ch, "bob", "phone")

		_, err = Join(c, on("bob", "phone"), "", now0+94_000, testCfg)
		wantCode(t, err, CodeAlreadyInCall)

		ch, err = Join(c, on("bob", "tablet"), "", now0+94_000, testCfg)
		c = mustChange(t, ch, err)
		if got := devices(ch, "bob"); !reflect.DeepEqual(got, map[EventType][]string{EventUserStateChanged: {""}}) {
			t.Errorf("switch to the tablet: bob's events %v, want one callUserStateChanged to every device", got)
		}
		if others := len(ch.Events) - len(devices(ch, "bob")[EventUserStateChanged]); others != 0 {
			t.Errorf("a device switch told other users: %v", ch.Events)
		}
		if u := c.User("bob"); u.State != StateAccepted || u.MainDevice != "tablet" {
			t.Errorf("bob after the switch %+v, want accepted on the tablet", *u)
		}

		ch, _, err = CallingInvite(c, as("alice"), CallingInviteInput{Invitees: []string{"erin"}}, now0+95_000, testCfg, nil)
		c = mustChange(t, ch, err)
		wantDevice(t, ch, "bob", "tablet")

		ch, err = End(c, as("alice"), LeaveInput{}, now0+96_000)
		mustChange(t, ch, err)
		wantDevice(t, ch, "bob", "tablet")
		wantDevice(t, ch, "erin", "")
	})

	t.Run("general call", func(t *testing.T) {
		_, c := newCall(t, ModeGeneral, InviteInput{}, "bob", "carol")
		ch, err := Answer(c, on("bob", "phone"), true, "", now0+1000)
		c = mustChange(t, ch, err)
		wantDevice(t, ch, "bob", "")
		ch, err = Answer(c, as("carol"), false, "", now0+2000)
		mustChange(t, ch, err)
		wantDevice(t, ch, "bob", "phone")
		wantDevice(t, ch, "carol", "") // carol never accepted: all her devices
	})
}

func TestHooks(t *testing.T) {
	push := &PushConfig{Title: "t"}
	cases := []struct {
		name string
		run  func(t *testing.T) *Change
		want []HookType
	}{
		{"creating a call sends call.created with the CallInfo", func(t *testing.T) *Change {
			ch, _, err := NewCall("call0123456789abcdef", as("alice"), InviteInput{Invitees: []string{"bob"}, PushConfig: push}, now0, testCfg, false, nil)
			mustChange(t, ch, err)
			var info CallInfo
			if err := json.Unmarshal(ch.Hooks[0].Data, &info); err != nil || !reflect.DeepEqual(info, ch.Call.Info()) {
				t.Errorf("call.created data %+v (%v), want %+v", info, err, ch.Call.Info())
			}
			return ch
		}, []HookType{HookCallCreated}},
		{"an accept that leaves someone pending", func(t *testing.T) *Change {
			return errFree(t)(Answer(tableCall(ModeGeneral, StateInviting), as("bob"), true, "", tableNow))
		}, []HookType{HookUserStateChanged}},
		{"the last reject of a general call", func(t *testing.T) *Change {
			return errFree(t)(Answer(buildCall(ModeGeneral, row("bob", StateInviting, "alice")), as("bob"), false, "", tableNow))
		}, []HookType{HookUserStateChanged, HookCallEnded}},
		{"a cancel", func(t *testing.T) *Change {
			ch, _, err := Cancel(tableCall(ModeAdvanced, StateInviting), as("alice"), CancelInput{Invitees: []string{"carol"}, PushConfig: push}, tableNow)
			return errFree(t)(ch, err)
		}, []HookType{HookUserStateChanged, HookCallMissed}},
		{"a callingInvite", func(t *testing.T) *Change {
			ch, _, err := CallingInvite(tableCall(ModeAdvanced, StateAccepted), as("bob"), CallingInviteInput{Invitees: []string{"erin"}, PushConfig: push}, tableNow, testCfg, nil)
			return errFree(t)(ch, err)
		}, []HookType{HookUserStateChanged}},
		{"a join", func(t *testing.T) *Change {
			return errFree(t)(Join(tableCall(ModeAdvanced, StateRejected), as("bob"), "", tableNow, testCfg))
		}, []HookType{HookUserStateChanged}},
		{"a quit that leaves the call going", func(t *testing.T) *Change {
			return errFree(t)(Quit(tableCall(ModeAdvanced, StateAccepted), as("bob"), LeaveInput{PushConfig: push}, tableNow))
		}, []HookType{HookUserStateChanged}},
		{"the last quit of an advanced call", func(t *testing.T) *Change {
			c := buildCall(ModeAdvanced, row("bob", StateRejected, "alice"))
			return errFree(t)(Quit(c, as("alice"), LeaveInput{}, tableNow))
		}, []HookType{HookUserStateChanged, HookCallEnded}},
		{"an end", func(t *testing.T) *Change {
			return errFree(t)(End(tableCall(ModeAdvanced, StateAccepted), as("bob"), LeaveInput{PushConfig: push}, tableNow))
		}, []HookType{HookCallMissed, HookCallMissed, HookCallEnded}}, // carol and dave were pending
		{"a delivery", func(t *testing.T) *Change {
			return Delivered(tableCall(ModeGeneral, StateInviting), "bob", 0, tableNow)
		}, []HookType{HookUserStateChanged}},
		{"a timeout", func(t *testing.T) *Change {
			c := tableCall(ModeGeneral, StateInviting)
			return Expire(c, Deadline{CallID: c.ID, UserID: "bob", Kind: DeadlineTimeout}, now0+90_000)
		}, []HookType{HookUserStateChanged, HookCallMissed}},
		{"the caller going offline", func(t *testing.T) *Change {
			c := tableCall(ModeGeneral, StateInviting)
			c.CallerTracked, c.CallerOfflineAt = true, tableNow
			return Expire(c, Deadline{CallID: c.ID, Kind: DeadlineCallerOffline}, tableNow)
		}, []HookType{HookUserStateChanged, HookCallMissed, HookCallMissed, HookCallMissed, HookCallEnded}},
	}
	for _, tc := range cases {
		t.Run(tc.name+" hooks "+fmt.Sprint(tc.want), func(t *testing.T) {
			ch := tc.run(t)
			if ch == nil {
				t.Fatal("no change")
			}
			if got := hookTypes(ch); !slices.Equal(got, tc.want) {
				t.Errorf("hooks %v, want %v (push requests are added later by the Service)", got, tc.want)
			}
		})
	}
}

func errFree(t *testing.T) func(*Change, error) *Change {
	return func(ch *Change, err error) *Change {
		t.Helper()
		mustChange(t, ch, err)
		return ch
	}
}

// An action carrying a pushConfig asks for call.push_requested; the Service
// filters the users by presence, but the kind is decided here and must be one
// the contract names.
func TestPushRequests(t *testing.T) {
	push := &PushConfig{Title: "t", Content: "c"}
	contractKinds := []PushKind{"invitation", "cancellation", "end"}
	cases := []struct {
		name  string
		run   func(t *testing.T) *Change
		kind  PushKind // "" = any kind the contract names
		users []string // nil = not checked
	}{
		{"a new call asks for invitation pushes to its invitees", func(t *testing.T) *Change {
			ch, _, err := NewCall("call0123456789abcdef", as("alice"), InviteInput{Invitees: []string{"bob", "carol"}, PushConfig: push}, now0, testCfg, false, nil)
			return errFree(t)(ch, err)
		}, PushInvitation, []string{"bob", "carol"}},
		{"a callingInvite asks for invitation pushes to the new invitees", func(t *testing.T) *Change {
			ch, _, err := CallingInvite(tableCall(ModeAdvanced, StateAccepted), as("bob"), CallingInviteInput{Invitees: []string{"erin", "carol"}, PushConfig: push}, tableNow, testCfg, nil)
			return errFree(t)(ch, err)
		}, PushInvitation, []string{"erin"}},
		{"a cancel asks for cancellation pushes to the cancelled invitees", func(t *testing.T) *Change {
			ch, _, err := Cancel(tableCall(ModeAdvanced, StateInviting), as("alice"), CancelInput{PushConfig: push}, tableNow)
			return errFree(t)(ch, err)
		}, PushCancellation, []string{"bob", "carol"}},
		{"an end asks for end pushes to everyone else still in or invited", func(t *testing.T) *Change {
			return errFree(t)(End(tableCall(ModeAdvanced, StateAccepted), as("bob"), LeaveInput{PushConfig: push}, tableNow))
		}, PushEnd, []string{"alice", "carol", "dave"}},
		{"a quit asks for pushes of a kind the contract names", func(t *testing.T) *Change {
			return errFree(t)(Quit(tableCall(ModeAdvanced, StateAccepted), as("bob"), LeaveInput{PushConfig: push}, tableNow))
		}, "", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch := tc.run(t)
			p := ch.push
			if p == nil {
				t.Fatal("no push request")
			}
			if !slices.Contains(contractKinds, p.kind) {
				t.Errorf("push kind %q, want one of the contract's %v", p.kind, contractKinds)
			}
			if tc.kind != "" && p.kind != tc.kind {
				t.Errorf("push kind %q, want %q", p.kind, tc.kind)
			}
			if tc.users != nil && !slices.Equal(sorted(p.users...), tc.users) {
				t.Errorf("push users %v, want %v", p.users, tc.users)
			}
			if p.config != *push {
				t.Errorf("push config %+v, want %+v", p.config, *push)
			}
		})
	}
	t.Run("an action without a pushConfig asks for none", func(t *testing.T) {
		ch, _, err := Cancel(tableCall(ModeAdvanced, StateInviting), as("alice"), CancelInput{}, tableNow)
		if errFree(t)(ch, err).push != nil {
			t.Errorf("push request %+v without a pushConfig", ch.push)
		}
	})
}
