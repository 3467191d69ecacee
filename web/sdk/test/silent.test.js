// A connection that dies without a word (a phone that changed networks, a
// NAT that forgot it) leaves an EventSource open and waiting for ever: no
// error, no close. The client opens its streams with ?heartbeat=event and
// takes one that goes heartbeatTimeout with no event or heartbeat for
// dead: it reopens it from the last event, losing nothing.
import {test} from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import {advance, client, exactlyTheLog, is, token, URL, user} from './helpers.js';
import {forward, gate, streamProxy} from './proxy.js';

// passUntilSilent forwards the server's stream until the returned
// promise's silence() is called, then passes nothing more while keeping
// the connection open: the client's side of a half-open connection.
function passUntilSilent(req, res) {
  let silence;
  const silent = new Promise((r) => { silence = r; });
  const up = http.request(URL + req.url, {method: req.method, headers: req.headers});
  res.on('close', () => up.destroy());
  up.on('error', () => res.destroy());
  up.on('response', async (ur) => {
    res.writeHead(ur.statusCode, ur.headers);
    res.flushHeaders();
    ur.pipe(res);
    await silent;
    ur.unpipe(res);
    ur.resume(); // the server's writes go nowhere
  });
  req.pipe(up);
  return silence;
}

test('a stream gone silent (a half-open connection) is reopened after heartbeatTimeout, from the last event', async (t) => {
  let silence;
  const urls = [];
  const proxy = await streamProxy((n, req, res) => {
    urls.push(new globalThis.URL(req.url, 'http://proxy'));
    if (n > 0) return forward(req, res);
    silence = passUntilSilent(req, res);
  });
  t.after(() => proxy.close());
  const bobID = user('bob');
  const bob = client(bobID, {baseURL: proxy.url, heartbeatTimeout: 1500});
  t.after(() => bob.logout());
  const alice = client(user('alice'));
  await bob.login();
  const first = await proxy.stream(0);
  assert.equal(urls[0].searchParams.get('heartbeat'), 'event', 'heartbeats asked for as events');
  const c1 = await alice.callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callInvitationReceived', c1.callID), 'the first invitation, before the silence');

  silence(); // from here the first stream says nothing, and stays open
  const c2 = await alice.callInvite([bobID], {timeout: 600});
  const second = await proxy.stream(1, 10000);
  assert.equal(first.gone, true, 'the silent stream is closed');
  assert.equal(second.header || second.query, bob.lastEventID, 'the next stream resumes from the last event handed over');
  await bob.events.wait(is('callInvitationReceived', c2.callID), 'the invitation sent into the silence');
  const states = bob.events.of('connectionStateChanged').map((e) => `${e.data.state}${e.data.reason ? ':' + e.data.reason : ''}`);
  assert.deepEqual(states, ['connecting', 'connected', 'reconnecting:network', 'connected']);
  await exactlyTheLog(bob);
});

// withoutHeartbeatEvents forwards a stream as a node that sends no
// heartbeat events would serve it (an older one, in a rolling upgrade):
// without the client's ?heartbeat=event.
function withoutHeartbeatEvents(req, res) {
  const u = new globalThis.URL(req.url, 'http://proxy');
  u.searchParams.delete('heartbeat');
  req.url = u.pathname + u.search;
  forward(req, res);
}

// afterADrop logs bob in (heartbeatTimeout 1 s) through a proxy that
// passes his first stream until he is connected, then ends it, and answers
// the streams after it (the EventSource's own reconnection first) with
// next(n, req, res).
async function afterADrop(t, next) {
  const cut = gate();
  const proxy = await streamProxy((n, req, res) => (n === 0 ? forward(req, res, {cut}) : next(n, req, res)));
  t.after(() => proxy.close());
  const bobID = user('bob');
  const bob = client(bobID, {baseURL: proxy.url, heartbeatTimeout: 1000});
  t.after(() => bob.logout());
  await bob.login();
  cut.release();
  return {proxy, bob, bobID};
}

test('once heartbeats were seen, a connection to a node without them (a rolling upgrade) is reopened each heartbeatTimeout until an event shows it serves; nothing is lost', async (t) => {
  // The first stream reaches a node that sends them, and ends; the
  // EventSource comes back by itself, to a node that does not, and so
  // does every stream after it.
  let latest = 0;
  const {proxy, bob, bobID} = await afterADrop(t, (n, req, res) => {
    latest = n;
    withoutHeartbeatEvents(req, res);
  });
  const second = await proxy.stream(1);
  await proxy.stream(2, 10000);
  assert.equal(second.gone, true, 'the resumed stream that showed nothing within heartbeatTimeout is dropped');
  const alice = client(user('alice'));
  const c1 = await alice.callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callInvitationReceived', c1.callID), 'an invitation from the node without heartbeat events');
  await bob.events.wait(is('callUserStateChanged', c1.callID, bobID, 'received'), 'its received mark');
  const carrier = await proxy.stream(latest);
  // An event showed the stream served: it is kept, unwatched, for three
  // heartbeatTimeouts of a quiet, healthy stream.
  await new Promise((r) => setTimeout(r, 3000));
  assert.equal(carrier.gone, false, 'the stream that carried events is still open');
  await assert.rejects(proxy.stream(latest + 1, 10), /no stream/, 'no stream opened after it');
  assert.equal(bob.events.of('connectionStateChanged').at(-1).data.state, 'connected');
  await exactlyTheLog(bob);
});

test('a silent stream with a renewal still opening (held up by a proxy) drops both and comes back', async (t) => {
  let silence;
  const held = gate(); // never released: the renewal's head never comes
  const proxy = await streamProxy((n, req, res) => {
    if (n === 0) silence = passUntilSilent(req, res);
    else if (n === 1) forward(req, res, {head: held});
    else forward(req, res);
  });
  t.after(() => proxy.close());
  const bobID = user('bob');
  const bob = client(bobID, {baseURL: proxy.url, heartbeatTimeout: 1000});
  t.after(() => bob.logout());
  await bob.login();
  silence();
  bob.renewToken(await token(bobID, 7200));
  const renewal = await proxy.stream(1);
  const alice = client(user('alice'));
  const c1 = await alice.callInvite([bobID], {timeout: 600});
  await proxy.stream(2, 10000); // the client comes back
  assert.equal(renewal.gone, true, 'the renewal that never opened is dropped too');
  await bob.events.wait(is('callInvitationReceived', c1.callID), 'the invitation sent into the silence');
  await exactlyTheLog(bob);
});

test('a heartbeat does not commit a stream: one that ends right after its opening is not taken as served', async (t) => {
  // The first stream's node answers with the opening block and its first
  // heartbeat, then ends it (a stream the server could not go on with);
  // the EventSource comes back, to a stream that is served.
  const proxy = await streamProxy((n, req, res) => {
    if (n > 0) return forward(req, res);
    res.writeHead(200, {'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache'});
    res.write('retry: 10\n\n: ping\nevent: heartbeat\ndata: {}\n\n');
    setTimeout(() => res.end(), 50);
  });
  t.after(() => proxy.close());
  const bob = client(user('bob'), {baseURL: proxy.url});
  t.after(() => bob.logout());
  await bob.login();
  await proxy.stream(1);
  const states = bob.events.of('connectionStateChanged').map((e) => e.data.state);
  assert.deepEqual(states, ['connecting', 'reconnecting', 'connected'], 'connected only on the stream that is served');
});

test('a watched stream whose connection drops must have the next open within heartbeatTimeout: one held up is reopened', async (t) => {
  // The first connection ends; the EventSource's own reconnection reaches
  // a proxy that never sends its head.
  const held = gate(); // never released
  const {proxy, bob, bobID} = await afterADrop(t, (n, req, res) => forward(req, res, n === 1 ? {head: held} : {}));
  const stuck = await proxy.stream(1);
  await proxy.stream(2, 10000);
  assert.equal(stuck.gone, true, 'the held reconnection is dropped');
  const alice = client(user('alice'));
  const c1 = await alice.callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callInvitationReceived', c1.callID), 'an invitation on the stream that replaced it');
});

test('heartbeatTimeout must be a number setTimeout takes', () => {
  for (const bad of [Infinity, 2 ** 31, -1, NaN, null, '40000', 300]) {
    assert.throws(() => client(user('bob'), {heartbeatTimeout: bad}), TypeError, `heartbeatTimeout ${bad}`);
  }
  for (const good of [0, 1000, 40000, 2 ** 31 - 1]) client(user('bob'), {heartbeatTimeout: good});
});

test('a login() whose stream never opens (its head held up) is not left hanging: the next stream is tried after heartbeatTimeout', async (t) => {
  const held = gate(); // never released
  const proxy = await streamProxy((n, req, res) => (n === 0 ? forward(req, res, {head: held}) : forward(req, res)));
  t.after(() => proxy.close());
  const bob = client(user('bob'), {baseURL: proxy.url, heartbeatTimeout: 1000});
  t.after(() => bob.logout());
  let timer;
  const outcome = await Promise.race([bob.login().then(() => 'connected', (e) => `rejected ${e.code}`),
    new Promise((r) => { timer = setTimeout(() => r('still pending after 10 s'), 10000); })]);
  clearTimeout(timer);
  assert.equal(outcome, 'connected');
  assert.equal((await proxy.stream(0)).gone, true, 'the held stream is dropped');
});

test('a renewal whose body a proxy holds does not replace the working stream: it is dropped after heartbeatTimeout and made again', async (t) => {
  // The renewal's head comes (it opens) and its body never does: taken as
  // served on its opening alone, it would close the working stream and
  // leave the client deaf, watched from a first heartbeat that never comes.
  const held = gate(); // never released
  const proxy = await streamProxy((n, req, res) => forward(req, res, n === 1 ? {body: held} : {}));
  t.after(() => proxy.close());
  const bobID = user('bob');
  const bob = client(bobID, {baseURL: proxy.url, heartbeatTimeout: 1000});
  t.after(() => bob.logout());
  await bob.login();
  const first = await proxy.stream(0);
  const renewed = await token(bobID, 7200);
  bob.renewToken(renewed);
  const renewal = await proxy.stream(1);
  await new Promise((r) => setTimeout(r, 600)); // open, past the 400 ms a stream with no event needs to be taken as served
  const alice = client(user('alice'));
  const c1 = await alice.callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callInvitationReceived', c1.callID), 'an invitation while the renewal is held, on the working stream');
  const again = await proxy.stream(2, 10000);
  assert.equal(renewal.gone, true, 'the held renewal is dropped');
  assert.equal(again.token, renewed, 'the renewal is made again, with the renewed token');
  await first.closed; // replaced by the renewal that is served
  const c2 = await alice.callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callInvitationReceived', c2.callID), 'an invitation on the renewed stream');
  await bob.events.wait(is('callUserStateChanged', c2.callID, bobID, 'received'), 'its received mark, the last event of the log');
  const states = bob.events.of('connectionStateChanged').map((e) => e.data.state);
  assert.deepEqual(states, ['connecting', 'connected'], 'connected throughout');
  await exactlyTheLog(bob);
});

// expiringProxy forwards bob's streams, the first one's token as the
// first, and refuses that token (401) on any later stream: past its exp,
// as the server's fake clock has it, its EventSource's return would be
// let in by a clock the proxy does not move. hold(n) gives the nth
// stream's forward options (a held head or body).
async function expiringProxy(t, hold) {
  let first = '';
  const proxy = await streamProxy((n, req, res) => {
    const tok = new globalThis.URL(req.url, 'http://p').searchParams.get('access_token');
    if (n === 0) first = tok;
    else if (tok === first) {
      res.writeHead(401, {'Content-Type': 'application/problem+json'});
      res.end('{}');
      return;
    }
    forward(req, res, hold(n));
  });
  t.after(() => proxy.close());
  return proxy;
}

// renewingWithTokenAboutToExpire logs bob in through expiringProxy(t,
// hold) with a token 40 s from its exp and a provider of long ones, and
// moves the server's clock to its tokenWillExpire (30 s left): the
// renewal is the proxy's stream 1. The old stream ends when the clock is
// moved 30 s more (exp).
async function renewingWithTokenAboutToExpire(t, hold, heartbeatTimeout) {
  const proxy = await expiringProxy(t, hold);
  const bobID = user('bob');
  let provided = 0;
  const bob = client(bobID, {baseURL: proxy.url, heartbeatTimeout,
    tokenProvider: () => token(bobID, ++provided === 1 ? 40 : 3600)});
  t.after(() => bob.logout());
  await bob.login();
  const first = await proxy.stream(0);
  await advance(10_000);
  const renewal = await proxy.stream(1);
  return {proxy, bob, bobID, first, renewal};
}

for (const part of ['body', 'head']) {
  test(`a renewal whose ${part} is held, left alone when the stream it was to replace ends, is given up at once: the client comes back, not deaf while connected`, async (t) => {
    // heartbeatTimeout 8 s stands for the default 40 s against the 30 s
    // warning: the old stream ends before the renewal's proof (or its
    // open deadline) is due.
    const {bob, bobID, first, renewal} = await renewingWithTokenAboutToExpire(t, (n) => (n === 1 ? {[part]: gate()} : {}), 8000);
    await new Promise((r) => setTimeout(r, 600));
    const t0 = Date.now();
    await advance(30_000); // the first token's exp: the server ends the old stream
    await first.closed;
    const alice = client(user('alice'));
    const c1 = await alice.callInvite([bobID], {timeout: 600});
    await bob.events.wait(is('callInvitationReceived', c1.callID), 'the invitation', 15000);
    const took = Date.now() - t0;
    assert.ok(took < 5000, `the invitation came ${took} ms after the old stream ended (the held renewal was given up after 8 s)`);
    assert.equal(renewal.gone, true, 'the held renewal is dropped');
    const states = bob.events.of('connectionStateChanged').map((e) => e.data.state);
    assert.deepEqual(states, ['connecting', 'connected', 'reconnecting', 'connected']);
    await bob.events.wait(is('callUserStateChanged', c1.callID, bobID, 'received'), 'its received mark');
    await exactlyTheLog(bob);
  });
}

test('once heartbeats were seen, no connection whose body is held is taken as connected: each is dropped after heartbeatTimeout', async (t) => {
  // After the first stream, every stream's head passes and its body never does.
  const {proxy, bob, first} = await renewingWithTokenAboutToExpire(t, (n) => (n > 0 ? {body: gate()} : {}), 1500);
  await advance(30_000); // the old stream's exp
  await first.closed;
  const held = await proxy.stream(3, 15000); // two held streams after it, at least
  await new Promise((r) => setTimeout(r, 1000));
  assert.notEqual(bob.connectionState, 'connected', 'no stream has shown anything, yet the client says connected');
  await held.closed; // dropped in its turn
  assert.equal(bob.events.of('connectionStateChanged').filter((e) => e.data.state === 'connected').length, 1,
    'connected once, on the first stream only');
});

test('the working stream\'s connection drops while a held renewal waits for its proof: the client says so at once', async (t) => {
  const cut = gate();
  const proxy = await streamProxy((n, req, res) => forward(req, res, n === 0 ? {cut} : {body: gate()})); // every later body held
  t.after(() => proxy.close());
  const bobID = user('bob');
  const bob = client(bobID, {baseURL: proxy.url, heartbeatTimeout: 1500});
  t.after(() => bob.logout());
  await bob.login();
  bob.renewToken(await token(bobID, 7200));
  await proxy.stream(1);
  await new Promise((r) => setTimeout(r, 800));
  const t0 = Date.now();
  cut.release(); // the working stream's connection ends; its EventSource comes back, held too
  await proxy.stream(2);
  let left = -1;
  for (let i = 0; i < 100 && left < 0; i++) {
    if (bob.connectionState !== 'connected') left = Date.now() - t0;
    else await new Promise((r) => setTimeout(r, 20));
  }
  assert.ok(left >= 0 && left < 1000, `left connected ${left} ms after the cut (-1: not within 2 s), no stream delivering`);
});
