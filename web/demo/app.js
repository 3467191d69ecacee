// callsig demo: a page built on the JavaScript client (/sdk/callsig.js),
// its first user. The client does the HTTP, the idempotent retries, the
// event stream, its reconnection and the token's renewal; this file only
// keeps the calls it hears about and draws them.
//
// One tab is one signed-in user on one device: the user and the device ID
// live in sessionStorage, so every tab is separate. Tokens come from
// POST /dev/token (development mode), as the client's tokenProvider.
import {CallsigClient} from '/sdk/callsig.js';

const PENDING = new Set(['inviting', 'received', 'notYetReceived']);
const CALL_EVENTS = ['callInvitationCreated', 'callInvitationReceived', 'callInvitationCancelled',
  'callInvitationTimeout', 'callInvitationEnded', 'callUserStateChanged'];
const HISTORY_PAGE = 4;
const LOG_MAX = 300;
const KEEP_ENDED = 6; // ended call cards kept on screen (the rest are in Past calls)

const $ = (sel) => document.querySelector(sel);
const store = window.sessionStorage;

const S = {
  client: null,
  user: '',
  calls: new Map(), // callID -> CallInfo (+ endedBy)
  seen: new Map(), // callID -> when this tab first saw the call ring (ms)
  history: [],
  nextFlag: 0,
  historyTimer: 0,
};

// ---- small DOM helpers -------------------------------------------------------

// h builds an element: h('button', {class: 'x', 'data-testid': 'y', onclick: f}, 'text', child…)
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function clock(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  return new Date().toDateString() === d.toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}

const badge = (state, testid) => h('span', {class: 'badge s-' + state, 'data-testid': testid}, state);

// A stable colour per user, for the little avatars.
function hue(user) {
  let n = 0;
  for (const ch of user) n = (n * 31 + ch.codePointAt(0)) % 360;
  return n;
}

function avatar(user) {
  const el = h('span', {class: 'avatar', 'aria-hidden': 'true'}, (user[0] || '?').toUpperCase());
  el.style.setProperty('--hue', hue(user));
  return el;
}

const splitUsers = (text) => text.split(/[\s,;]+/).map((s) => s.trim()).filter(Boolean);

// ---- notices -------------------------------------------------------------------

function toast(kind, title, detail) {
  const el = h('div', {class: 'toast ' + kind, role: kind === 'error' ? 'alert' : 'status', 'data-testid': kind},
    h('strong', {}, title), detail ? h('span', {}, detail) : null,
    h('button', {type: 'button', class: 'close', 'aria-label': 'dismiss', onclick: () => el.remove()}, '×'));
  $('#toasts').prepend(el);
  setTimeout(() => el.remove(), kind === 'error' ? 12000 : 6000);
}

// showError shows a failed call: a CallsigError's detail, status and code.
function showError(err, what) {
  const title = what ? what + ' failed' : 'Request failed';
  const detail = err && err.code ? `${err.detail || err.title || err.message} (${err.status} ${err.code})` : String(err && err.message || err);
  toast('error', title, detail);
  console.warn(title, err);
}

// ---- session -----------------------------------------------------------------------

function deviceID() {
  let d = store.getItem('callsig.device');
  if (!d) {
    const b = crypto.getRandomValues(new Uint8Array(4));
    d = 'tab-' + Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
    store.setItem('callsig.device', d);
  }
  return d;
}

// devToken is the client's tokenProvider: POST /dev/token answers only in
// development mode (a real app asks its own backend).
async function devToken(user) {
  const res = await fetch('/dev/token', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({userID: user})});
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw Object.assign(new Error(body.detail || `${res.status}`), body);
  return body.token;
}

async function signIn(user) {
  const client = new CallsigClient({tokenProvider: () => devToken(user), deviceID: deviceID()});
  for (const type of CALL_EVENTS) client.on(type, (c, data) => onEvent(c, type, data));
  client.on('connectionStateChanged', onConnection);
  client.on('tokenWillExpire', (c, {second}) => logEvent('', 'tokenWillExpire', `token expires in ${second} s: renewing`));
  client.on('reset', reload);
  client.on('error', (_c, {error, event}) => {
    showError(error, event === 'tokenProvider' ? 'Renewing the session' : 'Event handler');
    if (event === 'tokenProvider' && error.status === 404) signOut(); // no development mode any more
  });
  S.client = client;
  S.user = user;
  try {
    await client.login();
  } catch (e) {
    S.client = null;
    store.removeItem('callsig.user');
    if (e.status === 404) {
      toast('error', 'Sign-in unavailable',
        'POST /dev/token answers only in development mode (no CALLSIG_JWT_SECRET). Use a token from your own backend instead.');
    } else {
      showError(e, 'Sign-in');
    }
    return;
  }
  store.setItem('callsig.user', user);
  $('#me').textContent = user;
  const av = $('#me-avatar');
  av.textContent = user[0].toUpperCase();
  av.style.setProperty('--hue', hue(user));
  $('#device').textContent = client.deviceID;
  $('#login').hidden = true;
  $('#app').hidden = false;
  $('#session').hidden = false;
  document.title = `${user} · callsig demo`;
  reload();
  $('#invitees').focus();
}

function signOut() {
  if (S.client) S.client.logout();
  S.client = null;
  S.user = '';
  store.removeItem('callsig.user');
  clearTimeout(S.historyTimer);
  S.calls.clear();
  S.history = [];
  S.nextFlag = 0;
  renderAll();
  renderHistory();
  $('#app').hidden = true;
  $('#session').hidden = true;
  $('#login').hidden = false;
  $('#event-log').replaceChildren();
  document.title = 'callsig demo';
  $('#login-user').focus();
}

// ---- events --------------------------------------------------------------------------

let wasAway = false;
function onConnection(client, {state, reason}) {
  if (client !== S.client) return;
  const el = $('#conn');
  el.dataset.state = state;
  el.textContent = state;
  logLine(state === 'connected' ? 'info' : 'warn', `stream ${state}${reason ? ` (${reason})` : ''}`);
  if (state === 'reconnecting') wasAway = true;
  if (state === 'connected' && wasAway) {
    wasAway = false;
    for (const [id, c] of S.calls) if (c.state !== 'ended') refresh(id); // when in doubt, ask
    historySoon();
  }
}

function onEvent(client, type, data) {
  if (client !== S.client) return;
  $('#last-event').textContent = 'last event id ' + client.lastEventID;
  logEvent(client.lastEventID, type, JSON.stringify(data), data.callID);
  const id = data.callID;
  const known = S.calls.get(id);
  switch (type) {
    case 'callInvitationCreated':
    case 'callInvitationReceived':
      upsert({callID: id, caller: data.caller, mode: data.mode, state: 'started', timeout: data.timeout,
        extendedData: data.extendedData, createTime: data.createTime, endTime: 0, callUserList: data.callUserList || []});
      break;
    case 'callInvitationCancelled':
      if (known) setMyState(known, 'cancelled');
      break;
    case 'callInvitationTimeout':
      if (known) setMyState(known, 'timeout');
      break;
    case 'callInvitationEnded':
      if (known) Object.assign(known, {state: 'ended', endTime: data.endTime, endedBy: data.operatedUserID});
      break;
    case 'callUserStateChanged':
      if (known) mergeUsers(known, data.callUserList || []);
      break;
  }
  renderAll();
  historySoon();
  refreshSoon(id); // the event tells what changed; the call says where it stands
}

// ---- call state ----------------------------------------------------------------------

const me = (call) => (call.callUserList || []).find((u) => u.userID === S.user);

function setMyState(call, state) {
  const u = me(call);
  if (u && PENDING.has(u.state)) u.state = state;
}

// mergeUsers takes each user's newer row (by updateTime).
function mergeUsers(call, list) {
  for (const nu of list) {
    const i = call.callUserList.findIndex((u) => u.userID === nu.userID);
    if (i < 0) call.callUserList.push(nu);
    else if ((nu.updateTime || 0) >= (call.callUserList[i].updateTime || 0)) call.callUserList[i] = nu;
  }
}

// upsert stores a call, from an event or the API. Neither may undo a newer
// one: a user's row with a later updateTime wins, an ended call stays ended.
function upsert(info) {
  const old = S.calls.get(info.callID);
  if (!old) {
    S.calls.set(info.callID, {...info, callUserList: [...(info.callUserList || [])]});
    return;
  }
  const ended = old.state === 'ended';
  Object.assign(old, info, {callUserList: old.callUserList});
  mergeUsers(old, info.callUserList || []);
  if (ended) old.state = 'ended';
}

const refreshTimers = new Map();
function refreshSoon(id) {
  clearTimeout(refreshTimers.get(id));
  refreshTimers.set(id, setTimeout(() => refresh(id), 150));
}

async function refresh(id) {
  refreshTimers.delete(id);
  const client = S.client;
  try {
    const info = await client.queryCall(id);
    if (client !== S.client) return;
    upsert(info);
    renderAll();
  } catch (e) {
    if (e.status !== 404) showError(e, 'Loading call ' + id.slice(0, 8));
  }
}

// reload starts over from the API: at sign-in, and after a reset (events
// after the client's position were pruned).
async function reload() {
  const client = S.client;
  S.calls.clear();
  S.history = [];
  S.nextFlag = 0;
  try {
    const res = await client.queryCallInvitationList({count: 20});
    if (client !== S.client) return;
    for (const c of res.callList) if (c.state === 'started') upsert(c);
    renderAll();
  } catch (e) {
    showError(e, 'Loading calls');
  }
  refreshHistory();
}

// ---- actions -------------------------------------------------------------------------

// act runs one client method and shows its failure; the call is then
// reloaded either way.
async function act(callID, label, f) {
  try {
    return (await f(S.client)) || {};
  } catch (e) {
    showError(e, label);
    return null;
  } finally {
    if (callID) refreshSoon(callID);
  }
}

async function placeCall(ev) {
  ev.preventDefault();
  const invitees = splitUsers($('#invitees').value);
  if (!invitees.length) {
    toast('error', 'Nobody to call', 'Name at least one user ID.');
    return;
  }
  const config = {mode: $('#mode').value, enableNotReceivedCheck: $('#not-received').checked};
  if ($('#timeout').value.trim()) config.timeout = Number($('#timeout').value);
  if ($('#extended-data').value) config.extendedData = $('#extended-data').value;
  const btn = ev.submitter || $('[data-testid=call-submit]');
  btn.disabled = true;
  const res = await act('', 'Call', (c) => c.callInvite(invitees, config));
  btn.disabled = false;
  if (!res) return;
  upsert(res.call);
  $('#last-call-id').textContent = res.callID;
  $('#extended-data').value = '';
  notInvited(res);
  renderAll();
  historySoon();
}

function notInvited(res) {
  for (const e of res.errorUserList || []) toast('warn', `${e.userID} not invited`, e.reason);
  for (const u of res.busyUsers || []) toast('info', `${u} is on another call`, 'invited anyway');
}

async function answer(callID, accept) {
  const res = await act(callID, accept ? 'Accept' : 'Reject', (c) => (accept ? c.callAccept(callID) : c.callReject(callID)));
  const call = S.calls.get(callID);
  if (res && call) {
    setMyState(call, accept ? 'accepted' : 'rejected');
    renderAll();
  }
}

async function joinByID(ev) {
  ev.preventDefault();
  const input = $('#join-call-id');
  const id = input.value.trim();
  if (id && await act(id, 'Join', (c) => c.callJoin(id))) input.value = '';
}

async function inviteMore(callID, input) {
  const invitees = splitUsers(input.value);
  if (!invitees.length) return;
  const res = await act(callID, 'Invite', (c) => c.callingInvite(invitees, callID));
  if (!res) return;
  inviteDrafts.delete(callID);
  inviteOpen.delete(callID);
  notInvited(res);
  renderAll();
}

// ---- rendering -------------------------------------------------------------

const inviteOpen = new Set(); // calls whose "invite more" box is open
const inviteDrafts = new Map(); // callID -> what was typed in that box

// renderAll redraws the ringing cards and the call cards from S.calls.
// A box being typed into keeps its focus and caret when its card is
// rebuilt.
function renderAll() {
  const active = document.activeElement;
  const card = active && active.tagName === 'INPUT' && active.closest('[data-call-id]');
  const focus = card && {id: card.dataset.callId, testid: active.dataset.testid, sel: [active.selectionStart, active.selectionEnd]};
  renderIncoming();
  renderCalls();
  updateCountdowns();
  if (focus && !active.isConnected) {
    const el = document.querySelector(`.call-card[data-call-id="${CSS.escape(focus.id)}"] [data-testid="${focus.testid}"]`);
    if (el) {
      el.focus();
      el.setSelectionRange(focus.sel[0], focus.sel[1]);
    }
  }
}

function ringing(c) {
  const u = me(c);
  return c.state === 'started' && u && PENDING.has(u.state) && c.caller !== S.user && u.inviter !== S.user;
}

function renderIncoming() {
  const box = $('#incoming');
  const list = [...S.calls.values()].filter(ringing).sort((a, b) => b.createTime - a.createTime);
  for (const c of list) if (!S.seen.has(c.callID)) S.seen.set(c.callID, Date.now());
  keyed(box, list.map(incomingCard));
}

function incomingCard(c) {
  const u = me(c);
  const others = c.callUserList.filter((x) => x.userID !== S.user && x.userID !== c.caller).map((x) => x.userID);
  const since = u && u.inviter !== c.caller ? (S.seen.get(c.callID) || Date.now()) : c.createTime;
  const deadline = since + c.timeout * 1000;
  return h('article', {class: 'incoming-call', 'data-testid': 'incoming-call', 'data-call-id': c.callID},
    h('div', {class: 'ring'}, avatar(u ? u.inviter : c.caller)),
    h('div', {class: 'grow'},
      h('div', {class: 'incoming-title'},
        h('strong', {}, u ? u.inviter : c.caller), ' is calling you',
        u && u.inviter !== c.caller ? h('span', {class: 'muted'}, ` (into ${c.caller}'s call)`) : null),
      h('div', {class: 'muted small-text'},
        h('span', {class: 'pill mode-' + c.mode}, c.mode),
        others.length ? ' with ' + others.join(', ') : '',
        ' · ', h('span', {class: 'countdown', 'data-deadline': deadline}),
        ' · ', badge(u ? u.state : 'unknown', 'my-state')),
      c.extendedData ? h('div', {class: 'extended'}, '“', c.extendedData, '”') : null),
    h('div', {class: 'actions'},
      h('button', {type: 'button', class: 'accept', 'data-testid': 'accept', onclick: () => answer(c.callID, true)}, 'Accept'),
      h('button', {type: 'button', class: 'reject', 'data-testid': 'reject', onclick: () => answer(c.callID, false)}, 'Reject')));
}

// keyed puts the freshly built cards into box, keeping every existing
// card that would look the same (same call, same markup): a card being
// clicked is not swapped under the pointer, and nothing flickers.
function keyed(box, cards) {
  const old = new Map([...box.children].map((el) => [el.dataset.callId, el]));
  const next = cards.map((el) => {
    el.markup = el.outerHTML;
    const prev = old.get(el.dataset.callId);
    return prev && prev.markup === el.markup ? prev : el;
  });
  if (next.length === box.children.length && next.every((el, i) => box.children[i] === el)) return;
  box.replaceChildren(...next);
}

function updateCountdowns() {
  for (const el of document.querySelectorAll('.countdown')) el.textContent = countdown(Number(el.dataset.deadline));
}

function countdown(deadline) {
  const s = Math.max(0, Math.ceil((deadline - Date.now()) / 1000));
  return s > 0 ? `answer within ${s} s` : 'timing out…';
}

function renderCalls() {
  const all = [...S.calls.values()];
  const live = all.filter((c) => c.state !== 'ended').sort((a, b) => b.createTime - a.createTime);
  const ended = all.filter((c) => c.state === 'ended').sort((a, b) => (b.endTime || b.createTime) - (a.endTime || a.createTime));
  for (const c of ended.slice(KEEP_ENDED)) S.calls.delete(c.callID);
  keyed($('#calls'), [...live, ...ended.slice(0, KEEP_ENDED)].map(callCard));
  $('#calls-hint').textContent = live.length
    ? `${live.length} going on`
    : 'Calls you are in appear here, live.';
}

function callCard(c) {
  const my = me(c);
  const myState = my ? my.state : 'unknown';
  const started = c.state === 'started';
  const advanced = c.mode === 'advanced';
  const accepted = myState === 'accepted';
  const canCancel = started && c.callUserList.some((u) => u.inviter === S.user && u.userID !== S.user && PENDING.has(u.state));
  const buttons = [];
  if (canCancel) {
    buttons.push(h('button', {type: 'button', class: 'warn', 'data-testid': 'cancel',
      title: 'Cancel every invitation you sent that is still pending',
      onclick: () => act(c.callID, 'Cancel', (cl) => cl.callCancel([], c.callID))}, 'Cancel'));
  }
  if (started && advanced && accepted) {
    buttons.push(h('button', {type: 'button', 'data-testid': 'invite-more', 'aria-expanded': String(inviteOpen.has(c.callID)),
      onclick: () => {
        if (inviteOpen.has(c.callID)) inviteOpen.delete(c.callID);
        else inviteOpen.add(c.callID);
        renderAll();
        const box = document.querySelector(`.call-card[data-call-id="${CSS.escape(c.callID)}"] [data-testid=invite-more-users]`);
        if (box) box.focus();
      }}, 'Invite more'));
  }
  if (started && advanced && !accepted && !PENDING.has(myState)) {
    buttons.push(h('button', {type: 'button', 'data-testid': 'join', onclick: () => act(c.callID, 'Join', (cl) => cl.callJoin(c.callID))}, 'Join'));
  }
  if (started && advanced && accepted) {
    buttons.push(h('button', {type: 'button', 'data-testid': 'quit', onclick: () => act(c.callID, 'Quit', (cl) => cl.callQuit(c.callID))}, 'Quit'));
    buttons.push(h('button', {type: 'button', class: 'danger', 'data-testid': 'end', title: 'End the call for everyone', onclick: () => act(c.callID, 'End', (cl) => cl.callEnd(c.callID))}, 'End'));
  }
  if (!started) {
    buttons.push(h('button', {type: 'button', class: 'ghost', 'data-testid': 'dismiss', onclick: () => {
      S.calls.delete(c.callID);
      renderAll();
    }}, 'Dismiss'));
  }

  let inviteForm = null;
  if (started && advanced && accepted && inviteOpen.has(c.callID)) {
    const input = h('input', {class: 'grow', 'data-testid': 'invite-more-users', placeholder: 'user IDs to invite, comma-separated',
      'aria-label': 'user IDs to invite', oninput: () => inviteDrafts.set(c.callID, input.value)});
    input.value = inviteDrafts.get(c.callID) || '';
    inviteForm = h('form', {class: 'row invite-form', onsubmit: (ev) => {
      ev.preventDefault();
      inviteMore(c.callID, input);
    }}, input, h('button', {type: 'submit', class: 'primary', 'data-testid': 'invite-more-submit'}, 'Invite'));
  }

  const users = c.callUserList.slice().sort((a, b) => (a.userID === c.caller ? -1 : b.userID === c.caller ? 1 : 0));
  return h('article', {class: `call-card state-${c.state}`, 'data-testid': 'call-card', 'data-call-id': c.callID, 'data-mode': c.mode},
    h('header', {class: 'call-head'},
      h('div', {},
        h('div', {class: 'call-title'},
          c.caller === S.user ? 'You called ' + (users.filter((u) => u.userID !== S.user && u.inviter === S.user).map((u) => u.userID).join(', ') || '…')
            : `${c.caller}'s call`),
        h('div', {class: 'muted small-text'},
          h('span', {class: 'pill mode-' + c.mode}, c.mode), ' · ', clock(c.createTime),
          ` · timeout ${c.timeout} s`,
          c.endTime ? ` · ended ${clock(c.endTime)}` : '',
          c.endedBy ? ` by ${c.endedBy}` : ''),
        h('div', {class: 'muted small-text call-id-line'}, 'call ID ',
          h('code', {class: 'call-id', 'data-testid': 'call-id'}, c.callID),
          h('button', {type: 'button', class: 'ghost small', title: 'Copy the call ID', onclick: () => copy(c.callID)}, 'Copy'))),
      h('span', {class: 'badge big s-' + c.state, 'data-testid': 'call-state'}, c.state)),
    c.extendedData ? h('div', {class: 'extended'}, '“', c.extendedData, '”') : null,
    h('ul', {class: 'users'}, users.map((u) => h('li', {class: u.userID === S.user ? 'me' : ''},
      avatar(u.userID),
      h('span', {class: 'user-id'}, u.userID, u.userID === S.user ? h('small', {class: 'muted'}, ' (you)') : null),
      h('span', {class: 'muted small-text user-meta'},
        u.userID === c.caller ? 'caller' : u.inviter === u.userID ? 'joined' : 'invited by ' + u.inviter,
        u.extendedData && u.userID !== c.caller ? ` · “${u.extendedData}”` : ''),
      badge(u.state, 'user-state-' + u.userID)))),
    inviteForm,
    buttons.length ? h('footer', {class: 'call-foot'}, buttons) : null);
}

async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
    toast('info', 'Copied', text);
  } catch (e) {
    $('#join-call-id').value = text;
    toast('info', 'Call ID', text);
  }
}

// ---- past calls ----------------------------------------------------------------------

function historySoon() {
  clearTimeout(S.historyTimer);
  S.historyTimer = setTimeout(refreshHistory, 200);
}

// refreshHistory reloads the first page. Once the user has paged on, it
// keeps the older pages too (calls pushed off the first page by new ones
// stay, after it). Answers may come in any order: merging by call ID makes
// that not matter.
async function refreshHistory() {
  const client = S.client;
  if (!client) return;
  try {
    const res = await client.queryCallInvitationList({count: HISTORY_PAGE});
    if (client !== S.client) return;
    if (S.history.length > HISTORY_PAGE) {
      const first = new Set(res.callList.map((c) => c.callID));
      S.history = res.callList.concat(S.history.filter((c) => !first.has(c.callID)));
    } else {
      S.history = res.callList;
      S.nextFlag = res.nextFlag;
    }
    renderHistory();
  } catch (e) {
    if (e.status !== 0) showError(e, 'Loading past calls');
  }
}

// loadMoreHistory pages on from where the list ends, with nextFlag.
async function loadMoreHistory() {
  const btn = $('#load-more');
  if (!S.nextFlag || btn.disabled) return;
  btn.disabled = true;
  const client = S.client;
  const res = await act('', 'Loading past calls', (c) => c.queryCallInvitationList({count: HISTORY_PAGE, nextFlag: S.nextFlag}));
  btn.disabled = false;
  if (!res || client !== S.client) return;
  const have = new Set(S.history.map((c) => c.callID));
  S.history = S.history.concat(res.callList.filter((c) => !have.has(c.callID)));
  S.nextFlag = res.nextFlag;
  renderHistory();
}

function renderHistory() {
  const ol = $('#history');
  ol.replaceChildren(...S.history.map((c) => {
    const others = c.callUserList.filter((u) => u.userID !== c.caller);
    return h('li', {'data-call-id': c.callID, 'data-testid': 'history-item'},
      h('div', {class: 'history-line'},
        h('strong', {}, c.caller), ' → ', others.map((u) => u.userID).join(', ') || '—',
        h('span', {class: 'grow'}),
        h('span', {class: 'badge s-' + c.state}, c.state)),
      h('div', {class: 'muted small-text history-line'},
        h('span', {class: 'pill mode-' + c.mode}, c.mode), ' ', clock(c.createTime), ' · ',
        others.map((u) => `${u.userID}: ${u.state}`).join(', '),
        h('span', {class: 'grow'}),
        h('button', {type: 'button', class: 'ghost small', onclick: () => {
          upsert(c);
          renderAll();
          refresh(c.callID);
        }}, 'Show')));
  }));
  if (!S.history.length) ol.append(h('li', {class: 'muted empty'}, 'No calls yet.'));
  $('#load-more').hidden = !S.nextFlag;
}

// ---- event log -----------------------------------------------------------------------

function addLog(li) {
  const ol = $('#event-log');
  ol.prepend(li);
  while (ol.children.length > LOG_MAX) ol.lastChild.remove();
}

function logEvent(id, type, data, callID) {
  addLog(h('li', {class: 'ev', 'data-event': type, 'data-event-id': id, 'data-call-id': callID},
    h('div', {class: 'ev-head'},
      h('span', {class: 'ev-id'}, id ? '#' + id : ''),
      h('strong', {}, type),
      h('span', {class: 'muted'}, new Date().toLocaleTimeString())),
    h('code', {class: 'ev-data'}, data)));
}

function logLine(kind, text) {
  addLog(h('li', {class: 'ev note ' + kind},
    h('div', {class: 'ev-head'}, h('span', {class: 'ev-id'}, '•'), h('span', {}, text),
      h('span', {class: 'muted'}, new Date().toLocaleTimeString()))));
}

// ---- start ---------------------------------------------------------------------------

$('#login-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const user = $('#login-user').value.trim();
  if (user) signIn(user);
});
$('#logout').addEventListener('click', signOut);
$('#call-form').addEventListener('submit', placeCall);
$('#join-form').addEventListener('submit', joinByID);
$('#load-more').addEventListener('click', loadMoreHistory);
$('#history-refresh').addEventListener('click', refreshHistory);
$('#log-clear').addEventListener('click', () => $('#event-log').replaceChildren());
setInterval(updateCountdowns, 1000);
// A member who left a call that goes on (quit, rejected, timed out) gets
// no more of its events: look at such calls now and then.
setInterval(() => {
  for (const [id, c] of S.calls) {
    const my = me(c);
    if (S.client && c.state === 'started' && !(my && (my.state === 'accepted' || PENDING.has(my.state)))) refresh(id);
  }
}, 10000);
if (store.getItem('callsig.user')) signIn(store.getItem('callsig.user'));
