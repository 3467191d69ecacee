// Token renewal racing the old stream's own reconnection: the renewal's
// stream is slow to open, the old stream's connection drops and its
// EventSource comes back first. The stream that opens closes the others,
// so the old one is the client's stream from then on: its next
// tokenWillExpire must renew it, or it dies at its token's exp and the
// client only gets back after a gap. A proxy in front of the real server
// holds the renewal back and cuts the old stream's connection.
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {advance, client, exactlyTheLog, is, token, user} from './helpers.js';
import {forward, gate, streamProxy} from './proxy.js';

const exp = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString()).exp;

test('the old stream reopens on its own before a renewal opens: its next tokenWillExpire renews it, each event once', async (t) => {
  const cut = gate(); // ends the first stream's connection
  const back = gate(); // lets the old stream's reconnection open
  const proxy = await streamProxy((n, req, res) => {
    if (n === 0) forward(req, res, {cut}); // the login's stream
    else if (n === 1) forward(req, res, {head: gate()}); // the renewal: never opens
    else if (n === 2) forward(req, res, {head: back}); // the old stream's EventSource, back by itself
    else forward(req, res);
  });
  t.after(() => proxy.close());
  const bobID = user('bob');
  let provided = 0;
  // The first token lives 40 s (the server's clock counts from each
  // stream's opening); the renewals' an hour.
  const bob = client(bobID, {baseURL: proxy.url, tokenProvider: () => token(bobID, ++provided === 1 ? 40 : 3600)});
  const alice = client(user('alice'));
  await bob.login();
  t.after(() => bob.logout());
  const first = await proxy.stream(0);
  const c1 = await alice.callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callUserStateChanged', c1.callID, bobID, 'received'), 'the first invitation');

  await advance(10_000); // 30 s left: the renewal's stream is asked for, and held back
  const renewal = await proxy.stream(1);
  assert.notEqual(renewal.token, first.token);
  cut.release(); // the old stream's connection ends; its EventSource is not closed and comes back
  const reconnection = await proxy.stream(2);
  assert.equal(reconnection.token, first.token, 'the old stream came back with its own token');
  const c2 = await alice.callInvite([bobID], {timeout: 600}); // while neither stream is open
  back.release(); // the old stream opens before the renewal
  await renewal.closed; // and closes it
  await bob.events.wait(is('callUserStateChanged', c2.callID, bobID, 'received'), 'the invitation made while away');

  await advance(10_000); // the old stream's token has 30 s left again
  const renewed = await proxy.stream(3);
  assert.ok(exp(renewed.token) > exp(first.token), 'the old stream is renewed with a newer token');
  assert.equal(renewed.query, bob.lastEventID, 'from the last event handed over');
  await reconnection.closed; // the renewal is open
  assert.equal(bob.events.of('tokenWillExpire').length, 2);
  const c3 = await alice.callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callUserStateChanged', c3.callID, bobID, 'received'), 'an event on the renewed stream');

  await advance(30_000); // the first token's exp, the old stream's end had it gone on
  const c4 = await alice.callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callUserStateChanged', c4.callID, bobID, 'received'), 'an event after the first token expired');
  assert.equal(provided, 3, 'a token at login, for the held renewal and for the old stream\'s');
  assert.deepEqual(bob.events.of('connectionStateChanged').map((e) => e.data.state), ['connecting', 'connected'], 'no gap seen');
  await exactlyTheLog(bob);
});

// A renewal asked for while the open stream's opening (the pending
// invitations, then synced, the first position) is held up (a proxy that
// let its first heartbeat through, the stream's proof that it is served,
// and holds the rest) waits POSITION_WAIT (5 s) for a position, then opens with
// none, at the head of the log, and closes the held stream. What that
// stream held is gone (here the callee's answer to bob's own call), and no
// id tells what it was: the app is told to reload, before anything the new
// stream hands over.
test('a renewal that waits in vain for the open stream\'s position: the app is told to reload', async (t) => {
  const held = gate(); // the login stream's body after its heartbeat: never let through
  const cut = gate(); // ends the renewal's connection; its EventSource comes back by itself
  const proxy = await streamProxy((n, req, res) =>
    forward(req, res, n === 0 ? {until: 'heartbeat', body: held} : n === 1 ? {cut} : {}));
  t.after(() => proxy.close());
  const bobID = user('bob');
  const carolID = user('carol');
  const bob = client(bobID, {baseURL: proxy.url});
  const carol = client(carolID);
  await carol.login();
  t.after(() => carol.logout());
  await bob.login(); // served: its heartbeat passed, the rest is held
  t.after(() => bob.logout());
  const first = await proxy.stream(0);

  const c1 = await bob.callInvite([carolID], {timeout: 600});
  await carol.events.wait(is('callInvitationReceived', c1.callID), 'carol rung');
  await carol.callAccept(c1.callID); // bob's first stream holds the answer
  const asked = Date.now();
  await bob.renewToken(await token(bobID, 7200));
  const renewal = await proxy.stream(1, 15000);
  assert.ok(Date.now() - asked >= 4500, 'the renewal waited for a position first');
  assert.equal(renewal.query, null, 'opened with no position');
  await first.closed; // the renewal is open
  await bob.events.wait((e) => e.name === 'reset', 'reset');

  const c2 = await carol.callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callInvitationReceived', c2.callID), 'an invitation on the renewed stream');
  const handed = bob.events.list.filter((e) => e.name === 'reset' || e.name.startsWith('call'));
  assert.equal(handed[0].name, 'reset', 'the reset first');
  assert.deepEqual(handed.filter((e) => e.data.callID === c1.callID), [], 'nothing of the held stream');

  // The renewed stream's own reconnection resumes from its last id: no
  // second reset.
  cut.release();
  const back = await proxy.stream(2);
  assert.equal(back.header, bob.lastEventID, 'the EventSource came back with its last id');
  const c3 = await carol.callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callInvitationReceived', c3.callID), 'an invitation after the reconnection');
  assert.equal(bob.events.of('reset').length, 1, 'one reset: the reconnection lost nothing');
});
