// A reset from a position ahead of the server's log (its database wiped or
// restored while a tab held on): what the server sends after the reset has
// its own ids, lower than the client's position, and must reach the app.
// A proxy in front of the real server plays the log as it was: the client's
// first stream hands over an id far ahead and ends; the EventSource comes
// back with it, and the server, which never gave that id, resets.
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {client, is, log, token, user} from './helpers.js';
import {forward, gate, streamProxy} from './proxy.js';

const AHEAD = 1_000_000_000;
const GHOST = 'before-the-wipe'; // the call of the event with id AHEAD

// aheadStream answers a stream as the lost log would: one event with id
// AHEAD, then the end (the EventSource comes back 10 ms later, with it).
function aheadStream(res) {
  res.writeHead(200, {'Content-Type': 'text/event-stream', 'Cache-Control': 'no-store'});
  res.end(`retry: 10\nid: ${AHEAD}\nevent: callInvitationCancelled\ndata: {"callID":"${GHOST}","mode":"general"}\n\n`);
}

// handed lists the call events c handed over since the reset, as
// "name callID", the event of the lost log left out.
const handed = (c) => c.events.list.filter((e) => e.name.startsWith('call') && e.data.callID !== GHOST)
  .map((e) => `${e.name} ${e.data.callID}`);

const resets = (c) => c.events.of('reset').length;

const connected = (c) => c.events.of('connectionStateChanged').filter((e) => e.data.state === 'connected').length;

test('reset from a position ahead of the server\'s log: the replay and later events reach the app; the next stream does not send the old id', async (t) => {
  const proxy = await streamProxy((n, req, res) => (n === 0 ? aheadStream(res) : forward(req, res)));
  t.after(() => proxy.close());
  const bobID = user('bob');
  const bob = client(bobID, {baseURL: proxy.url});
  const alice = client(user('alice'));
  const c1 = await alice.callInvite([bobID], {timeout: 600}); // pending when bob's stream comes back
  await bob.login();
  t.after(() => bob.logout());

  const back = await proxy.stream(1);
  assert.equal(back.header, String(AHEAD), 'the EventSource came back from the lost log\'s id');
  await bob.events.wait((e) => e.name === 'reset', 'reset');
  await bob.events.wait(is('callInvitationReceived', c1.callID), 'the pending invitation replayed after the reset');
  const c2 = await alice.callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callUserStateChanged', c2.callID, bobID, 'received'), 'a live event after the reset');

  // The next stream (a renewal here) resumes from the server's ids.
  const position = bob.lastEventID;
  const newest = Math.max(...(await log(bobID)).map((e) => e.id));
  assert.equal(position, String(newest), 'the position is the newest id handed over');
  await bob.renewToken(await token(bobID, 7200));
  const renewed = await proxy.stream(2);
  assert.equal(renewed.query, position, 'the renewal resumes from the server\'s id, not the lost log\'s');
  await back.closed; // the renewal is open
  const c3 = await alice.callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callUserStateChanged', c3.callID, bobID, 'received'), 'an event on the renewed stream');

  assert.equal(resets(bob), 1);
  const want = (await log(bobID)).filter((e) => e.device === '' || e.device === bob.deviceID).map((e) => `${e.type} ${e.callID}`);
  assert.deepEqual(handed(bob), want, 'every event of the server\'s log, once, in order');
});

test('reset on the old stream while a renewal opens from the same position: one reset, each event once', async (t) => {
  let releaseOld;
  let releaseNew;
  const oldBody = new Promise((resolve) => { releaseOld = resolve; });
  const newHead = new Promise((resolve) => { releaseNew = resolve; });
  const proxy = await streamProxy((n, req, res) => {
    if (n === 0) aheadStream(res);
    else if (n === 1) forward(req, res, {body: oldBody}); // open, its reset held back
    else forward(req, res, {head: newHead}); // the renewal: not open until released
  });
  t.after(() => proxy.close());
  const bobID = user('bob');
  const bob = client(bobID, {baseURL: proxy.url});
  const alice = client(user('alice'));
  const c1 = await alice.callInvite([bobID], {timeout: 600});
  await bob.login();
  t.after(() => bob.logout());

  const old = await proxy.stream(1);
  await bob.events.wait(() => connected(bob) === 2, 'the old stream open again');
  await bob.renewToken(await token(bobID, 7200));
  const renewal = await proxy.stream(2);
  assert.equal(renewal.query, String(AHEAD));
  releaseOld(); // the old stream's reset comes while the renewal is not open
  await Promise.race([old.closed, bob.events.wait((e) => e.name === 'reset', 'reset')]);
  releaseNew();
  await bob.events.wait(is('callInvitationReceived', c1.callID), 'the pending invitation replayed after the reset');
  await old.closed;
  const c2 = await alice.callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callUserStateChanged', c2.callID, bobID, 'received'), 'a live event after the reset');

  const got = handed(bob);
  assert.deepEqual(got, [...new Set(got)], 'no event handed over twice');
  assert.equal(resets(bob), 1, 'one reset');
  assert.equal(got.filter((e) => e === `callInvitationReceived ${c1.callID}`).length, 1);
  assert.equal(got.filter((e) => e === `callInvitationReceived ${c2.callID}`).length, 1);
  assert.equal(bob.lastEventID, String(Math.max(...(await log(bobID)).map((e) => e.id))));
});

// renewalHeldProxy answers bob's streams for the tests below: the first
// as the lost log; the second (the old stream, back from AHEAD) open, its
// reset held until oldBody is released (once the renewal is asked for);
// the third (the renewal from AHEAD) never open; the next ones (the
// renewal made again) open once renewedHead is released.
async function renewalHeldProxy(t) {
  const oldBody = gate();
  const renewedHead = gate();
  const proxy = await streamProxy((n, req, res) => {
    if (n === 0) aheadStream(res);
    else if (n === 1) forward(req, res, {body: oldBody});
    else if (n === 2) forward(req, res, {head: gate()});
    else forward(req, res, {head: renewedHead});
  });
  t.after(() => proxy.close());
  return {proxy, oldBody, renewedHead};
}

// heldRenewal brings bob to the moment the tests below start from: his old
// stream back from AHEAD and open, a renewal to the fresh token asked for
// and held, and the old stream's reset let through. before runs once the
// clients exist, before bob logs in (to leave an invitation pending).
async function heldRenewal(t, before = async () => {}) {
  const {proxy, oldBody, renewedHead} = await renewalHeldProxy(t);
  const bobID = user('bob');
  const provided = {n: 0};
  const bob = client(bobID, {baseURL: proxy.url, tokenProvider: () => { provided.n++; return token(bobID); }});
  const alice = client(user('alice'));
  await before(alice, bobID);
  await bob.login();
  t.after(() => bob.logout());

  const old = await proxy.stream(1);
  await bob.events.wait(() => connected(bob) === 2, 'the old stream open again');
  const fresh = await token(bobID, 7200);
  await bob.renewToken(fresh);
  const renewal = await proxy.stream(2);
  assert.equal(renewal.query, String(AHEAD));
  oldBody.release(); // the old stream's reset comes while the renewal is not open
  return {proxy, renewedHead, bob, bobID, alice, provided, old, fresh, renewal};
}

// wantOneResetNoGap checks the end of the tests below: one reset, no token
// asked for after login (the renewal's was given), no gap after the old
// stream came back, and every event of the server's log handed over once,
// in order.
async function wantOneResetNoGap(bob, bobID, provided) {
  assert.equal(resets(bob), 1, 'one reset');
  assert.equal(provided.n, 1, 'no token asked for after login: the renewal\'s was given');
  assert.deepEqual(bob.events.of('connectionStateChanged').map((e) => e.data.state),
    ['connecting', 'connected', 'reconnecting', 'connected'], 'no gap after the old stream came back');
  const want = (await log(bobID)).filter((e) => e.device === '' || e.device === bob.deviceID).map((e) => `${e.type} ${e.callID}`);
  assert.deepEqual(handed(bob), want, 'every event of the server\'s log, once, in order');
}

// The old stream is the only one open: it must go on delivering while the
// renewal has not opened (it may never), and the renewal, opened from the
// position the reset voided, is dropped and opened again from a real one.
test('reset on the old stream while a renewal is held: the old stream goes on, the renewal reopens from the server\'s ids', async (t) => {
  let c1;
  const {proxy, renewedHead, bob, bobID, alice, provided, old, fresh, renewal} = await heldRenewal(t, async (alice, bobID) => {
    c1 = await alice.callInvite([bobID], {timeout: 600}); // pending when the old stream comes back
  });

  const promptly = 3000;
  await bob.events.wait((e) => e.name === 'reset', 'reset', promptly);
  await bob.events.wait(is('callInvitationReceived', c1.callID), 'the pending invitation replayed after the reset', promptly);
  await renewal.closed; // dropped: it would reset again and hand c1 over twice
  const c2 = await alice.callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callInvitationReceived', c2.callID), 'a live invitation on the old stream', promptly);
  await bob.events.wait(is('callUserStateChanged', c2.callID, bobID, 'received'), 'its state', promptly);
  assert.equal(bob.connectionState, 'connected');
  assert.equal(resets(bob), 1);

  // The renewal is made again, with the token it was for, from an id of
  // the server's log.
  const renewed = await proxy.stream(3);
  assert.equal(renewed.token, fresh, 'the renewal\'s token');
  assert.notEqual(renewed.query, String(AHEAD), 'not from the lost log\'s id');
  const ids = (await log(bobID)).map((e) => String(e.id));
  assert.ok(ids.includes(renewed.query), `from an id of the server's log (${renewed.query}, log ${ids})`);
  renewedHead.release();
  await old.closed; // the renewal is open
  const c3 = await alice.callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callUserStateChanged', c3.callID, bobID, 'received'), 'an event on the renewed stream');
  await wantOneResetNoGap(bob, bobID, provided);
});

// As above with nothing pending at the reset and nothing coming after it:
// no call event on the old stream to make the renewal again from, but the
// synced event that ends the reset stream's opening gives the head of the
// log, and the renewal is made again from there (the timer remains for a
// stream whose synced event does not come), or the old stream's token,
// which the renewal was for, would expire with no renewal.
test('reset on the old stream while a renewal is held, nothing pending nor coming: the renewal is made again from the head', async (t) => {
  const {proxy, renewedHead, bob, bobID, alice, provided, old, fresh, renewal} = await heldRenewal(t);

  await bob.events.wait((e) => e.name === 'reset', 'reset', 3000);
  const again = proxy.stream(3, 2000); // RESET_RENEW_DELAY (1 s) and some slack
  await renewal.closed; // dropped: it would reset again
  const renewed = await again;
  assert.deepEqual(handed(bob), [], 'nothing handed over since the reset: made again on the synced event');
  assert.equal(renewed.token, fresh, 'the renewal\'s token');
  assert.ok(renewed.query !== null && renewed.query === bob.lastEventID, `the renewal resumes from the synced head ${bob.lastEventID}, not ${renewed.query}`);
  assert.equal(bob.connectionState, 'connected', 'the old stream went on');
  renewedHead.release();
  await old.closed; // the renewal is open
  const c1 = await alice.callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callUserStateChanged', c1.callID, bobID, 'received'), 'an event on the renewed stream');
  assert.equal(handed(bob).filter((e) => e === `callInvitationReceived ${c1.callID}`).length, 1, 'the invitation handed over once');
  await wantOneResetNoGap(bob, bobID, provided);
});
