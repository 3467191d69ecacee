// A stream the server will not serve now (its connection cap, a user's
// request rate, too many failed logins from an address) is answered with
// an empty 200 stream whose one block is the event `refused` and which then
// ends (sse.Refuse): EventSource fires onopen for it as for any stream. The
// client must not take it for a served one. These tests run against the
// second server, which allows each user a request every 2 s (LIMITED_URL):
// a user's requests are spent first, so the stream asked for next is
// refused with a retry of 1–2 s.
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {client, is, LIMITED_URL, token, user} from './helpers.js';
import {forward, gate, streamProxy} from './proxy.js';

// spend makes requests as userID on the limited server until one is
// refused (429): the user's next request, a stream say, is refused too.
async function spend(userID) {
  const headers = {Authorization: `Bearer ${await token(userID)}`};
  for (let i = 0; i < 10; i++) {
    const res = await fetch(`${LIMITED_URL}/calls`, {headers});
    await res.arrayBuffer();
    if (res.status === 429) return;
  }
  throw new Error(`${userID}'s requests are not limited on LIMITED_URL`);
}

const states = (c) => c.events.of('connectionStateChanged').map((e) => e.data.state);

test('login() on a refused stream is neither resolved nor connected until a stream is served', async (t) => {
  const bobID = user('bob');
  const bob = client(bobID, {baseURL: LIMITED_URL});
  t.after(() => bob.logout());
  await spend(bobID);
  const asked = Date.now();
  await bob.login();
  const waited = Date.now() - asked;
  // The refusal's retry is a whole number of seconds, at least 1.
  assert.ok(waited >= 1000, `login() resolved ${waited} ms after it was called: on the refused stream, not after its retry`);
  assert.deepEqual(states(bob), ['connecting', 'connected'], 'connected on the refused stream');
  const c1 = await client(user('alice'), {baseURL: LIMITED_URL}).callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callInvitationReceived', c1.callID), 'an invitation on the stream served');
});

// The login's token has 25 s left: its stream is warned at once and
// renewed. Before the renewal's token is handed over, bob's requests are
// spent, so the renewal's stream is refused. The working stream must stay
// and deliver; the renewal comes back after the refusal's retry, from the
// last event handed over, and only then closes the working stream.
test('a refused renewal leaves the working stream on: its events arrive once, and the renewal comes back after the retry', async (t) => {
  const bobID = user('bob');
  const proxy = await streamProxy((n, req, res) => forward(req, res, {to: LIMITED_URL}), LIMITED_URL);
  t.after(() => proxy.close());
  let provided = 0;
  const bob = client(bobID, {baseURL: proxy.url, tokenProvider: async () => {
    if (++provided === 1) return token(bobID, 25);
    if (provided === 2) await spend(bobID);
    return token(bobID);
  }});
  const alice = client(user('alice'), {baseURL: LIMITED_URL});
  await bob.login();
  t.after(() => bob.logout());
  const working = await proxy.stream(0);
  const renewal = await proxy.stream(1);
  assert.notEqual(renewal.token, working.token, 'the renewal carries the new token');
  await renewal.closed; // refused: the server wrote its one block and ended it
  const refusedAt = Date.now();

  const c1 = await alice.callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callUserStateChanged', c1.callID, bobID, 'received'), 'the invitation, on the working stream');
  assert.ok(!working.gone, 'the working stream was closed for a renewal the server refused');

  const again = await proxy.stream(2, 15000);
  assert.ok(again.at - refusedAt >= 900, `the renewal came back ${again.at - refusedAt} ms after its refusal, before its retry`);
  assert.equal(again.token, renewal.token);
  assert.equal(again.query, bob.lastEventID, 'from the last event handed over');
  await working.closed; // the renewal is served
  const c2 = await alice.callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callUserStateChanged', c2.callID, bobID, 'received'), 'an invitation on the renewed stream');
  for (const c of [c1, c2]) assert.equal(bob.events.list.filter(is('callInvitationReceived', c.callID)).length, 1, 'handed over once');
  assert.deepEqual(states(bob), ['connecting', 'connected'], 'no gap seen');
});

// A stream whose body a proxy holds shows nothing, not even what every
// stream opened without a position gets at once (its opening block, up to
// synced): taken as served on its opening alone, it would show the app
// connected while deaf, watched from a first heartbeat that never comes.
// It must show its opening first; one that does not within
// heartbeatTimeout is given up and asked for again. A resumed stream with
// nothing to replay shows its heartbeat, and is served.
test('a stream whose body is held is not connected: it is asked for again; a resumed stream with no event is connected', async (t) => {
  const held = gate(); // the login stream's body: never let through
  const cut = gate(); // the next one's connection ends; its EventSource comes back by itself
  const proxy = await streamProxy((n, req, res) => forward(req, res, n === 0 ? {body: held} : n === 1 ? {cut} : {}));
  t.after(() => proxy.close());
  const bobID = user('bob');
  const bob = client(bobID, {baseURL: proxy.url, heartbeatTimeout: 2000});
  t.after(() => bob.logout());
  let loggedIn = false;
  const login = bob.login().then(() => { loggedIn = true; });
  const first = await proxy.stream(0);
  const again = await proxy.stream(1, 8000); // after heartbeatTimeout and a backoff
  assert.ok(again.at - first.at >= 2000 - 50, `asked for again ${again.at - first.at} ms after the held one`);
  assert.equal(loggedIn, false, 'login() resolved on the held stream');
  assert.deepEqual(states(bob), ['connecting', 'reconnecting'], 'shown connected on the held stream');
  await first.closed;
  await login;
  assert.equal(bob.connectionState, 'connected');

  const c1 = await client(user('alice')).callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callUserStateChanged', c1.callID, bobID, 'received'), 'the invitation');
  cut.release();
  const back = await proxy.stream(2);
  assert.equal(back.header, bob.lastEventID, 'resumed from the last event');
  await bob.events.wait((e) => e.name === 'connectionStateChanged' && e.data.state === 'connected' &&
    bob.events.of('connectionStateChanged').indexOf(e) > 2, 'connected again on the resumed stream');
  assert.deepEqual(states(bob), ['connecting', 'reconnecting', 'connected', 'reconnecting', 'connected']);
});

test('logout while the login\'s stream waits to show its opening: login() rejects, and the next login() is not disturbed', async (t) => {
  const held = gate(); // the first stream's body: never let through
  const proxy = await streamProxy((n, req, res) => forward(req, res, n === 0 ? {body: held} : {}));
  t.after(() => proxy.close());
  const bobID = user('bob');
  const bob = client(bobID, {baseURL: proxy.url, heartbeatTimeout: 1000});
  t.after(() => bob.logout());
  const first = bob.login().then(() => 'resolved', (e) => e.code);
  const held0 = await proxy.stream(0);
  const out = Date.now();
  bob.logout();
  assert.equal(await first, 'logged_out');
  await held0.closed;
  await bob.login();
  // Past the first stream's heartbeatTimeout: its proof's timer, had it
  // outlived the logout, would have dropped the new stream by now.
  await new Promise((r) => setTimeout(r, Math.max(0, out + 1500 - Date.now())));
  const c1 = await client(user('alice')).callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callInvitationReceived', c1.callID), 'an invitation on the second login\'s stream');
  assert.equal(proxy.streams.length, 2, 'streams asked for');
  assert.deepEqual(states(bob), ['connecting', 'disconnected', 'connecting', 'connected']);
});
