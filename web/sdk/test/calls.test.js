// Every method of the ZIM call-invitation API and every call event,
// against the real server.
import {test, after} from 'node:test';
import assert from 'node:assert/strict';
import {CallsigClient, CallsigError} from '../callsig.js';
import {advance, client, is, token, URL, user} from './helpers.js';

const clients = [];
async function online(name) {
  const c = client(user(name));
  clients.push(c);
  await c.login();
  return c;
}
after(() => clients.forEach((c) => c.logout()));

test('general call: invite, receive, accept; reject and cancel', async () => {
  const alice = await online('alice');
  const bob = await online('bob');
  const carol = await online('carol');
  assert.equal(alice.connectionState, 'connected');
  assert.deepEqual(alice.events.of('connectionStateChanged').map((e) => e.data.state), ['connecting', 'connected']);

  const res = await alice.callInvite([bob.userID, carol.userID], {timeout: 600, extendedData: 'video', mode: 'general', enableNotReceivedCheck: true});
  assert.ok(res.callID.length >= 16);
  assert.equal(res.call.mode, 'general');
  assert.deepEqual(res.errorUserList, []);
  const created = await alice.events.wait(is('callInvitationCreated', res.callID), 'callInvitationCreated');
  assert.equal(created.client, alice, 'handlers get the client first, as in ZIM');
  assert.equal(created.data.extendedData, 'video');
  const rang = await bob.events.wait(is('callInvitationReceived', res.callID), 'callInvitationReceived');
  assert.equal(rang.data.inviter, alice.userID);
  await carol.events.wait(is('callInvitationReceived', res.callID));
  await alice.events.wait(is('callUserStateChanged', res.callID, bob.userID, 'received'), 'bob received');

  assert.deepEqual(await bob.callAccept(res.callID, {extendedData: 'hi'}), {callID: res.callID});
  await alice.events.wait(is('callUserStateChanged', res.callID, bob.userID, 'accepted'), 'bob accepted');
  assert.deepEqual(await carol.callReject(res.callID, {extendedData: 'busy'}), {callID: res.callID});
  await alice.events.wait(is('callUserStateChanged', res.callID, carol.userID, 'rejected'), 'carol rejected');

  // Cancel: the caller takes back a pending invitation.
  const c2 = await alice.callInvite([bob.userID], {timeout: 600});
  await bob.events.wait(is('callInvitationReceived', c2.callID));
  const cancelled = await alice.callCancel([bob.userID], c2.callID, {extendedData: 'sorry'});
  assert.deepEqual(cancelled, {callID: c2.callID, errorInvitees: []});
  const ev = await bob.events.wait(is('callInvitationCancelled', c2.callID), 'callInvitationCancelled');
  assert.equal(ev.data.extendedData, 'sorry');
});

test('advanced call: callingInvite, join, quit, end', async () => {
  const alice = await online('alice');
  const bob = await online('bob');
  const carol = await online('carol');
  const dave = await online('dave');
  const {callID} = await alice.callInvite([bob.userID], {mode: 'advanced', timeout: 600});
  await bob.events.wait(is('callInvitationReceived', callID));
  await bob.callAccept(callID);

  const inv = await bob.callingInvite([carol.userID], callID, {});
  assert.equal(inv.callID, callID);
  assert.deepEqual(inv.errorUserList, []);
  const rang = await carol.events.wait(is('callInvitationReceived', callID), 'carol rings');
  assert.equal(rang.data.inviter, bob.userID);
  await carol.callAccept(callID);

  const joined = await dave.callJoin(callID, {extendedData: 'here'});
  assert.equal(joined.callID, callID);
  assert.ok(joined.callUserList.some((u) => u.userID === dave.userID && u.state === 'accepted'));
  await alice.events.wait(is('callUserStateChanged', callID, dave.userID, 'accepted'), 'dave joined');

  const quit = await carol.callQuit(callID, {});
  assert.equal(quit.callID, callID);
  assert.ok(quit.quitTime > 0);
  await alice.events.wait(is('callUserStateChanged', callID, carol.userID, 'quit'), 'carol quit');

  const end = await alice.callEnd(callID, {extendedData: 'bye'});
  assert.ok(end.endTime > 0);
  const ended = await bob.events.wait(is('callInvitationEnded', callID), 'callInvitationEnded');
  assert.equal(ended.data.operatedUserID, alice.userID);
  assert.equal(ended.data.extendedData, 'bye');
});

test('callInvitationTimeout on the server clock', async () => {
  const alice = await online('alice');
  const bob = await online('bob');
  const {callID} = await alice.callInvite([bob.userID], {timeout: 1});
  await alice.events.wait(is('callUserStateChanged', callID, bob.userID, 'received'));
  await advance(1000);
  const ev = await bob.events.wait(is('callInvitationTimeout', callID), 'callInvitationTimeout');
  assert.equal(ev.data.mode, 'general');
});

test('queryCallInvitationList pages with count and nextFlag', async () => {
  const alice = await online('alice');
  const bob = user('bob');
  const ids = [];
  for (let i = 0; i < 3; i++) ids.push((await alice.callInvite([bob], {timeout: 600})).callID);
  const first = await alice.queryCallInvitationList({count: 2});
  assert.deepEqual(first.callList.map((c) => c.callID), [ids[2], ids[1]]);
  assert.ok(first.nextFlag > 0);
  const second = await alice.queryCallInvitationList({count: 2, nextFlag: first.nextFlag});
  assert.deepEqual(second.callList.map((c) => c.callID), [ids[0]]);
  assert.equal(second.nextFlag, 0);
  assert.equal((await alice.queryCallInvitationList()).callList.length, 3);
  assert.equal((await alice.queryCall(ids[0])).callID, ids[0]);
});

test('errors are CallsigError with the problem status, code and detail', async () => {
  const alice = await online('alice');
  const bob = await online('bob');
  const fail = async (p) => {
    try {
      await p;
    } catch (e) {
      assert.ok(e instanceof CallsigError, `${e} is a CallsigError`);
      return e;
    }
    assert.fail('no error');
  };
  let e = await fail(alice.callInvite([alice.userID]));
  assert.equal(e.status, 400);
  assert.equal(e.code, 'invalid_request');
  assert.match(e.detail, /yourself/);

  e = await fail(alice.callAccept('no-such-call-0123456789'));
  assert.deepEqual([e.status, e.code], [404, 'call_not_found']);

  const {callID} = await alice.callInvite([bob.userID], {timeout: 600});
  e = await fail(bob.callJoin(callID));
  assert.deepEqual([e.status, e.code], [409, 'wrong_mode']);
  e = await fail(alice.callAccept(callID));
  assert.deepEqual([e.status, e.code], [409, 'invalid_state']);

  // A bad token with no way to get another: 401, and login is refused.
  const stranger = new CallsigClient({baseURL: URL, token: 'not.a.token', EventSource: (await import('eventsource')).EventSource});
  e = await fail(stranger.queryCallInvitationList());
  assert.deepEqual([e.status, e.code], [401, 'unauthorized']);
  e = await fail(stranger.login());
  assert.deepEqual([e.status, e.code], [401, 'stream_refused']);
  assert.equal(stranger.connectionState, 'disconnected');

  // Nobody answers: network_error with status 0, after the retries.
  const nowhere = new CallsigClient({baseURL: 'http://127.0.0.1:1', token: 'x', retry: {attempts: 2, baseDelay: 1}});
  e = await fail(nowhere.callInvite(['bob']));
  assert.deepEqual([e.status, e.code], [0, 'network_error']);
});

test('a 401 gets one retry with a token from tokenProvider', async () => {
  const bobID = user('bob');
  const aliceID = user('alice');
  let asked = 0;
  const alice = client(aliceID, {token: 'expired.or.revoked', tokenProvider: () => {
    asked++;
    return token(aliceID);
  }});
  const res = await alice.callInvite([bobID], {timeout: 600});
  assert.equal(asked, 1);
  assert.equal(alice.userID, aliceID);
  assert.equal((await alice.queryCall(res.callID)).caller, aliceID);
});
