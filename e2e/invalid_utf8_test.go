package e2e

import (
	"net/http"
	"testing"

	"callsig/internal/testkit"
)

// A string that is not valid UTF-8 is refused with 400 naming its field,
// not stored with its bytes silently replaced by U+FFFD.
func TestInvalidUTF8IsRefused(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t)
	alice, bob := s.Client("alice"), s.Client("bob")

	p := alice.Post("/calls", []byte("{\"invitees\":[\"bob\"],\"extendedData\":\"caf\xe9\"}")).
		WantProblem(http.StatusBadRequest, "invalid_request")
	if len(p.Errors) != 1 || p.Errors[0].Field != "extendedData" {
		t.Fatalf("errors = %+v, want extendedData", p.Errors)
	}
	var list struct {
		CallList []testkit.Call `json:"callList"`
	}
	alice.Get("/calls").Want(http.StatusOK).JSON(&list)
	if len(list.CallList) != 0 {
		t.Fatalf("a call was created: %+v", list.CallList)
	}

	callID := alice.Invite(nil, "bob").CallID
	p = bob.Post("/calls/"+callID+"/accept", []byte(`{"extendedData":"\ud800"}`)).
		WantProblem(http.StatusBadRequest, "invalid_request")
	if len(p.Errors) != 1 || p.Errors[0].Field != "extendedData" {
		t.Fatalf("errors = %+v, want extendedData", p.Errors)
	}
	p = alice.Post("/calls", []byte("{\"invitees\":[\"bob\"],\"pushConfig\":{\"title\":\"\xff\"}}")).
		WantProblem(http.StatusBadRequest, "invalid_request")
	if len(p.Errors) != 1 || p.Errors[0].Field != "pushConfig/title" {
		t.Fatalf("errors = %+v, want pushConfig/title", p.Errors)
	}
	// Valid text, replacement character included, passes untouched.
	bob.Post("/calls/"+callID+"/accept", map[string]any{"extendedData": "ok \uFFFD ☎"}).Want(http.StatusOK)
	for _, u := range alice.GetCall(callID).CallUserList {
		if u.UserID == "bob" && u.ExtendedData != "ok \uFFFD ☎" {
			t.Fatalf("bob's extendedData = %q", u.ExtendedData)
		}
	}
}
