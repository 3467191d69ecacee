// What happens to an action (callInvite, callAccept, …) when its first
// attempt is not answered: the client must retry it itself with the same
// Idempotency-Key, the one way it runs once. An app left to retry it (a
// call screen's own timeout, the user tapping again) sends a new key, and
// the server runs it twice: two calls ringing.
import {test} from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import {CallsigClient} from '../callsig.js';
import {client, token, URL, user} from './helpers.js';

// within fails when p does not settle within ms.
function within(p, ms, what) {
  let timer;
  return Promise.race([p, new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not settled within ${ms} ms`)), ms);
  })]).finally(() => clearTimeout(timer));
}

// proxy forwards every request to the server and records it; the first
// POST /calls (every one with every) is passed to handle(req, res, body,
// up) instead, up sending it on to the server (and resolving with the
// server's status and body).
function proxy(handle, {every = false} = {}) {
  const seen = [];
  const sockets = new Set();
  let handled = false;
  const up = (req, body) => new Promise((resolve, reject) => {
    const r = http.request(URL + req.url, {method: req.method, headers: req.headers}, (ur) => {
      const back = [];
      ur.on('data', (c) => back.push(c));
      ur.on('end', () => resolve({status: ur.statusCode, headers: ur.headers, body: Buffer.concat(back)}));
    });
    r.on('error', reject);
    r.end(body);
  });
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const body = Buffer.concat(chunks);
      seen.push({method: req.method, url: req.url, key: req.headers['idempotency-key'], body: body.toString()});
      if ((every || !handled) && req.method === 'POST' && req.url === '/calls') {
        handled = true;
        return handle(req, res, body, () => up(req, body));
      }
      // Passed on as it comes: an event stream never ends.
      const r = http.request(URL + req.url, {method: req.method, headers: req.headers}, (ur) => {
        res.writeHead(ur.statusCode, ur.headers);
        res.flushHeaders();
        ur.pipe(res);
      });
      res.on('close', () => r.destroy());
      r.on('error', () => res.destroy());
      r.end(body);
    });
  });
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({
    seen, url: `http://127.0.0.1:${server.address().port}`,
    close: () => { for (const s of sockets) s.destroy(); server.close(); },
  })));
}

test('a callInvite the server did but never answered (a dead connection) is retried after the attempt timeout, with the same key: one call', async (t) => {
  let done;
  const committed = new Promise((r) => { done = r; });
  // The server gets the request and commits the call; its answer never
  // reaches the client, whose connection stays open and silent (a phone
  // that changed networks: nothing tells fetch the connection is dead).
  const p = await proxy(async (req, res, body, up) => { await up(); done(); });
  t.after(() => p.close());
  const aliceID = user('alice');
  const alice = client(aliceID, {baseURL: p.url, retry: {baseDelay: 10, timeout: 1000}});
  const invite = alice.callInvite([user('bob')], {timeout: 600});
  await committed;
  const res = await within(invite, 10000, 'callInvite');
  const posts = p.seen.filter((r) => r.method === 'POST');
  assert.equal(posts.length, 2, 'the first attempt and one retry');
  assert.equal(posts[1].key, posts[0].key, 'the retry carries the same key');
  const list = await client(aliceID).queryCallInvitationList();
  assert.deepEqual(list.callList.map((c) => c.callID), [res.callID], 'exactly one call');
});

test('a callInvite retried after a lost answer sends the body it was called with, though the app has reused its arrays since', async (t) => {
  const invitees = [user('bob')];
  // The server commits the call; its answer is lost with the connection.
  // Meanwhile the app clears the selection it passed (a call screen's
  // `selected.length = 0` once the call is placed).
  const p = await proxy(async (req, res, body, up) => {
    await up();
    invitees.length = 0;
    req.socket.destroy();
  });
  t.after(() => p.close());
  const aliceID = user('alice');
  const alice = client(aliceID, {baseURL: p.url, retry: {baseDelay: 10}});
  await alice.queryCallInvitationList(); // a token first: callInvite sends its first attempt at once
  const res = await within(alice.callInvite(invitees, {timeout: 600}), 10000, 'callInvite');
  const posts = p.seen.filter((r) => r.method === 'POST');
  assert.equal(posts.length, 2, 'the first attempt and one retry');
  assert.equal(posts[1].key, posts[0].key, 'the retry carries the same key');
  assert.equal(posts[1].body, posts[0].body, 'the retry carries the same body');
  const list = await client(aliceID).queryCallInvitationList();
  assert.deepEqual(list.callList.map((c) => c.callID), [res.callID], 'exactly one call');
});

test('an action retried after logout() is not sent with the next user\'s token: it rejects logged_out', async (t) => {
  // The first POST /calls never reaches the server: held, then its
  // connection is cut, once the app has switched users.
  let cut;
  const held = new Promise((r) => { cut = r; });
  let reached;
  const arrived = new Promise((r) => { reached = r; });
  const p = await proxy(async (req) => { reached(); await held; req.socket.destroy(); });
  t.after(() => p.close());
  const aliceID = user('alice');
  const carolID = user('carol');
  let current = aliceID; // the app's signed-in user, which its tokenProvider asks its backend for
  const c = client(aliceID, {baseURL: p.url, retry: {baseDelay: 10}, tokenProvider: () => token(current)});
  await c.login();
  t.after(() => c.logout());
  const invite = c.callInvite([user('bob')], {timeout: 600, extendedData: 'from alice'});
  await arrived;
  // The app switches accounts on the same client, ZIM's way: logout, then login as carol.
  c.logout();
  current = carolID;
  await c.renewToken(await token(carolID));
  await c.login();
  assert.equal(c.userID, carolID);
  cut();
  const outcome = await within(invite.then((r) => `resolved: a call by ${r.call.caller}`, (e) => e.code), 10000, 'callInvite');
  assert.equal(outcome, 'logged_out');
  const carols = await client(carolID).queryCallInvitationList();
  assert.deepEqual(carols.callList.map((x) => x.extendedData), [], 'alice\'s call was placed as carol');
});

test('a callInvite the server did but a reverse proxy answered 504 (upstream timed out) is retried with the same key: one call', async (t) => {
  // nginx in front of the server (docs/events.md, "Running behind a
  // proxy") gave up waiting for the answer: the call exists, the client
  // gets nginx's 504 page.
  const p = await proxy(async (req, res, body, up) => {
    await up();
    res.writeHead(504, {'Content-Type': 'text/html'});
    res.end('<html><head><title>504 Gateway Time-out</title></head><body><center><h1>504 Gateway Time-out</h1></center><hr><center>nginx</center></body></html>\n');
  });
  t.after(() => p.close());
  const aliceID = user('alice');
  const alice = client(aliceID, {baseURL: p.url, retry: {baseDelay: 10}});
  const outcome = await within(alice.callInvite([user('bob')], {timeout: 600}).then((r) => r, (e) => `rejected: ${e.code}`), 10000, 'callInvite');
  assert.equal(typeof outcome, 'object', String(outcome));
  const posts = p.seen.filter((r) => r.method === 'POST');
  assert.equal(posts.length, 2, 'the first attempt and one retry');
  assert.equal(posts[1].key, posts[0].key, 'the retry carries the same key');
  const list = await client(aliceID).queryCallInvitationList();
  assert.deepEqual(list.callList.map((c) => c.callID), [outcome.callID], 'exactly one call');
});

test('a callInvite a proxy answers 502 until the retries run out (the server restarting after it did it) rejects network_error, not http_502', async (t) => {
  // The server commits the call and goes down before answering; nginx
  // answers 502 to that attempt and to every retry while it restarts. The
  // call may exist: the app must not be told a plain HTTP failure, which
  // it would take as "not done" and place the call again under a new key.
  let first = true;
  const p = await proxy(async (req, res, body, up) => {
    if (first) {
      first = false;
      await up();
    }
    res.writeHead(502, {'Content-Type': 'text/html'});
    res.end('<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n');
  }, {every: true});
  t.after(() => p.close());
  const aliceID = user('alice');
  const alice = client(aliceID, {baseURL: p.url, retry: {attempts: 3, baseDelay: 10}});
  const err = await within(alice.callInvite([user('bob')], {timeout: 600}).then(() => null, (e) => e), 10000, 'callInvite');
  assert.equal(err && err.code, 'network_error');
  const posts = p.seen.filter((r) => r.method === 'POST');
  assert.equal(posts.length, 3, 'every attempt');
  assert.equal(err.idempotencyKey, posts[0].key, 'the error names the key its attempts carried');
  const list = await client(aliceID).queryCallInvitationList();
  assert.equal(list.callList.length, 1, 'the call the first attempt placed');

  // The app tries again once the server is back (straight to it here),
  // with the failed action's key: the first answer, not a second call.
  const again = client(aliceID, {retry: {attempts: 1}});
  const res = await within(again.callInvite(JSON.parse(posts[0].body).invitees, {timeout: 600, idempotencyKey: err.idempotencyKey}), 10000, 'the callInvite again');
  assert.equal(res.callID, list.callList[0].callID, 'the call the first attempt placed, replayed');
  const after = await client(aliceID).queryCallInvitationList();
  assert.deepEqual(after.callList.map((c) => c.callID), [res.callID], 'still one call');
});

test('an action given an idempotencyKey sends it on every attempt; an unusable one is refused before anything is sent', async (t) => {
  const p = await proxy(async (req, res) => { req.socket.destroy(); });
  t.after(() => p.close());
  const aliceID = user('alice');
  const alice = client(aliceID, {baseURL: p.url, retry: {baseDelay: 10}});
  await alice.queryCallInvitationList(); // a token first
  const res = await within(alice.callInvite([user('bob')], {timeout: 600, idempotencyKey: 'app-key-1'}), 10000, 'callInvite');
  const posts = p.seen.filter((r) => r.method === 'POST');
  assert.deepEqual(posts.map((r) => r.key), ['app-key-1', 'app-key-1'], 'the first attempt (cut) and its retry');
  // The server rejects the same key with another body; the error names it.
  const conflict = await alice.callInvite([user('carol')], {timeout: 600, idempotencyKey: 'app-key-1'}).then(() => null, (e) => e);
  assert.deepEqual([conflict && conflict.code, conflict && conflict.idempotencyKey], ['idempotency_conflict', 'app-key-1']);
  const before = p.seen.length;
  for (const bad of ['', 'k'.repeat(256), 42, '呼叫-1', 'a\nb', ' padded', 'padded ']) {
    await assert.rejects(alice.callAccept(res.callID, {idempotencyKey: bad}), TypeError, `idempotencyKey ${JSON.stringify(bad)}`);
  }
  assert.equal(p.seen.length, before, 'nothing sent for an unusable key');
  // A config of null is as none (pick() always took it): an answer, not
  // a TypeError thrown at the call.
  const placed = await alice.callInvite([user('bob')], null);
  assert.ok(placed.callID);
  const outcome = await alice.callCancel([], placed.callID, null).then(() => 'cancelled', (e) => e.code);
  assert.equal(outcome, 'cancelled');
  assert.ok((await alice.queryCallInvitationList(null)).callList.length > 0);
  // A space inside a key is a header's: sent as is.
  const spaced = await alice.callInvite([user('bob')], {timeout: 600, idempotencyKey: 'order 12'});
  assert.equal(p.seen.at(-1).key, 'order 12');
  assert.ok(spaced.callID);
  const again = await alice.callInvite([user('bob')], {timeout: 600, idempotencyKey: 'order 12'}).then((r) => r.callID, (e) => e.code);
  assert.equal(again, 'idempotency_conflict', 'the server took the key as sent: another body under it');
});

test('retry.timeout given as undefined keeps the default attempt timeout (15 s), which only 0 switches off', async (t) => {
  // No server: a fetch that never answers, until its attempt is aborted.
  t.mock.timers.enable({apis: ['setTimeout']});
  const signals = [];
  const fetch = (url, init) => new Promise((_, reject) => {
    signals.push(init.signal);
    init.signal.addEventListener('abort', () => reject(init.signal.reason));
  });
  const mk = (timeout) => new CallsigClient({baseURL: 'http://127.0.0.1:9', token: 'x', fetch, retry: {attempts: 1, timeout}});
  const outcome = mk(undefined).callAccept('c1').then(() => null, (e) => e);
  await new Promise((r) => setImmediate(r));
  assert.equal(signals.length, 1, 'the attempt is out');
  t.mock.timers.tick(14999);
  assert.equal(signals[0].aborted, false);
  t.mock.timers.tick(1);
  const err = await outcome;
  assert.deepEqual([err && err.code, err && err.detail], ['network_error', 'the server did not answer: no answer within 15000 ms']);

  mk(0).callAccept('c2').then(() => assert.fail('answered'), () => assert.fail('gave up'));
  await new Promise((r) => setImmediate(r));
  t.mock.timers.tick(3_600_000);
  assert.equal(signals.length, 2);
  assert.equal(signals[1].aborted, false, 'timeout 0: an attempt waits as long as it takes');
});

test('a token tokenProvider gives for the user signed in before logout() is not taken after it: the next user signs in as themself', async (t) => {
  // The app switches accounts while the client is still asking its
  // backend for the first user's token (a slow answer, for the first
  // request's attempt): logout, then login with the provider now giving
  // the next user's tokens.
  const aliceID = user('alice');
  const carolID = user('carol');
  let current = aliceID;
  let release;
  const held = new Promise((r) => { release = r; });
  let asked;
  const askedForAlice = new Promise((r) => { asked = r; });
  const c = client(aliceID, {retry: {baseDelay: 10}, tokenProvider: async () => {
    const u = current;
    if (u === aliceID) {
      asked();
      await held;
    }
    return token(u);
  }});
  const first = c.queryCallInvitationList().then(() => 'resolved', (e) => e.code);
  await askedForAlice;
  c.logout();
  current = carolID;
  const login = c.login();
  t.after(() => c.logout());
  release(); // alice's token comes, after the logout
  await within(login, 10000, 'carol\'s login');
  assert.equal(await within(first, 10000, 'alice\'s request'), 'logged_out');
  assert.equal(c.userID, carolID, 'the signed-in user');
  const placed = await within(c.callInvite([user('bob')], {timeout: 600}), 10000, 'carol\'s callInvite');
  assert.equal(placed.call.caller, carolID, 'the caller of carol\'s call');
});
