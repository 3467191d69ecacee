package chaos

import (
	"testing"

	"github.com/anishathalye/porcupine"
)

// TestCallModel checks the model on hand-written sequential histories:
// it must accept what the seed's tables allow and refuse what they do not,
// or the linearizability check proves nothing.
func TestCallModel(t *testing.T) {
	const t0 = 1_000_000
	user := func(id, state, inviter, ext string, at int64) userInfo {
		return userInfo{UserID: id, State: state, Inviter: inviter, ExtendedData: ext, UpdateTime: at}
	}
	call := func(mode, state string, endTime int64, list ...userInfo) *callInfo {
		return &callInfo{CallID: "c1", Caller: "u0", Mode: mode, State: state, Timeout: 1, ExtendedData: "hi", CreateTime: t0, EndTime: endTime, CallUserList: list}
	}
	create := func(mode string) histStep {
		return histStep{callInput{Kind: opCreate, Call: "c1", User: "u0", Device: "d1", Now: t0, NowMax: t0, Mode: mode, Timeout: 1, Invitees: []string{"u1", "u2"}, Ext: "hi"},
			callOutput{Status: 201, CallID: "c1", Timeout: 1, ErrorUsers: []errorUser{}, Info: call(mode, "started", 0,
				user("u0", accepted, "u0", "hi", t0), user("u1", inviting, "u0", "", t0), user("u2", inviting, "u0", "", t0))}}
	}
	act := func(kind opKind, who string, at int64, status int, code string) histStep {
		return histStep{callInput{Kind: kind, Call: "c1", User: who, Device: "d1", Now: at, NowMax: at, Ext: "e"},
			callOutput{Status: status, Code: code, Problem: code != "", CallID: "c1", ErrorInvitees: []string{}, ErrorUsers: []errorUser{}}}
	}
	get := func(kind opKind, at int64, info *callInfo) histStep {
		return histStep{callInput{Kind: kind, Call: "c1", User: "u0", Device: "d1", Now: at, NowMax: at}, callOutput{Status: 200, Info: info}}
	}
	tick := func(at int64) histStep { return histStep{callInput{Kind: opTick, Now: at, NowMax: at}, callOutput{}} }

	cases := []struct {
		name  string
		steps []histStep
		ok    bool
	}{
		{"general call ends once nobody is pending", []histStep{
			create("general"), act(opAccept, "u1", t0, 200, ""), act(opReject, "u2", t0, 200, ""),
			get(opGet, t0, call("general", "ended", t0, user("u0", accepted, "u0", "hi", t0), user("u1", accepted, "u0", "e", t0), user("u2", rejected, "u0", "e", t0))),
		}, true},
		{"general call still started after everyone answered", []histStep{
			create("general"), act(opAccept, "u1", t0, 200, ""), act(opReject, "u2", t0, 200, ""),
			get(opGet, t0, call("general", "started", 0, user("u0", accepted, "u0", "hi", t0), user("u1", accepted, "u0", "e", t0), user("u2", rejected, "u0", "e", t0))),
		}, false},
		{"accepting twice", []histStep{create("general"), act(opAccept, "u1", t0, 200, ""), act(opAccept, "u1", t0, 200, "")}, false},
		{"accepting twice is invalid_state", []histStep{create("general"), act(opAccept, "u1", t0, 200, ""), act(opAccept, "u1", t0, 409, "invalid_state")}, true},
		{"the caller accepting", []histStep{create("advanced"), act(opAccept, "u0", t0, 409, "invalid_state")}, true},
		{"cancelling all mine once they all answered is invalid_state", []histStep{
			create("advanced"), act(opAccept, "u1", t0, 200, ""), act(opReject, "u2", t0, 200, ""), act(opCancel, "u0", t0, 409, "invalid_state"),
		}, true},
		{"cancelling all mine once they all answered is not forbidden", []histStep{
			create("advanced"), act(opAccept, "u1", t0, 200, ""), act(opReject, "u2", t0, 200, ""), act(opCancel, "u0", t0, 403, "forbidden"),
		}, false},
		{"cancelling all by one who invited no one is forbidden", []histStep{
			create("advanced"), act(opAccept, "u1", t0, 200, ""), act(opCancel, "u1", t0, 403, "forbidden"),
		}, true},
		{"quit on a general call", []histStep{create("general"), act(opQuit, "u0", t0, 409, "wrong_mode")}, true},
		{"an outsider reading", []histStep{create("general"), act(opGet, "u3", t0, 404, "call_not_found")}, true},
		{"a timeout before its deadline", []histStep{
			create("general"), tick(t0 + 500),
			get(opGet, t0+500, call("general", "started", 0, user("u0", accepted, "u0", "hi", t0), user("u1", timedOut, "u0", "", t0+500), user("u2", inviting, "u0", "", t0))),
		}, false},
		{"a due timeout not fired yet", []histStep{
			create("general"), tick(t0 + 1000),
			get(opGet, t0+1000, call("general", "started", 0, user("u0", accepted, "u0", "hi", t0), user("u1", inviting, "u0", "", t0), user("u2", inviting, "u0", "", t0))),
		}, true},
		{"due timeouts fired, the general call ended", []histStep{
			create("general"), tick(t0 + 1250),
			get(opFinal, t0+1250, call("general", "ended", t0+1100, user("u0", accepted, "u0", "hi", t0), user("u1", timedOut, "u0", "", t0+1000), user("u2", timedOut, "u0", "", t0+1100))),
		}, true},
		{"a due timeout not fired after the drain", []histStep{
			create("general"), tick(t0 + 1250),
			get(opFinal, t0+1250, call("general", "started", 0, user("u0", accepted, "u0", "hi", t0), user("u1", inviting, "u0", "", t0), user("u2", timedOut, "u0", "", t0+1100))),
		}, false},
		{"received without a stream", []histStep{
			create("general"),
			get(opGet, t0, call("general", "started", 0, user("u0", accepted, "u0", "hi", t0), user("u1", received, "u0", "", t0), user("u2", inviting, "u0", "", t0))),
		}, false},
		{"end keeps the user states", []histStep{
			create("advanced"), act(opAccept, "u1", t0, 200, ""),
			{callInput{Kind: opEnd, Call: "c1", User: "u1", Device: "d1", Now: t0, NowMax: t0, Ext: "e"}, callOutput{Status: 200, CallID: "c1", CreateTime: t0, AcceptTime: t0, EndTime: t0}},
			tick(t0 + 5000),
			get(opFinal, t0+5000, call("advanced", "ended", t0, user("u0", accepted, "u0", "hi", t0), user("u1", accepted, "u0", "e", t0), user("u2", inviting, "u0", "", t0))),
			act(opQuit, "u0", t0+5000, 409, "call_ended"),
		}, true},
	}
	m := newModel()
	for _, c := range cases {
		var history []porcupine.Operation
		for i, s := range c.steps {
			history = append(history, porcupine.Operation{Input: s.in, Output: s.out, Call: int64(2 * i), Return: int64(2*i + 1)})
		}
		if got := porcupine.CheckOperations(m, history); got != c.ok {
			t.Errorf("%s: linearizable %v, want %v", c.name, got, c.ok)
		}
	}
}

type histStep struct {
	in  callInput
	out callOutput
}
