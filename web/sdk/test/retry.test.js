// A POST whose answer is lost is retried with the same Idempotency-Key:
// one call, and the first answer.
import {test, after} from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import {client, is, URL, user} from './helpers.js';

// cutFirst is an HTTP proxy to the server that forwards the first
// POST /calls, waits for the server's whole answer and then drops the
// client's connection instead of passing it on: the call exists, the
// client does not know. Every request it forwards is recorded.
function cutFirst() {
  const seen = [];
  let cut = false;
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      seen.push({method: req.method, url: req.url, key: req.headers['idempotency-key'], body: body.toString()});
      const up = http.request(URL + req.url, {method: req.method, headers: req.headers}, (ur) => {
        const back = [];
        ur.on('data', (c) => back.push(c));
        ur.on('end', () => {
          if (!cut && req.method === 'POST' && req.url === '/calls') {
            cut = true;
            req.socket.destroy(); // answered, but the answer is lost
            return;
          }
          res.writeHead(ur.statusCode, ur.headers);
          res.end(Buffer.concat(back));
        });
      });
      up.end(body);
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({server, seen, url: `http://127.0.0.1:${server.address().port}`})));
}

test('a callInvite whose answer is lost is retried with the same Idempotency-Key and creates one call', async (t) => {
  const proxy = await cutFirst();
  after(() => proxy.server.close());
  const bobID = user('bob');
  const bob = client(bobID);
  await bob.login();
  t.after(() => bob.logout());
  const alice = client(user('alice'), {baseURL: proxy.url, retry: {baseDelay: 10}});

  const res = await alice.callInvite([bobID], {timeout: 600, extendedData: 'once'});
  const posts = proxy.seen.filter((r) => r.method === 'POST');
  assert.equal(posts.length, 2, 'the first attempt and one retry');
  assert.ok(/^[0-9a-f]{32}$/.test(posts[0].key), `Idempotency-Key ${posts[0].key}`);
  assert.equal(posts[1].key, posts[0].key, 'the retry carries the same key');
  assert.equal(posts[1].body, posts[0].body);

  const list = await alice.queryCallInvitationList();
  assert.deepEqual(list.callList.map((c) => c.callID), [res.callID], 'exactly one call');
  await bob.events.wait(is('callInvitationReceived', res.callID));
  assert.equal(bob.events.of('callInvitationReceived').length, 1);

  // Another call gets another key.
  await alice.callInvite([bobID], {timeout: 600});
  const keys = new Set(proxy.seen.filter((r) => r.method === 'POST').map((r) => r.key));
  assert.equal(keys.size, 2);
});
