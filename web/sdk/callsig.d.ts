// Types of callsig.js, the JavaScript client of callsig. Results and event
// data are the HTTP contract's bodies (api/openapi.yaml). All times are Unix
// milliseconds.

export type CallMode = 'general' | 'advanced';
export type CallState = 'started' | 'ended';
export type CallUserState =
  | 'inviting' | 'received' | 'notYetReceived' | 'accepted' | 'rejected'
  | 'cancelled' | 'timeout' | 'quit' | 'unknown';
/** What to do with an invitee already accepted in another started call. */
export type BusyPolicy = 'ring' | 'reject';
export type ConnectionState = 'connecting' | 'connected' | 'reconnecting' | 'disconnected';

export interface PushConfig {
  title?: string;
  content?: string;
  payload?: string;
  resourcesID?: string;
}

export interface CallUserInfo {
  userID: string;
  state: CallUserState;
  inviter: string;
  extendedData: string;
  updateTime: number;
}

export interface CallInfo {
  callID: string;
  caller: string;
  mode: CallMode;
  state: CallState;
  timeout: number;
  extendedData: string;
  createTime: number;
  /** 0 while started. */
  endTime: number;
  callUserList: CallUserInfo[];
}

export interface ErrorUser {
  userID: string;
  /** `already_in_call`, `call_full`, `busy` (with busyPolicy `reject`), … */
  reason: 'already_in_call' | 'call_full' | 'busy' | (string & {});
}

// ---- configs ----------------------------------------------------------------

/** What every action's config may carry. */
export interface ActionConfig {
  /**
   * The Idempotency-Key of every attempt (default: a new random one). Give
   * the `idempotencyKey` of a CallsigError the same action failed with
   * (`network_error`, `logged_out`: it may have been done) to get the first
   * answer rather than act twice; the body must be the same. 1–255
   * printable ASCII characters, no space at either end (anything else
   * throws a TypeError before a request is sent).
   */
  idempotencyKey?: string;
}

export interface CallInviteConfig extends ActionConfig {
  mode?: CallMode;
  /** Seconds an invitee has to answer, 1–600 (default 90). */
  timeout?: number;
  /** At most 2048 bytes, sent to the invitees. */
  extendedData?: string;
  pushConfig?: PushConfig;
  enableNotReceivedCheck?: boolean;
  /** Default `ring`. */
  busyPolicy?: BusyPolicy;
}

export interface CallCancelConfig extends ActionConfig {
  extendedData?: string;
  pushConfig?: PushConfig;
}

export interface CallAcceptConfig extends ActionConfig {
  extendedData?: string;
}

export type CallRejectConfig = CallAcceptConfig;
export type CallJoinConfig = CallAcceptConfig;

export interface CallingInviteConfig extends ActionConfig {
  pushConfig?: PushConfig;
  busyPolicy?: BusyPolicy;
}

export interface CallQuitConfig extends ActionConfig {
  extendedData?: string;
  pushConfig?: PushConfig;
}

export type CallEndConfig = CallQuitConfig;

export interface CallInvitationQueryConfig {
  /** Default 20, at most 100. */
  count?: number;
  /** 0 or absent: from the newest; else a nextFlag from a previous page. */
  nextFlag?: number;
}

// ---- results ----------------------------------------------------------------

export interface CallInviteResult {
  callID: string;
  timeout: number;
  errorUserList: ErrorUser[];
  /** Invitees on another call, invited anyway (busyPolicy `ring`); empty when none. */
  busyUsers: string[];
  call: CallInfo;
}

export interface CallCancelResult {
  callID: string;
  errorInvitees: string[];
}

export interface CallAcceptResult { callID: string; }
export interface CallRejectResult { callID: string; }

export interface CallingInviteResult {
  callID: string;
  errorUserList: ErrorUser[];
  /** Invitees on another call, invited anyway (busyPolicy `ring`); empty when none. */
  busyUsers: string[];
}

export interface CallJoinResult {
  callID: string;
  createTime: number;
  joinTime: number;
  extendedData: string;
  callUserList: CallUserInfo[];
}

export interface CallQuitResult {
  callID: string;
  createTime: number;
  acceptTime: number;
  quitTime: number;
}

export interface CallEndResult {
  callID: string;
  createTime: number;
  acceptTime: number;
  endTime: number;
}

export interface CallInvitationListResult {
  /** Newest first. */
  callList: CallInfo[];
  /** 0: no more. */
  nextFlag: number;
}

// ---- events -----------------------------------------------------------------

export interface CallInvitationCreatedData {
  callID: string;
  caller: string;
  mode: CallMode;
  timeout: number;
  createTime: number;
  extendedData: string;
  callUserList: CallUserInfo[];
}

export interface CallInvitationReceivedData extends CallInvitationCreatedData {
  inviter: string;
}

export interface CallInvitationCancelledData {
  callID: string;
  inviter: string;
  mode: CallMode;
  extendedData: string;
}

export interface CallInvitationTimeoutData {
  callID: string;
  mode: CallMode;
}

export interface CallInvitationEndedData {
  callID: string;
  caller: string;
  operatedUserID: string;
  mode: CallMode;
  endTime: number;
  extendedData: string;
}

export interface CallUserStateChangedData {
  callID: string;
  /** The users whose state changed. */
  callUserList: CallUserInfo[];
}

export interface ConnectionStateChangedData {
  state: ConnectionState;
  /** Why, when known: `network`, `refused`, `logout`. */
  reason: string;
}

/**
 * The stream's token expires soon: 30 s before its exp, or, when the stream
 * came back after the token expired (the device offline through the
 * warning) and no tokenProvider can renew it, at once with `second` 0.
 */
export interface TokenWillExpireData {
  /** Seconds until the stream's token expires (0: expired). */
  second: number;
}

export interface CallsigEventMap {
  callInvitationCreated: CallInvitationCreatedData;
  callInvitationReceived: CallInvitationReceivedData;
  callInvitationCancelled: CallInvitationCancelledData;
  callInvitationTimeout: CallInvitationTimeoutData;
  callInvitationEnded: CallInvitationEndedData;
  callUserStateChanged: CallUserStateChangedData;
  connectionStateChanged: ConnectionStateChangedData;
  tokenWillExpire: TokenWillExpireData;
  /**
   * The server no longer has the events after the client's position (pruned,
   * or the position is ahead of its log: its database was wiped or restored):
   * reload with queryCallInvitationList. The client forgets the position;
   * the invitations still pending follow, then live events. Also sent when a
   * token renewal had to replace a stream that never reached its first
   * position (its opening held up for more than 5 s): what that stream held
   * is unknown.
   */
  reset: Record<string, never>;
  /** A handler threw (or the promise an async one returned rejected), or tokenProvider failed. */
  error: { error: unknown; event: string };
}

export type CallsigEventName = keyof CallsigEventMap;
export type CallsigEventHandler<K extends CallsigEventName> = (client: CallsigClient, data: CallsigEventMap[K]) => void;

export const CALL_EVENTS: readonly [
  'callInvitationCreated', 'callInvitationReceived', 'callInvitationCancelled',
  'callInvitationTimeout', 'callInvitationEnded', 'callUserStateChanged',
];

// ---- the client ---------------------------------------------------------------

/** The minimal EventSource the client needs (the browser's, or the `eventsource` package's). */
export interface EventSourceLike {
  readonly readyState: number;
  onopen: ((ev: any) => any) | null;
  onerror: ((ev: any) => any) | null;
  addEventListener(type: string, listener: (ev: { data: string; lastEventId: string }) => void): void;
  close(): void;
}

export interface CallsigClientOptions {
  /** The server, e.g. `https://calls.example.com`; "" (default) is the page's origin. */
  baseURL?: string;
  /** A user JWT. Give this or tokenProvider. */
  token?: string;
  /**
   * Returns a fresh JWT: called at login without token, when login's stream
   * or a request gets 401, and on tokenWillExpire (the stream is reopened
   * only with a token expiring later than its own; otherwise it is asked
   * again with backoff while the stream lasts; a renewal's stream warned
   * at once again, its token as short, waits 1 s, 2 s, … up to 15 s).
   */
  tokenProvider?: () => string | Promise<string>;
  /** This device (default `default`). */
  deviceID?: string;
  /**
   * The JWT claim holding the user ID, the same as the server's
   * `CALLSIG_JWT_USER_CLAIM` (default `sub`); `userID` reads it.
   */
  userClaim?: string;
  /** Required where there is no global EventSource (Node: `import { EventSource } from 'eventsource'`). */
  EventSource?: new (url: string) => EventSourceLike;
  fetch?: typeof fetch;
  /**
   * Retries of network errors, 503 and a proxy's 502 and 504, each with
   * the request's one Idempotency-Key: attempts in all (default 5), first
   * delay and cap in ms (200, 5000), and how long an attempt waits for its
   * whole answer before it counts as a network error (default 15000 ms; 0:
   * no limit). A field left undefined keeps its default.
   */
  retry?: { attempts?: number; baseDelay?: number; maxDelay?: number; timeout?: number };
  /**
   * Ms without an event or heartbeat after which a stream counts as dead
   * (a connection gone silent, which EventSource never notices) and is
   * reopened from the last event (default 40000; 0: never), with any
   * other stream still opening. Each connection is watched once its first
   * heartbeat event (with the stream's opening) shows that the server
   * sends them, at least every 15 s: keep it well above that. A
   * connection must also open (its response head) within it, the first
   * one and each after a drop: one held up is dropped the same way; and,
   * once a heartbeat came, or when opened without a position (a login's),
   * show a heartbeat or an event within it, or it is not taken as served
   * (its body held by a proxy) and is dropped too. 0, or
   * 1000 to 2147483647 (anything else throws a TypeError).
   */
  heartbeatTimeout?: number;
}

/**
 * The codes the client itself produces, beside the server's problem codes:
 * - `network_error` (status 0): the server did not answer (a proxy's 502
 *   or 504 included), or its 2xx answer was cut, after every retry;
 * - `stream_refused`: login's event stream was refused (after one retry
 *   with a token from tokenProvider);
 * - `logged_out`: logout() was called while login() was connecting, or
 *   before a request's next attempt (none is sent after a logout: the
 *   token may be another user's by then; the action may have been done);
 * - `no_token`: tokenProvider returned no token;
 * - `token_provider_failed`: tokenProvider threw or rejected (its error is
 *   the CallsigError's `cause`);
 * - `http_<status>`: an error answer without a problem body;
 * - `unknown`: a CallsigError built without a code.
 */
export type CallsigClientErrorCode =
  | 'network_error' | 'stream_refused' | 'logged_out' | 'no_token' | 'token_provider_failed' | 'unknown'
  | `http_${number}`;

/** A problem code of the server (`invalid_state`, `call_ended`, …) or of the client. */
export type CallsigErrorCode = CallsigClientErrorCode | (string & {});

/** What a CallsigError is built from: the problem+json body's fields. */
export interface CallsigErrorInit {
  status?: number;
  code?: CallsigErrorCode;
  detail?: string;
  title?: string;
  errors?: { field: string; message: string }[];
  retryAfter?: number;
  idempotencyKey?: string;
  /** The error this one wraps (tokenProvider's, for `token_provider_failed`). */
  cause?: unknown;
}

/** An HTTP API error: the problem+json body. */
export class CallsigError extends Error {
  constructor(init?: CallsigErrorInit);
  readonly name: 'CallsigError';
  /** HTTP status; 0 when the server could not be reached or the error is the client's. */
  readonly status: number;
  /** The problem's stable code, or one of CallsigClientErrorCode. */
  readonly code: CallsigErrorCode;
  readonly detail: string;
  readonly title: string;
  /** Per-field messages of a validation error (empty otherwise). */
  readonly errors: { field: string; message: string }[];
  /** Seconds from Retry-After, when sent. */
  readonly retryAfter?: number;
  /**
   * The Idempotency-Key of the failed action's every attempt (actions
   * only): retry the action with it as ActionConfig.idempotencyKey after a
   * `network_error` or `logged_out`, which leave unknown whether it was done.
   */
  readonly idempotencyKey?: string;
}

export class CallsigClient {
  constructor(options: CallsigClientOptions);

  /** The token's user ID: its `userClaim` (default `sub`); "" when the token is not a JWT. */
  readonly userID: string;
  readonly deviceID: string;
  readonly connectionState: ConnectionState;
  /** The id of the last event handed to the handlers ("" before any, and after a reset until the next). */
  readonly lastEventID: string;

  on<K extends CallsigEventName>(name: K, handler: CallsigEventHandler<K>): this;
  off<K extends CallsigEventName>(name: K, handler?: CallsigEventHandler<K>): this;

  /**
   * Opens the user's event stream; resolves once the server serves it (a
   * stream it refuses for now, with its `refused` event, keeps login()
   * pending while the client tries again after the server's retry).
   * Rejects with code `stream_refused` (an HTTP error, after one retry
   * with tokenProvider's token; a 502, 503 or 504, the server out of reach
   * for now, keeps it pending while the client tries again; where the
   * EventSource does not tell the status, a browser's, the client asks
   * GET /calls?count=1 with the same token, and no answer, a 429 or any
   * 5xx to that keeps it pending too) or `logged_out` (logout() came first). A
   * login() while another is in flight shares its outcome.
   */
  login(): Promise<void>;
  /** Closes the event stream; a login() still connecting, and a request due to be retried, reject with `logged_out`. */
  logout(): void;
  /**
   * Replaces the token (without tokenProvider: call it on tokenWillExpire).
   * The stream is reopened with it only when it expires later than the
   * stream's token.
   */
  renewToken(token: string): Promise<void>;

  callInvite(invitees: string[], config?: CallInviteConfig): Promise<CallInviteResult>;
  callCancel(invitees: string[], callID: string, config?: CallCancelConfig): Promise<CallCancelResult>;
  callAccept(callID: string, config?: CallAcceptConfig): Promise<CallAcceptResult>;
  callReject(callID: string, config?: CallRejectConfig): Promise<CallRejectResult>;
  callingInvite(invitees: string[], callID: string, config?: CallingInviteConfig): Promise<CallingInviteResult>;
  callJoin(callID: string, config?: CallJoinConfig): Promise<CallJoinResult>;
  callQuit(callID: string, config?: CallQuitConfig): Promise<CallQuitResult>;
  callEnd(callID: string, config?: CallEndConfig): Promise<CallEndResult>;
  queryCallInvitationList(config?: CallInvitationQueryConfig): Promise<CallInvitationListResult>;
  /** One call as it stands (GET /calls/{callID}); not in ZIM. */
  queryCall(callID: string): Promise<CallInfo>;
}
