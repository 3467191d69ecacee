// A browser's EventSource says nothing of why a stream failed: its error
// event has no status. login() asks the API (with the same token) what
// the stream could not tell, so that a proxy's 502 while the server
// restarts leaves login() pending, as it does in Node, and a refused token
// still rejects it.
import {test} from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import {EventSource} from 'eventsource';
import {client, is, token, user} from './helpers.js';
import {forward, streamProxy} from './proxy.js';

// BrowserEventSource is the eventsource package as a browser's
// EventSource shows itself to the client: the same stream, the same
// states, an error event without the status (ev.code).
class BrowserEventSource {
  #es;
  constructor(url) { this.#es = new EventSource(url); }
  get readyState() { return this.#es.readyState; }
  set onopen(f) { this.#es.onopen = f; }
  set onerror(f) { this.#es.onerror = f && (() => f(new Event('error'))); }
  addEventListener(type, f) { this.#es.addEventListener(type, f); }
  close() { this.#es.close(); }
}

// down is a proxy that answers nginx's 502 to every request (streams and
// API alike, as while the server restarts) until up() is called, then
// forwards them; it counts what it answered while down.
// api answers API requests while down: 502 (as the streams), 429 (a
// proxy's rate limit) or 'cut' (no answer at all: the connection is cut).
function down({api = 502} = {}) {
  const seen = {events: 0, api: 0};
  let isUp = false;
  const server = http.createServer((req, res) => {
    if (isUp) return forward(req, res);
    const stream = new globalThis.URL(req.url, 'http://proxy').pathname === '/events';
    seen[stream ? 'events' : 'api']++;
    req.resume();
    if (api === 'cut' && !stream) return req.socket.destroy();
    if (api === 429 && !stream) return res.writeHead(429, {'Retry-After': '1'}).end();
    res.writeHead(502, {'Content-Type': 'text/html'});
    res.end('<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>\n');
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({
    seen, url: `http://127.0.0.1:${server.address().port}`,
    up: () => { isUp = true; },
    close: () => { server.closeAllConnections(); server.close(); },
  })));
}

for (const api of [502, 429, 'cut']) test(`a browser's login() while the proxy answers its stream 502 (a restart) and the API ${api === 'cut' ? 'nothing' : api} stays pending and resolves once the server is back`, async (t) => {
  const proxy = await down({api});
  t.after(() => proxy.close());
  const bobID = user('bob');
  const bob = client(bobID, {baseURL: proxy.url, EventSource: BrowserEventSource});
  t.after(() => bob.logout());
  let settled = '';
  const login = bob.login().then(() => { settled = 'connected'; }, (e) => { settled = `rejected: ${e.code} ${e.status}`; });
  // Two streams refused, each probed: the first try and the one after the
  // backoff (a refusal, taken for a stale token, would have rejected
  // login() at the second).
  const deadline = Date.now() + 10000;
  while ((proxy.seen.events < 2 || proxy.seen.api < 2) && Date.now() < deadline && !settled) await new Promise((r) => setTimeout(r, 20));
  assert.equal(settled, '', 'login() pending while the server is out of reach');
  assert.ok(proxy.seen.events >= 2 && proxy.seen.api >= 2, `streams ${proxy.seen.events}, probes ${proxy.seen.api}`);
  proxy.up();
  await login;
  assert.equal(settled, 'connected');
  const alice = client(user('alice'));
  const c1 = await alice.callInvite([bobID], {timeout: 600});
  await bob.events.wait(is('callInvitationReceived', c1.callID), 'an invitation once connected');
});

test('a browser\'s login() whose stream got a 502 just before the server came back (the probe served) connects, with no tokenProvider', async (t) => {
  const proxy = await streamProxy((n, req, res) => {
    if (n > 0) return forward(req, res);
    req.resume();
    res.writeHead(502, {'Content-Type': 'text/html'});
    res.end('<html><body>502 Bad Gateway</body></html>\n');
  });
  t.after(() => proxy.close());
  const bobID = user('bob');
  const bob = client(bobID, {baseURL: proxy.url, EventSource: BrowserEventSource, token: await token(bobID), tokenProvider: undefined});
  t.after(() => bob.logout());
  const outcome = await bob.login().then(() => 'connected', (e) => `rejected ${e.code} ${e.status}`);
  assert.equal(outcome, 'connected');
});

test('a browser\'s login() with a token the server refuses, and a provider whose token it refuses too, rejects stream_refused 401', async () => {
  const bob = client(user('bob'), {EventSource: BrowserEventSource, token: 'not-a-jwt', tokenProvider: () => 'still-not-a-jwt'});
  const e = await bob.login().then(() => null, (e) => e);
  assert.deepEqual([e && e.code, e && e.status], ['stream_refused', 401]);
  assert.equal(bob.connectionState, 'disconnected');
});

test('in Node, where EventSource tells the status, a stream answered 500 rejects login() stream_refused 500 after one retry', async (t) => {
  // Not an outage a proxy answers for: the server failed the stream
  // itself, and would again. Only a 502, 503 or 504 keeps login() pending.
  const server = http.createServer((req, res) => {
    if (new globalThis.URL(req.url, 'http://proxy').pathname !== '/events') return forward(req, res);
    req.resume();
    res.writeHead(500, {'Content-Type': 'application/problem+json'});
    res.end('{"code":"internal"}');
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => { server.closeAllConnections(); server.close(); });
  const bob = client(user('bob'), {baseURL: `http://127.0.0.1:${server.address().port}`});
  t.after(() => bob.logout());
  let timer;
  const e = await Promise.race([bob.login().then(() => null, (e) => e),
    new Promise((r) => { timer = setTimeout(() => r({code: 'still pending after 10 s'}), 10000); })]);
  clearTimeout(timer);
  assert.deepEqual([e && e.code, e && e.status], ['stream_refused', 500]);
});
