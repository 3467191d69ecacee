// The event stream: reconnection after a server restart and token renewal
// across tokenWillExpire, each without loss or duplicate.
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {advance, client, exactlyTheLog, is, restart, token, user} from './helpers.js';

test('after a server restart the stream resumes without loss or duplicate', async (t) => {
  const bob = client(user('bob'));
  const alice = client(user('alice'));
  await bob.login();
  t.after(() => bob.logout());
  const c1 = await alice.callInvite([bob.userID], {timeout: 600});
  await bob.events.wait(is('callUserStateChanged', c1.callID, bob.userID, 'received'));

  await restart(); // ends the stream; the EventSource comes back with Last-Event-ID
  await bob.events.wait((e) => e.name === 'connectionStateChanged' && e.data.state === 'reconnecting', 'reconnecting');
  // Committed while bob is away (the retry delay is 3 s).
  await alice.callCancel([], c1.callID);
  const c2 = await alice.callInvite([bob.userID], {timeout: 600});
  await bob.events.wait(is('callUserStateChanged', c2.callID, bob.userID, 'received'), 'the invitation made while away', 15000);
  const states = bob.events.of('connectionStateChanged').map((e) => e.data.state);
  assert.deepEqual(states, ['connecting', 'connected', 'reconnecting', 'connected']);
  await exactlyTheLog(bob);
});

test('tokenWillExpire: the stream is renewed with a new token and loses nothing', async (t) => {
  const bobID = user('bob');
  let provided = 0;
  // The first token lives 40 s, on the server's (fake) clock.
  const bob = client(bobID, {tokenProvider: () => token(bobID, ++provided === 1 ? 40 : 3600)});
  const alice = client(user('alice'));
  await bob.login();
  t.after(() => bob.logout());
  const c1 = await alice.callInvite([bob.userID], {timeout: 600});
  await bob.events.wait(is('callUserStateChanged', c1.callID, bob.userID, 'received'));

  await advance(10_000); // 30 s left
  const warn = await bob.events.wait((e) => e.name === 'tokenWillExpire', 'tokenWillExpire');
  // exp is whole seconds, cut from the wall clock at minting: up to 1 s less.
  assert.ok(warn.data.second === 30 || warn.data.second === 29, `second ${warn.data.second}`);
  await alice.callCancel([], c1.callID); // around the switch to the new stream
  await bob.events.wait((e) => e.name === 'callInvitationCancelled');
  const c2 = await alice.callInvite([bob.userID], {timeout: 600});
  await bob.events.wait(is('callUserStateChanged', c2.callID, bob.userID, 'received'));
  assert.equal(provided, 2, 'a new token was fetched');

  await advance(30_000); // the first token's exp: the old stream ends, if still open
  const c3 = await alice.callInvite([bob.userID], {timeout: 600});
  await bob.events.wait(is('callUserStateChanged', c3.callID, bob.userID, 'received'), 'an event after the old token expired');
  assert.equal(bob.connectionState, 'connected');
  assert.deepEqual(bob.events.of('connectionStateChanged').map((e) => e.data.state), ['connecting', 'connected'], 'no gap seen');
  await exactlyTheLog(bob);
});

test('logout closes the stream: disconnected', async () => {
  const bob = client(user('bob'));
  await bob.login();
  bob.logout();
  assert.equal(bob.connectionState, 'disconnected');
  assert.deepEqual(bob.events.of('connectionStateChanged').map((e) => e.data.state), ['connecting', 'connected', 'disconnected']);
});

test('without a tokenProvider, renewToken on tokenWillExpire renews the stream the same way', async (t) => {
  const bobID = user('bob');
  const bob = client(bobID, {tokenProvider: undefined, token: await token(bobID, 40)});
  bob.on('tokenWillExpire', async (c) => c.renewToken(await token(bobID)));
  const alice = client(user('alice'));
  await bob.login();
  t.after(() => bob.logout());
  await advance(10_000);
  await bob.events.wait((e) => e.name === 'tokenWillExpire', 'tokenWillExpire');
  const c1 = await alice.callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callUserStateChanged', c1.callID, bobID, 'received'));
  await advance(30_000);
  const c2 = await alice.callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callUserStateChanged', c2.callID, bobID, 'received'), 'an event after the old token expired');
  assert.deepEqual(bob.events.of('connectionStateChanged').map((e) => e.data.state), ['connecting', 'connected']);
  await exactlyTheLog(bob);
});
