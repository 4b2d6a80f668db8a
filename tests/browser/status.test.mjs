// The status page at /status in a real browser (Debian's headless Chromium): its numbers
// move when load is applied (subscribers connect, messages are published and delivered),
// the busiest-channels table names the loaded channel, the page's publish form works, and
// a screenshot is kept as a test artifact (target/browser-artifacts/status.png, or
// $ARTIFACTS_DIR).
//
// Builds nothing: HERALD_BIN names the binary (default ../../target/release/herald).
// Run: tests/browser/run.sh   (or `node --test` in this folder once `npm ci` has run)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const HERALD_BIN = process.env.HERALD_BIN || resolve(here, '../../target/release/herald');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const ARTIFACTS = process.env.ARTIFACTS_DIR || resolve(here, '../../target/browser-artifacts');
const CHANNEL = 'status-load';
const SUBSCRIBERS = 5;
const MESSAGES = 50;
const STEP_MS = 15_000; // bound on any single wait in the page

let herald = null;
let heraldLog = '';
let base = '';
let browser = null;
let page = null;
const streams = []; // AbortControllers of the SSE subscribers
const pageErrors = [];

function startHerald() {
  return new Promise((resolveStart, rejectStart) => {
    assert.ok(existsSync(HERALD_BIN), `herald binary not found at ${HERALD_BIN} (build it, or set HERALD_BIN)`);
    const child = spawn(HERALD_BIN, ['--bind', '127.0.0.1', '--port', '0', '--workers', '2'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    herald = child;
    const timer = setTimeout(() => rejectStart(new Error(`herald did not report its address:\n${heraldLog}`)), 10_000);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      heraldLog = (heraldLog + chunk).slice(-20_000);
      const m = /listening on (127\.0\.0\.1:\d+)/.exec(heraldLog);
      if (m && !base) {
        base = `http://${m[1]}`;
        clearTimeout(timer);
        resolveStart();
      }
    });
    child.on('error', (e) => { clearTimeout(timer); rejectStart(e); });
    child.on('exit', (code, sig) => {
      if (!base) { clearTimeout(timer); rejectStart(new Error(`herald exited (${code ?? sig}):\n${heraldLog}`)); }
    });
  });
}

async function stopHerald() {
  const child = herald;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  process.kill(child.pid, 'SIGTERM');
  const timer = setTimeout(() => { try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ } }, 7_000);
  await exited;
  clearTimeout(timer);
}

/** An SSE subscriber from Node (not the page): held open until after(). */
async function subscribe(channel) {
  const ac = new AbortController();
  streams.push(ac);
  const r = await fetch(`${base}/sse/?cid=${channel}`, { signal: ac.signal });
  assert.equal(r.status, 200);
  // Keep reading so the stream never backs up.
  (async () => { try { for await (const _ of r.body) { /* drain */ } } catch { /* aborted */ } })();
}

async function publish(channel, body) {
  const r = await fetch(`${base}/publish/?cid=${channel}`, { method: 'POST', body, signal: AbortSignal.timeout(5_000) });
  assert.equal(r.status, 200, await r.text());
}

/** What the page shows, read from its DOM. */
function shown() {
  return page.evaluate(() => {
    const num = (id) => Number(document.getElementById(id).textContent);
    const busiest = [...document.querySelectorAll('#busiest tr')].map((tr) => [...tr.children].map((td) => td.textContent));
    const transports = Object.fromEntries(
      [...document.querySelectorAll('#transports tr')].map((tr) => [tr.children[0].textContent, Number(tr.children[1].textContent)]),
    );
    return {
      state: document.getElementById('state').textContent,
      connections: num('connections'),
      published: num('published-total'),
      delivered: num('delivered-total'),
      busiest,
      transports,
      polls: window.heraldStatus ? window.heraldStatus.polls : 0,
    };
  });
}

before(async () => {
  await startHerald();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 20_000,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  page.setDefaultTimeout(STEP_MS);
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(`console: ${m.text()}`); });
});

after(async () => {
  for (const ac of streams) ac.abort();
  if (browser) await browser.close();
  await stopHerald();
});

test('the status page shows live numbers that move with load', async () => {
  const resp = await page.goto(`${base}/status`, { waitUntil: 'domcontentloaded' });
  assert.equal(resp.status(), 200);
  await page.waitForFunction(() => window.heraldStatus && window.heraldStatus.polls >= 1);
  const before = await shown();
  assert.equal(before.state, 'live');

  for (let i = 0; i < SUBSCRIBERS; i++) await subscribe(CHANNEL);
  for (let i = 0; i < MESSAGES; i++) await publish(CHANNEL, JSON.stringify({ n: i }));

  // The page polls once a second and the workers refresh their gauges once a second:
  // wait (bounded) for the numbers to reflect the load.
  await page.waitForFunction(
    ({ channel, subs, published, delivered }) => {
      const s = window.heraldStatus && window.heraldStatus.last;
      const row = document.querySelector('#busiest tr');
      return s && s.published_total >= published && s.delivered_total >= delivered
        && s.connections_by_transport.sse >= subs
        && row && row.children[0].textContent === channel && Number(row.children[1].textContent) === subs
        && Number(document.getElementById('published-total').textContent) >= published;
    },
    { channel: CHANNEL, subs: SUBSCRIBERS, published: before.published + MESSAGES, delivered: before.delivered + MESSAGES * SUBSCRIBERS },
    { timeout: STEP_MS, polling: 100 },
  );
  const now = await shown();
  assert.equal(now.published - before.published, MESSAGES, JSON.stringify(now));
  assert.equal(now.delivered - before.delivered, MESSAGES * SUBSCRIBERS, JSON.stringify(now));
  assert.ok(now.connections > before.connections, JSON.stringify({ before, now }));
  assert.equal(now.transports.sse, SUBSCRIBERS, JSON.stringify(now));
  assert.deepEqual(now.busiest[0].slice(0, 2), [CHANNEL, String(SUBSCRIBERS)]);
  // The chart has samples and the rate cards show numbers.
  const chart = await page.evaluate(() => ({
    samples: window.heraldStatus.samples.length,
    maxPub: Math.max(...window.heraldStatus.samples.map((s) => s.pub)),
  }));
  assert.ok(chart.samples >= 1, JSON.stringify(chart));
  assert.ok(chart.maxPub > 0, `no publish rate was charted: ${JSON.stringify(chart)}`);

  // The publish form reaches the server.
  await page.fill('#pub-channel', CHANNEL);
  await page.fill('#pub-data', '{"from":"status page"}');
  await page.click('#publish-form button');
  await page.waitForFunction(() => document.getElementById('publish-result').textContent.startsWith('200'));
  const hist = await (await fetch(`${base}/messages/?cid=${CHANNEL}&limit=1`)).json();
  assert.deepEqual(hist.messages[0].data, { from: 'status page' });

  mkdirSync(ARTIFACTS, { recursive: true });
  const shot = resolve(ARTIFACTS, 'status.png');
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(statSync(shot).size > 10_000, `screenshot ${shot} is suspiciously small`);
  assert.deepEqual(pageErrors, []);
});
