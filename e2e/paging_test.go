package e2e

import (
	"fmt"
	"net/http"
	"testing"

	"callsig/calls"
	"callsig/internal/testkit"
)

// 25 calls listed ten at a time come back newest first, each once, and the
// last page says there is no more with nextFlag 0.
func TestListCallsPaging(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		alice := s.Client("alice")
		var created []string
		for i := range 25 {
			invitee := fmt.Sprintf("user%d", i)
			if i%2 == 0 {
				// Half the calls alice is invited to rather than calling.
				created = append(created, s.Client(invitee).Invite(nil, "alice").CallID)
			} else {
				created = append(created, alice.Invite(nil, invitee).CallID)
			}
		}
		s.Client("bob").Invite(nil, "carol") // not alice's

		var got []string
		next := int64(0)
		for page := 0; ; page++ {
			var res calls.ListResult
			alice.Get(fmt.Sprintf("/calls?count=10&nextFlag=%d", next)).Want(http.StatusOK).JSON(&res)
			if page < 2 && len(res.CallList) != 10 || page == 2 && len(res.CallList) != 5 {
				t.Fatalf("page %d has %d calls", page, len(res.CallList))
			}
			for _, c := range res.CallList {
				got = append(got, c.CallID)
			}
			next = res.NextFlag
			if next == 0 {
				break
			}
			if page > 3 {
				t.Fatal("paging does not end")
			}
		}
		if len(got) != 25 {
			t.Fatalf("listed %d calls, want 25", len(got))
		}
		for i, id := range got {
			if want := created[24-i]; id != want {
				t.Fatalf("position %d: %s, want %s (newest first)", i, id, want)
			}
		}

		// Defaults and limits.
		var res calls.ListResult
		alice.Get("/calls").Want(http.StatusOK).JSON(&res)
		if len(res.CallList) != 20 || res.NextFlag == 0 {
			t.Fatalf("default page: %d calls, nextFlag %d", len(res.CallList), res.NextFlag)
		}
		alice.Get("/calls?count=1000").Want(http.StatusOK).JSON(&res)
		if len(res.CallList) != 25 || res.NextFlag != 0 {
			t.Fatalf("count above 100: %d calls, nextFlag %d", len(res.CallList), res.NextFlag)
		}
		// However large: a count past int64 is still above 100, not a
		// malformed one.
		res = calls.ListResult{}
		alice.Get("/calls?count=99999999999999999999").Want(http.StatusOK).JSON(&res)
		if len(res.CallList) != 25 || res.NextFlag != 0 {
			t.Fatalf("count past int64: %d calls, nextFlag %d", len(res.CallList), res.NextFlag)
		}
		alice.Get("/calls?count=-99999999999999999999").WantProblem(http.StatusBadRequest, "invalid_request")
		// ParseInt stops at the overflow, before the junk after it.
		alice.Get("/calls?count=99999999999999999999abc").WantProblem(http.StatusBadRequest, "invalid_request")
		alice.Get("/calls?count=99999999999999999999.5").WantProblem(http.StatusBadRequest, "invalid_request")
		alice.Get("/calls?count=abc").WantProblem(http.StatusBadRequest, "invalid_request")
		alice.Get("/calls?nextFlag=-1").WantProblem(http.StatusBadRequest, "invalid_request")
	})
}
