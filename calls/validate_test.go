package calls

import (
	"fmt"
	"strings"
	"testing"
)

// Input validation of the contract's POST /calls body and of the other
// actions' bodies: every violation is invalid_request naming the field.

func TestValidUserID(t *testing.T) {
	cases := []struct {
		id   string
		want bool
	}{
		{"alice", true},
		{"A-z_0.9@x:y", true},
		{strings.Repeat("a", 128), true},
		{"", false},
		{strings.Repeat("a", 129), false},
		{"has space", false},
		{"slash/y", false},
		{"émile", false},
		{"semi;colon", false},
		{"plus+", false},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%.20q valid=%v", tc.id, tc.want), func(t *testing.T) {
			if got := ValidUserID(tc.id); got != tc.want {
				t.Errorf("ValidUserID(%q) = %v, want %v", tc.id, got, tc.want)
			}
		})
	}
}

func nineInvitees() []string {
	ids := make([]string, 9)
	for i := range ids {
		ids[i] = fmt.Sprintf("u%d", i)
	}
	return ids
}

func TestNewCallValidation(t *testing.T) {
	cases := []struct {
		name  string
		in    InviteInput
		field string // "" = valid
		check func(t *testing.T, c *Call)
	}{
		{name: "no invitees is invalid", in: InviteInput{}, field: "invitees"},
		{name: "an empty invitee list is invalid", in: InviteInput{Invitees: []string{}}, field: "invitees"},
		{name: "nine invitees are allowed", in: InviteInput{Invitees: nineInvitees()}},
		{name: "ten invitees are invalid", in: InviteInput{Invitees: append(nineInvitees(), "u9")}, field: "invitees"},
		{name: "a duplicate invitee is invalid", in: InviteInput{Invitees: []string{"bob", "carol", "bob"}}, field: "invitees/2"},
		{name: "inviting yourself is invalid", in: InviteInput{Invitees: []string{"bob", "alice"}}, field: "invitees/1"},
		{name: "an invitee ID with a space is invalid", in: InviteInput{Invitees: []string{"bob smith"}}, field: "invitees/0"},
		{name: "an empty invitee ID is invalid", in: InviteInput{Invitees: []string{""}}, field: "invitees/0"},
		{name: "an invitee ID of 129 characters is invalid", in: InviteInput{Invitees: []string{strings.Repeat("b", 129)}}, field: "invitees/0"},
		{name: "timeout 0 means the default of 90 seconds", in: InviteInput{Invitees: []string{"bob"}},
			check: func(t *testing.T, c *Call) {
				if c.Timeout != DefaultTimeout || DefaultTimeout != 90 || c.User("bob").TimeoutAt != now0+90_000 {
					t.Errorf("timeout %d, bob's timeoutAt %d, want 90 and %d", c.Timeout, c.User("bob").TimeoutAt, now0+90_000)
				}
			}},
		{name: "timeout 1 is allowed", in: InviteInput{Invitees: []string{"bob"}, Timeout: 1}},
		{name: "timeout 600 is allowed", in: InviteInput{Invitees: []string{"bob"}, Timeout: 600}},
		{name: "timeout 601 is invalid", in: InviteInput{Invitees: []string{"bob"}, Timeout: 601}, field: "timeout"},
		{name: "a negative timeout is invalid", in: InviteInput{Invitees: []string{"bob"}, Timeout: -1}, field: "timeout"},
		{name: "extendedData of 2048 bytes is allowed", in: InviteInput{Invitees: []string{"bob"}, ExtendedData: strings.Repeat("x", 2048)}},
		{name: "extendedData of 2049 bytes is invalid", in: InviteInput{Invitees: []string{"bob"}, ExtendedData: strings.Repeat("x", 2049)}, field: "extendedData"},
		{name: "extendedData is measured in bytes, not characters", in: InviteInput{Invitees: []string{"bob"}, ExtendedData: strings.Repeat("é", 1025)}, field: "extendedData"},
		{name: "extendedData holding U+0000 is invalid", in: InviteInput{Invitees: []string{"bob"}, ExtendedData: "a\x00b"}, field: "extendedData"},
		{name: "mode foo is invalid", in: InviteInput{Invitees: []string{"bob"}, Mode: "foo"}, field: "mode"},
		{name: "no mode means general", in: InviteInput{Invitees: []string{"bob"}},
			check: func(t *testing.T, c *Call) {
				if c.Mode != ModeGeneral {
					t.Errorf("mode %q, want general", c.Mode)
				}
			}},
		{name: "mode advanced is allowed", in: InviteInput{Invitees: []string{"bob"}, Mode: ModeAdvanced},
			check: func(t *testing.T, c *Call) {
				if c.Mode != ModeAdvanced {
					t.Errorf("mode %q, want advanced", c.Mode)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch, errUsers, err := NewCall("call0123456789abcdef", as("alice"), tc.in, now0, testCfg, false, nil)
			if tc.field == "" {
				c := mustChange(t, ch, err)
				if errUsers == nil || len(errUsers) != 0 {
					t.Errorf("errorUserList %#v, want an empty list", errUsers)
				}
				if tc.check != nil {
					tc.check(t, c)
				}
				return
			}
			wantCode(t, err, CodeInvalidRequest)
			if ch != nil {
				t.Error("an invalid request returned a change")
			}
			e := err.(*Error)
			if len(e.Fields) == 0 || e.Fields[0].Field != tc.field {
				t.Errorf("fields %+v, want the first to name %q", e.Fields, tc.field)
			}
		})
	}
}

// The other actions validate their bodies too, once the actor may act.
func TestActionValidation(t *testing.T) {
	long := strings.Repeat("x", MaxExtendedData+1)
	cases := []struct {
		name string
		run  func() error
	}{
		{"accept with extendedData over 2048 bytes", func() error {
			return errOf(Answer(tableCall(ModeAdvanced, StateInviting), as("bob"), true, long, tableNow))
		}},
		{"reject with extendedData over 2048 bytes", func() error {
			return errOf(Answer(tableCall(ModeAdvanced, StateInviting), as("bob"), false, long, tableNow))
		}},
		{"cancel with extendedData over 2048 bytes", func() error {
			_, _, err := Cancel(tableCall(ModeAdvanced, StateInviting), as("alice"), CancelInput{ExtendedData: long}, tableNow)
			return err
		}},
		{"cancel naming an invitee twice", func() error {
			_, _, err := Cancel(tableCall(ModeAdvanced, StateInviting), as("alice"), CancelInput{Invitees: []string{"bob", "bob"}}, tableNow)
			return err
		}},
		{"join with extendedData over 2048 bytes", func() error {
			return errOf(Join(tableCall(ModeAdvanced, StateRejected), as("bob"), long, tableNow, testCfg))
		}},
		{"quit with extendedData over 2048 bytes", func() error {
			return errOf(Quit(tableCall(ModeAdvanced, StateAccepted), as("bob"), LeaveInput{ExtendedData: long}, tableNow))
		}},
		{"end with extendedData over 2048 bytes", func() error {
			return errOf(End(tableCall(ModeAdvanced, StateAccepted), as("bob"), LeaveInput{ExtendedData: long}, tableNow))
		}},
		{"accept with extendedData holding U+0000", func() error {
			return errOf(Answer(tableCall(ModeAdvanced, StateInviting), as("bob"), true, "\x00", tableNow))
		}},
		{"join with extendedData holding U+0000", func() error {
			return errOf(Join(tableCall(ModeAdvanced, StateRejected), as("bob"), "\x00", tableNow, testCfg))
		}},
		{"quit with extendedData holding U+0000", func() error {
			return errOf(Quit(tableCall(ModeAdvanced, StateAccepted), as("bob"), LeaveInput{ExtendedData: "\x00"}, tableNow))
		}},
		{"cancel with extendedData holding U+0000", func() error {
			_, _, err := Cancel(tableCall(ModeAdvanced, StateInviting), as("alice"), CancelInput{ExtendedData: "\x00"}, tableNow)
			return err
		}},
		{"callingInvite of nobody", func() error {
			_, _, err := CallingInvite(tableCall(ModeAdvanced, StateAccepted), as("bob"), CallingInviteInput{}, tableNow, testCfg, nil)
			return err
		}},
		{"callingInvite of ten users", func() error {
			_, _, err := CallingInvite(tableCall(ModeAdvanced, StateAccepted), as("bob"), CallingInviteInput{Invitees: append(nineInvitees(), "u9")}, tableNow, testCfg, nil)
			return err
		}},
		{"callingInvite of a bad user ID", func() error {
			_, _, err := CallingInvite(tableCall(ModeAdvanced, StateAccepted), as("bob"), CallingInviteInput{Invitees: []string{"no way"}}, tableNow, testCfg, nil)
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name+" is invalid_request", func(t *testing.T) {
			wantCode(t, tc.run(), CodeInvalidRequest)
		})
	}
}

// A record matches the request's fingerprint, or its older form when it
// has one: a record an older version stored is replayed, not run again.
func TestIdempotencyMatches(t *testing.T) {
	for _, tc := range []struct {
		fp, also, stored string
		want             bool
	}{
		{"new", "", "new", true},
		{"new", "", "old", false},
		{"new", "old", "old", true},
		{"new", "old", "other", false},
		{"new", "", "", false},
	} {
		i := &Idempotency{Fingerprint: tc.fp, Also: tc.also}
		if got := i.Matches(tc.stored); got != tc.want {
			t.Errorf("%+v.Matches(%q) = %v, want %v", tc, tc.stored, got, tc.want)
		}
	}
}
