// Shared by the client's tests: the server under test and the controls of
// the Go test that runs them (e2e/sdk_node_test.go), a recorder of a
// client's events that waits for one with a deadline (never a sleep) and a
// check of what a client handed over against the server's log.
import assert from 'node:assert/strict';
import {EventSource} from 'eventsource';
import {CallsigClient} from '../callsig.js';

export const URL = process.env.CALLSIG_URL;
export const CONTROL = process.env.CALLSIG_CONTROL_URL;
/** A second server that allows each user a request every 2 s, in bursts of 2 (the control's tokens are good there too). */
export const LIMITED_URL = process.env.CALLSIG_LIMITED_URL;
if (!URL || !CONTROL || !LIMITED_URL) {
  throw new Error('run these through the Go test: go test ./e2e -run TestSDKNode (it sets CALLSIG_URL, CALLSIG_CONTROL_URL and CALLSIG_LIMITED_URL)');
}

async function control(method, path) {
  const res = await fetch(CONTROL + path, {method});
  if (!res.ok) throw new Error(`control ${path}: ${res.status} ${await res.text()}`);
  return res.json();
}

/**
 * A user token from the server's secret, valid ttl seconds. Minted on the
 * wall clock (not the server's fake one), with exp in whole seconds: two
 * minted with the same ttl have the same exp only within one second.
 */
export const token = async (user, ttl = 3600) => (await control('POST', `/token?user=${encodeURIComponent(user)}&ttl=${ttl}`)).token;
/** A user token that expires at exp (Unix seconds), whenever it is minted. */
export const tokenUntil = async (user, exp) => (await control('POST', `/token?user=${encodeURIComponent(user)}&exp=${exp}`)).token;
/** Moves the server's (fake) clock. */
export const advance = (ms) => control('POST', `/advance?ms=${ms}`);
/** Restarts the server on the same address and database. */
export const restart = () => control('POST', '/restart');
/** The user's committed events: [{id, type, device, callID}]. */
export const log = (user) => control('GET', `/log?user=${encodeURIComponent(user)}`);

let n = 0;
/** A user ID no other test uses. */
export const user = (name) => `${name}-${process.pid}-${++n}`;

/** A client of user with a tokenProvider, recording its events. */
export function client(userID, options = {}) {
  const c = new CallsigClient({
    baseURL: URL, EventSource, deviceID: 'node',
    tokenProvider: () => token(userID), ...options,
  });
  c.events = recorder(c);
  return c;
}

const EVENTS = ['callInvitationCreated', 'callInvitationReceived', 'callInvitationCancelled', 'callInvitationTimeout',
  'callInvitationEnded', 'callUserStateChanged', 'connectionStateChanged', 'tokenWillExpire', 'reset', 'error'];

/** Records every event of c as {name, data, client}; wait(pred) resolves with the first match. */
export function recorder(c) {
  const list = [];
  const waiters = [];
  for (const name of EVENTS) {
    c.on(name, (cl, data) => {
      const e = {name, data, client: cl};
      list.push(e);
      for (const w of [...waiters]) {
        if (w.pred(e)) {
          waiters.splice(waiters.indexOf(w), 1);
          clearTimeout(w.timer);
          w.resolve(e);
        }
      }
    });
  }
  return {
    list,
    of: (name) => list.filter((e) => e.name === name),
    /** Resolves with the first event (already seen or coming) matching, or fails after ms. */
    wait(pred, what = 'an event', ms = 10000) {
      const seen = list.find(pred);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const w = {pred, resolve};
        w.timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          reject(new Error(`no ${what} within ${ms} ms; got ${JSON.stringify(list.map((e) => [e.name, e.data]))}`));
        }, ms);
        waiters.push(w);
      });
    },
  };
}

/** Checks that c's handlers got the user's committed events for its device, each once, in order. */
export async function exactlyTheLog(c) {
  const want = (await log(c.userID)).filter((e) => e.device === '' || e.device === c.deviceID).map((e) => `${e.type} ${e.callID}`);
  const got = c.events.list.filter((e) => e.name.startsWith('call')).map((e) => `${e.name} ${e.data.callID}`);
  assert.deepEqual(got, want);
}

/** Matches event name for callID (and, for callUserStateChanged, user in state). */
export const is = (name, callID, userID, state) => (e) => e.name === name && (!callID || e.data.callID === callID) &&
  (!userID || (e.data.callUserList || []).some((u) => u.userID === userID && u.state === state));
