// sessiond admin console. Plain ES module, no build step, no network access beyond
// this server: the admin API under /admin/api and its event stream.

const $ = (sel, root = document) => root.querySelector(sel);
const API = '/admin/api';

const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const shortFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const numFmt = new Intl.NumberFormat();
const dayFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium' });
const relFmt = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
// "5 minutes ago", "yesterday": in the browser's language.
const ago = (ms) => {
  const s = Math.round((ms - Date.now()) / 1000);
  for (const [unit, n] of [['year', 31536000], ['month', 2592000], ['day', 86400], ['hour', 3600], ['minute', 60]]) {
    if (Math.abs(s) >= n) return relFmt.format(Math.round(s / n), unit);
  }
  return relFmt.format(0, 'second');
};
const fmtDate = (v) => {
  if (v === null || v === undefined || v === '') return '—';
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? String(v) : dateFmt.format(d);
};
const fmtNum = (n) => numFmt.format(n);

const state = {
  csrf: null,
  me: null,
  apps: [],
  app: null,
  rows: [],
  sort: { key: 'device', dir: 1 },
  selected: new Set(),
  expanded: new Set(),
  live: [],
  liveTotal: 0,
  liveText: null,
  audit: [],
  tab: 'mobile',
  events: null,
  reloads: new Map(),
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = state.csrf ?? '';
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
    cache: 'no-store',
  });
  let data = null;
  try { data = await res.json(); } catch { data = null; }
  if (res.status === 401 && !path.endsWith('/login')) {
    showSignin(state.me ? 'Your console session has ended (signed out, expired or the server restarted). Sign in again.' : null);
    throw new ApiError(401, 'unauthorized', data?.message ?? 'sign in again');
  }
  if (!res.ok) throw new ApiError(res.status, data?.error ?? 'error', data?.message ?? res.statusText);
  return data;
}

const enc = encodeURIComponent;
const mobilePath = (folder, id, rest = '') => `${API}/mobile/apps/${enc(folder)}/sessions/${enc(id)}${rest}`;

// ---------- small DOM helpers ----------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// Re-rendering a table keeps the keyboard focus on the same control of the same row.
function keepFocus(body, render) {
  const active = document.activeElement;
  const tr = active && body.contains(active) ? active.closest('tr[data-id]') : null;
  const key = tr ? { id: tr.dataset.id, action: active.dataset.action, expanded: active.classList.contains('disclosure'), box: active.type === 'checkbox' } : null;
  render();
  if (!key) return;
  const row = [...body.querySelectorAll('tr[data-id]')].find((r) => r.dataset.id === key.id);
  if (!row) return;
  const target = key.action ? row.querySelector(`[data-action="${key.action}"]`)
    : key.expanded ? row.querySelector('.disclosure')
      : key.box ? row.querySelector('input[type=checkbox]') : null;
  (target ?? row.querySelector('button'))?.focus();
}

let toastTimer;
function toast(message, kind = 'info') {
  const t = $('#toast');
  t.textContent = message;
  t.className = `toast ${kind}`;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, kind === 'error' ? 8000 : 4000);
}

function fail(e) {
  if (e instanceof ApiError && e.status === 401) return;
  toast(e.message || String(e), 'error');
}

function statusBadge(status) {
  return el('span', { class: `badge ${status === 'pending' ? 'pending' : 'accepted'}` }, status === 'pending' ? 'Pending' : 'Accepted');
}

// ---------- dialogs ----------

function confirmDialog(title, text, okLabel = 'Delete') {
  const d = $('#confirm-dialog');
  $('#confirm-title').textContent = title;
  $('#confirm-text').textContent = text;
  $('#confirm-ok').textContent = okLabel;
  d.returnValue = 'cancel';
  return new Promise((resolve) => {
    d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
    d.showModal();
    $('#confirm-ok').focus();
  });
}

for (const d of document.querySelectorAll('dialog')) {
  d.addEventListener('click', (ev) => {
    if (ev.target.closest('[data-close]')) d.close();
    if (ev.target === d) d.close(); // click on the backdrop
  });
}

// ---------- sign-in ----------

function showSignin(note) {
  stopEvents();
  state.csrf = null;
  $('#loading').hidden = true;
  $('#app').hidden = true;
  $('#signin').hidden = false;
  const n = $('#signin-note');
  n.hidden = !note;
  n.textContent = note ?? '';
  for (const d of document.querySelectorAll('dialog[open]')) d.close();
  $('#password').value = '';
  $('#password').focus();
}

$('#signin-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const err = $('#signin-error');
  err.textContent = '';
  const password = $('#password').value;
  if (!password) { err.textContent = 'Enter the admin password.'; return; }
  try {
    const r = await api('POST', '/admin/login', { password });
    state.csrf = r.csrf;
    await start();
  } catch (e) {
    err.textContent = e.status === 401 ? 'Wrong password.' : e.message;
    $('#password').select();
  }
});

$('#signout').addEventListener('click', async () => {
  try { await api('POST', '/admin/logout'); } catch { /* signed out anyway */ }
  showSignin('Signed out.');
});

// ---------- tabs ----------

function selectTab(tab, focus = false) {
  state.tab = tab;
  for (const b of document.querySelectorAll('[role=tab]')) {
    const on = b.dataset.tab === tab;
    b.setAttribute('aria-selected', on ? 'true' : 'false');
    b.tabIndex = on ? 0 : -1;
    if (on && focus) b.focus();
    $(`#view-${b.dataset.tab}`).hidden = !on;
  }
  if (location.hash !== `#${tab}`) history.replaceState(null, '', `#${tab}`);
  if (tab === 'sessions') loadLive().catch(fail);
  if (tab === 'audit') loadAudit().catch(fail);
}

const tabs = [...document.querySelectorAll('[role=tab]')];
for (const b of tabs) {
  b.addEventListener('click', () => selectTab(b.dataset.tab));
  b.addEventListener('keydown', (ev) => {
    const shown = tabs.filter((t) => !t.hidden);
    const j = shown.indexOf(b);
    if (ev.key === 'ArrowRight') selectTab(shown[(j + 1) % shown.length].dataset.tab, true);
    else if (ev.key === 'ArrowLeft') selectTab(shown[(j + shown.length - 1) % shown.length].dataset.tab, true);
  });
}

// ---------- mobile apps ----------

async function loadApps() {
  if (state.me && !state.me.mobile) return;
  const { apps } = await api('GET', `${API}/mobile/apps`);
  state.apps = apps;
  if (!state.app || !apps.some((a) => a.folder === state.app)) state.app = apps[0]?.folder ?? null;
  renderApps();
  await loadRows();
}

// `<application.name> (<folder>)`, the folder on its own line.
function appLabel(label) {
  const i = label.lastIndexOf(' (');
  if (i < 0) return el('span', { class: 'app-label' }, label);
  return el('span', { class: 'app-label' }, label.slice(0, i), ' ', el('span', { class: 'app-folder' }, label.slice(i + 1)));
}

function renderApps() {
  const list = $('#apps-list');
  list.replaceChildren(...state.apps.map((a) => el('li', {},
    el('button', {
      class: `app${a.folder === state.app ? ' current' : ''}`,
      'aria-current': a.folder === state.app ? 'true' : null,
      dataset: { folder: a.folder },
      onclick: () => { state.app = a.folder; state.selected.clear(); renderApps(); loadRows().catch(fail); },
    },
    appLabel(a.label),
    el('span', { class: 'app-counts' },
      el('span', { class: 'muted' }, `${fmtNum(a.sessions)} ${a.sessions === 1 ? 'session' : 'sessions'}`),
      a.pending ? el('span', { class: 'badge pending' }, `${fmtNum(a.pending)} pending`) : null)))));
  $('#apps-empty').hidden = state.apps.length > 0;
  const pending = state.apps.reduce((n, a) => n + a.pending, 0);
  document.title = pending ? `(${fmtNum(pending)} pending) sessiond console` : 'sessiond console';
  const badge = $('#pending-total');
  badge.hidden = pending === 0;
  badge.textContent = fmtNum(pending);
  badge.title = `${fmtNum(pending)} pending`;
  const app = state.apps.find((a) => a.folder === state.app);
  $('#app-title').textContent = app ? app.label : 'Sessions';
}

async function loadRows() {
  if (!state.app) {
    state.rows = [];
  } else {
    try {
      const { sessions } = await api('GET', `${API}/mobile/apps/${enc(state.app)}/sessions`);
      state.rows = sessions;
    } catch (e) {
      if (e.status === 404 || e.status === 400) state.rows = [];
      else throw e;
    }
  }
  const ids = new Set(state.rows.map((r) => r.id));
  for (const id of [...state.selected]) if (!ids.has(id)) state.selected.delete(id);
  renderRows();
}

function visibleRows() {
  const q = $('#m-filter').value.trim().toLowerCase();
  const st = $('#m-status').value;
  const { key, dir } = state.sort;
  return state.rows
    .filter((r) => !st || r.status === st)
    .filter((r) => !q || [r.device, r.os, r.email, r.ip, r.id, r.status].some((v) => String(v ?? '').toLowerCase().includes(q)))
    .sort((a, b) => {
      const x = a[key] ?? '';
      const y = b[key] ?? '';
      const c = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y), undefined, { numeric: true, sensitivity: 'base' });
      return c * dir || a.id.localeCompare(b.id);
    });
}

function renderRows() {
  const rows = visibleRows();
  const body = $('#m-rows');
  const out = [];
  for (const r of rows) {
    const pending = r.status === 'pending';
    const expanded = state.expanded.has(r.id);
    const name = r.device || r.id.slice(0, 12);
    out.push(el('tr', { class: pending ? 'pending' : null, dataset: { id: r.id, status: r.status } },
      el('td', { class: 'sel' }, el('input', {
        type: 'checkbox',
        'aria-label': `Select ${name}`,
        checked: state.selected.has(r.id),
        onchange: (ev) => { if (ev.target.checked) state.selected.add(r.id); else state.selected.delete(r.id); renderBulk(); },
      })),
      el('td', { class: 'device' },
        el('button', {
          class: 'disclosure',
          'aria-expanded': expanded ? 'true' : 'false',
          title: JSON.stringify(r.deviceInfo, null, 2),
          onclick: () => { if (expanded) state.expanded.delete(r.id); else state.expanded.add(r.id); renderRows(); },
        }, el('span', { class: 'chev', 'aria-hidden': 'true' }, expanded ? '▾' : '▸'), name),
        el('div', { class: 'muted small mono' }, r.id.slice(0, 12))),
      el('td', { 'data-label': 'Status' }, statusBadge(r.status)),
      el('td', { class: 'nowrap', 'data-label': 'OS' }, r.os || '—'),
      el('td', { class: 'email', 'data-label': 'E-mail', title: r.email || null }, r.email || el('span', { class: 'muted' }, '—')),
      el('td', { class: 'mono', 'data-label': 'IP' }, r.ip || '—'),
      el('td', { class: 'nowrap', 'data-label': 'Created', title: r.created ? fmtDate(r.created) : null }, r.created ? dayFmt.format(new Date(r.created)) : '—'),
      el('td', { class: 'nowrap', 'data-label': 'Last seen', title: [r.lastSeen ? fmtDate(r.lastSeen) : null, r.modified ? `file last written ${fmtDate(r.modified)}` : null].filter(Boolean).join('; ') || null }, r.lastSeen ? ago(r.lastSeen) : '—'),
      el('td', { class: 'actions' },
        pending
          ? el('button', { class: 'small primary', dataset: { action: 'accept' }, 'aria-label': `Accept ${name}`, onclick: () => setStatus([r], 'accepted') }, 'Accept')
          : el('button', { class: 'small', dataset: { action: 'hold' }, 'aria-label': `Hold ${name}`, onclick: () => setStatus([r], 'pending') }, 'Hold'),
        el('button', { class: 'small', dataset: { action: 'email' }, 'aria-label': `Edit e-mail of ${name}`, onclick: () => editEmail(r) }, 'E-mail'),
        el('button', { class: 'small', dataset: { action: 'file' }, 'aria-label': `Show file of ${name}`, onclick: () => showFile(r) }, 'File'),
        el('button', { class: 'small danger', dataset: { action: 'delete' }, 'aria-label': `Delete ${name}`, onclick: () => remove([r]) }, 'Delete'))));
    if (expanded) {
      out.push(el('tr', { class: 'detail' }, el('td', { colspan: '9' },
        el('pre', { class: 'json' }, JSON.stringify(r.deviceInfo, null, 2)))));
    }
  }
  keepFocus(body, () => body.replaceChildren(...out));
  const empty = $('#m-empty');
  empty.hidden = rows.length > 0;
  empty.textContent = state.rows.length ? 'No session matches the filter.' : (state.app ? 'This app has no session.' : 'No app selected.');
  for (const th of document.querySelectorAll('#m-table th[data-key]')) {
    th.setAttribute('aria-sort', th.dataset.key === state.sort.key ? (state.sort.dir > 0 ? 'ascending' : 'descending') : 'none');
  }
  renderBulk();
}

function renderBulk() {
  const n = state.selected.size;
  $('#bulk').hidden = n === 0;
  $('#bulk-count').textContent = `${fmtNum(n)} selected`;
  const shown = visibleRows();
  const all = $('#m-all');
  all.checked = shown.length > 0 && shown.every((r) => state.selected.has(r.id));
  all.indeterminate = !all.checked && shown.some((r) => state.selected.has(r.id));
}

function applyNow() { return $('#apply-now').checked; }

function afterEdit(results) {
  const pushed = results.some((r) => r && r.pushNeeded === false);
  if (pushed) {
    $('#push-needed').hidden = true;
    const report = results.find((r) => r && r.push)?.push;
    if (report) showReport(report);
  } else {
    $('#push-needed').hidden = false;
  }
}

async function each(rows, fn) {
  const results = [];
  for (const r of rows) {
    try { results.push(await fn(r)); } catch (e) { fail(e); if (e.status === 401) return results; }
  }
  return results;
}

async function setStatus(rows, status) {
  const q = applyNow() ? '?apply=true' : '';
  const results = await each(rows, (r) => api('PUT', mobilePath(state.app, r.id, `/status${q}`), { status }));
  if (results.length) {
    toast(`${status === 'accepted' ? 'Accepted' : 'Held'} ${rows.length === 1 ? (rows[0].device || 'the session') : `${fmtNum(results.length)} sessions`}.`);
    afterEdit(results);
  }
  await loadApps().catch(fail);
}

async function remove(rows) {
  const what = rows.length === 1 ? `the session of ${rows[0].device || rows[0].id}` : `${fmtNum(rows.length)} sessions`;
  const ok = await confirmDialog('Delete session', `Delete ${what}? Its file is removed; the device has to log in again.`);
  if (!ok) return;
  const q = applyNow() ? '?apply=true' : '';
  const results = await each(rows, (r) => api('DELETE', mobilePath(state.app, r.id, q)));
  for (const r of rows) state.selected.delete(r.id);
  if (results.length) { toast(`Deleted ${what}.`); afterEdit(results); }
  await loadApps().catch(fail);
}

async function editEmail(r) {
  const d = $('#email-dialog');
  $('#email-device').textContent = r.device || r.id;
  const input = $('#email-input');
  input.value = r.email;
  d.returnValue = 'cancel';
  d.showModal();
  input.select();
  await new Promise((resolve) => d.addEventListener('close', resolve, { once: true }));
  if (d.returnValue !== 'ok' || input.value === r.email) return;
  const q = applyNow() ? '?apply=true' : '';
  try {
    const res = await api('PUT', mobilePath(state.app, r.id, `/email${q}`), { email: input.value.trim() });
    toast('E-mail saved.');
    afterEdit([res]);
  } catch (e) { fail(e); }
  await loadApps().catch(fail);
}

async function showFile(r) {
  try {
    const { path, json } = await api('GET', mobilePath(state.app, r.id));
    $('#file-title').textContent = `Session file of ${r.device || r.id}`;
    $('#file-path').textContent = path;
    $('#file-json').textContent = JSON.stringify(json, null, 2);
    $('#file-download').href = mobilePath(state.app, r.id, '/file');
    $('#file-download').setAttribute('download', `${r.id}.json`);
    $('#file-dialog').showModal();
    $('#file-json').focus();
  } catch (e) { fail(e); }
}

function showReport(report) {
  const box = $('#push-report');
  const parts = [
    `${fmtNum(report.loaded)} loaded`,
    `${fmtNum(report.updated)} updated`,
    `${fmtNum(report.unchanged)} unchanged`,
    `${fmtNum(report.evicted)} removed`,
  ];
  const errors = report.errors ?? [];
  box.className = `report ${errors.length ? 'has-errors' : 'ok'}`;
  box.replaceChildren(...[
    el('div', { class: 'report-head' },
      el('strong', {}, errors.length ? `Push done with ${fmtNum(errors.length)} ${errors.length === 1 ? 'error' : 'errors'}` : 'Push done'),
      el('span', { class: 'muted' }, ` — ${parts.join(', ')} (${new Date().toLocaleTimeString()})`),
      el('button', { class: 'small ghost close', 'aria-label': 'Dismiss the Push report', onclick: () => { box.hidden = true; } }, '×')),
    errors.length ? el('ul', { class: 'errors' }, errors.map((e) => el('li', {},
      el('span', { class: 'badge error' }, `mobi ${e.code}`), ' ',
      el('code', {}, e.file), ' — ', String(e.message).replace(/^mobi \d+: /, '')))) : null,
  ].filter(Boolean));
  box.hidden = false;
}

async function push() {
  const btn = $('#push');
  btn.disabled = true;
  try {
    const report = await api('POST', `${API}/mobile/push`);
    $('#push-needed').hidden = true;
    showReport(report);
  } catch (e) { fail(e); } finally { btn.disabled = false; }
  await loadApps().catch(fail);
}

$('#push').addEventListener('click', push);
$('#push-now').addEventListener('click', push);
$('#refresh').addEventListener('click', () => loadApps().then(() => toast('List refreshed from the files.')).catch(fail));
$('#m-filter').addEventListener('input', renderRows);
$('#m-status').addEventListener('change', renderRows);
$('#apply-now').checked = localStorage.getItem('sessiond.applyNow') === '1';
$('#apply-now').addEventListener('change', (ev) => localStorage.setItem('sessiond.applyNow', ev.target.checked ? '1' : '0'));
$('#m-all').addEventListener('change', (ev) => {
  for (const r of visibleRows()) { if (ev.target.checked) state.selected.add(r.id); else state.selected.delete(r.id); }
  renderRows();
});
for (const b of document.querySelectorAll('#m-table button.sort')) {
  b.addEventListener('click', () => {
    const key = b.dataset.sort;
    state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : 1 };
    renderRows();
  });
}
const selectedRows = () => state.rows.filter((r) => state.selected.has(r.id));
$('#bulk-accept').addEventListener('click', () => setStatus(selectedRows(), 'accepted'));
$('#bulk-hold').addEventListener('click', () => setStatus(selectedRows(), 'pending'));
$('#bulk-delete').addEventListener('click', () => remove(selectedRows()));
$('#bulk-clear').addEventListener('click', () => { state.selected.clear(); renderRows(); });

// ---------- live sessions ----------

const KIND_LABEL = { web: 'Web', remote: 'Remote', storedProcedure: 'Stored proc.' };

async function loadLive() {
  // The server filters (kind; any part of the user name, any case) and sends the
  // newest sessions first, at most a page of them, with the total that match.
  const p = new URLSearchParams();
  if ($('#s-kind').value) p.set('kind', $('#s-kind').value);
  const user = $('#s-user').value.trim();
  if (user) p.set('user', user);
  const { sessions, total } = await api('GET', `${API}/sessions?${p}`);
  const text = JSON.stringify([sessions, total]);
  if (text === state.liveText) return; // unchanged: keep the table (and the focus) as is
  state.liveText = text;
  state.live = sessions;
  state.liveTotal = total;
  renderLive();
}

function renderLive() {
  const rows = state.live.map((s) => {
    const i = s.info ?? {};
    const user = s.userName || '';
    return el('tr', { dataset: { id: s.id, kind: i.type } },
      el('td', {}, el('span', { class: `kind kind-${i.type}` }, KIND_LABEL[i.type] ?? i.type)),
      el('td', {}, user ? user : el('span', { class: 'muted' }, s.isGuest ? 'guest' : '—')),
      el('td', {}, i.machineName || (i.hostType === 'browser' ? '' : '—'),
        i.hostType ? el('div', { class: 'muted small' }, i.hostType) : null),
      el('td', { class: 'mono' }, i.IPAddress || '—'),
      el('td', { class: 'nowrap' }, fmtDate(i.creationDateTime)),
      el('td', {}, i.state || '—'),
      el('td', {}, (s.processes ?? []).length ? (s.processes ?? []).map((p) => el('span', { class: 'chip', title: `#${p.number} since ${fmtDate(p.creationDateTime)}` }, p.name)) : el('span', { class: 'muted' }, '—')),
      el('td', {}, (s.privileges ?? []).length ? (s.privileges ?? []).map((p) => el('span', { class: 'chip' }, p)) : el('span', { class: 'muted' }, 'none')),
      el('td', { class: 'nowrap' }, fmtDate(s.expirationDate)),
      el('td', { class: 'actions' },
        el('button', { class: 'small', dataset: { action: 'storage' }, onclick: () => showStorage(s) }, 'Storage'),
        // The stored-procedures session lives as long as the server: it cannot be dropped.
        i.type === 'storedProcedure' ? null : el('button', { class: 'small danger', dataset: { action: 'drop' }, onclick: () => dropSession(s) }, 'Drop'),
        user && i.type !== 'storedProcedure' ? el('button', { class: 'small danger ghost', dataset: { action: 'drop-user' }, title: `Drop every session of ${user}`, 'aria-label': `Drop every session of ${user}`, onclick: () => dropUser(user) }, 'Drop user') : null));
  });
  keepFocus($('#s-rows'), () => $('#s-rows').replaceChildren(...rows));
  $('#s-empty').hidden = rows.length > 0;
  $('#s-count').textContent = state.liveTotal > rows.length
    ? `(newest ${fmtNum(rows.length)} of ${fmtNum(state.liveTotal)})`
    : `(${fmtNum(rows.length)})`;
}

async function showStorage(s) {
  try {
    const r = await api('GET', `${API}/sessions/${enc(s.id)}/storage`);
    $('#storage-title').textContent = `Storage of ${s.userName || 'session'} ${s.id.slice(0, 8)}…`;
    $('#storage-meta').textContent = `Version ${fmtNum(r.version)}.`;
    $('#storage-json').textContent = JSON.stringify(r.storage, null, 2);
    $('#storage-dialog').showModal();
    $('#storage-json').focus();
  } catch (e) { fail(e); }
}

async function dropSession(s) {
  if (!await confirmDialog('Drop session', `End the ${KIND_LABEL[s.info?.type] ?? ''} session ${s.id.slice(0, 8)}… of ${s.userName || 'a guest'} now?`, 'Drop')) return;
  try { await api('DELETE', `${API}/sessions/${enc(s.id)}`); toast('Session dropped.'); } catch (e) { fail(e); }
  await loadLive().catch(fail);
}

async function dropUser(user) {
  if (!await confirmDialog('Drop all sessions of a user', `End every session of ${user} now?`, 'Drop all')) return;
  try {
    const r = await api('DELETE', `${API}/users/${enc(user)}/sessions`);
    toast(`${fmtNum(r.deleted)} ${r.deleted === 1 ? 'session' : 'sessions'} of ${user} dropped.`);
  } catch (e) { fail(e); }
  await loadLive().catch(fail);
}

let userTimer;
$('#s-kind').addEventListener('change', () => { state.liveText = null; loadLive().catch(fail); });
$('#s-user').addEventListener('input', () => {
  clearTimeout(userTimer);
  userTimer = setTimeout(() => { state.liveText = null; loadLive().catch(fail); }, 200);
});
$('#s-refresh').addEventListener('click', () => { state.liveText = null; loadLive().catch(fail); });

// ---------- audit ----------

const ACTION_LABEL = {
  'sign-in': 'Sign-in',
  'sign-out': 'Sign-out',
  'mobile.status': 'Mobile session status',
  'mobile.email': 'Mobile session e-mail',
  'mobile.delete': 'Mobile session deleted',
  'mobile.push': 'Push',
  'session.drop': 'Session dropped',
  'user.drop': 'User sessions dropped',
};

function detailText(detail) {
  if (detail === undefined || detail === null) return '—';
  if (typeof detail !== 'object' || Array.isArray(detail)) return JSON.stringify(detail);
  return Object.entries(detail)
    .map(([k, v]) => `${k}: ${typeof v === 'number' ? fmtNum(v) : typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' · ');
}

async function loadAudit() {
  const { entries } = await api('GET', `${API}/audit?limit=300`);
  state.audit = entries;
  const rows = entries.map((e) => el('tr', { class: e.outcome === 'ok' ? null : 'failed' },
    el('td', { class: 'nowrap' }, fmtDate(e.time)),
    el('td', { class: 'who' }, e.who, el('span', { class: 'muted' }, ` @ ${e.ip || '?'}${e.via ? ` · ${e.via}` : ''}`)),
    el('td', { class: 'nowrap' }, ACTION_LABEL[e.action] ?? e.action),
    el('td', { class: 'mono small target' }, e.target || '—'),
    el('td', { class: 'small' }, detailText(e.detail)),
    el('td', {}, el('span', { class: `badge ${e.outcome === 'ok' ? 'accepted' : 'error'}` }, e.outcome))));
  $('#a-rows').replaceChildren(...rows);
  $('#a-empty').hidden = rows.length > 0;
}

// ---------- live updates ----------

function reloadSoon(what, fn) {
  if (state.reloads.has(what)) return;
  state.reloads.set(what, setTimeout(() => {
    state.reloads.delete(what);
    fn().catch(fail);
  }, 150));
}

function setConn(kind, text) {
  const c = $('#conn');
  c.className = `conn ${kind}`;
  $('#conn-text').textContent = text;
  const banner = $('#banner');
  banner.hidden = kind !== 'down';
  banner.textContent = kind === 'down' ? 'Connection to the server lost — reconnecting…' : '';
}

function stopEvents() {
  if (state.events) { state.events.close(); state.events = null; }
}

function startEvents() {
  stopEvents();
  const es = new EventSource(`${API}/events`);
  state.events = es;
  let wasDown = false;
  es.addEventListener('ready', () => {
    setConn('live', 'Live');
    if (wasDown) { wasDown = false; reloadAll(); }
  });
  es.addEventListener('mobile', () => reloadSoon('mobile', loadApps));
  es.addEventListener('audit', (ev) => {
    if (state.tab === 'audit') reloadSoon('audit', loadAudit);
    let entry = {};
    try { entry = JSON.parse(ev.data); } catch { /* ignore */ }
    if (String(entry.action ?? '').startsWith('mobile.')) reloadSoon('mobile', loadApps);
    if (state.tab === 'sessions') reloadSoon('live', loadLive);
  });
  es.addEventListener('tick', () => {
    if (state.tab === 'sessions') reloadSoon('live', loadLive);
  });
  es.onerror = () => {
    if (state.events !== es) return;
    wasDown = true;
    setConn('down', 'Reconnecting…');
    if (es.readyState === EventSource.CLOSED) {
      // The server answered with an error (e.g. 401 after a restart): ask who we are.
      state.events = null;
      setTimeout(() => {
        api('GET', `${API}/me`).then(() => startEvents()).catch(() => {
          if (!$('#signin').hidden) return;
          setTimeout(() => { if ($('#signin').hidden) startEvents(); }, 3000);
        });
      }, 1000);
    }
  };
}

function reloadAll() {
  loadApps().catch(fail);
  if (state.tab === 'sessions') loadLive().catch(fail);
  if (state.tab === 'audit') loadAudit().catch(fail);
}

// ---------- start ----------

async function start() {
  const me = await api('GET', `${API}/me`);
  state.me = me;
  if (me.csrf) state.csrf = me.csrf;
  $('#app-name').textContent = me.app === 'sessiond' ? '' : me.app;
  $('#loading').hidden = true;
  $('#signin').hidden = true;
  $('#app').hidden = false;
  $('#signin-error').textContent = '';
  // Without mobile apps (not enabled on this server) the console starts on the live sessions.
  $('#tab-mobile').hidden = !me.mobile;
  const tabs = me.mobile ? ['mobile', 'sessions', 'audit'] : ['sessions', 'audit'];
  const tab = tabs.includes(location.hash.slice(1)) ? location.hash.slice(1) : tabs[0];
  state.liveText = null;
  selectTab(tab);
  setConn('connecting', 'Connecting…');
  startEvents();
  await loadApps().catch(fail);
}

start().catch((e) => {
  if (e.status !== 401) showSignin(`The server cannot be reached: ${e.message}`);
});
