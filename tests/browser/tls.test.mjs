// The demo page at https://127.0.0.1:PORT/ in a real browser (Debian's headless Chromium),
// over each of the five transports, with TLS: herald serves `https://` and `wss://` on its
// port with a self-signed certificate made here by the openssl CLI; Chromium runs with
// --ignore-certificate-errors, the publishing side (node's https module) trusts exactly that
// certificate. Every message published must show up once, in order, delivered by the
// selected transport, and every request the page makes must be https:// or wss://.
//
// Builds nothing: HERALD_BIN names the binary (default ../../target/release/herald).
// Run: tests/browser/run.sh   (or `node --test tls.test.mjs` in this folder once `npm ci` has run)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TRANSPORTS, demoPage, launchChromium } from './demo_page.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const HERALD_BIN = process.env.HERALD_BIN || resolve(here, '../../target/release/herald');
const CHANNEL = 'chat'; // the page's default
const STEP_MS = 10_000; // bound on any single wait in the page
const TEST_MS = 20_000; // bound on one test

let dir = '';
let certPem = '';
let herald = null; // child process
let heraldLog = '';
let base = '';
let browser = null;
let page = null;
const pageErrors = [];
const pageUrls = []; // every request and WebSocket the page opened

/** A self-signed certificate for 127.0.0.1 (and localhost), by the openssl CLI. */
function makeCert() {
  dir = mkdtempSync(join(tmpdir(), 'herald-tls-browser-'));
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '2',
    '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  certPem = readFileSync(join(dir, 'cert.pem'), 'utf8');
  writeFileSync(join(dir, 'herald.json'), JSON.stringify({
    http_server: { tls: { enabled: true, cert_pem_file: join(dir, 'cert.pem'), key_pem_file: join(dir, 'key.pem') } },
  }));
}

function startHerald() {
  return new Promise((resolveStart, rejectStart) => {
    assert.ok(existsSync(HERALD_BIN), `herald binary not found at ${HERALD_BIN} (build it, or set HERALD_BIN)`);
    const child = spawn(HERALD_BIN, [
      '--bind', '127.0.0.1', '--port', '0', '--workers', '2', '--config', join(dir, 'herald.json'),
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    herald = child;
    const timer = setTimeout(() => rejectStart(new Error(`herald did not report its address:\n${heraldLog}`)), 10_000);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      heraldLog = (heraldLog + chunk).slice(-20_000);
      // With tls_port unset, the one port speaks TLS (README, "TLS").
      const m = /listening on (127\.0\.0\.1:\d+)/.exec(heraldLog);
      if (m && !base) {
        base = `https://${m[1]}`;
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

/** An HTTPS request that trusts only the test's certificate (so the server is verified). */
function httpsRequest(method, url, body) {
  return new Promise((ok, fail) => {
    const req = request(url, {
      method,
      ca: certPem,
      headers: body === undefined ? {} : { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
      timeout: 5_000,
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { text += c; });
      res.on('end', () => ok({ status: res.statusCode, text }));
      res.on('error', fail);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url}: timed out`)));
    req.on('error', fail);
    req.end(body);
  });
}

async function publish(body, channel = CHANNEL) {
  const r = await httpsRequest('POST', `${base}/publish/?cid=${encodeURIComponent(channel)}`,
    typeof body === 'string' ? body : JSON.stringify(body));
  assert.equal(r.status, 200, `publish answered ${r.status}: ${r.text}`);
  const j = JSON.parse(r.text);
  assert.equal(j.channel, channel);
  assert.equal(typeof j.id, 'number');
  return j.id;
}

const { waitConnected, waitForIds, shown, assertOnceEachInOrder } = demoPage(() => page, STEP_MS);

before(async () => {
  makeCert();
  await startHerald();
  browser = await launchChromium(['--ignore-certificate-errors']);
  page = await browser.newPage();
  page.setDefaultTimeout(STEP_MS);
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(`console: ${m.text()}`); });
  page.on('request', (r) => pageUrls.push(r.url()));
  page.on('websocket', (ws) => pageUrls.push(ws.url()));
  const resp = await page.goto(`${base}/`, { waitUntil: 'domcontentloaded' });
  assert.equal(resp.status(), 200);
  assert.ok(resp.url().startsWith('https://'), `the page was served from ${resp.url()}`);
  await page.waitForFunction(() => !!window.heraldDemo);
}, { timeout: 40_000 });

after(async () => {
  try {
    if (browser) await browser.close();
  } finally {
    await stopHerald();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
});

test('the server speaks TLS and the test certificate verifies', { timeout: TEST_MS }, async () => {
  const r = await httpsRequest('GET', `${base}/messages/?cid=${CHANNEL}&since=0`);
  assert.equal(r.status, 200, r.text);
  assert.equal(await page.evaluate(() => location.protocol), 'https:');
});

for (const name of TRANSPORTS) {
  test(`messages arrive via ${name} over TLS`, { timeout: TEST_MS }, async () => {
    const seen = pageUrls.length;
    await page.selectOption('#transport', name); // the UI path: fires "change"
    await waitConnected(name);
    const before = (await shown()).length;
    const payloads = [
      { nick: `bot-${name}`, text: `plain hello over ${name} with TLS` },
      { nick: `bøt-${name} ✓`, text: 'héllo wörld — 你好 🎉 \u2028 line-sep, "quotes" \\ backslash <b>not bold</b>' },
      { nick: `bot-${name}`, text: 'x'.repeat(20_000) }, // several TLS records
    ];
    const ids = [];
    for (const p of payloads) ids.push(await publish(p));
    await waitForIds(ids);

    const msgs = await shown();
    assert.equal(msgs.length, before + 3, 'exactly the three new messages were added');
    const tail = msgs.slice(-3);
    assert.deepEqual(tail.map((m) => m.id), ids, 'shown in publish order, after everything earlier');
    for (let i = 0; i < 3; i++) {
      assert.equal(tail[i].transport, name, `message ${ids[i]} delivered by ${tail[i].transport}, not ${name}`);
      assert.equal(tail[i].text, payloads[i].text);
      assert.equal(tail[i].nick, payloads[i].nick);
    }
    await assertOnceEachInOrder();
    const opened = pageUrls.slice(seen);
    assert.ok(opened.length > 0, `the ${name} transport opened nothing`);
    if (name === 'ws') assert.ok(opened.some((u) => u.startsWith('wss://')), `no wss:// socket among ${opened}`);
    for (const u of opened) assert.match(u, /^(https|wss):\/\//, `${name} used ${u}`);
  });
}

test('the send box publishes over TLS and the message comes back', { timeout: TEST_MS }, async () => {
  await page.selectOption('#transport', 'ws');
  await waitConnected('ws');
  await page.fill('#nick', 'typist');
  const text = `typed at ${Date.now()} — ünïcödé over wss`;
  await page.fill('#text', text);
  await page.click('#send-button');
  await page.waitForFunction(
    (t) => [...document.querySelectorAll('.msg .text')].some((e) => e.textContent === t),
    text,
    { timeout: STEP_MS },
  );
  const msgs = await shown();
  const m = msgs[msgs.length - 1];
  assert.deepEqual([m.text, m.nick, m.transport], [text, 'typist', 'ws']);
  const r = await httpsRequest('GET', `${base}/messages/?cid=${CHANNEL}&since=${m.id - 1}`);
  assert.deepEqual(JSON.parse(r.text).messages[0].data, { nick: 'typist', text });
});

test('every request of the page was https:// or wss://, and no errors in the page', { timeout: TEST_MS }, async () => {
  const plain = pageUrls.filter((u) => !/^(https|wss):\/\//.test(u) && !u.startsWith('about:') && !u.startsWith('data:'));
  assert.deepEqual(plain, []);
  assert.deepEqual(pageErrors, []);
});
