// A client without a tokenProvider renews its token when the app calls
// renewToken on tokenWillExpire. A device offline across the warning and
// the token's exp (a phone asleep) gets no warning: the server had no
// stream to send it on. Its stream comes back with the expired token and
// is refused (401) for good; the client must still tell the app, or it
// tries that token again forever and the user gets no call.
import {test} from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import {client, is, token, URL, user} from './helpers.js';
import {forward, passUntil, streamProxy} from './proxy.js';

const exp = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString()).exp;

test('a stream back after its token expired while away: the app gets tokenWillExpire, renews, and gets its calls', async (t) => {
  let expired;
  const gone = new Promise((r) => { expired = r; });
  // The login's stream: its opening passes (up to synced), and the
  // warning the server sends next (at once, the token having under 30 s)
  // never does, as for a device gone offline; once the token has expired
  // the connection ends, and the EventSource, not closed, comes back by
  // itself with its token.
  const proxy = await streamProxy((n, req, res) => {
    if (n > 0) return forward(req, res);
    const up = http.request(URL + req.url, {method: req.method, headers: req.headers});
    res.on('close', () => up.destroy());
    up.on('response', async (ur) => {
      res.writeHead(ur.statusCode, ur.headers);
      res.flushHeaders();
      await passUntil(ur, res, 'synced');
      await gone;
      res.end('retry: 10\n\n');
    });
    up.end();
  });
  t.after(() => proxy.close());
  const bobID = user('bob');
  const short = await token(bobID, 2);
  const bob = client(bobID, {baseURL: proxy.url, tokenProvider: undefined, token: short});
  bob.on('tokenWillExpire', async (c) => c.renewToken(await token(bobID)));
  await bob.login();
  t.after(() => bob.logout());
  const wait = exp(short) * 1000 + 300 - Date.now();
  await new Promise((r) => setTimeout(r, Math.max(0, wait))); // the token's exp, on the wall clock the server checks
  expired();
  const back = await proxy.stream(1);
  assert.equal(back.token, short, 'the EventSource came back with its expired token');

  await bob.events.wait((e) => e.name === 'tokenWillExpire', 'tokenWillExpire after the expired token was refused');
  const renewed = await proxy.stream(2);
  assert.notEqual(renewed.token, short, 'the stream reopened with the app\'s new token');
  const alice = client(user('alice'));
  const c1 = await alice.callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callInvitationReceived', c1.callID), 'an invitation on the renewed stream');
});

