package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"callsig/calls"
	"callsig/db/postgres"
	"callsig/handlers"
	"callsig/internal/pgtest"
	"callsig/internal/testkit"
	"callsig/internal/wait"
)

// clusterProc is one callsig node as a real process, so it can be killed.
type clusterProc struct {
	cmd  *exec.Cmd
	url  string
	logs *bytes.Buffer
}

const clusterSecret = "cluster-kill-secret-0123456789abcdef0123"

// startClusterProcs starts n nodes of the binary on one database and the
// machine's NATS (a subject prefix of the test's own).
func startClusterProcs(t *testing.T, n int, dsn string) []*clusterProc {
	t.Helper()
	bin := buildServer(t)
	var r [4]byte
	_, _ = rand.Read(r[:])
	prefix := "callsig-kill-" + hex.EncodeToString(r[:])
	procs := make([]*clusterProc, n)
	for i := range n {
		addr := testkit.FreeAddr(t)
		cmd := exec.Command(bin, "-addr", addr)
		cmd.Env = append(os.Environ(),
			"CALLSIG_DB="+dsn, "CALLSIG_NATS_URL="+testkit.NATSURL, "CALLSIG_NATS_PREFIX="+prefix,
			fmt.Sprintf("CALLSIG_NODE_ID=node-%d", i), "CALLSIG_JWT_SECRET="+clusterSecret,
			"CALLSIG_ADMIN_TOKEN="+testkit.AdminToken, "CALLSIG_RATE_LIMIT=0", "CALLSIG_WEBHOOK_ALLOW_PRIVATE=true",
			// A dead node's streams stop counting soon.
			"CALLSIG_PRESENCE_LEASE=2s", "CALLSIG_HEARTBEAT_TIMEOUT=2s",
			// The attempts the killed node had in flight are retried by
			// the others after this.
			"CALLSIG_WEBHOOK_LEASE=20s", raceEnv)
		logs := &bytes.Buffer{}
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p := &clusterProc{cmd: cmd, url: "http://" + addr, logs: logs}
		t.Cleanup(func() {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
			// A race report holds the whole log already.
			if !checkRaces(t, fmt.Sprintf("node %d", i), p.logs.Bytes()) && t.Failed() {
				t.Logf("node %d log:\n%s", i, p.logs)
			}
		})
		procs[i] = p
	}
	for i, p := range procs {
		if !wait.Until(20*time.Second, func() bool {
			res, err := http.Get(p.url + "/readyz")
			if err != nil {
				return false
			}
			res.Body.Close()
			return res.StatusCode == http.StatusOK
		}) {
			// Its log is whole (and no longer written) once it has exited.
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
			t.Fatalf("node %d did not become ready:\n%s", i, p.logs)
		}
	}
	return procs
}

// clusterDo sends one request as user (admin for "admin") and returns the
// status and decoded body; a transport error is status 0.
func clusterDo(base, user, method, path string, body any) (int, map[string]any) {
	tok := testkit.AdminToken
	if user != "admin" {
		tok, _ = handlers.MintToken([]byte(clusterSecret), handlers.TokenRequest{UserID: user, TTL: time.Hour}, time.Now())
	}
	var rd io.Reader = http.NoBody
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, base+path, rd)
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	c := &http.Client{Timeout: 10 * time.Second}
	res, err := c.Do(req)
	if err != nil {
		return 0, nil
	}
	defer res.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out
}

// A node is SIGKILLed under load. Its streams' clients reconnect to the
// other nodes with Last-Event-ID and read every event exactly once; the
// deadlines of the calls it made fire on the others; the webhook messages
// it was to send are sent by the others; and every call acknowledged by
// any node, before or after the kill, is there.
func TestClusterNodeKill(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	procs := startClusterProcs(t, 3, dsn)
	victim, live := procs[0], procs[1:]

	rcv := testkit.NewReceiver(t)
	status, ep := clusterDo(live[0].url, "admin", "POST", "/webhooks", map[string]any{"url": rcv.URL(), "eventTypes": []string{"call.created"}})
	if status != http.StatusCreated {
		t.Fatalf("register webhook: %d %v", status, ep)
	}
	rcv.SetSecret(ep["secret"].(string))

	// Each invitee's stream starts on the victim; when it ends, the client
	// resumes on a live node, as EventSource behind a balancer would.
	const users = 6
	type seen struct {
		mu  sync.Mutex
		ids []string
	}
	got := make([]*seen, users)
	ctx, stopStreams := context.WithCancel(context.Background())
	var streams sync.WaitGroup
	for u := range users {
		got[u] = &seen{}
		user := fmt.Sprintf("bob%d", u)
		tok, _ := handlers.MintToken([]byte(clusterSecret), handlers.TokenRequest{UserID: user, TTL: time.Hour}, time.Now())
		st, err := testkit.DialStream(t, victim.url, tok, testkit.StreamOptions{User: user})
		if err != nil {
			t.Fatal(err)
		}
		streams.Add(1)
		go func() {
			defer streams.Done()
			for k := 0; ctx.Err() == nil; {
				if e, ok := st.TryNext(50 * time.Millisecond); ok {
					got[u].mu.Lock()
					got[u].ids = append(got[u].ids, e.LastEventID+" "+e.Type)
					got[u].mu.Unlock()
					continue
				}
				if !st.Ended() {
					continue
				}
				last := st.LastEventID()
				st.Close()
				k++
				for ctx.Err() == nil {
					if st, err = testkit.DialStream(t, live[k%2].url, tok, testkit.StreamOptions{User: user, LastEventID: last}); err == nil {
						break
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}

	// The load: calls made on every node, each invitation with a 2 s
	// timeout, half of them accepted.
	var mu sync.Mutex
	var acked []string // call ids answered 201
	loadCtx, stopLoad := context.WithTimeout(context.Background(), 3*time.Second)
	defer stopLoad()
	var load sync.WaitGroup
	for w := range 6 {
		load.Add(1)
		go func() {
			defer load.Done()
			for i := 0; loadCtx.Err() == nil; i++ {
				node := procs[(w+i)%3]
				callee := fmt.Sprintf("bob%d", (w+i)%users)
				status, body := clusterDo(node.url, fmt.Sprintf("caller%d", w), "POST", "/calls", map[string]any{"invitees": []string{callee}, "timeout": 2})
				if status != http.StatusCreated {
					continue // the victim, dead or dying: not acknowledged
				}
				id := body["callID"].(string)
				mu.Lock()
				acked = append(acked, id)
				mu.Unlock()
				if i%2 == 0 {
					clusterDo(live[i%2].url, callee, "POST", "/calls/"+id+"/accept", map[string]any{})
				}
			}
		}()
	}
	// Killed once the load is well under way: some calls acknowledged on
	// every node, the victim included.
	wait.For(t, 10*time.Second, "calls acknowledged under load", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 30
	})
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	load.Wait()
	if len(acked) < 30 {
		t.Fatalf("only %d calls acknowledged under load", len(acked))
	}

	// Every acknowledged call is there and ends: the accepted ones at once,
	// the others by their timeout, fired by a live node even when the
	// victim made the call.
	store, err := postgres.Open(context.Background(), dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for _, id := range acked {
		var c *calls.Call
		if !wait.Until(15*time.Second, func() bool {
			c, err = store.Call(context.Background(), id)
			return err == nil && c.State == calls.CallEnded
		}) {
			t.Errorf("acknowledged call %s: %v, %v; want it ended (accepted or timed out)", id, c, err)
		}
	}

	// A marker to every invitee, then each stream has read exactly its log.
	markers := make([]string, users)
	for u := range users {
		status, body := clusterDo(live[0].url, "marker", "POST", "/calls", map[string]any{"invitees": []string{fmt.Sprintf("bob%d", u)}})
		if status != http.StatusCreated {
			t.Fatalf("marker: %d %v", status, body)
		}
		markers[u] = body["callID"].(string)
	}
	for u := range users {
		user := fmt.Sprintf("bob%d", u)
		log, err := store.EventsAfter(context.Background(), user, 0, 100000)
		if err != nil {
			t.Fatal(err)
		}
		var markerID int64
		for _, e := range log {
			if e.CallID == markers[u] && e.Type == calls.EventReceived {
				markerID = e.ID
			}
		}
		wait.For(t, 10*time.Second, user+"'s stream reads the marker", func() bool {
			got[u].mu.Lock()
			defer got[u].mu.Unlock()
			return slices.Contains(got[u].ids, strconv.FormatInt(markerID, 10)+" "+string(calls.EventReceived))
		})
		var want []string
		for _, e := range log {
			if e.ID <= markerID {
				want = append(want, strconv.FormatInt(e.ID, 10)+" "+string(e.Type))
			}
		}
		got[u].mu.Lock()
		have := slices.Clone(got[u].ids)
		got[u].mu.Unlock()
		if i := slices.Index(have, strconv.FormatInt(markerID, 10)+" "+string(calls.EventReceived)); i >= 0 {
			have = have[:i+1]
		}
		if !slices.Equal(have, want) {
			t.Errorf("%s read\n%v\nthe log holds\n%v", user, have, want)
		}
	}
	stopStreams()
	streams.Wait()

	// Every acknowledged call's call.created reached the receiver; a
	// second copy is allowed only for an attempt the victim had in flight.
	wantCalls := map[string]bool{}
	for _, id := range acked {
		wantCalls[id] = true
	}
	// An attempt the victim had in flight is retried when its lease (20 s)
	// runs out.
	wait.For(t, 40*time.Second, "every acknowledged call's call.created delivered", func() bool {
		got := map[string]bool{}
		for _, d := range rcv.Deliveries() {
			var data struct{ CallID string }
			_ = json.Unmarshal(d.Data, &data)
			if d.Type == "call.created" && wantCalls[data.CallID] {
				got[data.CallID] = true
			}
		}
		return len(got) == len(wantCalls)
	})
	per := map[string]int{}
	for _, d := range rcv.Deliveries() {
		per[d.ID]++
		var data struct{ CallID string }
		_ = json.Unmarshal(d.Data, &data)
		delete(wantCalls, data.CallID)
	}
	if len(wantCalls) > 0 {
		t.Errorf("%d acknowledged calls' call.created never delivered", len(wantCalls))
	}
	dups := 0
	for _, k := range per {
		dups += k - 1
	}
	if dups > 6 {
		t.Errorf("%d duplicate webhook deliveries; only attempts in flight on the killed node may repeat", dups)
	}
}
