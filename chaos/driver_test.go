package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"

	"callsig/internal/testkit"
	"callsig/internal/wait"
)

// driver runs concurrent clients against one real server and records
// every request as a porcupine operation.
type driver struct {
	srv    *testkit.Server
	client *http.Client
	tokens map[string]string
	start  time.Time

	mu      sync.Mutex
	ops     []porcupine.Operation
	sent    int       // requests in ops (the rest are ticks)
	slots   []slot    // the shared calls clients act on
	created []created // every call created, for the final reads
}

// slot is one shared call and the last state a client saw of it, which
// clients use to pick actors likely to be allowed (a pending invitee to
// accept, a member to quit): the view is often stale, and that is the
// point, as the races are what the check is for.
type slot struct {
	id   string
	view *callInfo
}

type created struct{ id, caller string }

var (
	users   = []string{"u0", "u1", "u2", "u3", "u4"}
	devices = []string{"d1", "d2"}
)

func newDriver(srv *testkit.Server, slots, clients int) *driver {
	d := &driver{
		srv:    srv,
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients + 2}},
		tokens: map[string]string{},
		start:  time.Now(),
		slots:  make([]slot, slots),
	}
	for _, u := range users {
		d.tokens[u] = srv.Token(u)
	}
	return d
}

// stamp is a monotonic timestamp for porcupine.
func (d *driver) stamp() int64 { return time.Since(d.start).Nanoseconds() }

// tick moves the fake clock by step and records it. Ticks come from one
// client, so they are ordered; requests run concurrently with them.
func (d *driver) tick(client int, step time.Duration) {
	call := d.stamp()
	d.srv.Clock.Advance(step)
	now := d.srv.Clock.Now().UnixMilli()
	ret := d.stamp()
	d.record(client, callInput{Kind: opTick, Now: now, NowMax: now}, callOutput{}, call, ret)
}

// perform sends one operation and returns it stamped, without recording it.
func (d *driver) perform(in callInput, method, path string, body any) (callInput, callOutput, int64, int64) {
	call := d.stamp()
	in.Now = d.srv.Clock.Now().UnixMilli()
	out := d.do(in, method, path, body)
	in.NowMax = d.srv.Clock.Now().UnixMilli()
	ret := d.stamp()
	if in.Kind == opCreate && out.Status == http.StatusCreated {
		in.Call = out.CallID
	}
	return in, out, call, ret
}

func (d *driver) record(client int, in callInput, out callOutput, call, ret int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ops = append(d.ops, porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret})
	if in.Kind != opTick {
		d.sent++
	}
	if in.Kind == opCreate && in.Call != "" {
		d.created = append(d.created, created{id: in.Call, caller: in.User})
	}
}

// requests counts the requests recorded so far.
func (d *driver) requests() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sent
}

// do sends the request and decodes the answer.
func (d *driver) do(in callInput, method, path string, body any) (out callOutput) {
	var rd io.Reader = http.NoBody
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return callOutput{Err: err.Error()}
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, d.srv.URL+path, rd)
	if err != nil {
		return callOutput{Err: err.Error()}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+d.tokens[in.User])
	req.Header.Set("X-Device-ID", in.Device)
	res, err := d.client.Do(req)
	if err != nil {
		return callOutput{Err: err.Error()}
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	out.Status = res.StatusCode
	switch {
	case err != nil:
		out.Err = err.Error()
	case res.Header.Get("Content-Type") == "application/problem+json":
		var p struct {
			Code string `json:"code"`
		}
		out.Problem = true
		err = json.Unmarshal(data, &p)
		out.Code = p.Code
	case in.Kind == opGet || in.Kind == opFinal:
		out.Info = new(callInfo)
		err = json.Unmarshal(data, out.Info)
	default:
		err = json.Unmarshal(data, &out)
	}
	if err != nil {
		out.Err = fmt.Sprintf("%v: %s", err, data)
	}
	return out
}

// send performs one operation and records it.
func (d *driver) send(client int, in callInput, method, path string, body any) callOutput {
	in, out, call, ret := d.perform(in, method, path, body)
	d.record(client, in, out, call, ret)
	return out
}

// opWeights is the mix of operations a client sends.
var opWeights = []struct {
	kind   opKind
	weight int
}{
	{opCreate, 5}, {opAccept, 14}, {opReject, 5}, {opCancel, 8}, {opInvite, 10},
	{opJoin, 10}, {opQuit, 6}, {opEnd, 3}, {opGet, 20},
}

func pickKind(rng *rand.Rand) opKind {
	total := 0
	for _, w := range opWeights {
		total += w.weight
	}
	n := rng.IntN(total)
	for _, w := range opWeights {
		if n < w.weight {
			return w.kind
		}
		n -= w.weight
	}
	panic("unreachable")
}

// others picks 1..most distinct users other than self, in random order.
func others(rng *rand.Rand, self string, most int) []string {
	pool := slices.DeleteFunc(slices.Clone(users), func(u string) bool { return u == self })
	rng.Shuffle(len(pool), func(i, j int) { pool[i], pool[j] = pool[j], pool[i] })
	return pool[:1+rng.IntN(most)]
}

// runClient sends random operations on the shared calls until ctx is done.
func (d *driver) runClient(ctx context.Context, client int, rng *rand.Rand) {
	for ctx.Err() == nil {
		i := rng.IntN(len(d.slots))
		d.mu.Lock()
		sl := d.slots[i]
		d.mu.Unlock()
		kind := pickKind(rng)
		if sl.id == "" || (sl.view != nil && sl.view.State == "ended" && rng.IntN(3) > 0) {
			kind = opCreate
		}
		in := callInput{Kind: kind, Call: sl.id, User: actor(rng, kind, sl.view), Device: devices[rng.IntN(len(devices))],
			Ext: fmt.Sprintf("x%d", rng.IntN(100))}
		path := "/calls/" + sl.id + "/" + kind.String()
		var out callOutput
		switch kind {
		case opCreate:
			in.Call = ""
			in.Mode = []string{"general", "advanced"}[rng.IntN(2)]
			in.Timeout = 1 + rng.IntN(2)
			in.NotReceivedCheck = rng.IntN(2) == 0
			in.Invitees = others(rng, in.User, 3)
			out = d.send(client, in, http.MethodPost, "/calls", map[string]any{
				"invitees": in.Invitees, "mode": in.Mode, "timeout": in.Timeout,
				"enableNotReceivedCheck": in.NotReceivedCheck, "extendedData": in.Ext,
			})
			if out.Status == http.StatusCreated {
				d.mu.Lock()
				d.slots[i] = slot{id: out.CallID}
				d.mu.Unlock()
			}
		case opAccept, opReject, opJoin, opQuit, opEnd:
			out = d.send(client, in, http.MethodPost, path, map[string]any{"extendedData": in.Ext})
		case opCancel:
			in.Invitees = []string{}
			if rng.IntN(2) == 0 {
				in.Invitees = others(rng, in.User, 2)
			}
			out = d.send(client, in, http.MethodPost, path, map[string]any{"invitees": in.Invitees, "extendedData": in.Ext})
		case opInvite:
			// Any users, the inviter included: it is accepted, so it comes
			// back as already_in_call.
			in.Invitees = others(rng, "", 2)
			out = d.send(client, in, http.MethodPost, path, map[string]any{"invitees": in.Invitees})
		case opGet:
			in.Ext = ""
			out = d.send(client, in, http.MethodGet, "/calls/"+sl.id, nil)
		}
		d.see(out)
	}
}

// see keeps the last call state an answer showed as its slot's view.
func (d *driver) see(out callOutput) {
	info := out.Info
	if out.Users != nil { // a join's answer
		info = &callInfo{CallID: out.CallID, State: "started", CallUserList: out.Users}
	}
	if info == nil || out.Status >= 300 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range d.slots {
		if d.slots[i].id == info.CallID {
			d.slots[i].view = info
		}
	}
}

// actor picks who sends kind: mostly a user the view says may do it, else
// anyone.
func actor(rng *rand.Rand, kind opKind, view *callInfo) string {
	if view != nil && rng.IntN(4) > 0 {
		var pool []string
		for _, u := range view.CallUserList {
			switch kind {
			case opAccept, opReject:
				if pending(u.State) {
					pool = append(pool, u.UserID)
				}
			case opInvite, opQuit, opEnd:
				if u.State == accepted {
					pool = append(pool, u.UserID)
				}
			case opCancel:
				if pending(u.State) {
					pool = append(pool, u.Inviter)
				}
			}
		}
		if len(pool) > 0 {
			return pool[rng.IntN(len(pool))]
		}
	}
	return users[rng.IntN(len(users))]
}

// settle moves the clock far past every deadline and, for each call,
// polls until the server has fired what fell due (the call has ended or
// nobody is pending), then records that read as a final observation: the
// model requires that nothing is left due in it.
func (d *driver) settle(client int, within time.Duration) {
	d.tick(client, time.Hour)
	d.mu.Lock()
	calls := slices.Clone(d.created)
	d.mu.Unlock()
	deadline := time.Now().Add(within)
	for _, c := range calls {
		in := callInput{Kind: opFinal, Call: c.id, User: c.caller, Device: devices[0]}
		var (
			done      callInput
			out       callOutput
			call, ret int64
		)
		wait.Until(time.Until(deadline), func() bool {
			done, out, call, ret = d.perform(in, http.MethodGet, "/calls/"+c.id, nil)
			return settled(out)
		})
		d.record(client, done, out, call, ret)
	}
}

// settled: the read shows nothing the server still has to do on its own.
func settled(out callOutput) bool {
	if out.Info == nil || out.Status != http.StatusOK {
		return true // not a state to wait for: the model judges it
	}
	if out.Info.State == "ended" {
		return true
	}
	for _, u := range out.Info.CallUserList {
		if pending(u.State) {
			return false
		}
	}
	return true
}

// summary counts outcomes per operation kind, and the states observed.
func summary(ops []porcupine.Operation) (outcomes map[string]int, seen map[string]int) {
	outcomes, seen = map[string]int{}, map[string]int{}
	for _, op := range ops {
		in, out := op.Input.(callInput), op.Output.(callOutput)
		if in.Kind == opTick {
			continue
		}
		key := fmt.Sprintf("%s %d", in.Kind, out.Status)
		if out.Code != "" {
			key += " " + out.Code
		}
		outcomes[key]++
		if out.Info != nil && in.Kind == opGet {
			for _, u := range out.Info.CallUserList {
				seen[u.State]++
			}
		}
	}
	return outcomes, seen
}

func formatCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "\n  %-36s %6d", k, m[k])
	}
	return b.String()
}
