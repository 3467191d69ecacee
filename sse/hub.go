package sse

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"callsig/calls"
)

// Log is the committed event log the streams read; db.Store implements it.
// Every read is bounded: by a limit on what it returns and, from the hub,
// by Options.ReadTimeout.
type Log interface {
	// EventsAfter returns up to limit of userID's events with ID > afterID,
	// oldest first, whatever their device.
	EventsAfter(ctx context.Context, userID string, afterID int64, limit int) ([]calls.Event, error)
	// PendingInvitations returns the newest callInvitationReceived of each
	// of the newest limit calls in which userID is still pending, in id
	// order.
	PendingInvitations(ctx context.Context, userID string, limit int) ([]calls.Event, error)
	// UnreceivedInvitations returns the callInvitationReceived events, with
	// ID <= upTo, of userID's pending invitations still in state inviting or
	// notYetReceived, among the newest limit pending ones up to upTo, in id
	// order.
	UnreceivedInvitations(ctx context.Context, userID string, upTo int64, limit int) ([]calls.Event, error)
	// EventRecipients returns the distinct users of the events with IDs
	// from fromID to toID, at most limit of them; more is set when there
	// may be others.
	EventRecipients(ctx context.Context, fromID, toID int64, limit int) (users []string, more bool, err error)
	// OldestEventID is the smallest id still kept (0: empty log).
	OldestEventID(ctx context.Context) (int64, error)
	// LastEventID is the highest id ever assigned (0: none yet).
	LastEventID(ctx context.Context) (int64, error)
	// NewestEventIDs returns the newest event id of each of users, in one
	// bounded read; users without events are left out.
	NewestEventIDs(ctx context.Context, users []string) (map[string]int64, error)
	// PruneEvents deletes the events older than before (Unix ms).
	PruneEvents(ctx context.Context, before int64) (int64, error)
}

// MovedLog is a Log that may carry on the log of a SQLite node (filled
// from its file by callsig migrate); db/postgres implements it.
type MovedLog interface {
	// MovedEventID is the last id SQLite had given before the move, 0
	// when there was none: every id given since is larger.
	MovedEventID(ctx context.Context) (int64, error)
}

// RestoredLog is a Log that may have been restored from a backup: ids in
// a restore's gap were given by the backed-up server after the backup,
// never by this log (db.RestoreMarkType); both stores implement it.
type RestoredLog interface {
	NeverGiven(id int64) bool
}

// neverGiven reports whether id lies in a restore's gap of the log
// (RestoredLog), false for a log that was never restored.
func (h *Hub) neverGiven(id int64) bool { return h.restored != nil && h.restored.NeverGiven(id) }

// Service is what the hub reports deliveries and presence to; calls.Service
// implements it.
type Service interface {
	MarkDelivered(ctx context.Context, callID, userID string, invitedAt int64) error
	UserOnline(ctx context.Context, userID string) error
	// UserOffline: since is when the user's last stream closed, which a
	// report delayed by a store out of reach follows by that long.
	UserOffline(ctx context.Context, userID string, since time.Time) error
}

// Options configures a Hub; zero durations and sizes get the defaults.
type Options struct {
	Log Log // required
	// Service receives the presence and delivery reports (required); they
	// are made while Run runs.
	Service    Service
	Clock      calls.Clock
	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil: metrics are kept but not exported

	Retention  time.Duration // how long events are kept for replay (default 24h)
	PruneEvery time.Duration // clock time between prunings (default 1m)
	Heartbeat  time.Duration // comment line interval, real time (default 15s)
	// WriteTimeout bounds each write to a stream; a client that reads
	// nothing for that long is disconnected (default 10s).
	WriteTimeout time.Duration
	Retry        time.Duration // the reconnection delay suggested to clients (default 3s)
	// Buffer is how many events a stream may have waiting before it is
	// marked lagging and catches up from the log instead (default 32).
	Buffer int
	// GapWait is how long the hub holds events back waiting for a missing
	// lower id before it lets the streams of that id's user catch up from
	// the log (default 1s).
	GapWait time.Duration
	Workers int // concurrent presence and delivery reports (default 16)
	// MaxStreamsPerUser caps one user's open streams (devices and tabs,
	// default 10): a new stream beyond it closes that user's oldest one,
	// whose client resumes with Last-Event-ID (see subscribe).
	MaxStreamsPerUser int
	// PendingReplay caps how many pending invitations a stream opened
	// without Last-Event-ID (or after a reset) starts with: the newest ones
	// (default 100, far more than a person answers; a flood of invitations
	// must not make every open read and send thousands). Older ones still
	// pending are not replayed; they time out as usual.
	PendingReplay int
	// ReadTimeout bounds each read of the event log by a stream (one page
	// of catch-up, the pending invitations), once its turn came (see
	// LogReaders); a stream whose read times out ends and its client
	// resumes (default 5s).
	ReadTimeout time.Duration
	// Announce, when set, is called as a stream opens, before its headers
	// are sent, to record the user's presence where other nodes see it
	// (cluster mode): the Service's UserOnline report comes from a worker a
	// moment later, and a client that sees its stream open may act at
	// once on another node (invite, and expect to be tracked as online).
	// It must be idempotent and quick; an error is logged and the stream
	// opens anyway (the worker's report retries).
	Announce func(ctx context.Context, userID string) error
	// LogReaders caps the streams reading the log at once (default 2).
	// Below the store's read pool (4 connections by default), so streams
	// opening or catching up in numbers queue here, not in the pool, and
	// API requests and /readyz always find a connection. A quarter as many
	// more (at least one) read the user's newest id for streams' headers
	// (see openHead): their own turns, so headers do not wait for
	// catch-ups, within the pool all the same.
	LogReaders int
	// MaxOpeners caps the goroutines opening (catching up) hijacked
	// streams at once; past it, opening streams wait in a queue (see
	// startOpening). Default 256. A quarter as many more (at least one)
	// send the headers of streams whose headers wait for the store
	// (PerUserIDOrder, Announce).
	MaxOpeners int
	// IDOrder says how the log's ids are ordered, and so how committed
	// events reach the streams (default GlobalIDOrder).
	IDOrder IDOrder
	// CatchUpEvery is how often, with PerUserIDOrder, the hub checks the
	// log for events its streams were not woken for (a wake-up from
	// another node lost or late): at most this delays a delivery when
	// wake-ups fail (default 1s, real time).
	CatchUpEvery time.Duration
	// CatchUpBatch is how many users one read of that check asks about
	// (default 500).
	CatchUpBatch int
	// unackedBytes reads what a connection's peer has not acknowledged
	// (see acked.go); tests replace it.
	unackedBytes func(net.Conn) (int64, bool)
	// onDeserted, when set, runs as serve sees the client of a stream
	// still opening leave (tests).
	onDeserted func()
}

// IDOrder is what the event log promises about the order of its ids.
type IDOrder int

const (
	// GlobalIDOrder: ids are gap-free and assigned in commit order by one
	// writer (SQLite). The hub passes committed events on in that one
	// order straight into the streams' buffers, holding back early ones
	// (the sequencer), and reads the log only for a stream that fell
	// behind or resumes.
	GlobalIDOrder IDOrder = iota
	// PerUserIDOrder: ids are unique and strictly increasing per user in
	// that user's commit order, but have gaps and follow no global commit
	// order (PostgreSQL, cluster mode), and events also commit on other
	// nodes. A commit, local or announced by another node (Hub.Wake), only
	// wakes its users' streams, and each reads its user's log after the
	// last id it wrote; a periodic check (CatchUpEvery) wakes streams
	// whose user's newest id is past it. Every write thus comes from the
	// log, in the user's order: a stream never skips or repeats.
	//
	// Why not push frames as in GlobalIDOrder: a stream could only write a
	// pushed event knowing it is the user's next id, which needs the
	// previous one (not in the event); a log read per wake-up (one index
	// range scan) is simpler, and provably in order.
	PerUserIDOrder
)

func (o *Options) defaults() {
	if o.Clock == nil {
		o.Clock = calls.SystemClock{}
	}
	if o.unackedBytes == nil {
		o.unackedBytes = unackedBytes
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.Retention, 24*time.Hour)
	def(&o.PruneEvery, time.Minute)
	def(&o.Heartbeat, 15*time.Second)
	def(&o.WriteTimeout, 10*time.Second)
	def(&o.Retry, 3*time.Second)
	def(&o.GapWait, time.Second)
	def(&o.ReadTimeout, 5*time.Second)
	def(&o.CatchUpEvery, time.Second)
	if o.CatchUpBatch <= 0 {
		o.CatchUpBatch = 500
	}
	if o.PendingReplay <= 0 {
		o.PendingReplay = 100
	}
	if o.LogReaders <= 0 {
		o.LogReaders = 2
	}
	if o.MaxOpeners <= 0 {
		o.MaxOpeners = 256
	}
	if o.Buffer <= 0 {
		o.Buffer = 32
	}
	if o.Workers <= 0 {
		o.Workers = 16
	}
	if o.MaxStreamsPerUser <= 0 {
		o.MaxStreamsPerUser = 10
	}
}

// Hub holds the open streams by user and device and hands them the
// committed events. It is calls.Notifier and calls.Presence.
type Hub struct {
	o    Options
	log  *slog.Logger
	m    *metrics
	work *work
	done chan struct{} // closed by Shutdown: every stream ends
	// readers holds a token per stream reading the log (Options.LogReaders),
	// headReaders per stream reading its head for its headers.
	readers, headReaders chan struct{}
	// presenceSilentUntil and storeSilentUntil (ns since epoch) are set
	// when the heads stage's presence write or head read failed: until
	// then the stage does not wait for that one again (see openHead).
	presenceSilentUntil, storeSilentUntil atomic.Int64
	// epoch is when the hub was made: the times it keeps in atomics count
	// from it (since, at), on Go's monotonic clock, which a step of the
	// wall clock (NTP, a VM resumed) does not move. A wall-clock time
	// there would hold a back-off or a queued stream's heartbeat as long
	// again as a step back.
	epoch time.Time
	// restored is the log's RestoredLog, nil when it is none: asked at
	// every frame a stream writes (see writeFrame), so found once.
	restored RestoredLog
	// userReaders serializes the log reads of one user's streams (by a
	// stripe of the user ID): a user opening streams in a loop queues one
	// read at a time for readers, so other users' streams are not starved.
	userReaders [readerStripes]chan struct{}
	// The openers of hijacked streams, by stage (see startOpening), with
	// the streams waiting for one; under omu.
	omu      sync.Mutex
	heads    openers
	catchUps openers
	// ctx is the live streams' context (they outlive their requests);
	// Shutdown cancels it.
	ctx    context.Context
	cancel context.CancelFunc
	// streams counts the goroutines of the open streams (see ServeEvents)
	// and of a gap being resolved (onGap); Run waits for them once the hub
	// is shut down.
	streams sync.WaitGroup

	mu     sync.RWMutex
	users  map[string][]*subscriber
	opened uint64 // subscriptions so far: subscriber.seq, oldest first
	closed bool
	// The sequencer. Services report commits from many goroutines, so a
	// later commit can be reported first; a stream that wrote the later
	// event would then drop the earlier one as a duplicate. The hub passes
	// events on strictly in id order (ids are gap-free: one writer assigns
	// them in commit order), holding back any that arrive early.
	next     int64            // the lowest id not yet passed on
	held     map[int64]*frame // early arrivals, by id
	gapTimer *time.Timer
}

var (
	_ calls.Notifier = (*Hub)(nil)
	_ calls.Presence = (*Hub)(nil)
)

// subscriber is one open stream as the hub sees it. Kept small: a server
// may hold tens of thousands.
type subscriber struct {
	user, device string
	// The frames buffered for the stream, at most limit, and whether it
	// was woken to read the log; under qmu (see push).
	qmu   sync.Mutex
	queue []*frame
	limit int
	woken bool
	// ch signals a stream that could not take its connection over (run);
	// a hijacked one is poked instead (nil).
	ch chan struct{}
	// lagging is set when an event could not be buffered (or was skipped by
	// the sequencer): the stream reads the log before writing anything newer.
	lagging atomic.Bool
	// interruptible is set once the client could resume losslessly if the
	// stream ended (see stream.open); only then does Shutdown cut its writes.
	interruptible atomic.Bool
	cut           deadliner // the stream's connection or response writer
	// conn is a hijacked stream's connection (nil otherwise), to poke.
	conn net.Conn
	seq  uint64 // subscription order: the lowest is the oldest
	// evicted is closed when a newer stream of the user took this one's
	// place (see subscribe): the stream ends, its client resumes.
	evicted chan struct{}
	// stop cancels the stream's context: an evicted stream still opening
	// (waiting for or in a log read) ends at once too, so one user never
	// holds more than MaxStreamsPerUser streams' worth of work; and
	// Shutdown ends the log reads of the interruptible ones.
	stop context.CancelFunc
	// With PerUserIDOrder only: the stream's position in the log (its
	// lastID; unpositioned, the largest int64, until its opening set it)
	// and whether it is reading the log after a wake-up, for the periodic
	// catch-up (see Hub.catchUp).
	position atomic.Int64
	reading  atomic.Bool
	// With PerUserIDOrder only, the hand-over of committed events without a
	// log read (handOver): handed is the id of the last event handed to ch,
	// or the stream's position when it last finished reading the log;
	// direct is set once it has (the first event after the opening always
	// comes from the log). Both under handMu; handed is also read, without
	// it, by the periodic catch-up.
	handMu sync.Mutex
	handed atomic.Int64
	direct bool
}

// handOver buffers f for the stream if f's event is the one right after
// the last one handed to it (after, the event's Event.After) and the
// buffer has room. Handed over in that chain, every event reaches the
// stream in the log's order with none skipped: the chain starts at an id
// the stream read the log up to (resumeHandOver), and each link names the
// event before it. Otherwise (reported false) the stream must read the log.
func (s *subscriber) handOver(f *frame, after int64) bool {
	s.handMu.Lock()
	defer s.handMu.Unlock()
	if !s.direct || after <= 0 || s.handed.Load() != after {
		return false
	}
	if !s.push(f) {
		return false
	}
	s.handed.Store(f.id)
	return true
}

// resumeHandOver lets the hand-over go on after the stream read the log up
// to position. A chain handed over meanwhile, past position, goes on
// where it ended: every event between position and its end is in the
// buffer (each link names the event before it).
func (s *subscriber) resumeHandOver(position int64) {
	s.handMu.Lock()
	defer s.handMu.Unlock()
	s.handed.Store(max(s.handed.Load(), position))
	s.direct = true
}

// deadliner is what Shutdown cuts a stuck write with: the hijacked
// net.Conn, or the http.ResponseController when the stream could not
// take its connection over.
type deadliner interface {
	SetWriteDeadline(time.Time) error
}

// New returns a hub whose sequencer starts after the log's last event.
func New(ctx context.Context, o Options) (*Hub, error) {
	if o.Log == nil || o.Service == nil {
		return nil, errors.New("sse: Options.Log and Options.Service are required")
	}
	o.defaults()
	last, err := o.Log.LastEventID(ctx)
	if err != nil {
		return nil, fmt.Errorf("sse: read the event log head: %w", err)
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	restored, _ := o.Log.(RestoredLog)
	h := &Hub{epoch: time.Now(), restored: restored,
		o: o, log: o.Logger, m: m, work: newWork(o.Logger, o.Service, m.parked),
		done: make(chan struct{}), readers: make(chan struct{}, o.LogReaders),
		headReaders: make(chan struct{}, max(1, o.LogReaders/4)),
		heads:       openers{max: max(1, o.MaxOpeners/4)}, catchUps: openers{max: o.MaxOpeners},
		users: map[string][]*subscriber{},
		next:  last + 1, held: map[int64]*frame{},
	}
	for i := range h.userReaders {
		h.userReaders[i] = make(chan struct{}, 1)
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	return h, nil
}

// readerStripes is how many stripes userReaders has: users sharing a stripe
// take turns too, which costs little with this many.
const readerStripes = 64

// userReader is the token of user's stripe of userReaders.
func (h *Hub) userReader(user string) chan struct{} {
	f := fnv.New32a()
	_, _ = f.Write([]byte(user))
	return h.userReaders[f.Sum32()%readerStripes]
}

// Run does the hub's background work until ctx is done: the presence and
// delivery reports and the pruning of the event log. Then it shuts the hub
// down (see Shutdown) if that has not been done, waits for the open
// streams to end (they no longer belong to the HTTP server) and reports
// the deliveries still queued (a flushed invitation must not stay
// "inviting" across a restart) before it returns. Run once.
func (h *Hub) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for range h.o.Workers {
		wg.Go(func() { h.work.run(ctx) })
	}
	wg.Go(func() { h.prune(ctx) })
	wg.Go(func() { h.work.retryParked(ctx) })
	if h.perUser() {
		wg.Go(func() { h.catchUpLoop(ctx) })
	}
	wg.Wait()
	h.Shutdown()
	h.streams.Wait() // their last flushes report deliveries: before drain
	h.work.drain(ctx)
	h.mu.Lock()
	h.stopGapTimer()
	h.mu.Unlock()
	return nil
}

// Shutdown ends every stream and refuses new ones; clients reconnect (to
// this server once restarted, or another) with Last-Event-ID. Presence
// changes caused by the shutdown are not reported: a restart re-arms the
// callers' grace period anyway.
func (h *Hub) Shutdown() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	h.work.stopPresence()
	close(h.done)
	h.cancel()
	now := time.Now()
	for _, list := range h.users {
		for _, s := range list {
			// Unblocks a write stuck on a client that reads nothing. The
			// stream is still registered, so its handler has not returned.
			// One still opening finishes (bounded by its write deadline) and
			// then sees done.
			if s.interruptible.Load() {
				_ = s.cut.SetWriteDeadline(now)
				s.stop() // and its reads of the log
			}
			s.poke()
		}
	}
	h.stopGapTimer()
}

// Online reports whether userID has a stream open (calls.Presence).
func (h *Hub) Online(userID string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.users[userID]) > 0
}

// Streams returns how many streams are open.
func (h *Hub) Streams() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	n := 0
	for _, list := range h.users {
		n += len(list)
	}
	return n
}

// subscribe registers a stream and returns it with the id of the last event
// passed on before it: every later event reaches its buffer. ok is false
// once the hub is shut down.
func (h *Hub) subscribe(user, device string, cut deadliner, conn net.Conn, stop context.CancelFunc) (s *subscriber, head int64, ok bool) {
	// Cloned: they may point into the request (its URL or token), which a
	// live stream must not keep alive.
	user, device = strings.Clone(user), strings.Clone(device)
	s = &subscriber{user: user, device: device, limit: h.o.Buffer, cut: cut, conn: conn, evicted: make(chan struct{}), stop: stop}
	if conn == nil {
		s.ch = make(chan struct{}, 1)
	}
	if h.perUser() {
		s.position.Store(math.MaxInt64)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, 0, false
	}
	h.opened++
	s.seq = h.opened
	list := h.users[user]
	if len(list) >= h.o.MaxStreamsPerUser {
		list = h.evictOldest(list)
	}
	h.users[user] = append(list, s)
	h.m.open.Inc()
	if len(list) == 0 {
		h.work.presence(user, true, time.Time{})
	}
	return s, h.next - 1, true
}

// evictOldest ends the oldest stream of list to make room for a new one and
// returns list without it. mu is held.
//
// Why the oldest goes rather than the newest being refused (429): the
// newest is the device the user is looking at, while the oldest is the
// likeliest to be a tab or a sleeping laptop nobody reads, whose dead
// connection could otherwise lock the user out until a write fails; and
// EventSource gives up for good on a 429 but reconnects after a closed
// stream, resuming with Last-Event-ID, so the evicted client loses nothing.
// Each user still holds at most MaxStreamsPerUser connections.
func (h *Hub) evictOldest(list []*subscriber) []*subscriber {
	oldest := 0
	for i, s := range list {
		if s.seq < list[oldest].seq {
			oldest = i
		}
	}
	old := list[oldest]
	close(old.evicted)
	old.stop() // ends a wait for, or a read of, the log
	old.poke()
	if old.interruptible.Load() {
		_ = old.cut.SetWriteDeadline(time.Now()) // a write stuck on it ends now
	}
	h.m.open.Dec() // its unsubscribe will not find it
	h.log.Debug("event stream closed for a newer one of the same user", "user", old.user, "device", old.device)
	return slices.Delete(list, oldest, oldest+1)
}

// adopt counts n goroutines of a live stream in h.streams, unless the hub
// is shut down (false): Shutdown's waiters must see every one.
func (h *Hub) adopt(n int) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.streams.Add(n)
	return true
}

// unsubscribe removes a stream when it ends.
func (h *Hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	list := h.users[s.user]
	i := slices.Index(list, s)
	if i < 0 {
		return
	}
	list[i] = list[len(list)-1]
	list[len(list)-1] = nil
	list = list[:len(list)-1]
	h.m.open.Dec()
	if len(list) > 0 {
		h.users[s.user] = list
		return
	}
	delete(h.users, s.user)
	h.work.presence(s.user, false, h.o.Clock.Now())
}

// Committed is told of each commit's events (calls.Notifier). It never
// blocks on a stream: a stream whose buffer is full is marked lagging and
// reads the log instead.
func (h *Hub) Committed(events []calls.Event, _ int) {
	if len(events) == 0 {
		return
	}
	if h.perUser() {
		now := time.Now()
		h.mu.RLock()
		defer h.mu.RUnlock()
		for i := range events {
			ev := &events[i]
			if ev.ID <= 0 {
				continue
			}
			var f *frame
			for _, s := range h.users[ev.UserID] {
				if f == nil && ev.After > 0 {
					f = newFrame(ev, now)
				}
				if f != nil && s.handOver(f, ev.After) {
					h.m.handedOver.Inc()
				} else {
					s.wake()
				}
			}
		}
		return
	}
	now := time.Now()
	frames := make([]*frame, 0, len(events))
	for i := range events {
		if events[i].ID > 0 {
			frames = append(frames, newFrame(&events[i], now))
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, f := range frames {
		// Below next: passed over by onGap, and every stream read it from
		// the log; sending it now would be out of order.
		if f.id >= h.next {
			h.held[f.id] = f
		} else {
			h.m.late.Inc()
		}
	}
	h.release()
}

// release passes on the held events that are next in id order. mu is held.
func (h *Hub) release() {
	for {
		f, ok := h.held[h.next]
		if !ok {
			break
		}
		delete(h.held, h.next)
		h.next++
		h.dispatch(f)
	}
	switch {
	case len(h.held) == 0:
		h.stopGapTimer()
	case h.gapTimer == nil && !h.closed:
		h.gapTimer = time.AfterFunc(h.o.GapWait, h.onGap)
	}
}

func (h *Hub) stopGapTimer() {
	if h.gapTimer != nil {
		h.gapTimer.Stop()
		h.gapTimer = nil
	}
}

// dispatch offers f to the user's streams on its device. mu is held.
func (h *Hub) dispatch(f *frame) {
	for _, s := range h.users[f.user] {
		if !f.forDevice(s.device) {
			continue
		}
		if !s.push(f) {
			if !s.lagging.Swap(true) {
				h.m.dropped.Inc()
			}
		}
	}
}

// maxGapUsers and maxGapIDs bound what onGap reads for one gap: past
// them every stream catches up, as if the log could not be read.
const (
	maxGapUsers = 1024
	maxGapIDs   = 4096
)

// onGap gives up waiting for missing ids (their commits were never
// reported, or rolled back): the streams of the users those ids went to
// catch up from the log, which holds whatever did commit, before they write
// anything newer. The users are read from the log once, so a late
// notification costs one small read and the affected streams' catch-up,
// not a re-read by every stream over the small read pool.
func (h *Hub) onGap() {
	h.mu.Lock()
	h.gapTimer = nil
	if len(h.held) == 0 || h.closed {
		h.mu.Unlock()
		return
	}
	from, to := h.next, h.lowestHeld()-1
	h.streams.Add(1) // under mu, not closed: Run's Wait sees it
	h.mu.Unlock()
	defer h.streams.Done()

	users, all := h.gapUsers(from, to)

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || h.next != from {
		// Some of the ids were reported meanwhile and passed on; the
		// release that did it armed a new timer if others are missing.
		return
	}
	lowest := h.lowestHeld() // a lower id may have come meanwhile: a smaller gap, within the one read
	h.log.Warn("event ids never reported as committed; their users' streams catch up from the log",
		"from", from, "to", lowest-1, "users", len(users), "all_streams", all)
	h.next = lowest
	h.m.gaps.Inc()
	if all {
		for _, list := range h.users {
			h.lag(list)
		}
	} else {
		for _, u := range users {
			h.lag(h.users[u])
		}
	}
	h.release()
}

// gapUsers reads the users of the events from..to from the log; all is set
// when they could not be told (too many, or the read failed).
func (h *Hub) gapUsers(from, to int64) (users []string, all bool) {
	if to-from >= maxGapIDs {
		return nil, true
	}
	ctx, cancel := context.WithTimeout(h.ctx, h.o.ReadTimeout)
	defer cancel()
	users, more, err := h.o.Log.EventRecipients(ctx, from, to, maxGapUsers)
	if err != nil {
		if h.ctx.Err() == nil {
			h.log.Error("read the users of missing event ids; every stream catches up", "err", err)
		}
		return nil, true
	}
	return users, more
}

// lowestHeld returns the lowest id held back; mu is held, held not empty.
func (h *Hub) lowestHeld() int64 {
	lowest := int64(-1)
	for id := range h.held {
		if lowest < 0 || id < lowest {
			lowest = id
		}
	}
	return lowest
}

// lag makes streams read the log before they write anything newer, and
// wakes them. mu is held (read-locked is enough: it only sets flags and
// sends without blocking).
func (h *Hub) lag(list []*subscriber) {
	for _, s := range list {
		s.wake()
	}
}

// wake makes the stream read the log before it writes anything newer, and
// wakes it.
func (s *subscriber) wake() {
	s.lagging.Store(true)
	s.push(nil)
}
