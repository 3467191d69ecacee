package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"callsig/handlers"
)

// killRecord is one request of the history and its answer. status 0 means
// no answer: the connection broke (the kill) or the client gave up.
type killRecord struct {
	op, actor, callID, key string
	body                   []byte
	status                 int
	resp                   []byte
	replayed               bool // Idempotent-Replayed: true
	sent, recv             time.Time
	round                  int
	err                    string
}

func (r *killRecord) ok() bool { return r.status >= 200 && r.status < 300 }

// window is the time range, in the server's Unix milliseconds, in which
// the server applied the request: between sending it and reading the answer
// (same machine, same clock).
func (r *killRecord) window() (lo, hi int64) {
	return r.sent.UnixMilli() - 1, r.recv.UnixMilli() + 1
}

func (r *killRecord) String() string {
	return fmt.Sprintf("round %d %s by %s on %s (key %q) → %d %s%s", r.round, r.op, r.actor, r.callID, r.key, r.status, bytes.TrimSpace(r.resp), r.err)
}

// killNodes is the nodes' base URLs and which of them are up. Each
// request and each stream connection goes to a random node that is up, so
// in a cluster a call's requests and its users' streams are spread over
// the nodes and move to another when one dies.
type killNodes struct {
	mu   sync.Mutex
	urls []string
	up   []bool
}

func newKillNodes(urls ...string) *killNodes {
	n := &killNodes{urls: urls, up: make([]bool, len(urls))}
	for i := range n.up {
		n.up[i] = true
	}
	return n
}

func (n *killNodes) set(i int, up bool) {
	n.mu.Lock()
	n.up[i] = up
	n.mu.Unlock()
}

// pick returns a random node that is up, or any node when none is (the
// gate holds the clients back then; a request in flight just fails).
func (n *killNodes) pick() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var live []string
	for i, u := range n.urls {
		if n.up[i] {
			live = append(live, u)
		}
	}
	if len(live) == 0 {
		live = n.urls
	}
	return live[rand.IntN(len(live))]
}

// killClient sends the requests of every user and keeps the history.
type killClient struct {
	nodes   *killNodes
	http    *http.Client
	gate    *killGate
	bearers map[string]string // read-only once the load runs

	mu      sync.Mutex
	history []*killRecord
	round   int
}

func newKillClient(t *testing.T, nodes *killNodes, gate *killGate, users []string) *killClient {
	t.Helper()
	c := &killClient{
		nodes: nodes, gate: gate, bearers: map[string]string{},
		http: &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
	}
	for _, u := range users {
		tok, err := handlers.MintToken([]byte(killSecret), handlers.TokenRequest{UserID: u, TTL: 2 * time.Hour}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		c.bearers[u] = tok
	}
	return c
}

func (c *killClient) setRound(r int) {
	c.mu.Lock()
	c.round = r
	c.mu.Unlock()
}

// do sends one request as actor and records it (unless op is empty).
func (c *killClient) do(ctx context.Context, op, actor, method, path, callID, key string, body []byte) *killRecord {
	c.mu.Lock()
	rec := &killRecord{op: op, actor: actor, callID: callID, key: key, body: body, round: c.round}
	c.mu.Unlock()
	var rd io.Reader = http.NoBody
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.nodes.pick()+path, rd)
	if err != nil {
		panic(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.bearers[actor])
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	rec.sent = time.Now()
	res, err := c.http.Do(req)
	if err == nil {
		rec.resp, err = io.ReadAll(res.Body)
		res.Body.Close()
		if err == nil {
			rec.status = res.StatusCode
			rec.replayed = res.Header.Get("Idempotent-Replayed") == "true"
		}
	}
	rec.recv = time.Now()
	if err != nil {
		rec.err = " (" + err.Error() + ")"
	}
	if op != "" {
		c.mu.Lock()
		c.history = append(c.history, rec)
		c.mu.Unlock()
	}
	return rec
}

func (c *killClient) post(ctx context.Context, op, actor, callID, path string, body any, key string) *killRecord {
	b, err := json.Marshal(body)
	if err != nil {
		panic(err)
	}
	return c.do(ctx, op, actor, http.MethodPost, path, callID, key, b)
}

// get fetches path as user, unrecorded, and decodes a 200 into out.
func (c *killClient) get(ctx context.Context, user, path string, out any) error {
	rec := c.do(ctx, "", user, http.MethodGet, path, "", "", nil)
	if rec.status != http.StatusOK {
		return fmt.Errorf("GET %s as %s: %d %s%s", path, user, rec.status, rec.resp, rec.err)
	}
	return json.Unmarshal(rec.resp, out)
}

// records returns a copy of the history so far.
func (c *killClient) records() []*killRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*killRecord(nil), c.history...)
}

// The JSON the checks read.
type (
	kUser struct {
		UserID       string `json:"userID"`
		State        string `json:"state"`
		Inviter      string `json:"inviter"`
		ExtendedData string `json:"extendedData"`
		UpdateTime   int64  `json:"updateTime"`
	}
	kCall struct {
		CallID       string  `json:"callID"`
		Caller       string  `json:"caller"`
		Mode         string  `json:"mode"`
		State        string  `json:"state"`
		Timeout      int     `json:"timeout"`
		ExtendedData string  `json:"extendedData"`
		CreateTime   int64   `json:"createTime"`
		EndTime      int64   `json:"endTime"`
		CallUserList []kUser `json:"callUserList"`
	}
	kEventData struct {
		CallID         string  `json:"callID"`
		Caller         string  `json:"caller"`
		Inviter        string  `json:"inviter"`
		OperatedUserID string  `json:"operatedUserID"`
		Mode           string  `json:"mode"`
		CreateTime     int64   `json:"createTime"`
		EndTime        int64   `json:"endTime"`
		ExtendedData   string  `json:"extendedData"`
		CallUserList   []kUser `json:"callUserList"`
	}
	kCreated struct {
		CallID        string `json:"callID"`
		ErrorUserList []struct {
			UserID string `json:"userID"`
			Reason string `json:"reason"`
		} `json:"errorUserList"`
		Call kCall `json:"call"`
	}
	kProblem struct {
		Code string `json:"code"`
	}
)

func (c *kCall) user(id string) *kUser {
	for i := range c.CallUserList {
		if c.CallUserList[i].UserID == id {
			return &c.CallUserList[i]
		}
	}
	return nil
}

// kEvent is one event of a user's stream.
type kEvent struct {
	id   int64
	typ  string
	raw  string
	data kEventData
}

// readEvents reads user's GET /events after lastID (Last-Event-ID, so
// the stream replays the log) and hands each event with an id to each
// until it returns false or the stream ends. It returns the last id read.
func (c *killClient) readEvents(ctx context.Context, user string, lastID int64, each func(kEvent) bool) (int64, error) {
	q := url.Values{"access_token": {c.bearers[user]}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.nodes.pick()+"/events?"+q.Encode(), nil)
	if err != nil {
		return lastID, err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Last-Event-ID", strconv.FormatInt(lastID, 10))
	// No client timeout: a stream lasts until the kill or the context.
	res, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return lastID, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		return lastID, fmt.Errorf("GET /events as %s: %d %s", user, res.StatusCode, b)
	}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var (
		id         int64
		idSeen     bool
		typ        string
		data       []string
		collecting bool
	)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if idSeen {
				lastID = id
			}
			if collecting && !idSeen && typ == "reset" {
				return lastID, fmt.Errorf("stream of %s after id %d began with event: reset (the log lost what it should keep)", user, lastID)
			}
			if collecting && idSeen {
				e := kEvent{id: id, typ: typ, raw: strings.Join(data, "\n")}
				if err := json.Unmarshal([]byte(e.raw), &e.data); err != nil {
					return lastID, fmt.Errorf("event %d %s of %s: %v: %s", id, typ, user, err, e.raw)
				}
				if !each(e) {
					return lastID, nil
				}
			}
			idSeen, typ, data, collecting = false, "", nil, false
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			if n, err := strconv.ParseInt(value, 10, 64); err == nil {
				id, idSeen = n, true
			}
		case "event":
			typ = value
		case "data":
			data, collecting = append(data, value), true
		}
	}
	if err := sc.Err(); err != nil {
		return lastID, err
	}
	return lastID, io.ErrUnexpectedEOF
}
