package chaos

import (
	"cmp"
	"fmt"
	"hash/maphash"
	"maps"
	"slices"
	"strings"

	"github.com/anishathalye/porcupine"
)

// The history the linearizability check reads: what each client sent
// (callInput), what the server answered (callOutput), and the porcupine
// model over them.

type opKind uint8

const (
	opTick   opKind = iota // the test advances the fake clock
	opCreate               // POST /calls
	opCancel
	opAccept
	opReject
	opInvite // POST /calls/{id}/invite: invite during the call
	opJoin
	opQuit
	opEnd
	opGet   // GET /calls/{id}: an observation
	opFinal // GET /calls/{id} once the server has settled at the end
)

var opNames = [...]string{"tick", "create", "cancel", "accept", "reject", "invite", "join", "quit", "end", "get", "final"}

func (k opKind) String() string { return opNames[k] }

// callInput is one operation as sent.
type callInput struct {
	Kind opKind
	// Call is the call it acts on; for a create, the callID the answer
	// named ("" when it failed), so the create lands in its call's partition.
	Call         string
	User, Device string
	// Now and NowMax are the fake clock just before the request and just
	// after its answer: the server ran it at a time between them. For a
	// tick, both are the time it moved the clock to.
	Now, NowMax      int64
	Mode             string
	Timeout          int
	NotReceivedCheck bool
	Invitees         []string
	Ext              string
}

// callOutput is the server's answer, decoded.
type callOutput struct {
	Status  int
	Problem bool // Content-Type application/problem+json
	Code    string
	Err     string // the request failed or the body did not decode

	CallID        string      `json:"callID"`
	Timeout       int         `json:"timeout"`
	ErrorUsers    []errorUser `json:"errorUserList"`
	ErrorInvitees []string    `json:"errorInvitees"`
	Info          *callInfo   `json:"call"` // create's call; GET's whole body
	CreateTime    int64       `json:"createTime"`
	JoinTime      int64       `json:"joinTime"`
	AcceptTime    int64       `json:"acceptTime"`
	QuitTime      int64       `json:"quitTime"`
	EndTime       int64       `json:"endTime"`
	ExtendedData  string      `json:"extendedData"`
	Users         []userInfo  `json:"callUserList"`
}

type callInfo struct {
	CallID       string     `json:"callID"`
	Caller       string     `json:"caller"`
	Mode         string     `json:"mode"`
	State        string     `json:"state"`
	Timeout      int        `json:"timeout"`
	ExtendedData string     `json:"extendedData"`
	CreateTime   int64      `json:"createTime"`
	EndTime      int64      `json:"endTime"`
	CallUserList []userInfo `json:"callUserList"`
}

type userInfo struct {
	UserID       string `json:"userID"`
	State        string `json:"state"`
	Inviter      string `json:"inviter"`
	ExtendedData string `json:"extendedData"`
	UpdateTime   int64  `json:"updateTime"`
}

type errorUser struct {
	UserID string `json:"userID"`
	Reason string `json:"reason"`
}

// statusOf is the HTTP status the contract gives each error code.
var statusOf = map[string]int{
	"call_not_found": 404, "forbidden": 403, "call_ended": 409, "wrong_mode": 409,
	"invalid_state": 409, "already_in_call": 409,
}

// problem reports whether out is the problem+json answer for code.
func (out callOutput) problem(code string) bool {
	return out.Problem && out.Status == statusOf[code] && out.Code == code
}

// newModel is the call model for porcupine, one partition per call; its
// state is the set of states the call may be in.
func newModel() porcupine.Model {
	return porcupine.Model{
		Partition: partition,
		Init:      func() any { return callStates{{}} },
		Step: func(state, input, output any) (bool, any) {
			next := step(state.(callStates), input.(callInput), output.(callOutput))
			return len(next) > 0, next
		},
		Equal: func(a, b any) bool {
			x, y := a.(callStates), b.(callStates)
			if len(x) != len(y) {
				return false
			}
			in := make(map[callModel]bool, len(y))
			for _, c := range y {
				in[c] = true
			}
			for _, c := range x {
				if !in[c] {
					return false
				}
			}
			return true
		},
		Hash: func(state any) uint64 {
			var h uint64
			for _, c := range state.(callStates) {
				h ^= maphash.Comparable(hashSeed, c) // order-free: it is a set
			}
			return h
		},
		DescribeOperation: describeOperation,
		DescribeState: func(state any) string {
			var parts []string
			for _, c := range state.(callStates) {
				parts = append(parts, describeState(c))
			}
			return fmt.Sprintf("%d possible: {%s}", len(parts), strings.Join(parts, " | "))
		},
	}
}

var hashSeed = maphash.MakeSeed()

// partition splits the history per call: operations on different calls
// never affect each other. Each partition also gets the ticks its clock
// needs: those concurrent with one of its operations and the last one
// before each operation. Other ticks change nothing the model can tell:
// a deadline due at an earlier tick is still due at a later one.
func partition(history []porcupine.Operation) [][]porcupine.Operation {
	byCall := map[string][]porcupine.Operation{}
	var ticks []porcupine.Operation
	for _, op := range history {
		in := op.Input.(callInput)
		if in.Kind == opTick {
			ticks = append(ticks, op)
			continue
		}
		byCall[in.Call] = append(byCall[in.Call], op)
	}
	// Ticks come from one client: ordered by Call, they are ordered by
	// Return too.
	slices.SortFunc(ticks, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
	keys := slices.Sorted(maps.Keys(byCall))
	out := make([][]porcupine.Operation, 0, len(keys))
	for _, k := range keys {
		ops := byCall[k]
		need := map[int]bool{}
		for _, op := range ops {
			// The first tick returning at or after op.Call: the ticks
			// from there on that start by op.Return overlap op.
			i, _ := slices.BinarySearchFunc(ticks, op.Call, func(t porcupine.Operation, at int64) int { return cmp.Compare(t.Return, at) })
			if i > 0 {
				need[i-1] = true // the last tick before op
			}
			for ; i < len(ticks) && ticks[i].Call <= op.Return; i++ {
				need[i] = true
			}
		}
		for _, i := range slices.Sorted(maps.Keys(need)) {
			ops = append(ops, ticks[i])
		}
		out = append(out, ops)
	}
	return out
}

// describeOperation renders an operation for the HTML visualization.
func describeOperation(input, output any) string {
	in, out := input.(callInput), output.(callOutput)
	if in.Kind == opTick {
		return fmt.Sprintf("tick → t=%d", in.Now)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s@%s %s", in.User, in.Device, in.Kind)
	switch in.Kind {
	case opCreate:
		fmt.Fprintf(&b, "(%s %v timeout=%d nrc=%v ext=%q)", in.Mode, in.Invitees, in.Timeout, in.NotReceivedCheck, in.Ext)
	case opCancel, opInvite:
		fmt.Fprintf(&b, "(%v)", in.Invitees)
	case opAccept, opReject, opJoin, opQuit, opEnd:
		fmt.Fprintf(&b, "(ext=%q)", in.Ext)
	}
	fmt.Fprintf(&b, " t=%d..%d → %d", in.Now, in.NowMax, out.Status)
	switch {
	case out.Err != "":
		fmt.Fprintf(&b, " error %s", out.Err)
	case out.Code != "":
		fmt.Fprintf(&b, " %s", out.Code)
	case in.Kind == opGet || in.Kind == opFinal || in.Kind == opCreate:
		b.WriteString(" " + describeInfo(out.Info))
		if len(out.ErrorUsers) > 0 {
			fmt.Fprintf(&b, " errorUserList=%v", out.ErrorUsers)
		}
	case in.Kind == opCancel:
		fmt.Fprintf(&b, " errorInvitees=%v", out.ErrorInvitees)
	case in.Kind == opInvite:
		fmt.Fprintf(&b, " errorUserList=%v", out.ErrorUsers)
	case in.Kind == opJoin:
		fmt.Fprintf(&b, " join=%d %s", out.JoinTime, describeUsers(out.Users))
	case in.Kind == opQuit:
		fmt.Fprintf(&b, " accept=%d quit=%d", out.AcceptTime, out.QuitTime)
	case in.Kind == opEnd:
		fmt.Fprintf(&b, " accept=%d end=%d", out.AcceptTime, out.EndTime)
	}
	return b.String()
}

func describeInfo(info *callInfo) string {
	if info == nil {
		return "<no call>"
	}
	return fmt.Sprintf("%s %s created=%d ended=%d [%s]", info.Mode, info.State, info.CreateTime, info.EndTime, describeUsers(info.CallUserList))
}

func describeUsers(list []userInfo) string {
	parts := make([]string, len(list))
	for i, u := range list {
		parts[i] = fmt.Sprintf("%s:%s by %s ext=%q t=%d", u.UserID, u.State, u.Inviter, u.ExtendedData, u.UpdateTime)
	}
	return strings.Join(parts, ", ")
}

// describeState renders one of the states the call may be in.
func describeState(c callModel) string {
	if !c.exists {
		return fmt.Sprintf("t=%d no call", c.clock)
	}
	var b strings.Builder
	status := "started"
	if c.ended {
		status = fmt.Sprintf("ended at %s", describeTime(c.endTime))
	}
	fmt.Fprintf(&b, "t=%d %s %s nrc=%v timeout=%d:", c.clock, c.mode, status, c.notReceivedCheck, c.timeout)
	for i := range c.n {
		u := c.users[i]
		fmt.Fprintf(&b, " %s:%s by %s ext=%q t=%s", u.id, u.state, u.inviter, u.ext, describeTime(u.updated))
		if u.timeoutAt != 0 {
			fmt.Fprintf(&b, " due=%d", u.timeoutAt)
		}
		if u.state == accepted {
			fmt.Fprintf(&b, " dev=%s", u.device)
		}
		b.WriteString(";")
	}
	return b.String()
}

func describeTime(w when) string {
	switch {
	case w.lo == w.hi:
		return fmt.Sprint(w.lo)
	case w.hi == 0:
		return fmt.Sprintf("≥%d", w.lo)
	}
	return fmt.Sprintf("%d..%d", w.lo, w.hi)
}
