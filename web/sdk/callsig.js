// callsig.js: the JavaScript client of callsig, with the shape of ZEGO
// ZIM's call-invitation API, so that porting a ZIM call screen is mostly
// changing one import.
//
// One ES module, no build step, no runtime dependency. Browsers use their
// own EventSource and fetch; in Node (>= 20) pass an EventSource
// implementation (the `eventsource` npm package) in the options.
//
// What it does that apps otherwise get wrong:
// - every POST carries a generated Idempotency-Key and is retried with the
//   same key on network errors, attempts unanswered within retry.timeout,
//   503 and a proxy's 502 and 504 (with backoff, honouring Retry-After),
//   so a retried callInvite never creates two calls; when every attempt
//   went unanswered (network_error), the error carries the key, and the
//   app's own retry passes it back (config.idempotencyKey) to stay one call;
// - the event stream resumes from the last event id whatever ends it
//   (network, server restart, token expiry) and drops an event it gets
//   twice, so handlers see each event once, in order; a stream gone
//   silent past heartbeatTimeout (a dead connection, which EventSource
//   never notices) is reopened the same way;
// - on tokenWillExpire it asks tokenProvider for a new token and opens the
//   next stream from the last event id before the server ends the old one,
//   but only with a token that expires later than the stream's: a new
//   stream whose token has 30 s or less left is warned at once, and
//   reopening it with such a token again would loop as fast as the network
//   allows;
// - a stream the server refuses for now (an empty stream whose one event is
//   `refused`: connection cap, rate limit) opens, to EventSource, like any
//   other: it is not taken as served, so login() does not resolve on it and
//   a refused renewal does not close the working stream.

/** The call events of ZIM, in the names the server sends. */
export const CALL_EVENTS = Object.freeze([
  'callInvitationCreated',
  'callInvitationReceived',
  'callInvitationCancelled',
  'callInvitationTimeout',
  'callInvitationEnded',
  'callUserStateChanged',
]);

const CLIENT_EVENTS = new Set([...CALL_EVENTS, 'connectionStateChanged', 'tokenWillExpire', 'reset', 'error']);

/** An HTTP API error: the problem+json body's status, code and detail. */
export class CallsigError extends Error {
  constructor({status = 0, code = 'unknown', detail = '', title = '', errors, retryAfter, idempotencyKey, cause} = {}) {
    super(detail || title || code, cause === undefined ? undefined : {cause});
    this.name = 'CallsigError';
    /** HTTP status; 0 when the server could not be reached. */
    this.status = status;
    /** The stable problem code (`invalid_state`, `call_ended`, …; `network_error` with status 0). */
    this.code = code;
    this.detail = detail;
    this.title = title;
    /** Per-field messages of a validation error. */
    this.errors = errors || [];
    /** Seconds from Retry-After, when the server sent it. */
    this.retryAfter = retryAfter;
    /**
     * The Idempotency-Key every attempt of the failed action carried (an
     * action's error only). After a `network_error` or a `logged_out` the
     * action may have been done: the same action again with this key as
     * its config's `idempotencyKey` gets the first answer instead of acting
     * twice.
     */
    this.idempotencyKey = idempotencyKey;
  }
}

// Random ids from getRandomValues: crypto.randomUUID exists only in secure
// contexts, and a demo on a LAN address is not one.
function randomKey() {
  const b = new Uint8Array(16);
  globalThis.crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

const loggedOut = () => new CallsigError({code: 'logged_out', detail: 'logout() was called before the stream opened'});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The claims of a JWT, read without verifying it (the server verifies):
// for the user ID shown to the app and the exp that orders renewals. null
// when token is not a JWT.
function tokenClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(globalThis.atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
    return claims && typeof claims === 'object' ? claims : null;
  } catch {
    return null;
  }
}

// newerToken tells whether next expires later than current, so that a
// stream reopened with it outlives the one it replaces. Without a numeric
// exp on both (not JWTs), a different token is taken as newer.
function newerToken(next, current) {
  if (!next) return false;
  const a = tokenClaims(next)?.exp;
  const b = tokenClaims(current)?.exp;
  if (Number.isFinite(a) && Number.isFinite(b)) return a > b;
  return next !== current;
}

// The longest wait between two tokenProvider calls while a stream's token
// is about to expire and the provider keeps returning one that is not newer.
const RENEW_MAX_DELAY = 15000;
const RENEW_FIRST_DELAY = 1000;
const renewDelay = (n) => Math.min(RENEW_MAX_DELAY, RENEW_FIRST_DELAY * 2 ** n);
// A warning this soon after a renewal's stream opened counts as one more
// renewal in a row.
const RENEW_CHAIN_WINDOW = 10000;
// How long a renewal dropped for a reset waits at most for the reset
// stream's next event before it is made again (see #onReset).
const RESET_RENEW_DELAY = 1000;
// How long renewToken waits at most for the position of a stream whose
// opening has not come yet (see renewToken).
const POSITION_WAIT = 5000;
// How long a stream that opened and has sent no event yet must stay open
// to be taken as served (see #connect). The server refuses a stream it
// will not serve now with an open that carries one event, refused, in the
// same write as the headers, and then ends it; a stream it serves may
// send nothing for a while (one resumed with nothing to replay sends an
// opening block with no event). 400 ms leaves a refusal's block ample time
// to follow its headers, even through a proxy that splits them, and keeps
// an app shown "connected" no later than a person would notice.
const COMMIT_DELAY = 400;

// The answers retried with the request's key: the server's 503 (it did
// nothing, and asks to be asked again), and a reverse proxy's 502 and 504,
// which say nothing of whether the server did it (nginx's 504 comes when
// the server is slow to answer, perhaps having done it): like a network
// error, only the same key may ask again.
const TRANSIENT = new Set([502, 503, 504]);

function pick(config, keys) {
  const out = {};
  for (const k of keys) if (config && config[k] !== undefined) out[k] = config[k];
  return out;
}

export class CallsigClient {
  #baseURL;
  #token;
  #tokenProvider;
  #refreshing = null; // {session, promise}: the provider's call in flight, and the session it was asked in
  #userClaim;
  #deviceID;
  #EventSource;
  #fetch;
  #retry;
  #heartbeatTimeout;
  #handlers = new Map();
  #state = 'disconnected';
  #loggedIn = false;
  #lastEventID = -1; // the highest event id handed to the app (-1: none yet, or since a reset)
  #streams = new Set(); // open EventSources: more than one only while renewing
  #current = null; // the newest stream, or the one that was served and closed the others, or got a reset and closed them
  #streamTokens = new Map(); // EventSource -> the token it was opened with
  #renewals = new Map(); // EventSource -> {chain, openedAt}: renewals in a row that led to it, when it opened
  #reconnectTimer = 0;
  #renewTimer = 0;
  #unsynced = new WeakSet(); // streams opened without a position whose synced event has not come
  #heartbeats = false; // a stream has shown a heartbeat event: the server sends them, each connection's first with its opening
  #live = new Set(); // streams served, or in their trial, whose connection is open
  #everOpened = new WeakSet(); // streams whose connection opened once: their EventSource may come back by itself
  #proofBackoff = 0; // the wait before a renewal dropped unproven is made again (see #unproven)
  #proving = new Map(); // EventSource -> its unproven(): opened, and waiting for a heartbeat or an event (see #connect)
  #renewOnEvent = null; // {es, chain}: a renewal a reset dropped or renewToken put off, made again on es's synced event (or by #renewTimer)
  #backoff = 0;
  #notBefore = 0; // Date.now() before which no stream opens: a refusal's retry (see #onRefused)
  #pendingLogin = null; // {resolve, reject} of a login() whose stream is not served yet
  #loginPromise = null; // the login() in flight, returned to concurrent callers
  #session = 0; // bumped by logout(): a login() begun before it must not go on
  #expiryTold = ''; // the token whose expiry a stream refused for good told the app of (see #warnExpired)

  /**
   * @param {object} options
   * @param {string} [options.baseURL] the server, e.g. "https://calls.example.com" ("" = this page's origin)
   * @param {string} [options.token] a user JWT
   * @param {() => string | Promise<string>} [options.tokenProvider] returns a fresh JWT (called at login without token, on 401 and on tokenWillExpire)
   * @param {string} [options.deviceID] this device ("default" when left out)
   * @param {string} [options.userClaim] the JWT claim holding the user ID, as the server's CALLSIG_JWT_USER_CLAIM ("sub" when left out)
   * @param {typeof EventSource} [options.EventSource] required where there is no global EventSource (Node)
   * @param {typeof fetch} [options.fetch]
   * @param {{attempts?: number, baseDelay?: number, maxDelay?: number, timeout?: number}} [options.retry]
   * @param {number} [options.heartbeatTimeout] ms without a heartbeat or event (or without its head, for a connection opening) after which a stream counts as dead and is reopened (default 40000; 0: never; else 1000 or more)
   */
  constructor(options = {}) {
    const {baseURL = '', token, tokenProvider, deviceID = 'default', userClaim = 'sub', EventSource: ES, fetch: f, retry,
      heartbeatTimeout = 40000} = options;
    if (!token && !tokenProvider) throw new TypeError('CallsigClient: give a token or a tokenProvider');
    this.#baseURL = String(baseURL).replace(/\/+$/, '');
    this.#token = token || '';
    this.#tokenProvider = tokenProvider || null;
    this.#deviceID = deviceID;
    this.#userClaim = userClaim;
    this.#EventSource = ES || globalThis.EventSource;
    this.#fetch = f || globalThis.fetch.bind(globalThis);
    // A field left undefined keeps its default: {timeout: undefined} (an
    // app passing its own optional settings through) must not switch the
    // attempt timeout off, which only 0 does.
    this.#retry = {attempts: 5, baseDelay: 200, maxDelay: 5000, timeout: 15000,
      ...Object.fromEntries(Object.entries(retry || {}).filter(([, v]) => v !== undefined))};
    // setTimeout takes up to 2^31-1 ms, and fires at once beyond; under a
    // second a stream resumed with nothing to replay would be given up
    // before it counts as served (COMMIT_DELAY), again and again.
    if (typeof heartbeatTimeout !== 'number' || !(heartbeatTimeout === 0 || heartbeatTimeout >= 1000 && heartbeatTimeout <= 2 ** 31 - 1)) {
      throw new TypeError('CallsigClient: heartbeatTimeout must be 0 (off) or a number of ms from 1000 to 2147483647');
    }
    this.#heartbeatTimeout = heartbeatTimeout;
  }

  /** The signed-in user: the token's userClaim ("sub" by default); "" when the token is not a JWT. */
  get userID() {
    const v = tokenClaims(this.#token)?.[this.#userClaim];
    return typeof v === 'string' ? v : '';
  }
  get deviceID() { return this.#deviceID; }
  /** connecting, connected, reconnecting or disconnected. */
  get connectionState() { return this.#state; }
  /** The id of the last event handed to the handlers ("" before any, and after a reset until the next). */
  get lastEventID() { return this.#lastEventID < 0 ? '' : String(this.#lastEventID); }

  // ---- events ---------------------------------------------------------

  /** Adds handler(client, data) for event name. */
  on(name, handler) {
    if (!CLIENT_EVENTS.has(name)) throw new TypeError(`CallsigClient.on: unknown event ${name}`);
    if (!this.#handlers.has(name)) this.#handlers.set(name, new Set());
    this.#handlers.get(name).add(handler);
    return this;
  }

  /** Removes handler for name (every handler of name when left out). */
  off(name, handler) {
    const set = this.#handlers.get(name);
    if (set) handler ? set.delete(handler) : set.clear();
    return this;
  }

  #emit(name, data) {
    if (name === 'error' && !this.#handlers.get('error')?.size) {
      console.error('callsig:', data.event, data.error); // nobody listens: do not swallow it
      return;
    }
    // One app handler's bug must not stop the others or the stream; an
    // async handler's rejection is reported the same way, not left
    // unhandled.
    const fail = (e) => {
      if (name !== 'error') this.#emit('error', {error: e, event: name});
      else console.error(e);
    };
    for (const h of [...(this.#handlers.get(name) || [])]) {
      try {
        const r = h(this, data);
        if (r && typeof r.then === 'function') r.then(undefined, fail);
      } catch (e) {
        fail(e);
      }
    }
  }

  #setState(state, reason) {
    if (this.#state === state) return;
    this.#state = state;
    this.#emit('connectionStateChanged', {state, reason: reason || ''});
  }

  // ---- session ------------------------------------------------------------

  /**
   * Opens the user's event stream; resolves once the server serves it. A
   * stream the server does not serve now (its `refused` event: connection
   * cap, rate limit) leaves it pending while the client tries again after
   * the wait the server asks for. Rejects with CallsigError code
   * `stream_refused` when the server refuses it with an HTTP error (after
   * one retry with a token from tokenProvider; a 502, 503 or 504, the
   * server out of reach for now, keeps it pending while the client tries
   * again; a browser's EventSource does not tell the status, which the
   * client then asks the API for with GET /calls?count=1, and no answer,
   * a 429 or any 5xx to that keeps it pending too), `logged_out` when
   * logout() comes first.
   * A login() while another is in flight shares its outcome.
   */
  login() {
    if (this.#loginPromise) return this.#loginPromise;
    if (this.#loggedIn) return Promise.resolve();
    const p = this.#login().finally(() => {
      if (this.#loginPromise === p) this.#loginPromise = null;
    });
    this.#loginPromise = p;
    return p;
  }

  async #login() {
    const session = this.#session;
    if (!this.#token) await this.#refreshToken();
    if (session !== this.#session) throw loggedOut();
    if (this.#loggedIn) return; // another login() got there during the await
    if (!this.#EventSource) throw new TypeError('CallsigClient: no EventSource; pass one in the options (Node: the eventsource package)');
    this.#loggedIn = true;
    this.#setState('connecting');
    await new Promise((resolve, reject) => {
      const login = {
        resolve: () => { if (this.#pendingLogin === login) this.#pendingLogin = null; resolve(); },
        reject: (e) => { if (this.#pendingLogin === login) this.#pendingLogin = null; reject(e); },
        renewed: false,
      };
      this.#pendingLogin = login;
      this.#connect(login);
    });
  }

  /** Closes the event stream; a later login starts a new one (with the invitations still pending). A login() still connecting, and a request due to be retried (see #request), reject with code `logged_out`. */
  logout() {
    this.#session++;
    this.#loggedIn = false;
    this.#lastEventID = -1;
    clearTimeout(this.#reconnectTimer);
    clearTimeout(this.#renewTimer);
    this.#renewOnEvent = null;
    for (const es of this.#streams) es.close();
    this.#streams.clear();
    this.#streamTokens.clear();
    this.#renewals.clear();
    this.#proving.clear();
    this.#live.clear();
    this.#current = null;
    // The pending login is rejected before 'disconnected' is emitted: a
    // login() from that event's handler is a new one, not to be rejected.
    this.#loginPromise = null;
    const pending = this.#pendingLogin;
    this.#pendingLogin = null;
    if (pending) pending.reject(loggedOut());
    this.#setState('disconnected', 'logout');
  }

  /**
   * Replaces the token (ZIM's renewToken). A logged-in client reopens its
   * stream with it, from the last event, when it expires later than the
   * stream's token; otherwise the stream goes on as it is (reopening with a
   * token as old would be warned at once again).
   */
  async renewToken(token) {
    this.#token = token;
    if (!this.#loggedIn) return;
    const es = this.#current;
    if (!es || !this.#streams.has(es)) {
      if (!this.#pendingLogin) this.#connect(); // waiting to reconnect: now
      return;
    }
    if (!newerToken(token, this.#streamTokens.get(es))) return;
    if ((this.#lastEventID < 0 || this.#unsynced.has(es)) && this.#renewals.get(es)?.openedAt) {
      // No position yet: es's opening (its synced event) has not come.
      // (Not open yet, es has handed nothing over, and the renewal loses
      // nothing by going now: it gets the pending invitations itself.)
      // Reopened now, the stream would start at the head of the log, and
      // closing es would drop what es holds before it; the renewal waits
      // for es's next event, or POSITION_WAIT when none comes.
      const again = {es, chain: 0};
      this.#renewOnEvent = again;
      clearTimeout(this.#renewTimer);
      this.#renewTimer = setTimeout(() => this.#renewAgain(again), POSITION_WAIT);
      return;
    }
    this.#connect();
  }

  // fetchToken asks tokenProvider for a token (one call at a time within a
  // session). A call asked before logout() is not shared with the session
  // after it: its token may be the user's who was signed in (the app
  // switching accounts as its backend answers), and a login() sharing it
  // would open the next user's stream, and send their requests, as them.
  #fetchToken() {
    const session = this.#session;
    if (!this.#refreshing || this.#refreshing.session !== session) {
      const call = {session};
      call.promise = Promise.resolve()
        .then(() => this.#tokenProvider())
        .then((t) => {
          if (!t || typeof t !== 'string') throw new CallsigError({code: 'no_token', detail: 'tokenProvider returned no token'});
          return t;
        }, (e) => {
          throw new CallsigError({code: 'token_provider_failed',
            detail: `tokenProvider failed: ${e && e.message ? e.message : String(e)}`, cause: e});
        })
        .finally(() => { if (this.#refreshing === call) this.#refreshing = null; });
      this.#refreshing = call;
    }
    return this.#refreshing.promise;
  }

  // refreshToken replaces the token with the provider's; false without one,
  // and when logout() came while the provider was asked: that token is
  // left, the last session's (see fetchToken), and the caller, which
  // checks the session after, gives up.
  async #refreshToken() {
    if (!this.#tokenProvider) return false;
    const session = this.#session;
    const t = await this.#fetchToken();
    if (session !== this.#session) return false;
    this.#token = t;
    return true;
  }

  // ---- the event stream ---------------------------------------------------

  // connect opens a new stream from the last event id. The streams already
  // open stay until it is served (a renewal has no gap); events that come
  // on both are handed over once, by id. Before #notBefore it is put off
  // until then.
  //
  // Served, not open: the server answers a stream it will not serve now
  // with an open one that carries only the event refused and ends. So an
  // open is taken as served (commit) at the stream's first other event, or
  // once it has stayed open COMMIT_DELAY; a refused one is dropped (see
  // #onRefused). Each open of es is so, the EventSource's own reconnections
  // of it included.
  #connect(login, chain = 0) {
    clearTimeout(this.#reconnectTimer);
    clearTimeout(this.#renewTimer);
    this.#renewOnEvent = null;
    const wait = this.#notBefore - Date.now();
    if (wait > 0) {
      this.#reconnectTimer = setTimeout(() => { if (this.#loggedIn) this.#connect(login, chain); }, wait);
      return;
    }
    // heartbeat=event: the server's heartbeats come as events, which
    // EventSource shows (see #watch); a server that does not know it sends
    // comments only, and the stream goes unwatched.
    const q = new URLSearchParams({access_token: this.#token, deviceID: this.#deviceID, heartbeat: 'event'});
    if (this.#lastEventID >= 0) q.set('lastEventID', String(this.#lastEventID));
    // Blind: opened with no position while another stream is open, that
    // stream's synced event waited for in vain (POSITION_WAIT, or
    // RESET_RENEW_DELAY after a reset). es starts at the head of the log
    // as of its own opening, and closing the open stream then drops what
    // that one holds and has not handed over (its body held up by a proxy,
    // say): a cancellation, a callee's answer to the app's own call. No
    // id tells what that was, so es's opening tells the app to reload, as
    // the server's reset does.
    const blind = this.#lastEventID < 0 && [...this.#streams].some((s) => this.#renewals.get(s)?.openedAt > 0);
    const es = new this.#EventSource(`${this.#baseURL}/events?${q}`);
    if (this.#lastEventID < 0) this.#unsynced.add(es);
    this.#streams.add(es);
    this.#streamTokens.set(es, this.#token);
    this.#renewals.set(es, {chain, openedAt: 0, blind});
    this.#current = es;
    let served = false; // es was committed once
    let trial = false; // es is open and not committed yet
    let trialTimer = 0;
    const endTrial = () => {
      if (trial) this.#live.delete(es);
      trial = false;
      clearTimeout(trialTimer);
    };
    const commit = () => {
      if (!trial) return;
      endTrial();
      if (!this.#streams.has(es)) return;
      served = true;
      this.#live.add(es);
      this.#backoff = 0;
      this.#proofBackoff = 0;
      const r = this.#renewals.get(es);
      if (r) r.openedAt = Date.now();
      for (const old of this.#streams) if (old !== es) this.#drop(old);
      // es is the one stream left, so the current one, even when it is not
      // the newest: an older stream whose EventSource reconnected by itself
      // opens before a renewal's and closes it. Left on the renewal, its
      // warnings would be ignored and it would end at its token's exp.
      this.#current = es;
      if (r?.blind) {
        // Once: the EventSource's own reconnections of es resume from its
        // Last-Event-ID and lose nothing.
        r.blind = false;
        this.#emit('reset', {}); // before es's first event (see #connect)
      }
      // A stream opened without the login object (renewToken while login's
      // stream was connecting) closed login's: it settles the login.
      const pending = login || this.#pendingLogin;
      this.#setState('connected');
      if (pending) pending.resolve();
    };
    const watch = this.#watch(es);
    // Once a stream has shown a heartbeat event, the server sends one
    // with each connection's opening block, so every connection opened
    // after it (a renewal, a reconnection, the EventSource's own) must
    // show one, or an event, before it counts as served: open alone, its
    // body may be held by a proxy, and taken as served it would leave the
    // client deaf (a renewal closing the working stream for it), watched
    // from a first heartbeat that never comes. So must a stream opened
    // without a position (a login's, or after a reset), until it has shown
    // something: a node sends it its opening block (the pending
    // invitations, synced) at once, heartbeats or not; one older than
    // synced (2026-12-03) may send nothing, and is not served by this
    // client (README). One that shows neither within heartbeatTimeout of
    // its opening is dropped (#unproven).
    let proving = false; // es opened, and waits for a heartbeat before its trial
    let proofTimer = 0;
    const endProof = () => {
      proving = false;
      clearTimeout(proofTimer);
      this.#proving.delete(es);
    };
    const startTrial = () => {
      endProof();
      trial = true;
      this.#live.add(es);
      trialTimer = setTimeout(commit, COMMIT_DELAY);
    };
    es.onopen = () => {
      watch.opened();
      this.#everOpened.add(es);
      this.#live.delete(es);
      if (!this.#streams.has(es)) return;
      endTrial();
      endProof();
      const ms = this.#heartbeatTimeout;
      const prove = this.#heartbeats || (this.#unsynced.has(es) && !served);
      if (!(ms > 0) || !prove) {
        startTrial();
        return;
      }
      proving = true;
      const unproven = () => {
        endProof();
        this.#unproven(es, chain);
      };
      this.#proving.set(es, unproven);
      proofTimer = setTimeout(unproven, ms);
      proofTimer?.unref?.();
    };
    es.onerror = (ev) => {
      endTrial();
      endProof();
      this.#live.delete(es);
      watch.pause(); // the connection is gone (see #watch)
      if (!this.#streams.has(es)) return;
      if (es.readyState !== 2 /* CLOSED */) {
        // The EventSource reconnects by itself, with Last-Event-ID.
        this.#ended();
        if (this.#streams.size === 1) this.#setState('reconnecting', 'network');
        return;
      }
      // Refused (an expired token, say): EventSource gives up; we do not.
      const esToken = this.#streamTokens.get(es);
      this.#streams.delete(es);
      this.#streamTokens.delete(es);
      this.#renewals.delete(es);
      if (es === this.#current && this.#streams.size > 0) {
        // A renewal failed (es was never served: had it, the others would
        // be gone): the newest stream left goes on (a Set keeps the order
        // they were opened in).
        this.#current = [...this.#streams].pop();
      }
      const status = ev && ev.code ? ev.code : 0;
      if (login && !served) {
        if (status !== 0) {
          this.#loginStreamFailed(login, status, ev);
          return;
        }
        // A browser's EventSource tells no status: a proxy's 502 while the
        // server restarts looks like a refusal, and login() rejected at
        // once. The API, asked with the same token, tells which it is.
        const session = this.#session;
        this.#probe(esToken).then((probed) => {
          if (session === this.#session && this.#loggedIn && this.#pendingLogin === login) {
            this.#loginStreamFailed(login, probed, ev, true);
          }
        });
        return;
      }
      if (this.#streams.size > 0) this.#ended();
      else if (this.#loggedIn) {
        this.#reconnectLater();
        if (!this.#tokenProvider) this.#warnExpired(esToken, status);
      }
    };
    // Any event but refused shows es served: committed before it is handled.
    const on = (type, handle) => es.addEventListener(type, (ev) => {
      if (proving) {
        endProof();
        trial = true;
      }
      commit();
      watch.alive(type);
      handle(ev);
    });
    // Not through on: a heartbeat comes with the opening block of a
    // stream the server serves, before its first event, and commits
    // nothing (the server's refusal is what tells a refused stream; the
    // commit keeps waiting for an event or COMMIT_DELAY, as without one).
    // A renewal that must show a heartbeat (see onopen) starts its trial
    // with the first.
    es.addEventListener('heartbeat', () => {
      this.#heartbeats = true;
      if (proving) startTrial();
      watch.alive('heartbeat');
    });
    for (const type of CALL_EVENTS) on(type, (ev) => this.#onEvent(es, type, ev));
    on('reset', (ev) => this.#onReset(es, ev));
    on('synced', (ev) => this.#onSynced(es, ev));
    on('tokenWillExpire', (ev) => this.#onTokenWillExpire(es, ev));
    es.addEventListener('refused', (ev) => {
      endTrial();
      endProof();
      this.#onRefused(es, ev);
    });
  }

  // refused: the server does not serve es now (its connection cap, the
  // user's request rate, too many failed logins from this address) and
  // ends it; the event's retry is how long to wait (ms). es served nothing,
  // and is dropped as a stream refused with an HTTP error is; the other
  // streams stay as they are, so a refused renewal leaves the working
  // stream on, handing its events over as before. When es was the current
  // stream, the attempt it was is made again, not before that retry nor
  // the usual backoff: the renewal, the login's stream (a pending login()
  // settles on the next), or a reconnection. Another's refusal (an older
  // stream's own reconnection while a renewal is opening) needs nothing:
  // the current one is on its way.
  #onRefused(es, ev) {
    if (!this.#streams.has(es)) return;
    const current = es === this.#current;
    const chain = this.#renewals.get(es)?.chain ?? 0;
    this.#drop(es);
    if (!current) {
      this.#ended();
      return;
    }
    this.#current = [...this.#streams].pop() ?? null;
    let retry = 0;
    try {
      retry = Number(JSON.parse(ev.data).retry) || 0;
    } catch {
      // the backoff alone
    }
    this.#backoff = Math.min(15000, this.#backoff ? this.#backoff * 2 : 500);
    this.#notBefore = Date.now() + Math.max(retry, this.#backoff);
    if (this.#streams.size === 0 && this.#state === 'connected') this.#setState('reconnecting', 'refused');
    this.#connect(this.#pendingLogin, chain);
  }

  // unproven drops es, a connection that opened and showed no heartbeat
  // nor event within heartbeatTimeout (see #connect). A renewal is made
  // again with backoff, the stream it was to replace going on meanwhile;
  // when no other stream is left, the client comes back from the last
  // event, as after any loss.
  #unproven(es, chain) {
    if (!this.#streams.has(es) || !this.#loggedIn) return;
    const current = es === this.#current;
    this.#drop(es);
    if (!current) {
      this.#ended();
      return;
    }
    this.#current = [...this.#streams].pop() ?? null;
    if (this.#streams.size === 0) {
      this.#reconnectLater('network');
      return;
    }
    // A backoff of its own: the working stream goes on, and its own loss
    // later should not wait for renewals a proxy held.
    this.#proofBackoff = Math.min(15000, this.#proofBackoff ? this.#proofBackoff * 2 : 500);
    this.#notBefore = Date.now() + this.#proofBackoff;
    this.#connect(this.#pendingLogin, chain);
  }

  // ended: a stream's connection ended, and what is left may be no
  // stream served or in its trial (#live), only streams still waiting for
  // their proof (see #connect), such as a renewal whose body a proxy
  // holds, while the app is shown connected. A healthy one shows its
  // heartbeat with its opening, so one still waiting now is given up at
  // once rather than at its heartbeatTimeout; and when no stream left has
  // ever opened (its EventSource would come back by itself), those that
  // never did (a renewal whose head is held) are given up too.
  #ended() {
    if (!this.#loggedIn || [...this.#streams].some((s) => this.#live.has(s))) return;
    for (const unproven of [...this.#proving.values()]) unproven();
    // Nothing comes back by itself: a renewal whose head is held is as deaf.
    const back = (s) => this.#everOpened.has(s) && !this.#proving.has(s);
    if ([...this.#streams].some(back)) return;
    for (const s of [...this.#streams]) if (this.#streams.has(s)) this.#unproven(s, this.#renewals.get(s)?.chain ?? 0);
  }

  // watch watches es for silence: alive(type) for each of its events,
  // pause() when its connection is gone, opened() when the EventSource has
  // a connection. Once a heartbeat event shows that
  // the server at the other end sends them (one at least every 15 s, the
  // first with the opening block), a connection that then goes
  // heartbeatTimeout with no event is taken as dead. A connection that died
  // without a word (a phone that changed networks, a NAT that forgot it)
  // leaves an EventSource open and waiting for ever, the user unreachable
  // while the app shows connected. Every stream is dropped then, a renewal
  // still opening included (it may be held up the same way), and the
  // client comes back from the last event as after any loss of its
  // streams.
  //
  // A connection must also open (its response head: the server sends it
  // at once) within heartbeatTimeout, the first one included: one held up
  // by a proxy, or a renewal's, would otherwise leave the client waiting
  // on it for ever, a pending login() with it.
  #watch(es) {
    const ms = this.#heartbeatTimeout;
    let beating = false;
    const silent = () => {
      if (!this.#streams.has(es) || !this.#loggedIn) return;
      for (const s of [...this.#streams]) this.#drop(s);
      this.#current = null;
      this.#reconnectLater('network');
    };
    // Until a connection opens, it has ms to: the first one, and each the
    // EventSource makes by itself after an error (counted from the first
    // error of a row of failed tries).
    let opening = false;
    let timer = 0;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(silent, ms);
      timer?.unref?.(); // Node: the stream's socket keeps the process up, not this timer
    };
    const waitForOpen = () => {
      if (opening || !(ms > 0)) return;
      opening = true;
      beating = false;
      arm();
    };
    waitForOpen();
    return {
      alive: (type) => {
        if (!(ms > 0) || !this.#streams.has(es)) return;
        beating ||= type === 'heartbeat';
        if (beating) arm();
      },
      // The connection is gone, and the EventSource comes back by itself
      // (or the stream is over, and silent finds it dropped).
      pause: waitForOpen,
      // Open: watched from its own first heartbeat, as it may be a node
      // that sends none.
      opened: () => {
        opening = false;
        clearTimeout(timer);
      },
    };
  }

  #drop(es) {
    es.close();
    this.#live.delete(es);
    this.#proving.delete(es);
    this.#streams.delete(es);
    this.#streamTokens.delete(es);
    this.#renewals.delete(es);
  }

  // loginStreamFailed settles what the failure of login's stream, never
  // served, means for the login: status is its HTTP status (0: unknown;
  // -1: the server did not answer the probe; probed: status is the
  // probe's). Out of reach for now (a 502, 503 or 504; a probe's 429 or
  // other 5xx, which say nothing of the stream), the login stays pending while the
  // client comes back with backoff; a stale token gets one more try with
  // the provider's; anything else rejects stream_refused.
  #loginStreamFailed(login, status, ev, probed = false) {
    if (TRANSIENT.has(status) || status === -1 || (probed && (status === 429 || status >= 500))) {
      // Not refused: the server is out of reach for now (a proxy's 502
      // while it restarts, or no answer to the probe; the server itself
      // refuses a stream for now with its refused event, not a status,
      // so a 429 can only be a proxy's). As after a network error, which
      // EventSource retries by itself, login() stays pending while the
      // client comes back with backoff.
      if (this.#streams.size === 0) this.#reconnectLater('network');
      return;
    }
    if (probed && status === 0 && !login.reprobed) {
      // The API answered: the server may be back since the stream's
      // failure (a restart behind a proxy that just ended). One more try
      // before the failure counts as the stream's own.
      login.reprobed = true;
      if (this.#streams.size === 0) this.#reconnectLater('network');
      return;
    }
    if (!login.renewed && this.#tokenProvider && (status === 0 || status === 401)) {
      // The token given was stale (or the status is unknown: the probe
      // was answered, the stream was not): one more try with the
      // provider's.
      login.renewed = true;
      const session = this.#session;
      // Another stream (a renewToken's) may open meanwhile and settle
      // the login: then there is nothing left to retry or reject.
      this.#refreshToken().then(() => {
        if (session === this.#session && this.#loggedIn && this.#pendingLogin === login) this.#connect(login);
      }, (e) => {
        if (session !== this.#session || this.#pendingLogin !== login) return;
        this.#loggedIn = false;
        this.#setState('disconnected', 'refused');
        login.reject(e);
      });
      return;
    }
    this.#loggedIn = false;
    for (const s of this.#streams) s.close();
    this.#streams.clear();
    this.#streamTokens.clear();
    this.#renewals.clear();
    this.#proving.clear();
    this.#live.clear();
    this.#setState('disconnected', 'refused');
    login.reject(new CallsigError({status, code: 'stream_refused',
      detail: (ev && ev.message) || 'the server refused the event stream'}));
  }

  // probe asks the API, with the stream's token, the status a browser's
  // EventSource does not give: GET /calls?count=1 is refused for the same
  // token and the same outage as the stream (-1 when nothing answers
  // within retry.timeout, 15 s if that is 0; 0 when it is served).
  async #probe(token) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), this.#retry.timeout > 0 ? this.#retry.timeout : 15000);
    try {
      const res = await this.#fetch(`${this.#baseURL}/calls?count=1`, {cache: 'no-store', signal: abort.signal,
        headers: {Authorization: `Bearer ${token || this.#token}`, 'X-Device-ID': this.#deviceID, Accept: 'application/json'}});
      res.body?.cancel?.().catch(() => {});
      return res.ok ? 0 : res.status; // answered: the stream's failure is its own
    } catch {
      return -1;
    } finally {
      clearTimeout(timer);
    }
  }

  #reconnectLater(reason = 'refused') {
    this.#setState('reconnecting', reason);
    this.#backoff = Math.min(15000, this.#backoff ? this.#backoff * 2 : 500);
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = setTimeout(async () => {
      if (!this.#loggedIn) return;
      try {
        await this.#refreshToken();
      } catch (e) {
        this.#emit('error', {error: e, event: 'tokenProvider'});
      }
      // A pending login's stream is still login's: refused, it settles it.
      if (this.#loggedIn && this.#streams.size === 0) this.#connect(this.#pendingLogin);
    }, this.#backoff);
  }

  // warnExpired tells the app, with tokenWillExpire, that the stream
  // refused for good (status: its HTTP status, 0 when unknown) was opened
  // with a token that expired or has 30 s or less left, when only the app
  // can give another (no tokenProvider). The server's warning came on no
  // stream: the device was offline from before it until after exp (a
  // phone asleep), and the EventSource came back with the expired token.
  // Untold, the app would never call renewToken and the client would try
  // that token for ever. Told once per token, as the server does; by exp
  // too, since a browser's EventSource does not give the status.
  #warnExpired(token, status) {
    if (!token || token !== this.#token || this.#expiryTold === token) return;
    const exp = tokenClaims(token)?.exp;
    const left = Number.isFinite(exp) ? Math.ceil(exp - Date.now() / 1000) : NaN;
    if (status !== 401 && !(left <= 30)) return;
    this.#expiryTold = token;
    this.#emit('tokenWillExpire', {second: left > 0 ? left : 0});
  }

  // seen moves the position to ev's id; false when ev was handed over
  // already (it came on an older stream too).
  #seen(ev) {
    const id = Number(ev.lastEventId);
    if (ev.lastEventId === '' || !Number.isSafeInteger(id)) return true;
    if (id <= this.#lastEventID) return false;
    this.#lastEventID = id;
    return true;
  }

  #onEvent(es, type, ev) {
    if (!this.#streams.has(es) || !this.#seen(ev)) return;
    let data;
    try {
      data = JSON.parse(ev.data);
    } catch {
      return; // the server sends JSON only
    }
    this.#emit(type, data);
  }

  // synced ends the opening of a stream opened without a position (after
  // the pending invitations): its id is the head of the user's log, the
  // position to reopen from. Without it, a stream the client reopens
  // itself (a renewal, a reconnection after a refusal) resumed from the
  // last pending invitation and handed the history since over again.
  #onSynced(es, ev) {
    if (!this.#streams.has(es)) return;
    this.#unsynced.delete(es);
    const id = Number(ev.lastEventId);
    if (ev.lastEventId !== '' && Number.isSafeInteger(id) && id > this.#lastEventID) this.#lastEventID = id;
    if (this.#renewOnEvent?.es === es) this.#renewAgain(this.#renewOnEvent);
  }

  // reset: the server does not have the events after our position, pruned
  // or never written (a position ahead of its log: the database was wiped
  // or restored while we held it). What follows is what a new stream gets,
  // with the server's ids, which may be lower than ours: so the position is
  // forgotten, or #seen would drop those invitations and every event after
  // them until the ids passed it, and each reconnection would send it
  // again. The app should reload its calls (queryCallInvitationList).
  //
  // es is open (a reset comes right after a stream's opening block), so
  // the streams older than es were closed when it opened, and no id of the
  // log the position came from can come after this and set it back. Any
  // other stream is a renewal not open yet, opened after es's opening, so
  // from the position es's reset just voided: it would get the same reset
  // and replay and hand each replayed invitation over a second time. It is
  // dropped, not es: es is the one stream open, and the renewal may never
  // open (its response held up, say), with nothing then to deliver the
  // reset or anything after it, nor a timer to notice. es becomes the
  // current stream; the renewal is made again (see #renewAgain).
  #onReset(es) {
    if (!this.#streams.has(es)) return;
    if (es !== this.#current && this.#streams.has(this.#current)) {
      const chain = this.#renewals.get(this.#current)?.chain ?? 0;
      for (const s of this.#streams) if (s !== es) this.#drop(s);
      this.#current = es;
      // es's token is about to expire (the renewal was for that) and es
      // will not be warned again. Made again at once, the renewal would
      // resume from no position, and might miss what es had not delivered
      // when it opened and closed es: it waits for es's synced event (which
      // ends the replay after the reset) to resume from the head, or
      // RESET_RENEW_DELAY should it not come.
      const again = {es, chain};
      this.#renewOnEvent = again;
      clearTimeout(this.#renewTimer);
      this.#renewTimer = setTimeout(() => this.#renewAgain(again), RESET_RENEW_DELAY);
    }
    this.#lastEventID = -1;
    this.#emit('reset', {});
  }

  // renewAgain makes the renewal that a reset on es dropped (or that
  // renewToken put off until es had a position) again, from es's position. The client's token is the one the dropped renewal was
  // opened with (given by renewToken, or fetched from the provider), or a
  // later one renewToken gave: used when newer than es's, without asking
  // the provider again; else es is renewed the way a warning renews it
  // (#renewStream). chain is the dropped renewal's, so renewals in a row
  // still back off.
  #renewAgain(again) {
    if (this.#renewOnEvent !== again) return; // made already, or another renewal came first
    this.#renewOnEvent = null;
    clearTimeout(this.#renewTimer);
    const {es, chain} = again;
    if (!this.#loggedIn || es !== this.#current || !this.#streams.has(es)) return;
    if (newerToken(this.#token, this.#streamTokens.get(es))) this.#connect(null, chain);
    else if (this.#tokenProvider) this.#renewStream(es, 0, chain);
  }

  async #onTokenWillExpire(es, ev) {
    if (es !== this.#current) return;
    // Its id is the stream's position, also when no event came yet.
    const id = Number(ev.lastEventId);
    if (ev.lastEventId !== '' && Number.isSafeInteger(id) && id > this.#lastEventID) this.#lastEventID = id;
    let second = 0;
    try {
      second = JSON.parse(ev.data).second;
    } catch {
      // keep 0
    }
    this.#emit('tokenWillExpire', {second});
    if (!this.#tokenProvider) return; // the app calls renewToken
    this.#renewOnEvent = null; // renewed below
    // A stream opened by a renewal and warned soon after got a token with
    // little time left too (a provider handing out short tokens): each such
    // renewal in a row waits longer, or they would follow each other as
    // fast as the network allows.
    const r = this.#renewals.get(es);
    const chain = r && r.chain > 0 && Date.now() - r.openedAt < RENEW_CHAIN_WINDOW ? r.chain : 0;
    clearTimeout(this.#renewTimer);
    if (chain === 0) this.#renewStream(es, 0, 1);
    else this.#renewTimer = setTimeout(() => this.#renewStream(es, 0, chain + 1), renewDelay(chain - 1));
  }

  // renewStream reopens the stream es with the provider's token if that
  // expires later than es's. If it does not (a cached token, one minted
  // with the same exp), es goes on and the provider is asked again with
  // backoff while es lasts; once es ends, reconnection takes over.
  async #renewStream(es, attempt, chain) {
    const live = () => this.#loggedIn && es === this.#current && this.#streams.has(es);
    if (!live()) return;
    let t = '';
    try {
      t = await this.#fetchToken();
    } catch (e) {
      this.#emit('error', {error: e, event: 'tokenProvider'});
    }
    if (!live()) return;
    if (t && newerToken(t, this.#streamTokens.get(es))) {
      this.#token = t;
      this.#connect(null, chain);
      return;
    }
    clearTimeout(this.#renewTimer);
    this.#renewTimer = setTimeout(() => this.#renewStream(es, attempt + 1, chain), renewDelay(attempt));
  }

  // ---- HTTP -------------------------------------------------------------------

  // request sends one API call and returns the decoded body. A POST carries
  // one Idempotency-Key over all its attempts; network errors (an attempt
  // unanswered within retry.timeout included), 503 and a proxy's 502 and
  // 504 are retried with backoff (Retry-After when given); a 401 gets one
  // retry with a token from tokenProvider. key is the app's own
  // Idempotency-Key for a POST (an action's config.idempotencyKey: the
  // key of an earlier attempt that failed as network_error); a new one
  // otherwise. Every error of a POST carries its key.
  async #request(method, path, body, key) {
    if (method !== 'POST') return this.#attempts(method, path, body, '');
    key = key === undefined ? randomKey() : key;
    // What a header carries as is: a key fetch refuses (not ASCII, a
    // line break) would fail every attempt, read as network_error ("may
    // have been done"), and spaces at either end would be trimmed off it.
    if (typeof key !== 'string' || key.length > 255 || !/^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/.test(key)) {
      throw new TypeError('CallsigClient: idempotencyKey must be 1 to 255 printable ASCII characters, no space at either end');
    }
    try {
      return await this.#attempts(method, path, body, key);
    } catch (e) {
      if (e instanceof CallsigError) e.idempotencyKey = key;
      throw e;
    }
  }

  async #attempts(method, path, body, key) {
    // The body as called, serialized once: a retry carries the same key and
    // must carry the same body (the server replays the first answer only
    // for the same body), whatever the app has done since with the arrays
    // and objects it passed.
    const payload = method === 'POST' ? JSON.stringify(body || {}) : undefined;
    let renewed = false;
    // A request is the signed-in user's: after a logout() the client's
    // token (and tokenProvider's next) may be another user's, and an
    // attempt sent with it would run the action as that user (an account
    // switched on the same client, ZIM's way: logout, then login). So no
    // attempt goes out once logout() has come.
    const session = this.#session;
    for (let attempt = 0; ; attempt++) {
      if (!this.#token) await this.#refreshToken();
      if (session !== this.#session) {
        throw new CallsigError({code: 'logged_out', detail: 'logout() came before the request\'s next attempt; an earlier one may have been done'});
      }
      const headers = {Authorization: `Bearer ${this.#token}`, 'X-Device-ID': this.#deviceID, Accept: 'application/json'};
      const init = {method, headers, cache: 'no-store'};
      if (method === 'POST') {
        headers['Content-Type'] = 'application/json';
        headers['Idempotency-Key'] = key;
        init.body = payload;
      }
      // A network error, and a 2xx whose body is cut or unreadable: the
      // server may have done it, so retry with the same key (it replays
      // the stored answer) rather than report success without the result.
      const networkError = async (e) => {
        if (attempt + 1 < this.#retry.attempts) {
          await sleep(this.#delay(attempt));
          return;
        }
        throw new CallsigError({code: 'network_error', detail: `the server did not answer: ${e && e.message ? e.message : e}`});
      };
      // An attempt that gets no whole answer within retry.timeout is one
      // more network error: a dead connection (a phone that changed
      // networks) tells fetch nothing for minutes, and the app, left
      // waiting, would retry the action itself, with a new key.
      const abort = new AbortController();
      const timeout = this.#retry.timeout;
      const timer = timeout > 0 ? setTimeout(() => abort.abort(new Error(`no answer within ${timeout} ms`)), timeout) : 0;
      init.signal = abort.signal;
      let res;
      let text = '';
      try {
        try {
          res = await this.#fetch(this.#baseURL + path, init);
        } catch (e) {
          await networkError(abort.signal.aborted && abort.signal.reason ? abort.signal.reason : e);
          continue;
        }
        try {
          text = await res.text();
        } catch (e) {
          if (res.ok) {
            await networkError(abort.signal.aborted && abort.signal.reason ? abort.signal.reason : e);
            continue;
          }
        }
      } finally {
        clearTimeout(timer);
      }
      let data = null;
      try {
        data = text ? JSON.parse(text) : null;
      } catch {
        data = null;
      }
      if (res.ok) {
        if (res.status === 204) return {};
        if (data && typeof data === 'object') return data;
        await networkError(new Error(`unreadable ${res.status} answer`));
        continue;
      }
      const retryAfter = res.headers.get('Retry-After') ? Number(res.headers.get('Retry-After')) : undefined;
      if (TRANSIENT.has(res.status) && attempt + 1 < this.#retry.attempts) {
        await sleep(this.#delay(attempt, retryAfter));
        continue;
      }
      if (res.status === 502 || res.status === 504) {
        // The last attempt got a proxy's 502 or 504: still no answer of
        // the server's, which may have done it (an earlier attempt, say,
        // just before it went down). Thrown as http_502 the app would take
        // it for a refusal and act again under a new key: network_error
        // says "may have been done", as after any unanswered attempt.
        await networkError(new Error(`a proxy's ${res.status} (${res.statusText || 'no answer from the server'})`));
        continue; // not reached: it was the last attempt
      }
      if (res.status === 401 && !renewed && this.#tokenProvider) {
        renewed = true;
        await this.#refreshToken();
        attempt--; // not a failure of the server's
        continue;
      }
      const p = data && typeof data === 'object' ? data : {};
      throw new CallsigError({status: res.status, code: p.code || `http_${res.status}`, detail: p.detail || text.slice(0, 200),
        title: p.title || res.statusText, errors: p.errors, retryAfter});
    }
  }

  #delay(attempt, retryAfter) {
    const {baseDelay, maxDelay} = this.#retry;
    if (Number.isFinite(retryAfter) && retryAfter >= 0) return Math.min(maxDelay, retryAfter * 1000);
    const d = Math.min(maxDelay, baseDelay * 2 ** attempt);
    return d / 2 + Math.random() * (d / 2); // jitter: retries of many clients spread out
  }

  #post(callID, action, body, config) {
    return this.#request('POST', `/calls/${encodeURIComponent(callID)}/${action}`, body, config?.idempotencyKey);
  }

  // ---- the ZIM call-invitation API --------------------------------------------

  /** Starts a call (POST /calls). config: mode, timeout, extendedData, pushConfig, enableNotReceivedCheck, busyPolicy, idempotencyKey (see CallsigError.idempotencyKey). */
  callInvite(invitees, config = {}) {
    return this.#request('POST', '/calls', {invitees,
      ...pick(config, ['mode', 'timeout', 'extendedData', 'pushConfig', 'enableNotReceivedCheck', 'busyPolicy'])}, config?.idempotencyKey);
  }

  /** Cancels invitations the user sent (empty invitees: all pending ones). config: extendedData, pushConfig, idempotencyKey (see CallsigError.idempotencyKey). */
  callCancel(invitees, callID, config = {}) {
    return this.#post(callID, 'cancel', {invitees: invitees || [], ...pick(config, ['extendedData', 'pushConfig'])}, config);
  }

  /** Accepts an invitation. config: extendedData, idempotencyKey (see CallsigError.idempotencyKey). */
  callAccept(callID, config = {}) {
    return this.#post(callID, 'accept', pick(config, ['extendedData']), config);
  }

  /** Rejects an invitation. config: extendedData, idempotencyKey (see CallsigError.idempotencyKey). */
  callReject(callID, config = {}) {
    return this.#post(callID, 'reject', pick(config, ['extendedData']), config);
  }

  /** Invites more users into an advanced call. config: pushConfig, busyPolicy, idempotencyKey (see CallsigError.idempotencyKey). */
  callingInvite(invitees, callID, config = {}) {
    return this.#post(callID, 'invite', {invitees, ...pick(config, ['pushConfig', 'busyPolicy'])}, config);
  }

  /** Joins an advanced call. config: extendedData, idempotencyKey (see CallsigError.idempotencyKey). */
  callJoin(callID, config = {}) {
    return this.#post(callID, 'join', pick(config, ['extendedData']), config);
  }

  /** Leaves an advanced call. config: extendedData, pushConfig, idempotencyKey (see CallsigError.idempotencyKey). */
  callQuit(callID, config = {}) {
    return this.#post(callID, 'quit', pick(config, ['extendedData', 'pushConfig']), config);
  }

  /** Ends an advanced call for everyone. config: extendedData, pushConfig, idempotencyKey (see CallsigError.idempotencyKey). */
  callEnd(callID, config = {}) {
    return this.#post(callID, 'end', pick(config, ['extendedData', 'pushConfig']), config);
  }

  /** The user's calls, newest first. config: count (default 20), nextFlag (0 = from the newest). */
  queryCallInvitationList(config = {}) {
    config ??= {};
    const q = new URLSearchParams();
    if (config.count !== undefined) q.set('count', String(config.count));
    if (config.nextFlag) q.set('nextFlag', String(config.nextFlag));
    const qs = q.toString();
    return this.#request('GET', qs ? `/calls?${qs}` : '/calls');
  }

  /** One call as it stands (GET /calls/{callID}); not in ZIM. */
  queryCall(callID) {
    return this.#request('GET', `/calls/${encodeURIComponent(callID)}`);
  }
}
