// Defects found in review of the client (issue 11), each reproduced
// against the real server: renewal with a token that is not newer (D1),
// a 2xx answer cut mid-body (D3), login with a stale token (D2), logout
// during login (D4) and the user ID claim (D5).
import {test} from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import {CallsigClient} from '../callsig.js';
import {advance, client, is, token, tokenUntil, URL, user} from './helpers.js';

const exp = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString()).exp;

// counted returns a tokenProvider that answers call n with answer(n) and a
// waiter resolved at its nth call (a positive marker, never a sleep).
function counted(answer) {
  const waiters = [];
  const provider = async () => {
    provider.n++;
    provider.times.push(performance.now());
    const t = await answer(provider.n);
    for (const w of waiters.filter((w) => w.n <= provider.n)) {
      waiters.splice(waiters.indexOf(w), 1);
      clearTimeout(w.timer);
      w.resolve();
    }
    return t;
  };
  provider.n = 0;
  provider.times = [];
  provider.called = (n, ms = 10000) => (provider.n >= n ? Promise.resolve() : new Promise((resolve, reject) => {
    const w = {n, resolve};
    w.timer = setTimeout(() => reject(new Error(`tokenProvider called ${provider.n} times, not ${n}, within ${ms} ms`)), ms);
    waiters.push(w);
  }));
  return provider;
}

// within fails when p does not settle within ms.
function within(p, ms, what) {
  let timer;
  return Promise.race([p, new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not settled within ${ms} ms`)), ms);
  })]).finally(() => clearTimeout(timer));
}

test('D1 tokenWillExpire with a token that is not newer keeps the stream, retries later, reopens with a newer one', async (t) => {
  const bobID = user('bob');
  const cached = await token(bobID, 20); // warned at once
  // 1: login, 2: the warning (the same token: not newer), 3: the retry (a newer one).
  const provider = counted((n) => (n < 3 ? cached : token(bobID, 3600)));
  const bob = client(bobID, {tokenProvider: provider});
  const alice = client(user('alice'));
  await bob.login();
  t.after(() => bob.logout());
  await provider.called(3);
  assert.equal(bob.events.of('tokenWillExpire').length, 1, 'the stream was reopened with a token as old as its own');

  // The reopened stream carries on past the cached token's exp, with no gap.
  await advance(21_000);
  const c1 = await alice.callInvite([bob.userID], {timeout: 600});
  await bob.events.wait(is('callUserStateChanged', c1.callID, bob.userID, 'received'), 'an event after the cached token expired');
  assert.deepEqual(bob.events.of('connectionStateChanged').map((e) => e.data.state), ['connecting', 'connected']);
  assert.equal(bob.events.of('tokenWillExpire').length, 1);
});

test('D1 tokenWillExpire: a provider minting tokens with the same short exp does not make a reopen loop', async (t) => {
  const bobID = user('bob');
  // Each token minted afresh, with the first one's exp (25 s: warned at
  // once). Not token(bobID, 25) each time: tokens are minted on the wall
  // clock with exp in whole seconds, so one minted in the next second
  // expires a second later, is newer, and rightly renews the stream.
  const minted = [];
  const provider = counted(async (n) => {
    const t = n === 1 ? await token(bobID, 25) : await tokenUntil(bobID, exp(minted[0]));
    minted.push(t);
    return t;
  });
  const bob = client(bobID, {tokenProvider: provider});
  await bob.login();
  t.after(() => bob.logout());
  // Login, the warning, the first retry (1 s on) and the second (2 s after
  // it): a stream reopened with the warning's token or the first retry's
  // would have been warned long before the second retry.
  await provider.called(4);
  assert.deepEqual(minted.map(exp), minted.map(() => exp(minted[0])), 'the tokens do not all have the same exp');
  assert.notEqual(minted[3], minted[0], 'not one token cached (the test above), but tokens minted afresh');
  assert.equal(bob.events.of('tokenWillExpire').length, 1);
  assert.deepEqual(bob.events.of('connectionStateChanged').map((e) => e.data.state), ['connecting', 'connected']);
});

test('D1 tokenWillExpire: renewals in a row with short tokens, each newer, back off', async (t) => {
  const bobID = user('bob');
  // Each token expires a second later than the one before, and has less
  // than 30 s: every new stream is warned at once.
  const provider = counted((n) => token(bobID, 20 + n));
  const bob = client(bobID, {tokenProvider: provider});
  await bob.login();
  t.after(() => bob.logout());
  await provider.called(4); // login, the first renewal, two renewals in a row
  const [, second, third, fourth] = provider.times;
  assert.ok(third - second >= 900, `the second renewal in a row came ${Math.round(third - second)} ms after the first`);
  assert.ok(fourth - third >= 1900, `the third renewal in a row came ${Math.round(fourth - third)} ms after the second`);
  assert.deepEqual(bob.events.of('connectionStateChanged').map((e) => e.data.state), ['connecting', 'connected']);
});

test('D1 renewToken with a token that is not newer than the stream\'s does not reopen it', async (t) => {
  const bobID = user('bob');
  const short = await token(bobID, 20);
  const bob = new CallsigClient({baseURL: URL, EventSource: (await import('eventsource')).EventSource, deviceID: 'node', token: short});
  let warned = 0;
  bob.on('tokenWillExpire', (c) => { warned++; c.renewToken(short); });
  const alice = client(user('alice'));
  await bob.login();
  t.after(() => bob.logout());
  const got = [];
  const received = new Promise((resolve) => bob.on('callUserStateChanged', (c, d) => { got.push(d); resolve(); }));
  const c1 = await alice.callInvite([bob.userID], {timeout: 600});
  await within(received, 10000, 'the invitation');
  assert.equal(got[0].callID, c1.callID);
  assert.equal(warned, 1, 'renewToken reopened the stream with the same token');
});

test('D2 login with a stale token and a tokenProvider gets a fresh token once and opens the stream', async (t) => {
  const bobID = user('bob');
  const provider = counted(() => token(bobID));
  const bob = client(bobID, {token: 'stale.token.x', tokenProvider: provider});
  t.after(() => bob.logout());
  await bob.login();
  assert.equal(provider.n, 1);
  assert.equal(bob.userID, bobID);
  assert.equal(bob.connectionState, 'connected');
});

test('D2 login with a refused token and a provider whose token is refused too rejects with stream_refused', async () => {
  const provider = counted(() => 'still.not.valid');
  const bob = client(user('bob'), {token: 'stale.token.x', tokenProvider: provider});
  await assert.rejects(within(bob.login(), 10000, 'login'), (e) => e.code === 'stream_refused');
  assert.equal(provider.n, 1);
  assert.equal(bob.connectionState, 'disconnected');
});

// A proxy that passes on the first POST /calls answer's status, headers and
// half its body, then cuts the connection; everything else passes whole.
function cutMidBody() {
  let cut = false;
  const seen = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      seen.push({method: req.method, url: req.url, key: req.headers['idempotency-key']});
      const up = http.request(URL + req.url, {method: req.method, headers: req.headers}, (ur) => {
        const back = [];
        ur.on('data', (c) => back.push(c));
        ur.on('end', () => {
          const all = Buffer.concat(back);
          if (!cut && req.method === 'POST' && req.url === '/calls') {
            cut = true;
            res.writeHead(ur.statusCode, {...ur.headers});
            res.write(all.subarray(0, Math.floor(all.length / 2)), () => req.socket.destroy());
            return;
          }
          res.writeHead(ur.statusCode, ur.headers);
          res.end(all);
        });
      });
      up.end(body);
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({server, seen, url: `http://127.0.0.1:${server.address().port}`})));
}

test('D3 a 2xx answer cut mid-body is retried with the same Idempotency-Key and creates one call', async (t) => {
  const proxy = await cutMidBody();
  t.after(() => proxy.server.close());
  const aliceID = user('alice');
  const alice = client(aliceID, {baseURL: proxy.url, retry: {baseDelay: 10}});
  const res = await alice.callInvite([user('bob')], {timeout: 600});
  assert.ok(res && res.callID, `callInvite resolved with ${JSON.stringify(res)}`);
  const posts = proxy.seen.filter((r) => r.method === 'POST');
  assert.equal(posts.length, 2, 'one retry');
  assert.equal(posts[0].key, posts[1].key, 'the same Idempotency-Key');
  const list = await client(aliceID).queryCallInvitationList();
  assert.deepEqual(list.callList.map((c) => c.callID), [res.callID], 'one call');
});

test('D4 logout while login waits for the stream rejects login with logged_out', async () => {
  const c = client(user('bob'), {baseURL: 'http://127.0.0.1:1', token: await token(user('bob'))});
  const p = c.login();
  await c.events.wait((e) => e.name === 'connectionStateChanged' && e.data.state === 'connecting', 'connecting');
  c.logout();
  await assert.rejects(within(p, 5000, 'login'), (e) => e.code === 'logged_out');
});

test('D4 logout while login waits for tokenProvider rejects login with logged_out', async () => {
  let release;
  const gate = new Promise((r) => { release = r; });
  const c = client(user('bob'), {tokenProvider: async () => { await gate; return token(user('bob')); }});
  const p = c.login();
  c.logout();
  release();
  await assert.rejects(within(p, 5000, 'login'), (e) => e.code === 'logged_out');
  assert.equal(c.connectionState, 'disconnected');
});

// An unsigned JWT with claims: the client reads claims without verifying.
const jwt = (claims) => ['{"alg":"none"}', JSON.stringify(claims)].map((s) => Buffer.from(s).toString('base64url')).join('.') + '.x';

test('D5 userID is read from the userClaim option (default sub)', () => {
  const t = jwt({sub: 'auth0|123', uid: 'alice', exp: 1});
  assert.equal(new CallsigClient({token: t}).userID, 'auth0|123');
  assert.equal(new CallsigClient({token: t, userClaim: 'uid'}).userID, 'alice');
  assert.equal(new CallsigClient({token: t, userClaim: 'missing'}).userID, '');
});
