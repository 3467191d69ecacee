package e2e

import (
	"net/http"
	"testing"

	"callsig/calls"
	"callsig/internal/testkit"
)

// Every device of an invitee rings. The device that accepts becomes the
// main device: the others get the one state change that stops them
// ringing and nothing further for that call. Joining from another device
// moves the main device; joining again from it is 409 already_in_call.
func TestMainDevice(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		alice := listen(t, s, "alice", "")
		phone := listen(t, s, "bob", "phone")
		laptop := listen(t, s, "bob", "laptop")
		carol := listen(t, s, "carol", "")
		bobOn := func(device string) *testkit.Client { return s.Client("bob").OnDevice(device) }

		c1 := s.Client("alice").Invite(map[string]any{"mode": "advanced"}, "bob").CallID
		alice.expect(ev(calls.EventCreated, c1), changed(c1, "bob=received"))
		// Both ring; the invitation delivered to two streams is reported once.
		phone.expect(ev(calls.EventReceived, c1), changed(c1, "bob=received"))
		laptop.expect(ev(calls.EventReceived, c1), changed(c1, "bob=received"))

		bobOn("phone").Action(c1, "accept", nil).Want(http.StatusOK)
		alice.expect(changed(c1, "bob=accepted"))
		phone.expect(changed(c1, "bob=accepted"))
		laptop.expect(changed(c1, "bob=accepted")) // stop ringing

		// From now on bob hears of c1 on the phone only.
		s.Client("alice").Action(c1, "invite", map[string]any{"invitees": []string{"carol"}}).Want(http.StatusOK)
		carol.expect(ev(calls.EventReceived, c1), changed(c1, "carol=inviting"), changed(c1, "carol=received"))
		alice.expect(changed(c1, "carol=inviting"), changed(c1, "carol=received"))
		phone.expect(changed(c1, "carol=inviting"), changed(c1, "carol=received"))

		// Joining from the laptop moves the main device; only bob's own devices
		// hear of the switch.
		res := bobOn("laptop").Action(c1, "join", nil).Want(http.StatusOK)
		var joined calls.JoinResult
		res.JSON(&joined)
		if joined.CallID != c1 || joined.JoinTime != s.Now() {
			t.Fatalf("join answer %+v", joined)
		}
		laptop.expect(changed(c1, "bob=accepted")) // its first event since the accept
		phone.expect(changed(c1, "bob=accepted"))
		bobOn("laptop").Action(c1, "join", nil).WantProblem(http.StatusConflict, "already_in_call")

		s.Client("carol").Action(c1, "reject", nil).Want(http.StatusOK)
		carol.expect(changed(c1, "carol=rejected"))
		alice.expect(changed(c1, "carol=rejected"))
		laptop.expect(changed(c1, "carol=rejected"))

		// Marker: a new call rings every device again; the phone's next event
		// is that invitation, so it got nothing more of c1.
		marker := s.Client("zed").Invite(nil, "bob").CallID
		phone.expect(ev(calls.EventReceived, marker))
		laptop.expect(ev(calls.EventReceived, marker))
		alice.nothing()
	})
}

// In general mode the device that did not answer gets the state change and
// then nothing for that call; a stream with no deviceID is the "default"
// device.
func TestOtherDeviceStopsRinging(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		phone := listen(t, s, "bob", "phone")
		def := listen(t, s, "bob", "")
		c1 := s.Client("alice").Invite(nil, "bob", "carol").CallID
		phone.expect(ev(calls.EventReceived, c1))
		def.expect(ev(calls.EventReceived, c1))
		phone.expect(changed(c1, "bob=received")) // carol has no stream: still inviting
		def.expect(changed(c1, "bob=received"))

		// Accepted with no X-Device-ID: the default device is the main one.
		s.Client("bob").Action(c1, "accept", nil).Want(http.StatusOK)
		def.expect(changed(c1, "bob=accepted"))
		phone.expect(changed(c1, "bob=accepted"))

		s.Client("alice").Action(c1, "cancel", nil).Want(http.StatusOK) // carol
		def.expect(changed(c1, "carol=cancelled"))
		marker := s.Client("zed").Invite(nil, "bob").CallID
		phone.expect(ev(calls.EventReceived, marker))
		def.expect(ev(calls.EventReceived, marker))
	})
}
