// A connection that dies without a word (a phone that changed networks, a
// NAT that forgot it) leaves an EventSource open and waiting for ever: no
// error, no close. The client opens its streams with ?heartbeat=event and
// takes one that goes heartbeatTimeout with no event or heartbeat for
// dead: it reopens it from the last event, losing nothing.
import {test} from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import {client, exactlyTheLog, is, URL, user} from './helpers.js';
import {forward, streamProxy} from './proxy.js';

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
