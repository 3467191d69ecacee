// Compiled (never run) by TestSDKTypes under tsc --strict --noEmit: uses of
// callsig.d.ts the way an app writes them, so the types match the JS.
import { CallsigClient, CallsigError } from '../callsig.js';
import type { CallsigClientErrorCode, CallInviteResult, CallingInviteResult } from '../callsig.js';

const client = new CallsigClient({
  baseURL: 'https://calls.example.com',
  tokenProvider: async () => 'a.jwt.token',
  deviceID: 'web-1',
  userClaim: 'uid',
  retry: { attempts: 3 },
});

// CallsigError is built the way callsig.js builds it, and thrown by apps' own
// code too (a fake client in their tests).
const err = new CallsigError({ status: 409, code: 'invalid_state', detail: 'the call ended' });
const bare = new CallsigError();
const status: number = err.status;
const retryAfter: number | undefined = bare.retryAfter;

// The client's own codes are named.
const codes: CallsigClientErrorCode[] = ['network_error', 'stream_refused', 'logged_out', 'no_token', 'unknown', 'http_502'];

// busyUsers is always there (empty when none).
function busy(r: CallInviteResult, s: CallingInviteResult): number {
  return r.busyUsers.length + s.busyUsers.length;
}

async function app(): Promise<void> {
  try {
    await client.login();
  } catch (e) {
    if (e instanceof CallsigError && e.code === 'logged_out') return;
    throw e;
  }
  client.on('callInvitationReceived', (c, data) => { void c.callAccept(data.callID); });
  client.on('tokenWillExpire', (c, { second }) => { void second; });
  let r: CallInviteResult;
  try {
    r = await client.callInvite(['bob'], { mode: 'general', timeout: 60, busyPolicy: 'ring' });
  } catch (e) {
    // Unanswered: the same call again under the key it was sent with.
    if (!(e instanceof CallsigError) || e.code !== 'network_error') throw e;
    const key: string | undefined = e.idempotencyKey;
    r = await client.callInvite(['bob'], { mode: 'general', timeout: 60, busyPolicy: 'ring', idempotencyKey: key });
  }
  await client.callAccept(r.callID, { idempotencyKey: 'k1' });
  busy(r, await client.callingInvite(['carol'], r.callID));
  const me: string = client.userID;
  void me;
}

void app;
void status;
void retryAfter;
void codes;
