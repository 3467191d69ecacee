// Defects of the client's session handling found in review, each reproduced
// against the real server: concurrent login() calls (B), renewToken while
// login's stream connects (C), logout's order of disconnected and the
// pending login's rejection (G), async handlers that throw (E) and a
// failing tokenProvider (D), and a renewal right after login that resumed
// from before the opening's end (A).
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {EventSource} from 'eventsource';
import {CallsigError} from '../callsig.js';
import {client, is, token, user} from './helpers.js';

// within fails when p does not settle within ms.
function within(p, ms, what) {
  let timer;
  return Promise.race([p, new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not settled within ${ms} ms`)), ms);
  })]).finally(() => clearTimeout(timer));
}

const connected = (e) => e.name === 'connectionStateChanged' && e.data.state === 'connected';

test('B concurrent login() calls share one outcome: both reject stream_refused with a refused token', async () => {
  const c = client(user('bob'), {token: 'not-a-jwt', tokenProvider: undefined});
  const results = await within(Promise.allSettled([c.login(), c.login()]), 5000, 'logins');
  assert.deepEqual(results.map((r) => [r.status, r.reason?.code]),
    [['rejected', 'stream_refused'], ['rejected', 'stream_refused']]);
  assert.equal(c.connectionState, 'disconnected');
});

test('B a second login() while the first connects resolves only once the stream is open', async (t) => {
  const c = client(user('bob'), {token: await token(user('bob')), tokenProvider: undefined});
  t.after(() => c.logout());
  const first = c.login();
  await c.login();
  assert.equal(c.connectionState, 'connected', 'the second login() resolved before the stream opened');
  await first;
});

test('C renewToken while login\'s stream is still connecting: login resolves on the renewed stream', async (t) => {
  const bobID = user('bob');
  // The first stream (login's) is held until the client is connected, so
  // the renewal's stream opens first and closes it.
  let release;
  const gate = new Promise((r) => { release = r; });
  t.after(release);
  let n = 0;
  class HeldFirst extends EventSource {
    constructor(url) {
      const held = ++n === 1;
      super(url, {fetch: async (u, init) => { if (held) await gate; return fetch(u, init); }});
    }
  }
  const bob = client(bobID, {token: await token(bobID, 3600), tokenProvider: undefined, EventSource: HeldFirst});
  t.after(() => bob.logout());
  const p = bob.login();
  await bob.renewToken(await token(bobID, 7200)); // expires later: reopens the stream
  await bob.events.wait(connected, 'connected');
  release();
  await within(p, 1000, 'login'); // at once: nothing to wait for while login's stream is not open
  assert.equal(n, 2);
  const alice = client(user('alice'));
  const c1 = await alice.callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callInvitationReceived', c1.callID), 'an invitation on the renewed stream');
});

test('G logout rejects the pending login before disconnected: a login() from that handler connects', async (t) => {
  const bobID = user('bob');
  const bob = client(bobID, {token: await token(bobID), tokenProvider: undefined});
  t.after(() => bob.logout());
  const first = bob.login();
  let second;
  bob.on('connectionStateChanged', (c, {state}) => {
    if (state === 'disconnected' && !second) second = c.login();
  });
  bob.logout();
  assert.ok(second, 'no disconnected on logout');
  await assert.rejects(within(first, 5000, 'the login before logout'), (e) => e.code === 'logged_out');
  await within(second, 5000, 'the login from the handler');
  assert.equal(bob.connectionState, 'connected');
});

test('E an async handler that throws is reported as an error event, not an unhandled rejection', async (t) => {
  const unhandled = [];
  const onUnhandled = (e) => unhandled.push(e);
  process.on('unhandledRejection', onUnhandled);
  t.after(() => process.off('unhandledRejection', onUnhandled));
  const bob = client(user('bob'));
  t.after(() => bob.logout());
  const boom = new Error('boom');
  bob.on('connectionStateChanged', async (c, {state}) => {
    await null;
    if (state === 'connected') throw boom;
  });
  await bob.login();
  const e = await bob.events.wait((e) => e.name === 'error', 'an error event', 3000);
  assert.equal(e.data.error, boom);
  assert.equal(e.data.event, 'connectionStateChanged');

  // An async error handler that throws goes to console.error, as a sync one.
  const logged = t.mock.method(console, 'error', () => {});
  const oops = new Error('oops');
  let reported;
  const seen = new Promise((r) => { reported = r; });
  logged.mock.mockImplementation((...args) => { if (args.includes(oops)) reported(); });
  bob.on('error', async () => { throw oops; });
  bob.on('connectionStateChanged', () => { throw new Error('sync'); });
  bob.logout();
  await within(seen, 3000, 'console.error of the async error handler');
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(unhandled, []);
});

test('D a failing tokenProvider is thrown as CallsigError token_provider_failed, with the cause', async () => {
  const cause = new Error('auth backend down');
  const c = client(user('bob'), {tokenProvider: async () => { throw cause; }});
  const check = (e) => e instanceof CallsigError && e.code === 'token_provider_failed' && e.cause === cause &&
    e.detail.includes('auth backend down');
  await assert.rejects(c.login(), check);
  assert.equal(c.connectionState, 'disconnected');
  await assert.rejects(c.queryCallInvitationList(), check);
  const sync = client(user('bob'), {tokenProvider: () => { throw cause; }});
  await assert.rejects(sync.callInvite(['alice']), check);
  // An empty token is still no_token.
  const empty = client(user('bob'), {tokenProvider: async () => ''});
  await assert.rejects(empty.login(), (e) => e instanceof CallsigError && e.code === 'no_token');
});

// A (review): a stream opened without a position ends its opening with
// the synced event at the head of the log. The client keeps it, so a
// renewal right after login resumes from there: it used to resume from
// the last pending invitation and hand over what was committed before
// login again, ringing for a call invited and cancelled meanwhile.
test('A a renewal right after login resumes from the head, not from the last pending invitation', async (t) => {
  const bobID = user('bob');
  const alice = client(user('alice'));
  const streams = [];
  class Counted extends EventSource {
    constructor(url, init) {
      super(url, init);
      streams.push(this);
    }
  }
  const bob = client(bobID, {token: await token(bobID, 3600), tokenProvider: undefined, EventSource: Counted});
  t.after(() => bob.logout());
  // c1 rings on bob's first session and is received there.
  await bob.login();
  const {callID: c1} = await alice.callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callUserStateChanged', c1, bobID, 'received'), 'c1 received');
  bob.logout();
  // While bob is away, c2 is invited and cancelled.
  const {callID: c2} = await alice.callInvite([bobID], {timeout: 600});
  await alice.callCancel([bobID], c2);
  const before = bob.events.list.length;
  await bob.login(); // c1 is pending: replayed, then synced at the head
  await bob.events.wait((e) => bob.events.list.indexOf(e) >= before && is('callInvitationReceived', c1)(e), 'c1 pending again');
  await bob.renewToken(await token(bobID, 7200)); // expires later: reopens the stream
  // The renewal opens and closes login's stream; a marker after that comes
  // on the renewal only, after whatever it replayed.
  for (let i = 0; i < 100 && !(streams.length === 3 && streams[1].readyState === 2); i++) await new Promise((r) => setTimeout(r, 100));
  assert.equal(streams.length, 3, 'the renewal\'s stream');
  assert.equal(streams[1].readyState, 2, 'login\'s stream closed by the renewal');
  const {callID: c3} = await alice.callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callInvitationReceived', c3), 'c3');
  const after = bob.events.list.slice(before).filter((e) => e.name.startsWith('call'));
  assert.deepEqual(after.filter((e) => e.data.callID !== c3).map((e) => `${e.name} ${e.data.callID === c1 ? 'c1' : 'c2'}`),
    ['callInvitationReceived c1'], 'after the second login: c1 pending once, nothing of before login replayed');
});
