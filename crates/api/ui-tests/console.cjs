// Browser tests of the console: headless Chromium (Debian's) driven by
// playwright-core, against a real stack started by crates/cli/tests/console.rs
// (which passes BASE, TOKEN_A, TOKEN_B, OTHER_ID, SCREENSHOTS). Each test
// saves a screenshot under SCREENSHOTS. Exits non-zero on the first failure.
//
// Measure mode (MEASURE_LIST=1): opens the runs list N times and prints how
// long it took until its rows were on screen (see scripts/bench-console.sh).
'use strict';

const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');
const AXE = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(k + ' is not set');
  return v;
};
const BASE = env('BASE');
const SHOTS = env('SCREENSHOTS');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
fs.mkdirSync(SHOTS, { recursive: true });

const LONG = 30000;
let browser;
const cspViolations = [];
const pageErrors = [];

async function newPage(viewport) {
  const ctx = await browser.newContext({ viewport: viewport || { width: 1280, height: 900 } });
  const page = await ctx.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
  });
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('dialog', (d) => d.accept());
  return page;
}

async function signIn(page, token) {
  await page.goto(BASE + '/');
  await page.waitForURL(/\/ui/);
  await page.fill('#token', token);
  await page.click('#sign-in button[type=submit]');
  await page.waitForSelector('#runs', { timeout: LONG });
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, name + '.png'), fullPage: true });
}

async function axe(page, what) {
  await page.evaluate(AXE + '\n;0');
  const r = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  const bad = r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  if (bad.length) {
    throw new Error('accessibility (' + what + '): ' + bad.map((v) => v.id + ': ' + v.help + ' @ ' + v.nodes.map((n) => n.target.join(' ')).join(', ')).join('; '));
  }
}

async function nodeStatus(page, step) {
  return page.getAttribute(`#graph g.node[data-step="${step}"]`, 'data-status');
}

async function waitStatus(page, status) {
  await page.waitForSelector(`h1[data-status="${status}"]`, { timeout: LONG });
}

async function createFrom(page, definition) {
  await page.click('a[href="#/new"]');
  await page.waitForSelector('#definition');
  await page.fill('#definition', JSON.stringify(definition, null, 2));
  await page.click('#create-submit');
  await page.waitForSelector('#graph g.node', { timeout: LONG });
}

const tests = [];
const test = (name, fn) => tests.push([name, fn]);

test('a bad token is refused', async () => {
  const page = await newPage();
  await page.goto(BASE + '/ui');
  await page.fill('#token', 'not-a-token');
  await page.click('#sign-in button[type=submit]');
  await page.waitForSelector('#sign-in .error:not([hidden])');
  const text = await page.textContent('#sign-in .error');
  if (!/refused/.test(text)) throw new Error('no refusal shown: ' + text);
  if (await page.$('#runs')) throw new Error('signed in with a bad token');
  const stored = await page.evaluate(() => sessionStorage.length);
  if (stored !== 0) throw new Error('a refused token was kept');
  await axe(page, 'sign-in');
  await shot(page, '01-bad-token-refused');
  await page.context().close();
});

test('signed out, the sign-in page shows no navigation', async () => {
  const page = await newPage();
  await page.goto(BASE + '/ui');
  await page.waitForSelector('#sign-in');
  const shown = [];
  for (const el of await page.$$('#nav a, #nav button, #nav .who')) {
    if (await el.isVisible()) shown.push((await el.textContent()).trim() || '(' + (await el.getAttribute('id')) + ')');
  }
  if (shown.length) throw new Error('signed out, the page shows: ' + shown.join(', '));
  await page.context().close();
});

test('the first load logs no console error', async () => {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await ctx.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text() + ' @ ' + JSON.stringify(m.location())); });
  const missing = [];
  page.on('response', (r) => { if (r.status() >= 400) missing.push(r.status() + ' ' + r.url()); });
  await page.goto(BASE + '/');
  await page.waitForSelector('#sign-in');
  await page.waitForLoadState('networkidle');
  if (errors.length || missing.length) throw new Error('first load: ' + errors.concat(missing).join('; '));
  // The icon the page links to is served (and so is /favicon.ico).
  const link = await page.$('link[rel="icon"]');
  if (!link) throw new Error('the page links no icon');
  for (const href of [await link.getAttribute('href'), '/favicon.ico']) {
    const st = await page.evaluate(async (u) => (await fetch(u)).status, href);
    if (st !== 200) throw new Error(href + ' answers ' + st);
  }
  await ctx.close();
});

test('a long node subtitle stays within its box and is shown whole on hover', async () => {
  const page = await newPage();
  await signIn(page, env('TOKEN_A'));
  await createFrom(page, { name: 'long labels', steps: [
    { id: 'research', agent: 'ui_researcher' },
    { id: 'a_rather_long_step_identifier', agent: 'marketing_social_media_agent_1_103', after: ['research'] },
  ] });
  await page.waitForSelector('#graph g.node[data-step="research"][data-status="completed"]', { timeout: LONG });
  const out = await page.$$eval('#graph g.node', (nodes) => nodes.flatMap((n) => {
    const box = n.querySelector('rect').getBoundingClientRect();
    return [...n.querySelectorAll('text')]
      .map((t) => [t.textContent, t.getBoundingClientRect()])
      .filter(([, r]) => r.left < box.left || r.right > box.right - 4 || r.top < box.top || r.bottom > box.bottom)
      .map(([text, r]) => `${n.dataset.step}: "${text}" ends at ${Math.round(r.right)} past its box's ${Math.round(box.right)}`);
  }));
  if (out.length) throw new Error('text runs past its node: ' + out.join('; '));
  const sub = await page.textContent('#graph g.node[data-step="research"] text.sub');
  if (!sub.startsWith('completed')) throw new Error('subtitle: ' + sub);
  const title = await page.textContent('#graph g.node[data-step="research"] title');
  if (!title.includes('completed · ui_researcher')) throw new Error('the tooltip does not hold the whole subtitle: ' + title);
  await shot(page, '12-long-labels');
  await page.context().close();
});

test('sign in; the content pipeline turns completed live', async () => {
  const page = await newPage();
  await signIn(page, env('TOKEN_A'));
  // The token is nowhere in the URL.
  if (page.url().includes(env('TOKEN_A'))) throw new Error('token in the URL');
  await page.click('a[href="#/new"]');
  await page.waitForSelector('#definition');
  // The guide's pipeline is the first example, prefilled.
  await page.click('#create-submit');
  await page.waitForSelector('#graph g.node', { timeout: LONG });
  // Live, without reload: a step completes while another is still to come.
  await page.waitForFunction(() => {
    const s = [...document.querySelectorAll('#graph g.node')].map((n) => n.dataset.status);
    return s.includes('completed') && s.some((x) => x !== 'completed');
  }, null, { timeout: LONG });
  await shot(page, '02-graph-mid-run');
  await waitStatus(page, 'completed');
  const statuses = await page.$$eval('#graph g.node', (ns) => ns.map((n) => n.dataset.status));
  if (statuses.length !== 3 || statuses.some((s) => s !== 'completed')) throw new Error('steps: ' + statuses);
  const records = await page.$$eval('#audit tbody tr', (rs) => rs.length);
  if (records < 6) throw new Error('audit trail has ' + records + ' records');
  if ((await page.$$('#waterfall .bar')).length !== 3) throw new Error('no waterfall bars');
  await page.click('#steps details[data-step="step_1"] summary');
  await page.waitForSelector('#steps details[data-step="step_1"][open] pre.json');
  await axe(page, 'run page');
  await shot(page, '03-pipeline-completed');
  await page.context().close();
});

test('a fan-out/fan-in workflow waits for approval and is approved', async () => {
  const page = await newPage();
  await signIn(page, env('TOKEN_A'));
  await page.click('a[href="#/new"]');
  await page.waitForSelector('#definition');
  await page.click('text=Fan-out / fan-in with an approval');
  await page.click('#create-submit');
  await page.waitForSelector('#graph g.node[data-step="approval"][data-status="waiting"]', { timeout: LONG });
  for (const s of ['plan', 'market', 'tech', 'policy', 'merge']) {
    if ((await nodeStatus(page, s)) !== 'completed') throw new Error(s + ' not completed before the wait');
  }
  await waitStatus(page, 'waiting');
  await shot(page, '04-fan-in-waiting-for-approval');
  await page.fill('#signal-body', '{"ok": true, "by": "browser"}');
  await page.click('#send-signal');
  await waitStatus(page, 'completed');
  if ((await nodeStatus(page, 'publish')) !== 'completed') throw new Error('publish did not run');
  await shot(page, '05-fan-in-approved');
  await page.context().close();
});

test('pause and resume', async () => {
  const page = await newPage();
  await signIn(page, env('TOKEN_A'));
  await createFrom(page, { name: 'pausable', tasks: ['a', 'b', 'c', 'd', 'e'].map((a) => ({ agent: a, input: {} })) });
  await page.waitForSelector('button[data-action="pause"]', { timeout: LONG });
  await page.click('button[data-action="pause"]');
  await waitStatus(page, 'paused');
  await shot(page, '06-paused');
  const done = await page.$$eval('#graph g.node[data-status="completed"]', (n) => n.length);
  await page.waitForTimeout(1500);
  const still = await page.$$eval('#graph g.node[data-status="completed"]', (n) => n.length);
  if (still > done + 1) throw new Error('steps went on while paused');
  await page.click('button[data-action="resume"]');
  await waitStatus(page, 'completed');
  await shot(page, '07-resumed-and-completed');
  await page.context().close();
});

test('cancel', async () => {
  const page = await newPage();
  await signIn(page, env('TOKEN_A'));
  await createFrom(page, { name: 'to cancel', steps: [
    { id: 'first', agent: 'a' },
    { id: 'nap', after: ['first'], sleep_ms: 3600000 },
    { id: 'never', agent: 'b', after: ['nap'] },
  ] });
  await page.waitForSelector('#graph g.node[data-step="nap"][data-status="waiting"]', { timeout: LONG });
  await page.click('button[data-action="cancel"]');
  await waitStatus(page, 'cancelled');
  if (await page.$('button[data-action="cancel"]')) throw new Error('cancel still offered');
  await shot(page, '08-cancelled');
  await page.context().close();
});

test("another user's workflow is not visible; the list filters and updates", async () => {
  const page = await newPage();
  await signIn(page, env('TOKEN_A'));
  const other = env('OTHER_ID');
  if (await page.$(`#runs tr[data-id="${other}"]`)) throw new Error("another user's workflow is listed");
  await page.goto(BASE + '/ui#/w/' + other);
  await page.waitForSelector('main .error');
  const text = await page.textContent('main .error');
  if (!/No such workflow/.test(text)) throw new Error('shown: ' + text);
  await page.goto(BASE + '/ui#/');
  await page.waitForSelector('#runs tbody tr[data-id]');
  await page.waitForSelector('.counts button[data-status="completed"] .count');
  await page.fill('#f-name', 'pausable');
  await page.click('form.row button[type=submit]');
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll('#runs tbody tr[data-id]')];
    return rows.length === 1 && rows[0].textContent.includes('pausable');
  }, null, { timeout: LONG });
  await page.goto(BASE + '/ui#/');
  await page.waitForSelector('#runs tbody tr[data-id]');
  // A workflow created elsewhere (here: through the API) appears live.
  const created = await page.evaluate(async (token) => {
    const r = await fetch('/workflows/create', { method: 'POST', headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' }, body: JSON.stringify({ name: 'appears live', tasks: [{ agent: 'a', input: {} }] }) });
    return (await r.json()).workflow_id;
  }, env('TOKEN_A'));
  await page.waitForSelector(`#runs tr[data-id="${created}"]`, { timeout: LONG });
  await axe(page, 'runs list');
  await shot(page, '09-runs-list');
  await page.click('a[href="#/new"]');
  await page.waitForSelector('#definition');
  await axe(page, 'create page');
  await page.context().close();
});

test('a definition error is shown at its field', async () => {
  const page = await newPage();
  await signIn(page, env('TOKEN_A'));
  await page.click('a[href="#/new"]');
  await page.waitForSelector('#definition');
  await page.fill('#definition', JSON.stringify({ name: 'bad', steps: [
    { id: 'a', agent: 'a' }, { id: 'b', agent: 'b', after: ['nowhere'] },
  ] }));
  await page.click('#create-submit');
  await page.waitForSelector('#def-errors .error');
  const field = await page.getAttribute('#def-errors .error', 'data-field');
  if (field !== 'steps[1].after') throw new Error('field: ' + field);
  const bad = await page.textContent('#def-view .line.bad');
  if (!bad.includes('"after"')) throw new Error('marked line: ' + bad);
  await shot(page, '10-field-error');
  await page.context().close();
});

test('a phone-sized screen', async () => {
  const page = await newPage({ width: 390, height: 844 });
  await signIn(page, env('TOKEN_A'));
  await page.click('#runs tbody tr[data-id] a');
  await page.waitForSelector('#graph g.node');
  const overflow = await page.evaluate(() => {
    if (document.documentElement.scrollWidth <= window.innerWidth + 1) return null;
    // The outermost elements that stick out, to say what to fix.
    return [...document.querySelectorAll('body *')]
      .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1)
      .filter((e) => !(e.parentElement && e.parentElement.getBoundingClientRect().right > window.innerWidth + 1))
      .map((e) => e.tagName + '.' + e.className + '#' + e.id).slice(0, 5);
  });
  if (overflow) throw new Error('the page is wider than the phone: ' + overflow.join(', '));
  await shot(page, '11-phone-run');
  await page.context().close();
});

async function measure() {
  const runs = Number(process.env.RUNS || 5);
  const page = await newPage();
  await signIn(page, env('TOKEN_A'));
  const times = [];
  for (let i = 0; i < runs; i++) {
    await page.goto('about:blank');
    const t0 = Date.now();
    await page.goto(BASE + '/ui#/');
    await page.waitForSelector('#runs tbody tr[data-id]', { timeout: LONG });
    times.push(Date.now() - t0);
  }
  const counts = await page.textContent('.counts').catch(() => '');
  await shot(page, 'runs-list-10000');
  console.log(JSON.stringify({ list_open_ms: times, counts }));
}

(async () => {
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  let failed = 0;
  try {
    if (process.env.MEASURE_LIST) {
      await measure();
    } else {
      for (const [name, fn] of tests) {
        const t0 = Date.now();
        try {
          await fn();
          console.log(`ok   ${name} (${Date.now() - t0} ms)`);
        } catch (e) {
          failed++;
          console.log(`FAIL ${name}: ${e.stack || e}`);
        }
      }
      if (pageErrors.length) {
        failed++;
        console.log('FAIL errors in the page: ' + pageErrors.join('\n'));
      }
      if (cspViolations.length) {
        failed++;
        console.log('FAIL Content-Security-Policy violations: ' + cspViolations.join('\n'));
      }
    }
  } finally {
    await browser.close();
  }
  process.exit(failed ? 1 : 0);
})().catch((e) => { console.error(e); process.exit(1); });
