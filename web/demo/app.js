// callsig demo: a browser client of the public HTTP contract.
//
// One tab is one signed-in user on one device. The token and the device ID
// live in sessionStorage, so every tab is separate. Events arrive on an
// EventSource (GET /events); actions go through fetch with the bearer token
// and X-Device-ID (the same device as the stream, so that the main-device
// rule sends this tab the events of the calls it answers).
'use strict';

(() => {
  const PENDING = new Set(['inviting', 'received', 'notYetReceived']);
  const EVENT_TYPES = [
    'callInvitationCreated', 'callInvitationReceived', 'callInvitationCancelled',
    'callInvitationTimeout', 'callInvitationEnded', 'callUserStateChanged', 'reset',
  ];
  const HISTORY_PAGE = 4;
  const LOG_MAX = 300;
  const KEEP_ENDED = 6; // ended call cards kept on screen (the rest are in Past calls)
  const TOKEN_TTL = 3600; // seconds; renewed before it runs out

  const $ = (sel) => document.querySelector(sel);
  const store = window.sessionStorage;

  const S = {
    user: '',
    token: '',
    expiresAt: 0,
    device: '',
    es: null,
    lastEventId: '', // the last id seen, for a manual reconnection
    backoff: 0,
    reconnectTimer: 0,
    renewTimer: 0,
    dropped: false, // the stream failed since it last opened
    calls: new Map(), // callID -> CallInfo (+ local fields)
    seen: new Map(), // callID -> when this tab first saw the call ring (ms)
    history: [],
    nextFlag: 0,
    historyTimer: 0,
  };

  // ---- small DOM helpers ---------------------------------------------------

  // h builds an element: h('button', {class: 'x', 'data-testid': 'y', onclick: f}, 'text', child…)
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
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
    const today = new Date().toDateString() === d.toDateString();
    return today ? d.toLocaleTimeString() : d.toLocaleString();
  }

  function badge(state, testid) {
    return h('span', {class: 'badge s-' + state, 'data-testid': testid}, state);
  }

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

  // ---- notices -------------------------------------------------------------

  function toast(kind, title, detail) {
    const el = h('div', {class: 'toast ' + kind, role: kind === 'error' ? 'alert' : 'status', 'data-testid': kind},
      h('strong', {}, title), detail ? h('span', {}, detail) : null,
      h('button', {type: 'button', class: 'close', 'aria-label': 'dismiss', onclick: () => el.remove()}, '×'));
    $('#toasts').prepend(el);
    setTimeout(() => el.remove(), kind === 'error' ? 12000 : 6000);
  }

  // showError shows a failed request: the problem's detail, its code and status.
  function showError(err, what) {
    const p = err && err.problem;
    const title = what ? what + ' failed' : 'Request failed';
    if (p && (p.detail || p.title)) {
      toast('error', title, `${p.detail || p.title} (${p.status} ${p.code || ''})`.trim());
    } else {
      toast('error', title, err && err.message ? err.message : String(err));
    }
    console.warn(title, err);
  }

  // ---- HTTP ----------------------------------------------------------------

  class APIError extends Error {
    constructor(status, problem, fallback) {
      super((problem && problem.detail) || fallback);
      this.status = status;
      this.problem = problem;
    }
  }

  // request sends one API call and returns the decoded body; a failure
  // throws an APIError holding the problem document. A 401 gets one retry
  // with a fresh development token (it ran out, or the server's secret
  // changed).
  async function request(method, path, body, auth = true, retried = false) {
    const headers = {};
    if (auth) {
      headers['Authorization'] = 'Bearer ' + S.token;
      headers['X-Device-ID'] = S.device;
    }
    const init = {method, headers, cache: 'no-store'};
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new APIError(0, null, 'network error: the server did not answer');
    }
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (e) {
      data = null;
    }
    if (res.status === 401 && auth && !retried && S.user && await renewToken()) {
      return request(method, path, body, auth, true);
    }
    if (!res.ok) throw new APIError(res.status, data, `${res.status} ${res.statusText}`);
    return data;
  }

  const api = {
    get: (path) => request('GET', path),
    post: (path, body) => request('POST', path, body || {}),
    action: (callID, action, body) => request('POST', `/calls/${encodeURIComponent(callID)}/${action}`, body || {}),
  };

  // ---- session -------------------------------------------------------------

  function deviceID() {
    let d = store.getItem('callsig.device');
    if (!d) {
      const b = new Uint8Array(4);
      crypto.getRandomValues(b);
      d = 'tab-' + Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
      store.setItem('callsig.device', d);
    }
    return d;
  }

  async function mintToken(user) {
    return request('POST', '/dev/token', {userID: user, ttlSeconds: TOKEN_TTL}, false);
  }

  async function signIn(user) {
    let tok;
    try {
      tok = await mintToken(user);
    } catch (e) {
      if (e.status === 404) {
        toast('error', 'Sign-in unavailable',
          'POST /dev/token answers only in development mode (no CALLSIG_JWT_SECRET). Use a token from your own backend instead.');
      } else {
        showError(e, 'Sign-in');
      }
      return;
    }
    store.setItem('callsig.session', JSON.stringify({user: tok.userID, token: tok.token, expiresAt: tok.expiresAt}));
    start(tok.userID, tok.token, tok.expiresAt);
  }

  function start(user, token, expiresAt) {
    S.user = user;
    S.token = token;
    S.expiresAt = expiresAt;
    S.device = deviceID();
    S.calls.clear();
    S.seen.clear();
    $('#me').textContent = user;
    const av = $('#me-avatar');
    av.textContent = user[0].toUpperCase();
    av.style.setProperty('--hue', hue(user));
    $('#device').textContent = S.device;
    $('#login').hidden = true;
    $('#app').hidden = false;
    $('#session').hidden = false;
    document.title = `${user} · callsig demo`;
    scheduleRenewal();
    connect(false);
    loadActiveCalls();
    S.history = [];
    S.nextFlag = 0;
    refreshHistory();
    renderAll();
    $('#invitees').focus();
  }

  function signOut() {
    disconnect();
    clearTimeout(S.renewTimer);
    store.removeItem('callsig.session');
    S.user = S.token = '';
    S.lastEventId = '';
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

  // Development tokens are cheap: fetch a fresh one a minute before expiry.
  function scheduleRenewal() {
    clearTimeout(S.renewTimer);
    const wait = Math.max(5000, S.expiresAt - Date.now() - 60000);
    S.renewTimer = setTimeout(renewToken, wait);
  }

  // renewToken mints a new token for the signed-in user; when the server
  // will not (not in development mode any more), the session is over.
  let renewing = null;
  function renewToken() {
    if (!renewing) {
      const user = S.user;
      renewing = mintToken(user).then((tok) => {
        if (S.user !== user) return false;
        S.token = tok.token;
        S.expiresAt = tok.expiresAt;
        store.setItem('callsig.session', JSON.stringify({user, token: S.token, expiresAt: S.expiresAt}));
        scheduleRenewal();
        return true;
      }, (e) => {
        if (e.status === 404 && S.user === user) {
          // No development mode any more: nothing mints tokens.
          showError(e, 'Renewing the session');
          signOut();
        }
        return false; // otherwise keep the session and try again later
      }).finally(() => {
        renewing = null;
      });
    }
    return renewing;
  }

  // ---- the event stream ----------------------------------------------------

  function setConn(state, text) {
    const el = $('#conn');
    el.dataset.state = state;
    el.textContent = text || state;
  }

  // connect opens the stream. EventSource reconnects by itself after a
  // network drop and sends Last-Event-ID; when the server refuses the
  // stream (say, a token that ran out) it gives up, and we open a new one
  // with ?lastEventID= so nothing in between is lost.
  function connect(resume) {
    disconnect();
    const q = new URLSearchParams({access_token: S.token, deviceID: S.device});
    if (resume && S.lastEventId) q.set('lastEventID', S.lastEventId);
    const es = new EventSource('/events?' + q.toString());
    S.es = es;
    setConn('connecting');
    es.onopen = () => {
      if (es !== S.es) return;
      setConn('connected');
      S.backoff = 0;
      logLine('info', S.dropped ? 'stream reopened; resuming after event ' + (S.lastEventId || '(none)') : 'stream open');
      if (S.dropped) {
        S.dropped = false;
        refreshAll(); // when in doubt, ask
      }
    };
    es.onerror = () => {
      if (es !== S.es) return;
      S.dropped = true;
      if (es.readyState === EventSource.CONNECTING) {
        setConn('reconnecting');
        logLine('warn', 'stream dropped; the browser reconnects with Last-Event-ID');
        return;
      }
      // Refused (a token that ran out, say): the browser gives up, so we
      // reconnect ourselves, with a fresh token, from where we were.
      es.close();
      S.backoff = Math.min(15000, S.backoff ? S.backoff * 2 : 1000);
      setConn('offline', `offline, retrying in ${Math.round(S.backoff / 1000)} s`);
      logLine('warn', `stream refused; reconnecting in ${S.backoff / 1000} s`);
      S.reconnectTimer = setTimeout(async () => {
        await renewToken();
        if (S.user) connect(true);
      }, S.backoff);
    };
    for (const type of EVENT_TYPES) {
      es.addEventListener(type, (ev) => {
        if (es === S.es) onEvent(type, ev);
      });
    }
  }

  function disconnect() {
    clearTimeout(S.reconnectTimer);
    if (S.es) {
      S.es.close();
      S.es = null;
    }
    setConn('offline');
  }

  function onEvent(type, ev) {
    if (ev.lastEventId) {
      S.lastEventId = ev.lastEventId;
      $('#last-event').textContent = 'last event id ' + ev.lastEventId;
    }
    let data = null;
    try {
      data = JSON.parse(ev.data);
    } catch (e) {
      data = null;
    }
    logEvent(ev.lastEventId, type, ev.data, data && data.callID);
    if (!data) return;
    if (type === 'reset') {
      // Events after our position were pruned: start over from the API.
      toast('info', 'Event stream reset', 'Events were missed; reloading the calls.');
      S.calls.clear();
      loadActiveCalls();
      S.history = [];
      S.nextFlag = 0;
      refreshHistory();
      renderAll();
      return;
    }
    const id = data.callID;
    if (!id) return;
    const known = S.calls.get(id);
    switch (type) {
      case 'callInvitationCreated':
      case 'callInvitationReceived':
        upsert({
          callID: id, caller: data.caller, mode: data.mode, state: 'started', timeout: data.timeout,
          extendedData: data.extendedData, createTime: data.createTime, endTime: 0,
          callUserList: data.callUserList || [],
        }, false);
        historySoon();
        break;
      case 'callInvitationCancelled':
        if (known) setMyState(known, 'cancelled');
        historySoon();
        break;
      case 'callInvitationTimeout':
        if (known) setMyState(known, 'timeout');
        historySoon();
        break;
      case 'callInvitationEnded':
        if (known) {
          known.state = 'ended';
          known.endTime = data.endTime;
          known.endedBy = data.operatedUserID;
        }
        historySoon();
        break;
      case 'callUserStateChanged':
        if (known) mergeUsers(known, data.callUserList || []);
        historySoon();
        break;
    }
    renderAll();
    refreshSoon(id); // the event tells what changed; the call says where it stands
  }

  // ---- call state ------------------------------------------------------------

  function me(call) {
    return (call.callUserList || []).find((u) => u.userID === S.user);
  }

  function setMyState(call, state) {
    const u = me(call);
    if (u && PENDING.has(u.state)) u.state = state;
  }

  function mergeUsers(call, list) {
    for (const nu of list) {
      const i = call.callUserList.findIndex((u) => u.userID === nu.userID);
      if (i < 0) call.callUserList.push(nu);
      else if ((nu.updateTime || 0) >= (call.callUserList[i].updateTime || 0)) call.callUserList[i] = nu;
    }
  }

  // upsert stores a call. full: info is a whole CallInfo from the API and
  // replaces what events built; otherwise it is merged.
  // Neither source may undo a newer one: a user's row with a later
  // updateTime wins, and an ended call stays ended.
  function upsert(info, full) {
    const old = S.calls.get(info.callID);
    if (!old || full) {
      const c = Object.assign({}, old || {}, info);
      c.callUserList = (info.callUserList || []).map((u) => {
        const prev = old && old.callUserList.find((x) => x.userID === u.userID);
        return prev && (prev.updateTime || 0) > (u.updateTime || 0) ? prev : u;
      });
      if (old && old.state === 'ended') {
        c.state = 'ended';
        c.endTime = c.endTime || old.endTime;
      }
      S.calls.set(info.callID, c);
    } else {
      for (const k of ['caller', 'mode', 'timeout', 'extendedData', 'createTime']) {
        if (info[k] !== undefined) old[k] = info[k];
      }
      mergeUsers(old, info.callUserList || []);
    }
  }

  const refreshTimers = new Map();
  const refreshSeq = new Map();

  function refreshSoon(id) {
    clearTimeout(refreshTimers.get(id));
    refreshTimers.set(id, setTimeout(() => refresh(id), 150));
  }

  async function refresh(id) {
    refreshTimers.delete(id);
    const seq = (refreshSeq.get(id) || 0) + 1;
    refreshSeq.set(id, seq);
    try {
      const info = await api.get('/calls/' + encodeURIComponent(id));
      if (refreshSeq.get(id) !== seq || !S.user) return; // a newer answer is coming
      upsert(info, true);
      renderAll();
    } catch (e) {
      if (e.status !== 404) showError(e, 'Loading call ' + id.slice(0, 8));
    }
  }

  function refreshAll() {
    for (const [id, c] of S.calls) if (c.state !== 'ended') refresh(id);
    loadActiveCalls();
    historySoon();
  }

  // The calls still going on, for a page that opens in the middle of them.
  async function loadActiveCalls() {
    const user = S.user;
    try {
      const res = await api.get('/calls?count=20');
      if (S.user !== user) return;
      for (const c of res.callList) {
        if (c.state !== 'started') continue;
        upsert(c, true);
      }
      renderAll();
    } catch (e) {
      showError(e, 'Loading calls');
    }
  }

  // ---- actions ---------------------------------------------------------------

  async function placeCall(ev) {
    ev.preventDefault();
    const invitees = $('#invitees').value.split(/[\s,;]+/).map((s) => s.trim()).filter(Boolean);
    if (!invitees.length) {
      toast('error', 'Nobody to call', 'Name at least one user ID.');
      return;
    }
    const body = {invitees, mode: $('#mode').value};
    const timeout = $('#timeout').value.trim();
    if (timeout) body.timeout = Number(timeout);
    const ext = $('#extended-data').value;
    if (ext) body.extendedData = ext;
    if ($('#not-received').checked) body.enableNotReceivedCheck = true;
    const btn = ev.submitter || $('[data-testid=call-submit]');
    btn.disabled = true;
    try {
      const res = await api.post('/calls', body);
      upsert(res.call, true);
      $('#last-call-id').textContent = res.callID;
      $('#extended-data').value = '';
      for (const e of res.errorUserList || []) toast('warn', `${e.userID} not invited`, e.reason);
      renderAll();
      historySoon();
    } catch (e) {
      showError(e, 'Call');
    } finally {
      btn.disabled = false;
    }
  }

  async function act(callID, action, body, label) {
    try {
      const res = await api.action(callID, action, body);
      refreshSoon(callID);
      return res || {};
    } catch (e) {
      showError(e, label || action);
      refreshSoon(callID);
      return null;
    }
  }

  async function answer(callID, action) {
    const c = S.calls.get(callID);
    const res = await act(callID, action, {}, action === 'accept' ? 'Accept' : 'Reject');
    if (res && c) {
      setMyState(c, action === 'accept' ? 'accepted' : 'rejected');
      renderAll();
    }
  }

  async function joinByID(ev) {
    ev.preventDefault();
    const input = $('#join-call-id');
    const id = input.value.trim();
    if (!id) return;
    const res = await act(id, 'join', {}, 'Join');
    if (!res) return;
    input.value = '';
    await refresh(id);
  }

  async function inviteMore(callID, input) {
    const invitees = input.value.split(/[\s,;]+/).map((s) => s.trim()).filter(Boolean);
    if (!invitees.length) return;
    const res = await act(callID, 'invite', {invitees}, 'Invite');
    if (!res) return;
    inviteDrafts.delete(callID);
    inviteOpen.delete(callID);
    for (const e of res.errorUserList || []) toast('warn', `${e.userID} not invited`, e.reason);
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
        h('button', {type: 'button', class: 'accept', 'data-testid': 'accept', onclick: () => answer(c.callID, 'accept')}, 'Accept'),
        h('button', {type: 'button', class: 'reject', 'data-testid': 'reject', onclick: () => answer(c.callID, 'reject')}, 'Reject')));
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
        onclick: () => act(c.callID, 'cancel', {}, 'Cancel')}, 'Cancel'));
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
      buttons.push(h('button', {type: 'button', 'data-testid': 'join', onclick: () => act(c.callID, 'join', {}, 'Join')}, 'Join'));
    }
    if (started && advanced && accepted) {
      buttons.push(h('button', {type: 'button', 'data-testid': 'quit', onclick: () => act(c.callID, 'quit', {}, 'Quit')}, 'Quit'));
      buttons.push(h('button', {type: 'button', class: 'danger', 'data-testid': 'end', title: 'End the call for everyone', onclick: () => act(c.callID, 'end', {}, 'End')}, 'End'));
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

  // ---- past calls --------------------------------------------------------------

  function historySoon() {
    clearTimeout(S.historyTimer);
    S.historyTimer = setTimeout(refreshHistory, 200);
  }

  // refreshHistory reloads the first page. Once the user has paged on, it
  // keeps the older pages too (calls pushed off the first page by new ones
  // stay, after it). Refreshes and "Load more" may answer in any order;
  // merging by call ID makes the order not matter.
  async function refreshHistory() {
    const user = S.user;
    try {
      const res = await api.get(`/calls?count=${HISTORY_PAGE}`);
      if (S.user !== user) return;
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
    try {
      const user = S.user;
      const res = await api.get(`/calls?count=${HISTORY_PAGE}&nextFlag=${S.nextFlag}`);
      if (S.user !== user) return;
      const have = new Set(S.history.map((c) => c.callID));
      S.history = S.history.concat(res.callList.filter((c) => !have.has(c.callID)));
      S.nextFlag = res.nextFlag;
      renderHistory();
    } catch (e) {
      showError(e, 'Loading past calls');
    } finally {
      btn.disabled = false;
    }
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
            upsert(c, true);
            renderAll();
            refresh(c.callID);
          }}, 'Show')));
    }));
    if (!S.history.length) ol.append(h('li', {class: 'muted empty'}, 'No calls yet.'));
    $('#load-more').hidden = !S.nextFlag;
  }

  // ---- event log ---------------------------------------------------------------

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
      h('div', {class: 'ev-head'},
        h('span', {class: 'ev-id'}, '•'),
        h('span', {}, text),
        h('span', {class: 'muted'}, new Date().toLocaleTimeString()))));
  }

  // ---- start -------------------------------------------------------------------

  function init() {
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
    // A browser back online retries a stream it had given up on at once.
    window.addEventListener('online', () => {
      if (S.user && (!S.es || S.es.readyState === EventSource.CLOSED)) connect(true);
    });
    setInterval(updateCountdowns, 1000);
    // A member who left a call that goes on (quit, rejected, timed out)
    // gets no more of its events: look at such calls now and then.
    setInterval(() => {
      if (!S.user) return;
      for (const [id, c] of S.calls) {
        const my = me(c);
        if (c.state === 'started' && !(my && (my.state === 'accepted' || PENDING.has(my.state)))) refresh(id);
      }
    }, 10000);

    const saved = JSON.parse(store.getItem('callsig.session') || 'null');
    if (saved && saved.expiresAt > Date.now() + 10000) {
      start(saved.user, saved.token, saved.expiresAt);
    } else {
      store.removeItem('callsig.session');
    }
  }

  init();
})();
