// A proxy in front of the server under test that lets a test decide when
// each event stream opens, when its events pass and when its connection
// ends: for the orderings of streams (a renewal and an older stream's
// reconnection, say) that the network seldom makes on its own.
import http from 'node:http';
import {URL} from './helpers.js';

/**
 * Passes req to the server (to: its URL, the server under test when left
 * out) and its answer back: the head once head resolves, the body once
 * body resolves. With until (an event's type: 'heartbeat', 'synced'), the
 * body up to and including the first block of that event passes with the
 * head, and only the rest waits for body: a proxy that let a stream's
 * first flushes through and holds what follows. Once cut resolves, the
 * answer ends (the server's stream with it) after a `retry: 10`, so the
 * EventSource, which is not closed, comes back by itself 10 ms later.
 */
export function forward(req, res, {head, body, until, cut, to = URL} = {}) {
  const up = http.request(to + req.url, {method: req.method, headers: req.headers});
  res.on('close', () => up.destroy());
  up.on('error', () => res.destroy());
  up.on('response', async (ur) => {
    await head;
    res.writeHead(ur.statusCode, ur.headers);
    res.flushHeaders();
    if (until) await passUntil(ur, res, until);
    await body;
    ur.pipe(res);
    if (!cut) return;
    await cut;
    ur.unpipe(res);
    res.end('retry: 10\n\n'); // res's close (above) then ends the server's stream
  });
  req.pipe(up);
}

// passUntil writes ur's body to res up to the end of the first block of
// an event of type, and leaves the rest in ur, paused.
export function passUntil(ur, res, type) {
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    const onData = (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      const at = buf.indexOf(`event: ${type}\n`);
      const end = at < 0 ? -1 : buf.indexOf('\n\n', at);
      if (end < 0) return;
      ur.pause();
      ur.off('data', onData);
      res.write(buf.subarray(0, end + 2));
      if (end + 2 < buf.length) ur.unshift(buf.subarray(end + 2));
      resolve();
    };
    ur.on('data', onData);
  });
}

/**
 * A proxy to the server (to: its URL, the server under test when left out)
 * that records every GET /events: its access_token and lastEventID
 * (query), Last-Event-ID (header), when it was asked for (at) and when it
 * ended (closed, and gone once it has).
 * plan(n, req, res) answers the nth stream; every other request is
 * forwarded.
 */
export function streamProxy(plan, to = URL) {
  const streams = [];
  const waiters = [];
  const server = http.createServer((req, res) => {
    const u = new globalThis.URL(req.url, 'http://proxy');
    if (req.method !== 'GET' || u.pathname !== '/events') return forward(req, res, {to});
    const s = {n: streams.length, token: u.searchParams.get('access_token'), query: u.searchParams.get('lastEventID'),
      header: req.headers['last-event-id'], at: Date.now(), gone: false};
    s.closed = new Promise((resolve) => res.on('close', () => { s.gone = true; resolve(); }));
    streams.push(s);
    for (const w of waiters.filter((w) => w.n === s.n)) {
      waiters.splice(waiters.indexOf(w), 1);
      clearTimeout(w.timer);
      w.resolve(s);
    }
    plan(s.n, req, res);
  });
  const proxy = {
    server,
    /** Every stream's record, in the order they were asked for. */
    streams,
    /** Resolves with the nth stream's record once it is asked for, or fails after ms. */
    stream: (n, ms = 10000) => (streams[n] ? Promise.resolve(streams[n]) : new Promise((resolve, reject) => {
      const w = {n, resolve};
      w.timer = setTimeout(() => reject(new Error(`no stream ${n} within ${ms} ms (${streams.length} so far)`)), ms);
      waiters.push(w);
    })),
    close: () => { server.closeAllConnections(); server.close(); },
  };
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    proxy.url = `http://127.0.0.1:${server.address().port}`;
    resolve(proxy);
  }));
}

/** A promise that resolves when its release() is called: forward's head, body or cut. */
export function gate() {
  let release;
  const p = new Promise((resolve) => { release = resolve; });
  p.release = () => release();
  return p;
}
