// A refusal that comes late: the server writes a refused stream's one
// block with its headers (sse.Refuse), but a proxy may pass the headers on
// and hold the body back past COMMIT_DELAY. A stream opened without a
// position (a login's) is not served before it shows its opening, so the
// late refusal is as any other; a renewal, from a position, on a server
// that sends no heartbeat event (this one), is taken as served before the
// refusal arrives. The client must then still do what a refusal asks:
// tell the app (reconnecting), come back no sooner than the retry and no
// faster than that (no loop), from the last event handed over, and hand
// every event over once. Run against a tiny server of its own (the timing
// is the proxy's), not the server under test:
// `node --test test/laterefused.test.js` runs it alone.
import {test} from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import {EventSource} from 'eventsource';
import {CallsigClient} from '../callsig.js';

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
const jwt = (sub, exp) => `${b64({alg: 'HS256', typ: 'JWT'})}.${b64({sub, exp})}.c2ln`;
const HOLD = 700; // the proxy holds a refused stream's body back this long: past COMMIT_DELAY
const RETRY = 1000;

// fakeServer answers the nth GET /events with plan(n, res, lastEventID).
async function fakeServer(plan) {
  const streams = [];
  const server = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://x');
    if (u.pathname !== '/events') return res.writeHead(404).end();
    const last = req.headers['last-event-id'] ?? u.searchParams.get('lastEventID');
    const s = {n: streams.length, at: Date.now(), last: last === undefined || last === null ? null : Number(last), closed: false};
    res.on('close', () => { s.closed = true; });
    streams.push(s);
    res.writeHead(200, {'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache'});
    res.flushHeaders();
    plan(s, res);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {streams, url: `http://127.0.0.1:${server.address().port}`,
    close: () => { server.closeAllConnections(); server.close(); }};
}

const refuseLate = (s, res) => setTimeout(() => {
  s.refusedAt = Date.now();
  res.end(`retry: ${RETRY}\nevent: refused\ndata: {"retry":${RETRY},"reason":"rate limit exceeded; reconnect later"}\n\n`);
}, HOLD);
const event = (res, id, type, callID) => res.write(`id: ${id}\nevent: ${type}\ndata: ${JSON.stringify({callID})}\n\n`);

function record(c) {
  const list = [];
  for (const name of ['callInvitationReceived', 'connectionStateChanged', 'reset', 'error']) c.on(name, (_, data) => list.push({name, data}));
  return list;
}

const until = async (what, cond, ms = 8000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

test('a login stream refused past the commit delay: login() waits for the stream after the retry, never shown connected before', async (t) => {
  const srv = await fakeServer((s, res) => {
    if (s.n === 0) return refuseLate(s, res);
    event(res, 5, 'synced', undefined);
    event(res, 6, 'callInvitationReceived', 'c6');
  });
  t.after(() => srv.close());
  const c = new CallsigClient({baseURL: srv.url, EventSource, token: jwt('bob', 4102444800)});
  const got = record(c);
  t.after(() => c.logout());
  await c.login(); // resolves on the stream served: the refused one showed nothing before its refusal
  const loggedInAt = Date.now();
  await until('the invitation on the stream served', () => got.some((e) => e.name === 'callInvitationReceived'));
  const [refused, again] = srv.streams;
  assert.ok(again, 'login() resolved before the stream after the refusal was asked for');
  assert.ok(again.at - refused.refusedAt >= RETRY - 50, `came back ${again.at - refused.refusedAt} ms after the refusal, before its retry`);
  assert.ok(loggedInAt >= again.at, 'login() resolved before the stream served');
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(srv.streams.length, 2, 'streams asked for after the one served (a loop)');
  assert.deepEqual(got.filter((e) => e.name === 'connectionStateChanged').map((e) => e.data.state),
    ['connecting', 'connected'], 'shown connected on the refused stream');
  assert.equal(got.filter((e) => e.name === 'callInvitationReceived').length, 1);
});

test('a renewal refused past the commit delay: nothing is lost, each event once, and the renewal comes back after the retry', async (t) => {
  let working;
  const srv = await fakeServer((s, res) => {
    if (s.n === 0) {
      working = res;
      event(res, 5, 'synced', undefined);
      return;
    }
    if (s.n === 1) return refuseLate(s, res);
    // The renewal again: what the log holds after its position.
    for (const id of [6, 7]) if (id > s.last) event(res, id, 'callInvitationReceived', `c${id}`);
  });
  t.after(() => srv.close());
  const c = new CallsigClient({baseURL: srv.url, EventSource, token: jwt('bob', 4102444800)});
  const got = record(c);
  t.after(() => c.logout());
  await c.login();
  await until('the working stream synced', () => c.lastEventID === '5');
  await c.renewToken(jwt('bob', 4102444900));
  await until('the renewal asked for', () => srv.streams.length === 2);
  event(working, 6, 'callInvitationReceived', 'c6'); // before the commit
  await new Promise((r) => setTimeout(r, 550));
  if (!srv.streams[0].closed) event(working, 7, 'callInvitationReceived', 'c7'); // after the commit, before the refusal
  await until('the renewal again', () => srv.streams.length === 3);
  const [, refused, again] = srv.streams;
  assert.ok(again.at - refused.refusedAt >= RETRY - 50, `came back ${again.at - refused.refusedAt} ms after the refusal, before its retry`);
  await until('every event', () => got.filter((e) => e.name === 'callInvitationReceived').length >= 2);
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(got.filter((e) => e.name === 'callInvitationReceived').map((e) => e.data.callID), ['c6', 'c7'], 'each event once, in order');
  assert.equal(again.last, 6, 'the renewal came back from the last event handed over');
  t.diagnostic(`working stream closed at the late commit: ${srv.streams[0].closed}; states: ${got.filter((e) => e.name === 'connectionStateChanged').map((e) => e.data.state)}`);
});
