package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// killLoad is the concurrent load of the kill test: workers acting as a
// few users on shared calls, a stream per worker user reading all along,
// short-deadline invitations nobody answers, and the retries of every
// POST /calls whose answer the kill took away.
type killLoad struct {
	t              *testing.T
	c              *killClient
	users          []string // the workers act as them; each holds a stream
	sleepers       []string // invitees of the deadline calls: they never answer
	deadlineCaller string

	mu      sync.Mutex
	recent  []*kKnown // calls the workers act on, newest last
	creates map[string]*kCreate
	order   []*kCreate
	seq     int

	live map[string]*kLive // the live stream of each user
}

// kKnown is what the workers know of a call to pick actions on it.
type kKnown struct {
	id, caller, mode string
	members          []string
}

// kCreate is one POST /calls with its Idempotency-Key, over all attempts.
// The marker (in extendedData) finds the calls it made in the users'
// lists.
type kCreate struct {
	key, marker, caller string
	invitees            []string
	body                []byte
	deadline            bool // a short-timeout call nobody answers
	attempts            []*killRecord
	// retried: the first attempt got no answer or a 5xx, so the client
	// retries with the same key after the restart.
	retried bool
	// answer is the attempt that settled it (a 2xx, or a 4xx other than
	// "still in progress"); nil while none has.
	answer *killRecord
	callID string
	dueAt  int64 // createTime + timeout, Unix ms, once created
}

// kLive is what a live stream read, over all its connections.
type kLive struct {
	mu          sync.Mutex
	events      []kEvent
	connections int
	backwards   []string // an id not above the one before it
}

func (lv *kLive) add(e kEvent) {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if n := len(lv.events); n > 0 && e.id <= lv.events[n-1].id {
		lv.backwards = append(lv.backwards, fmt.Sprintf("id %d (%s) after id %d", e.id, e.typ, lv.events[n-1].id))
	}
	lv.events = append(lv.events, e)
}

func newKillLoad(t *testing.T, c *killClient, users, sleepers []string, deadlineCaller string) *killLoad {
	l := &killLoad{t: t, c: c, users: users, sleepers: sleepers, deadlineCaller: deadlineCaller,
		creates: map[string]*kCreate{}, live: map[string]*kLive{}}
	for _, u := range users {
		l.live[u] = &kLive{}
	}
	return l
}

// start runs the streams, the workers, the deadline calls and the retries.
// stopLoad stops all but the streams and waits for them; stopStreams
// stops the streams and waits for them.
func (l *killLoad) start(workers int, seed uint64) (stopLoad, stopStreams func()) {
	sctx, scancel := context.WithCancel(context.Background())
	var swg sync.WaitGroup
	for _, u := range l.users {
		swg.Add(1)
		go func() {
			defer swg.Done()
			l.stream(sctx, u)
		}()
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.worker(ctx, rand.New(rand.NewPCG(seed, uint64(w)+1)))
		}()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		l.deadlines(ctx, rand.New(rand.NewPCG(seed, 1000)))
	}()
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			l.retryPass(ctx)
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	stopLoad = sync.OnceFunc(func() { cancel(); wg.Wait() })
	stopStreams = sync.OnceFunc(func() { scancel(); swg.Wait() })
	l.t.Cleanup(func() { stopLoad(); stopStreams() })
	return stopLoad, stopStreams
}

// open waits until the server is up; false when ctx is done first.
func (l *killLoad) open(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return false
	case <-l.c.gate.wait():
		return true
	}
}

// stream reads user's events from id 0 and resumes after each kill with
// the last id it read, as EventSource does.
func (l *killLoad) stream(ctx context.Context, user string) {
	lv := l.live[user]
	var last int64
	for l.open(ctx) {
		last, _ = l.c.readEvents(ctx, user, last, func(e kEvent) bool {
			lv.add(e)
			return true
		})
		lv.mu.Lock()
		lv.connections++
		lv.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// deadlines keeps creating one-second invitations from a caller with no
// stream to a sleeper nobody answers for: whenever the kill comes, some of
// them fall due while the server is down.
func (l *killLoad) deadlines(ctx context.Context, rng *rand.Rand) {
	for l.open(ctx) {
		l.create(ctx, l.deadlineCaller, []string{l.sleepers[rng.IntN(len(l.sleepers))]}, "general", 1, true)
		select {
		case <-ctx.Done():
		case <-time.After(100*time.Millisecond + time.Duration(rng.Int64N(int64(200*time.Millisecond)))):
		}
	}
}

// worker sends random actions back to back while the server is up.
func (l *killLoad) worker(ctx context.Context, rng *rand.Rand) {
	for l.open(ctx) {
		l.step(ctx, rng)
	}
}

func (l *killLoad) step(ctx context.Context, rng *rand.Rand) {
	roll := rng.IntN(100)
	var k *kKnown
	switch {
	case roll < 22:
	case roll < 60:
		k = l.pick(rng, "")
	default:
		k = l.pick(rng, "advanced")
	}
	if k == nil {
		caller := l.users[rng.IntN(len(l.users))]
		mode := "general"
		if rng.IntN(5) < 2 {
			mode = "advanced"
		}
		timeout := 40
		if rng.IntN(10) == 0 {
			timeout = 2 // some worker calls time out under the load, racing the answers
		}
		l.create(ctx, caller, l.others(rng, caller, 1+rng.IntN(3)), mode, timeout, false)
		return
	}
	member := k.members[rng.IntN(len(k.members))]
	invitee := member
	if len(k.members) > 1 {
		invitee = k.members[1+rng.IntN(len(k.members)-1)]
	}
	path := "/calls/" + k.id
	ext := map[string]any{"extendedData": fmt.Sprintf("x%d", rng.IntN(1000))}
	switch {
	case roll < 38:
		l.c.post(ctx, "accept", invitee, k.id, path+"/accept", ext, "")
	case roll < 46:
		l.c.post(ctx, "reject", invitee, k.id, path+"/reject", ext, "")
	case roll < 60:
		// The caller withdraws what is pending (in advanced calls others
		// invite too: they may cancel theirs).
		actor := k.caller
		if k.mode == "advanced" && rng.IntN(2) == 0 {
			actor = member
		}
		l.c.post(ctx, "cancel", actor, k.id, path+"/cancel", map[string]any{"invitees": []string{}}, "")
	case roll < 70:
		invitees := l.others(rng, member, 1)
		rec := l.c.post(ctx, "invite", member, k.id, path+"/invite", map[string]any{"invitees": invitees}, "")
		if rec.ok() {
			l.addMembers(k, invitees...)
		}
	case roll < 80:
		actor := l.users[rng.IntN(len(l.users))]
		rec := l.c.post(ctx, "join", actor, k.id, path+"/join", ext, "")
		if rec.ok() {
			l.addMembers(k, actor)
		}
	case roll < 93:
		l.c.post(ctx, "quit", member, k.id, path+"/quit", ext, "")
	default:
		l.c.post(ctx, "end", member, k.id, path+"/end", ext, "")
	}
}

// pick is one of the recent calls (of mode, when given), nil when none.
func (l *killLoad) pick(rng *rand.Rand, mode string) *kKnown {
	l.mu.Lock()
	defer l.mu.Unlock()
	var list []*kKnown
	for _, k := range l.recent {
		if mode == "" || k.mode == mode {
			list = append(list, k)
		}
	}
	if len(list) == 0 {
		return nil
	}
	k := *list[rng.IntN(len(list))]
	k.members = slices.Clone(k.members)
	return &k
}

func (l *killLoad) addMembers(k *kKnown, users ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.recent {
		if r.id == k.id {
			for _, u := range users {
				if !slices.Contains(r.members, u) {
					r.members = append(r.members, u)
				}
			}
		}
	}
}

// others is n distinct users other than self.
func (l *killLoad) others(rng *rand.Rand, self string, n int) []string {
	var out []string
	for _, i := range rng.Perm(len(l.users)) {
		if u := l.users[i]; u != self && len(out) < n {
			out = append(out, u)
		}
	}
	return out
}

// create sends a new POST /calls with a fresh Idempotency-Key.
func (l *killLoad) create(ctx context.Context, caller string, invitees []string, mode string, timeout int, deadline bool) {
	l.mu.Lock()
	l.seq++
	key := fmt.Sprintf("chaos-%06d", l.seq)
	l.mu.Unlock()
	body, err := json.Marshal(map[string]any{"invitees": invitees, "mode": mode, "timeout": timeout, "extendedData": "marker:" + key})
	if err != nil {
		panic(err)
	}
	cr := &kCreate{key: key, marker: "marker:" + key, caller: caller, invitees: invitees, body: body, deadline: deadline}
	l.mu.Lock()
	l.creates[key] = cr
	l.order = append(l.order, cr)
	l.mu.Unlock()
	l.attempt(ctx, cr, "create")
}

// attempt sends cr (again) and settles it if the answer is definitive.
func (l *killLoad) attempt(ctx context.Context, cr *kCreate, op string) {
	rec := l.c.do(ctx, op, cr.caller, http.MethodPost, "/calls", "", cr.key, cr.body)
	l.mu.Lock()
	defer l.mu.Unlock()
	cr.attempts = append(cr.attempts, rec)
	switch {
	case rec.status == 0 || rec.status >= 500:
		cr.retried = true // no answer, or one that says nothing happened
		return
	case rec.status == http.StatusConflict && problemCode(rec.resp) == "idempotency_conflict":
		return // the first attempt is (or, after a crash, looks) still in progress
	}
	cr.answer = rec
	if rec.status != http.StatusCreated {
		return
	}
	var res kCreated
	if json.Unmarshal(rec.resp, &res) != nil {
		return
	}
	cr.callID, rec.callID = res.CallID, res.CallID
	cr.dueAt = res.Call.CreateTime + int64(res.Call.Timeout)*1000
	if cr.deadline {
		return
	}
	k := &kKnown{id: res.CallID, caller: cr.caller, mode: res.Call.Mode, members: []string{cr.caller}}
	for _, u := range res.Call.CallUserList {
		if u.UserID != cr.caller {
			k.members = append(k.members, u.UserID)
		}
	}
	l.recent = append(l.recent, k)
	if len(l.recent) > 24 {
		l.recent = l.recent[1:]
	}
}

// retryPass retries, once each, the creates that have no definitive answer
// yet and whose last attempt is over.
func (l *killLoad) retryPass(ctx context.Context) {
	for _, cr := range l.unsettled() {
		if !l.open(ctx) {
			return
		}
		l.attempt(ctx, cr, "create-retry")
	}
}

// unsettled is the creates that still need a retry.
func (l *killLoad) unsettled() []*kCreate {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*kCreate
	for _, cr := range l.order {
		if cr.answer == nil && len(cr.attempts) > 0 {
			out = append(out, cr)
		}
	}
	return out
}

// drainRetries retries until every create has a definitive answer or the
// budget is spent (a retry after a crash must not stay "in progress").
func (l *killLoad) drainRetries(ctx context.Context, budget time.Duration) {
	end := time.Now().Add(budget)
	for len(l.unsettled()) > 0 && time.Now().Before(end) {
		l.retryPass(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func jsonDecode(b []byte, v any) error { return json.Unmarshal(b, v) }

func problemCode(body []byte) string {
	var p kProblem
	_ = json.Unmarshal(body, &p)
	return p.Code
}
