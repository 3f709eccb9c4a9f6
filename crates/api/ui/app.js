// The agentflow console. Plain JavaScript, no build step: served by the
// agentflow binary under a strict Content-Security-Policy (no inline script,
// no eval). The token lives in this tab's sessionStorage only and travels in
// the Authorization header of fetch() calls: never in a URL.
'use strict';

const TOKEN_KEY = 'agentflow.token';
const STATUSES = ['pending', 'running', 'waiting', 'paused', 'completed', 'failed', 'cancelled'];
const FINISHED = ['completed', 'failed', 'cancelled'];
const TRUNCATE_AT = 4000;

const main = document.getElementById('main');
let leave = []; // cleanups of the current page (streams to close)

// ---------- small DOM helper ----------
function h(tag, attrs, ...children) {
  const el = tag.startsWith('svg:')
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function show(...nodes) {
  main.replaceChildren(...nodes);
}

function badge(status) {
  return h('span', { class: 'badge ' + status, text: status });
}

function fmtTime(t) {
  if (!t) return '';
  const d = new Date(t);
  return d.toLocaleString();
}

function fmtMs(ms) {
  if (ms === null || ms === undefined) return '';
  if (ms < 1000) return ms + ' ms';
  if (ms < 60000) return (ms / 1000).toFixed(1) + ' s';
  return Math.floor(ms / 60000) + ' min ' + Math.round((ms % 60000) / 1000) + ' s';
}

// ---------- auth and API ----------
const auth = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  set(token) { sessionStorage.setItem(TOKEN_KEY, token); },
  clear() { sessionStorage.removeItem(TOKEN_KEY); },
  // The token's claims, for display only (the server checks the token).
  claims() {
    try {
      const part = this.token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      return JSON.parse(atob(part));
    } catch (_) { return {}; }
  },
};

class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || ('HTTP ' + status));
    this.status = status;
    this.code = e.code;
    this.field = e.field;
  }
}

async function api(method, path, body, token) {
  const headers = { Authorization: 'Bearer ' + (token || auth.token) };
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  const r = await fetch(path, init);
  let json = null;
  try { json = await r.json(); } catch (_) { json = null; }
  if (r.status === 401 && !token) {
    signOut('Your token was refused (' + ((json && json.error && json.error.message) || 'unauthorized') + '). Sign in again.');
    throw new ApiError(r.status, json);
  }
  if (!r.ok) throw new ApiError(r.status, json);
  return json;
}

// Reads a Server-Sent Events stream with fetch() (EventSource cannot send
// an Authorization header), reconnecting with Last-Event-ID until it ends
// or the page is left. onEvent(type, data, id).
function openStream(path, onEvent, onEnd) {
  const ctl = new AbortController();
  let lastId = null;
  let ended = false;
  let delay = 500;
  (async () => {
    while (!ctl.signal.aborted && !ended) {
      try {
        const headers = { Authorization: 'Bearer ' + auth.token, Accept: 'text/event-stream' };
        if (lastId !== null) headers['Last-Event-ID'] = lastId;
        const r = await fetch(path, { headers, signal: ctl.signal, cache: 'no-store', credentials: 'omit' });
        if (r.status === 401) { signOut('Your token was refused. Sign in again.'); return; }
        if (!r.ok) { onEvent('error', await r.json().catch(() => null), null); return; }
        delay = 500;
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value.replace(/\r\n?/g, '\n');
          let cut;
          while ((cut = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, cut);
            buf = buf.slice(cut + 2);
            let type = 'message', data = '', id = null;
            for (const line of block.split('\n')) {
              if (line.startsWith(':')) continue;
              const i = line.indexOf(':');
              const field = i < 0 ? line : line.slice(0, i);
              let v = i < 0 ? '' : line.slice(i + 1);
              if (v.startsWith(' ')) v = v.slice(1);
              if (field === 'event') type = v;
              else if (field === 'data') data += (data ? '\n' : '') + v;
              else if (field === 'id') id = v;
            }
            if (!data && id === null) continue;
            if (id !== null) lastId = id;
            let parsed = null;
            try { parsed = JSON.parse(data); } catch (_) { parsed = data; }
            if (type === 'end') ended = true;
            onEvent(type, parsed, id);
          }
        }
      } catch (e) {
        if (ctl.signal.aborted) return;
      }
      if (ended) break;
      await new Promise((res) => setTimeout(res, delay));
      delay = Math.min(delay * 2, 10000);
    }
    if (ended && onEnd) onEnd();
  })();
  const close = () => ctl.abort();
  leave.push(close);
  return close;
}

// ---------- sign-in ----------
function signOut(message) {
  auth.clear();
  location.hash = '#/';
  route(message);
}

async function signInPage(message) {
  document.getElementById('nav').hidden = true;
  const err = h('div', { class: 'error', role: 'alert', hidden: !message, text: message || '' });
  const token = h('textarea', { id: 'token', rows: 4, autocomplete: 'off', spellcheck: 'false', required: true });
  const form = h('form', { class: 'card', id: 'sign-in', onsubmit: async (ev) => {
    ev.preventDefault();
    const t = token.value.trim();
    if (!t) return;
    try {
      await api('GET', '/workflows/list?limit=1', undefined, t);
      auth.set(t);
      route();
    } catch (e) {
      err.hidden = false;
      err.textContent = e.status === 401 ? 'This token was refused: ' + e.message : 'Could not sign in: ' + e.message;
    }
  } },
  h('h1', { text: 'Sign in' }),
  h('p', { class: 'muted', text: 'Paste a token (a JWT signed with the server\'s secret, e.g. from `agentflow token --sub 42`). It stays in this tab only.' }),
  err,
  h('label', { for: 'token', text: 'Token' }), token,
  h('div', { class: 'actions' }, h('button', { type: 'submit', text: 'Sign in' })));
  show(form);
  try {
    const cfg = await (await fetch('/ui/config.json', { cache: 'no-store' })).json();
    if (cfg.dev_sign_in) {
      form.querySelector('.actions').append(h('button', { type: 'button', class: 'secondary', id: 'dev-sign-in', onclick: async () => {
        const r = await fetch('/ui/dev-token', { method: 'POST', cache: 'no-store' });
        if (!r.ok) { err.hidden = false; err.textContent = 'The dev sign-in is not available.'; return; }
        auth.set((await r.json()).token);
        route();
      } }, 'Dev sign-in (user 42)'));
    }
  } catch (_) { /* no dev sign-in */ }
  token.focus();
}

// ---------- runs list ----------
async function listPage(params) {
  const status = params.get('status') || '';
  const name = params.get('name') || '';
  const cursor = params.get('cursor') || '';
  const prev = params.getAll('prev');
  const q = new URLSearchParams();
  if (status) q.set('status', status);
  if (name) q.set('name', name);
  q.set('limit', '25');
  if (cursor) q.set('cursor', cursor);

  const nav = (p) => { location.hash = '#/?' + p.toString(); };
  const counts = h('div', { class: 'counts', role: 'group', 'aria-label': 'Counts per status' });
  const statusSel = h('select', { id: 'f-status' },
    h('option', { value: '', text: 'any status' }),
    STATUSES.map((s) => h('option', { value: s, selected: s === status, text: s })));
  const nameIn = h('input', { id: 'f-name', type: 'search', value: name, placeholder: 'part of a name' });
  const filters = h('form', { class: 'row', onsubmit: (ev) => {
    ev.preventDefault();
    const p = new URLSearchParams();
    if (statusSel.value) p.set('status', statusSel.value);
    if (nameIn.value.trim()) p.set('name', nameIn.value.trim());
    nav(p);
  } },
  h('div', {}, h('label', { for: 'f-status', text: 'Status' }), statusSel),
  h('div', {}, h('label', { for: 'f-name', text: 'Name' }), nameIn),
  h('div', {}, h('button', { type: 'submit', text: 'Filter' })));
  const body = h('tbody');
  const table = h('table', { class: 'runs', id: 'runs' },
    h('caption', { class: 'sr-only', text: 'Workflows, newest first' }),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col', text: 'Name' }), h('th', { scope: 'col', text: 'Status' }),
      h('th', { scope: 'col', class: 'hide-sm', text: 'Steps' }), h('th', { scope: 'col', class: 'hide-sm', text: 'Created' }),
      h('th', { scope: 'col', text: 'Duration' }))),
    body);
  const pager = h('div', { class: 'pager' });
  const live = h('p', { class: 'muted', 'aria-live': 'polite' });
  show(h('h1', { text: 'Runs' }), counts, filters, live, table, pager);

  const rows = new Map(); // id -> {tr, seq}
  const rowOf = (w) => {
    const dur = w.started_at ? ((w.finished_at ? new Date(w.finished_at) : new Date()) - new Date(w.started_at)) : null;
    return h('tr', { 'data-id': w.workflow_id, 'data-status': w.status },
      h('td', {}, h('a', { href: '#/w/' + w.workflow_id, text: w.name })),
      h('td', {}, badge(w.status)),
      h('td', { class: 'hide-sm', text: w.task_count }),
      h('td', { class: 'hide-sm', text: fmtTime(w.created_at) }),
      h('td', { text: w.started_at ? fmtMs(dur) : '' }));
  };
  const t0 = performance.now();
  let page;
  try {
    page = await api('GET', '/workflows/list?' + q.toString());
  } catch (e) {
    show(h('div', { class: 'error', role: 'alert', text: 'Could not load the list: ' + e.message }));
    return;
  }
  for (const w of page.workflows) {
    const tr = rowOf(w);
    rows.set(w.workflow_id, { tr, seq: -1 });
    body.append(tr);
  }
  if (!page.workflows.length) body.append(h('tr', {}, h('td', { colspan: 5, class: 'muted', text: 'No workflows here yet.' })));
  main.dataset.loadedMs = String(Math.round(performance.now() - t0));
  if (cursor) {
    pager.append(h('button', { type: 'button', class: 'secondary', onclick: () => {
      const p = new URLSearchParams(params); p.delete('cursor'); p.delete('prev');
      const back = prev.slice(0, -1);
      if (prev.length && prev[prev.length - 1]) p.set('cursor', prev[prev.length - 1]);
      back.forEach((c) => p.append('prev', c));
      nav(p);
    } }, 'Previous page'));
  }
  if (page.next_cursor) {
    pager.append(h('button', { type: 'button', class: 'secondary', id: 'next-page', onclick: () => {
      const p = new URLSearchParams(params);
      p.set('cursor', page.next_cursor);
      p.append('prev', cursor);
      nav(p);
    } }, 'Next page'));
  }

  const matches = (w) => (!status || w.status === status) && (!name || w.name.toLowerCase().includes(name.toLowerCase()));
  openStream('/workflows/stream', (type, data) => {
    if (type === 'counts') {
      counts.replaceChildren(...STATUSES.map((s) => h('button', {
        type: 'button', 'aria-pressed': String(s === status), 'data-status': s,
        onclick: () => { const p = new URLSearchParams(); if (s !== status) p.set('status', s); if (name) p.set('name', name); nav(p); },
      }, badge(s), ' ', h('span', { class: 'count', text: data.counts[s] || 0 }))));
    } else if (type === 'workflow') {
      const known = rows.get(data.workflow_id);
      if (known) {
        if (data.seq <= known.seq) return;
        const tr = rowOf(data);
        known.tr.replaceWith(tr);
        rows.set(data.workflow_id, { tr, seq: data.seq });
      } else if (!cursor && matches(data) && (!page.workflows.length || data.created_at >= page.workflows[0].created_at)) {
        const tr = rowOf(data);
        rows.set(data.workflow_id, { tr, seq: data.seq });
        const empty = body.querySelector('td[colspan]');
        if (empty) empty.parentNode.remove();
        body.prepend(tr);
        live.textContent = 'New: ' + data.name;
      }
    } else if (type === 'resync') {
      route();
    }
  });
}

// ---------- a run ----------
function depthOf(tasks) {
  const byId = new Map(tasks.map((t) => [t.id, t]));
  const memo = new Map();
  const depth = (id) => {
    if (memo.has(id)) return memo.get(id);
    memo.set(id, 0);
    const t = byId.get(id);
    const d = t && t.after && t.after.length ? 1 + Math.max(...t.after.map(depth)) : 0;
    memo.set(id, d);
    return d;
  };
  tasks.forEach((t) => depth(t.id));
  return memo;
}

function drawGraph(w) {
  const tasks = w.tasks;
  const depth = depthOf(tasks);
  const cols = [];
  for (const t of tasks) {
    const d = depth.get(t.id);
    (cols[d] = cols[d] || []).push(t);
  }
  const NW = 150, NH = 52, GX = 60, GY = 22, PAD = 16;
  const pos = new Map();
  const tallest = Math.max(...cols.map((c) => c.length));
  cols.forEach((col, x) => col.forEach((t, y) => {
    const offset = ((tallest - col.length) * (NH + GY)) / 2;
    pos.set(t.id, { x: PAD + x * (NW + GX), y: PAD + offset + y * (NH + GY) });
  }));
  const width = PAD * 2 + cols.length * (NW + GX) - GX;
  const height = PAD * 2 + tallest * (NH + GY) - GY;
  const svg = h('svg:svg', { class: 'graph', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-label': 'The workflow graph: ' + tasks.map((t) => t.id + ' ' + t.status).join(', ') });
  const byId = new Map(tasks.map((t) => [t.id, t]));
  for (const t of tasks) {
    for (const p of t.after || []) {
      const a = pos.get(p), b = pos.get(t.id);
      if (!a || !b) continue;
      const parent = byId.get(p);
      const cls = t.status === 'skipped' ? 'edge skipped' : (parent.status === 'completed' && t.status !== 'pending' ? 'edge done' : 'edge');
      const x1 = a.x + NW, y1 = a.y + NH / 2, x2 = b.x, y2 = b.y + NH / 2, mx = (x1 + x2) / 2;
      svg.append(h('svg:path', { class: cls, d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}` }));
    }
  }
  for (const t of tasks) {
    const p = pos.get(t.id);
    const loops = t.iterations ? ' ×' + t.iteration : '';
    const what = t.kind === 'agent' ? t.agent : (t.kind === 'wait' ? 'wait ' + (t.signal || '') : t.kind);
    const sub = t.status + (what ? ' · ' + what : '');
    // Both lines are cut to the box by fitLabels; the tooltip has them whole.
    const g = h('svg:g', { class: 'node ' + t.status, 'data-step': t.id, 'data-status': t.status, transform: `translate(${p.x},${p.y})` },
      h('svg:title', { text: `${t.id}${loops}: ${sub}${t.skip_reason ? ' (' + t.skip_reason + ')' : ''}${t.iteration > 1 ? ', iteration ' + t.iteration : ''}` }),
      h('svg:rect', { width: NW, height: NH, rx: 8 }),
      h('svg:text', { x: 10, y: 20, 'data-fit': NW - 20, text: t.id + loops }),
      h('svg:text', { x: 10, y: 38, class: 'sub', 'data-fit': NW - 20, text: sub }));
    svg.append(g);
  }
  return h('div', { class: 'graph-wrap' }, svg);
}

// SVG text neither wraps nor ellipsizes: once the graph is in the page,
// each label longer than its `data-fit` width is cut to what fits, with "…".
function fitLabels(root) {
  for (const t of root.querySelectorAll('text[data-fit]')) {
    const max = Number(t.dataset.fit);
    if (t.getComputedTextLength() <= max) continue;
    const full = t.textContent;
    let n = full.length;
    do {
      n--;
      t.textContent = full.slice(0, n).trimEnd() + '…';
    } while (n > 1 && t.getComputedTextLength() > max);
  }
}

function waterfall(w, events) {
  // Each step's span: from when it started (its first record, or its end
  // minus its duration) to its last record; running steps to now.
  const spans = new Map();
  const t0 = new Date(w.started_at || w.created_at).getTime();
  for (const e of events) {
    if (!e.step || !e.applied) continue;
    const at = new Date(e.timestamp).getTime();
    const s = spans.get(e.step) || { start: Infinity, end: -Infinity, retries: 0, waits: 0 };
    const began = e.duration_ms !== undefined ? at - e.duration_ms : at;
    s.start = Math.min(s.start, began);
    s.end = Math.max(s.end, at);
    if (e.attempts > 1) s.retries += e.attempts - 1;
    if (e.event_type === 'step.waiting') s.waits += 1;
    spans.set(e.step, s);
  }
  const now = Date.now();
  const done = FINISHED.includes(w.status);
  let tEnd = t0 + 1;
  for (const t of w.tasks) {
    const s = spans.get(t.id);
    if (!s) continue;
    if ((t.status === 'running' || t.status === 'waiting') && !done) s.end = now;
    tEnd = Math.max(tEnd, s.end);
  }
  const total = Math.max(tEnd - t0, 1);
  const grid = h('div', { class: 'waterfall', id: 'waterfall' });
  for (const t of w.tasks) {
    const s = spans.get(t.id);
    const bits = [];
    if (s) bits.push(fmtMs(Math.max(0, Math.round(s.end - s.start))));
    if (s && s.retries) bits.push(s.retries + ' retr' + (s.retries > 1 ? 'ies' : 'y'));
    if (s && s.waits) bits.push('waited');
    if (t.status === 'skipped') bits.push('skipped');
    const track = h('div', { class: 'track', title: bits.join(', ') });
    if (s) {
      const bar = h('div', { class: 'bar ' + t.status });
      bar.style.left = (((s.start - t0) / total) * 100).toFixed(2) + '%';
      bar.style.width = (((s.end - s.start) / total) * 100).toFixed(2) + '%';
      track.append(bar);
    }
    grid.append(h('div', { class: 'label' }, t.id, ' ', h('span', { class: 'muted', text: bits.join(' · ') })), track);
  }
  return grid;
}

function jsonBlock(value) {
  const text = JSON.stringify(value, null, 2);
  if (text === undefined) return h('p', { class: 'muted', text: 'none' });
  const pre = h('pre', { class: 'json' });
  if (text.length <= TRUNCATE_AT) {
    pre.textContent = text;
    return pre;
  }
  pre.textContent = text.slice(0, TRUNCATE_AT) + '\n…';
  const more = h('button', { type: 'button', class: 'secondary', onclick: () => { pre.textContent = text; more.remove(); } },
    `Load the rest (${Math.round(text.length / 1024)} KB)`);
  return h('div', {}, pre, more);
}

function stepDetails(w, open) {
  return w.tasks.map((t) => {
    const facts = [t.kind === 'agent' ? 'agent ' + t.agent : t.kind, 'status ' + t.status];
    if (t.attempts) facts.push(t.attempts + ' attempt' + (t.attempts > 1 ? 's' : ''));
    if (t.duration_ms) facts.push(fmtMs(t.duration_ms));
    if (t.iterations) facts.push(t.iteration + ' iteration' + (t.iteration === 1 ? '' : 's'));
    if (t.skip_reason) facts.push('skipped: ' + t.skip_reason);
    if (t.condition !== undefined) facts.push('condition ' + t.condition);
    const d = h('details', { class: 'step', 'data-step': t.id, open: open.has(t.id) },
      h('summary', {}, h('strong', { text: t.id }), ' ', badge(t.status), ' ', h('span', { class: 'muted', text: facts.join(' · ') })),
      t.after && t.after.length ? h('p', { class: 'muted', text: 'after ' + t.after.join(', ') }) : null,
      t.error ? h('div', {}, h('h3', { text: 'Error' }), jsonBlock(t.error)) : null,
      'input' in t ? h('div', {}, h('h3', { text: 'Input' }), jsonBlock(t.input)) : null,
      h('h3', { text: 'Output' }), 'output' in t ? jsonBlock(t.output) : h('p', { class: 'muted', text: 'none yet' }),
      t.iterations && t.iterations.length > 1 ? h('div', {}, h('h3', { text: 'Every iteration' }), jsonBlock(t.iterations)) : null);
    d.addEventListener('toggle', () => { if (d.open) open.add(t.id); else open.delete(t.id); });
    return d;
  });
}

function auditTable(events) {
  const tb = h('tbody');
  for (const e of events) {
    const detail = [];
    if (e.step) detail.push(e.step + (e.iteration ? '#' + e.iteration : ''));
    if (e.agent) detail.push(e.agent);
    if (e.duration_ms !== undefined) detail.push(fmtMs(e.duration_ms));
    if (e.condition) detail.push(JSON.stringify(e.condition));
    if (e.wait) detail.push(JSON.stringify(e.wait));
    if (e.error) detail.push(typeof e.error === 'string' ? e.error : JSON.stringify(e.error));
    const ignored = !e.applied;
    tb.append(h('tr', { class: ignored ? 'ignored' : '' },
      h('td', { text: e.seq }),
      h('td', { class: 'hide-sm', text: fmtTime(e.timestamp) }),
      h('td', { class: 'mono', text: e.event_type }),
      h('td', { text: detail.join(' · ') }),
      h('td', { class: 'why' }, ignored ? h('span', { class: 'badge failed', text: e.quarantined ? 'quarantined' : 'ignored' }) : 'applied')));
  }
  return h('div', { class: 'table-wrap' }, h('table', { id: 'audit' },
    h('caption', { class: 'sr-only', text: 'Audit trail' }),
    h('thead', {}, h('tr', {}, ['seq', 'time', 'record', 'details', 'fold'].map((c) => h('th', { scope: 'col', class: c === 'time' ? 'hide-sm' : null, text: c })))),
    tb));
}

async function runPage(id) {
  let w;
  try {
    w = await api('GET', '/workflows/' + encodeURIComponent(id));
  } catch (e) {
    show(h('h1', { text: 'Workflow' }), h('div', { class: 'error', role: 'alert', text: e.status === 404 ? 'No such workflow (or it is not yours).' : e.message }));
    return;
  }
  let events = [];
  const openSteps = new Set();
  const title = h('h1', {});
  const msg = h('div', { 'aria-live': 'polite' });
  const actions = h('div', { class: 'actions', id: 'actions' });
  const signal = h('div', { id: 'signal' });
  const graph = h('div', { id: 'graph' });
  const timeline = h('div', {});
  const steps = h('div', { id: 'steps' });
  const audit = h('div', {});
  show(title, msg, actions, signal,
    h('h2', { text: 'Graph' }),
    h('div', { class: 'legend', 'aria-hidden': 'true' }, ['pending', 'running', 'waiting', 'completed', 'failed', 'skipped'].map((s) => badge(s))),
    graph, h('h2', { text: 'Timeline' }), timeline, h('h2', { text: 'Steps' }), steps, h('h2', { text: 'Audit trail' }), audit);

  const say = (text, kind) => { msg.replaceChildren(h('div', { class: kind || 'notice', role: kind === 'error' ? 'alert' : 'status', text })); };
  const act = async (label, path, body) => {
    actions.querySelectorAll('button').forEach((b) => { b.disabled = true; });
    try {
      const r = await api('POST', '/workflows/' + id + path, body);
      say(label + ': ' + (r.message || r.status || 'accepted'));
    } catch (e) {
      if (e.status === 409) say('Not done: the workflow changed first (' + e.message + '). What you see now is its current state.', 'error');
      else say(label + ' failed: ' + e.message, 'error');
    }
    const fresh = await api('GET', '/workflows/' + id).catch(() => null);
    if (fresh) { w = fresh; redraw(); }
  };

  const redraw = () => {
    title.replaceChildren(w.name, ' ', badge(w.status));
    title.dataset.status = w.status;
    const buttons = [];
    if (w.status === 'pending') buttons.push(['Execute', '/execute', '']);
    if (w.status === 'failed') buttons.push(['Resume from the failed step', '/execute', '']);
    if ((w.status === 'running' || w.status === 'waiting') && !w.cancel_requested) buttons.push(['Pause', '/pause', 'secondary']);
    if (w.status === 'paused') buttons.push(['Resume', '/resume', '']);
    if (!['completed', 'cancelled'].includes(w.status) && !w.cancel_requested) buttons.push(['Cancel', '/cancel', 'danger']);
    actions.replaceChildren(...buttons.map(([label, path, cls]) => h('button', {
      type: 'button', class: cls, 'data-action': path.slice(1),
      onclick: () => { if (path !== '/cancel' || confirm('Cancel this workflow?')) act(label, path); },
    }, label)), h('span', { class: 'muted mono', text: w.workflow_id }));
    const waiting = (w.waiting_for || []);
    if (waiting.length && !signal.querySelector('textarea')) {
      const sel = h('select', { id: 'signal-name' }, waiting.map((s) => h('option', { value: s, text: s })));
      const body = h('textarea', { id: 'signal-body', rows: 3, spellcheck: 'false' });
      body.value = '{"ok": true}';
      const err = h('div', { class: 'field-error', role: 'alert' });
      signal.replaceChildren(h('form', { class: 'card', onsubmit: (ev) => {
        ev.preventDefault();
        let parsed;
        try { parsed = JSON.parse(body.value); } catch (e) { err.textContent = 'Not JSON: ' + e.message; return; }
        err.textContent = '';
        act('Signal ' + sel.value, '/signals/' + encodeURIComponent(sel.value), parsed);
      } },
      h('h2', { text: 'Waiting for a signal' }),
      h('label', { for: 'signal-name', text: 'Signal' }), sel,
      h('label', { for: 'signal-body', text: 'Body (JSON, becomes the waiting step\'s output)' }), body, err,
      h('div', { class: 'actions' }, h('button', { type: 'submit', id: 'send-signal', text: 'Send signal' }))));
    } else if (!waiting.length) {
      signal.replaceChildren();
    }
    graph.replaceChildren(drawGraph(w));
    fitLabels(graph);
    timeline.replaceChildren(waterfall(w, events));
    steps.replaceChildren(...stepDetails(w, openSteps));
    audit.replaceChildren(auditTable(events));
  };
  redraw();
  let pending = false;
  openStream('/workflows/' + id + '/stream', (type, data, eid) => {
    if (type === 'state') { w = data; }
    else if (type === 'error') { say('The live stream stopped: ' + ((data && data.error && data.error.message) || 'error'), 'error'); return; }
    else if (type === 'end') { /* the last state came before */ }
    else if (eid !== null) { events.push(data); }
    if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; redraw(); }); }
  });
}

// ---------- create ----------
const EXAMPLES = {
  'Content pipeline (the guide)': {
    name: 'Content Marketing Pipeline',
    tasks: [
      { agent: 'marketing_content_agent_1_101', input: { topic: 'AI in healthcare', format: 'blog_post' } },
      { agent: 'marketing_seo_agent_1_102', input: { content: '{{previous_output}}', target_keywords: ['AI healthcare'] } },
      { agent: 'marketing_social_media_agent_1_103', input: { content: '{{previous_output}}', platforms: ['twitter', 'linkedin'] } },
    ],
  },
  'Fan-out / fan-in with an approval': {
    name: 'Research fan-out',
    input: { topic: 'solar storage' },
    steps: [
      { id: 'plan', agent: 'planner', input: { topic: '{{input.topic}}' } },
      { id: 'market', agent: 'researcher', after: ['plan'], input: { angle: 'market', plan: '{{steps.plan.output}}' } },
      { id: 'tech', agent: 'researcher', after: ['plan'], input: { angle: 'technology', plan: '{{steps.plan.output}}' } },
      { id: 'policy', agent: 'researcher', after: ['plan'], input: { angle: 'policy', plan: '{{steps.plan.output}}' } },
      { id: 'merge', agent: 'writer', after: ['market', 'tech', 'policy'], input: { parts: ['{{steps.market.output}}', '{{steps.tech.output}}', '{{steps.policy.output}}'] } },
      { id: 'approval', after: ['merge'], wait: { signal: 'approved' } },
      { id: 'publish', agent: 'publisher', after: ['approval'], when: 'steps.approval.output.ok == true', input: { text: '{{steps.merge.output}}' } },
    ],
  },
};

// Pretty-prints `value`, noting the line of every field path
// (`steps[2].after[0]`), so an error's `field` can be shown where it is.
function layout(value) {
  const lines = [];
  const at = new Map();
  const walk = (v, path, indent, prefix, comma) => {
    const pad = '  '.repeat(indent);
    if (path) at.set(path, lines.length);
    if (Array.isArray(v) && v.length) {
      lines.push(pad + prefix + '[');
      v.forEach((x, i) => walk(x, path + '[' + i + ']', indent + 1, '', i < v.length - 1));
      lines.push(pad + ']' + (comma ? ',' : ''));
    } else if (v && typeof v === 'object' && Object.keys(v).length) {
      lines.push(pad + prefix + '{');
      const keys = Object.keys(v);
      keys.forEach((k, i) => walk(v[k], path ? path + '.' + k : k, indent + 1, JSON.stringify(k) + ': ', i < keys.length - 1));
      lines.push(pad + '}' + (comma ? ',' : ''));
    } else {
      lines.push(pad + prefix + JSON.stringify(v) + (comma ? ',' : ''));
    }
  };
  walk(value, '', 0, '', false);
  return { lines, at };
}

function lineOf(at, field) {
  // The field itself, or its nearest parent that is in the document.
  let f = field;
  while (f) {
    if (at.has(f)) return at.get(f);
    const cut = Math.max(f.lastIndexOf('.'), f.lastIndexOf('['));
    if (cut <= 0) break;
    f = f.slice(0, cut);
  }
  return 0;
}

function createPage() {
  const text = h('textarea', { id: 'definition', rows: 18, spellcheck: 'false', 'aria-describedby': 'def-errors' });
  text.value = JSON.stringify(Object.values(EXAMPLES)[0], null, 2);
  const errors = h('div', { id: 'def-errors', 'aria-live': 'assertive' });
  const view = h('div', { class: 'card editor-lines', id: 'def-view', hidden: true });
  const execute = h('input', { type: 'checkbox', id: 'and-execute', checked: true });
  const form = h('form', { class: 'card', id: 'create', onsubmit: async (ev) => {
    ev.preventDefault();
    errors.replaceChildren();
    view.hidden = true;
    let value;
    try { value = JSON.parse(text.value); } catch (e) {
      errors.replaceChildren(h('div', { class: 'error', role: 'alert', text: 'This is not JSON: ' + e.message }));
      return;
    }
    try {
      const r = await api('POST', '/workflows/create', text.value);
      if (execute.checked) await api('POST', '/workflows/' + r.workflow_id + '/execute');
      location.hash = '#/w/' + r.workflow_id;
    } catch (e) {
      const where = e.field ? e.field : null;
      errors.replaceChildren(h('div', { class: 'error', role: 'alert', 'data-field': where || '' },
        where ? h('strong', { class: 'field', text: where + ': ' }) : null, e.message));
      if (where) {
        const { lines, at } = layout(value);
        const bad = lineOf(at, where);
        view.replaceChildren(...lines.map((l, i) => h('div', { class: 'line' + (i === bad ? ' bad' : ''), 'data-line': i + 1 }, l,
          i === bad ? h('span', { class: 'field-error', text: '   ← ' + e.message }) : null)));
        view.hidden = false;
        const badLine = view.querySelector('.bad');
        if (badLine) badLine.scrollIntoView({ block: 'center' });
      }
    }
  } },
  h('h1', { text: 'New workflow' }),
  h('p', { class: 'muted', text: 'A definition as POST /workflows/create takes it: a chain of tasks, or a graph of steps (see the README\'s "Graphs").' }),
  h('div', { class: 'row' }, Object.keys(EXAMPLES).map((k) => h('button', { type: 'button', class: 'secondary', onclick: () => {
    text.value = JSON.stringify(EXAMPLES[k], null, 2); errors.replaceChildren(); view.hidden = true;
  } }, k))),
  h('label', { for: 'definition', text: 'Definition (JSON)' }), text,
  h('div', { class: 'row' }, h('div', {}, h('label', { for: 'and-execute' }, execute, ' Execute it at once'))),
  errors,
  h('div', { class: 'actions' }, h('button', { type: 'submit', id: 'create-submit', text: 'Create' })));
  show(form, view);
}

// ---------- routing ----------
function route(message) {
  leave.forEach((f) => f());
  leave = [];
  if (!auth.token) { signInPage(message); return; }
  document.getElementById('nav').hidden = false;
  const c = auth.claims();
  document.getElementById('who').textContent = 'user ' + c.sub + ((c.roles || []).includes('admin') ? ' (admin)' : '');
  const hash = location.hash.replace(/^#/, '') || '/';
  const [path, query] = hash.split('?');
  if (path.startsWith('/w/')) runPage(decodeURIComponent(path.slice(3)));
  else if (path === '/new') createPage();
  else listPage(new URLSearchParams(query || ''));
  main.focus({ preventScroll: true });
}

document.getElementById('sign-out').addEventListener('click', () => signOut());
window.addEventListener('hashchange', () => route());
route();
