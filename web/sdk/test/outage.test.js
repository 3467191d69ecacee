// A login() while the server is out of reach for now, behind a proxy that
// answers for it (nginx's 502 while the server restarts): not a refusal
// of the stream, so login() must not reject; like after a network error
// it stays pending while the client tries again.
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {client, is, user} from './helpers.js';
import {forward, streamProxy} from './proxy.js';

test('login() while the proxy in front of the server answers 502 (a restart): it stays pending and resolves once the server is back', async (t) => {
  // The first stream gets nginx's 502 page, as while the server restarts;
  // the next ones reach the server.
  const proxy = await streamProxy((n, req, res) => {
    if (n > 0) return forward(req, res);
    res.writeHead(502, {'Content-Type': 'text/html'});
    res.end('<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>\n');
  });
  t.after(() => proxy.close());
  const bobID = user('bob');
  const bob = client(bobID, {baseURL: proxy.url});
  t.after(() => bob.logout());
  const outcome = await bob.login().then(() => 'connected', (e) => `rejected: ${e.code} ${e.status}`);
  assert.equal(outcome, 'connected');
  await proxy.stream(1);
  const alice = client(user('alice'));
  const c1 = await alice.callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callInvitationReceived', c1.callID), 'an invitation once connected');
});
