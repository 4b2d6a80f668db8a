// The demo page at / in a real browser (Debian's headless Chromium), over each of the
// five transports: messages published from here must show up in order, once each,
// delivered by the selected transport, with no script injected from message data.
// Herald runs with permessage-deflate enabled (ws_compression): Chromium offers it, so the
// `/ws/` transport and a Centrifugo client on /connection/websocket run compressed; the
// tests check the negotiated extension (handshake response seen through the DevTools
// protocol, and /metrics) and the payloads, some above the compression threshold.
//
// Builds nothing: HERALD_BIN names the binary (default ../../target/release/herald).
// Run: tests/browser/run.sh   (or `node --test` in this folder once `npm ci` has run)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TRANSPORTS, demoPage, launchChromium } from './demo_page.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const HERALD_BIN = process.env.HERALD_BIN || resolve(here, '../../target/release/herald');
const CHANNEL = 'chat'; // the page's default
const STEP_MS = 10_000; // bound on any single wait in the page
const TEST_MS = 20_000; // bound on one test
// Compression on, a low threshold so that the long payloads below go compressed; Centrifugo
// anonymous clients may subscribe to channels without a namespace.
const CONFIG = {
  ws_compression: true,
  ws_compression_min_size: 128,
  client: { allow_anonymous_connect_without_token: true },
  channel: { without_namespace: { allow_subscribe_for_client: true, allow_subscribe_for_anonymous: true } },
};
const LONG_TEXT = 'compressible text, again and again: '.repeat(40); // ~1.5 KB, well over the threshold
/** `Sec-WebSocket-Extensions` of every WebSocket handshake response the page saw, by URL. */
const wsExtensions = [];

let herald = null; // child process
const wsUrls = new Map(); // DevTools requestId -> WebSocket URL
let heraldLog = '';
let base = '';
let browser = null;
let page = null;
const pageErrors = [];

function startHerald() {
  return new Promise((resolveStart, rejectStart) => {
    assert.ok(existsSync(HERALD_BIN), `herald binary not found at ${HERALD_BIN} (build it, or set HERALD_BIN)`);
    const cfgPath = resolve(mkdtempSync(resolve(tmpdir(), 'herald-browser-')), 'herald.json');
    writeFileSync(cfgPath, JSON.stringify(CONFIG));
    const child = spawn(HERALD_BIN, ['--bind', '127.0.0.1', '--port', '0', '--workers', '2', '--config', cfgPath], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    herald = child;
    const timer = setTimeout(() => rejectStart(new Error(`herald did not report its address:\n${heraldLog}`)), 10_000);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      // Keep draining so the pipe never fills; keep only the tail for diagnostics.
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

async function publish(body, channel = CHANNEL) {
  const r = await fetch(`${base}/publish/?cid=${encodeURIComponent(channel)}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(5_000),
  });
  const text = await r.text();
  assert.equal(r.status, 200, `publish answered ${r.status}: ${text}`);
  const j = JSON.parse(text);
  assert.equal(j.channel, channel);
  assert.equal(typeof j.id, 'number');
  return j.id;
}

/** herald_ws_compressed_connections_total from /metrics. */
async function compressedConnections() {
  const text = await (await fetch(`${base}/metrics`)).text();
  const m = /^herald_ws_compressed_connections_total (\d+)$/m.exec(text);
  assert.ok(m, 'the compressed-connections counter is in /metrics');
  return Number(m[1]);
}

const { waitConnected, waitForIds, shown, assertOnceEachInOrder } = demoPage(() => page, STEP_MS);

async function assertNoInjection() {
  const pwned = await page.evaluate(() => {
    const f = document.getElementById('stream-frame');
    let inFrame;
    try { inFrame = f && f.contentWindow ? f.contentWindow.pwned : undefined; } catch { inFrame = 'inaccessible'; }
    return { top: window.pwned, frame: inFrame ?? null };
  });
  assert.equal(pwned.top, undefined, 'window.pwned was set: message data ran as script');
  assert.equal(pwned.frame, null, 'pwned was set inside the stream iframe');
}

before(async () => {
  await startHerald();
  browser = await launchChromium();
  page = await browser.newPage();
  page.setDefaultTimeout(STEP_MS);
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(`console: ${m.text()}`); });
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  cdp.on('Network.webSocketCreated', (e) => { wsUrls.set(e.requestId, e.url); });
  cdp.on('Network.webSocketHandshakeResponseReceived', (e) => {
    const h = e.response.headers || {};
    const ext = Object.entries(h).find(([k]) => k.toLowerCase() === 'sec-websocket-extensions');
    wsExtensions.push({ url: wsUrls.get(e.requestId) || '', ext: ext ? ext[1] : null });
  });
  const resp = await page.goto(`${base}/`, { waitUntil: 'domcontentloaded' });
  assert.equal(resp.status(), 200);
  await page.waitForFunction(() => !!window.heraldDemo);
}, { timeout: 40_000 });

after(async () => {
  try { if (browser) await browser.close(); } finally { await stopHerald(); }
});

test('the page is a self-contained chat with the expected controls', { timeout: TEST_MS }, async () => {
  assert.equal(await page.inputValue('#channel'), CHANNEL);
  assert.ok((await page.inputValue('#nick')).length > 0, 'a nickname is filled in');
  const options = await page.$$eval('#transport option', (os) => os.map((o) => o.value));
  assert.deepEqual([...options].sort(), [...TRANSPORTS].sort());
  const external = await page.evaluate(() =>
    [...document.querySelectorAll('[src],[href]')]
      .map((e) => e.getAttribute('src') || e.getAttribute('href'))
      .filter((u) => /^(https?:)?\/\//i.test(u)));
  assert.deepEqual(external, [], 'no external resources');
});

for (const name of TRANSPORTS) {
  test(`messages arrive via ${name}`, { timeout: TEST_MS }, async () => {
    await page.selectOption('#transport', name); // the UI path: fires "change"
    await waitConnected(name);
    const before = (await shown()).length;
    const payloads = [
      { nick: `bot-${name}`, text: `plain hello over ${name}` },
      { nick: `bot-${name}`, text: '</script><script>window.pwned=1</script><!-- & <b>bold</b>' },
      { nick: `bøt-${name} ✓`, text: 'héllo wörld — 你好 🎉 \u2028 line-sep, \u00a0nbsp, "quotes" \\ backslash' },
      // Over ws_compression_min_size: goes compressed on a compressed connection.
      { nick: `bot-${name}`, text: `${LONG_TEXT} ünïcödé 🎉 over ${name}` },
    ];
    const ids = [];
    for (const p of payloads) ids.push(await publish(p));
    await waitForIds(ids);

    const msgs = await shown();
    assert.equal(msgs.length, before + payloads.length, 'exactly the new messages were added');
    const tail = msgs.slice(-payloads.length);
    assert.deepEqual(tail.map((m) => m.id), ids, 'shown in publish order, after everything earlier');
    for (let i = 0; i < payloads.length; i++) {
      assert.equal(tail[i].transport, name, `message ${ids[i]} delivered by ${tail[i].transport}, not ${name}`);
      assert.equal(tail[i].text, payloads[i].text);
      assert.equal(tail[i].nick, payloads[i].nick);
    }
    await assertNoInjection();
    assert.equal(await page.$$eval('body script', (s) => s.length), 1, 'no script element was added to the page');
    await assertOnceEachInOrder();
    if (name === 'ws') {
      // Chromium offered permessage-deflate and Herald accepted it on /ws/.
      const seen = wsExtensions.filter((w) => w.url.includes('/ws/'));
      assert.ok(seen.length > 0, `no /ws/ handshake seen: ${JSON.stringify(wsExtensions)}`);
      assert.match(seen[seen.length - 1].ext || '', /^permessage-deflate; server_no_context_takeover; client_no_context_takeover$/);
    }
  });
}

test('a Centrifugo client on /connection/websocket runs compressed', { timeout: TEST_MS }, async () => {
  const before = await compressedConnections();
  const channel = 'cfdeflate';
  // A minimal Centrifugo JSON-protocol client in the page: connect, subscribe, collect pubs.
  await page.evaluate(({ url, channel }) => new Promise((resolveOpen, rejectOpen) => {
    const ws = new WebSocket(url);
    window.cf = { ws, pubs: [], replies: [], ext: null };
    ws.onmessage = (ev) => {
      for (const line of String(ev.data).split('\n')) {
        if (!line.trim()) continue;
        const m = JSON.parse(line);
        if (m.push && m.push.pub) window.cf.pubs.push(m.push.pub.data);
        else if (m.id) window.cf.replies.push(m);
      }
    };
    ws.onerror = () => rejectOpen(new Error('centrifugo websocket failed'));
    ws.onopen = () => {
      window.cf.ext = ws.extensions;
      ws.send(JSON.stringify({ id: 1, connect: {} }) + '\n' + JSON.stringify({ id: 2, subscribe: { channel } }));
      resolveOpen();
    };
  }), { url: `${base.replace('http', 'ws')}/connection/websocket`, channel });
  await page.waitForFunction(() => window.cf.replies.length >= 2, null, { timeout: STEP_MS });
  const r = await page.evaluate(() => window.cf);
  assert.ok(r.replies.every((x) => !x.error), `errors: ${JSON.stringify(r.replies)}`);
  assert.match(r.ext, /^permessage-deflate/, `WebSocket.extensions is ${JSON.stringify(r.ext)}`);
  const payloads = [
    { nick: 'cf', text: 'short one' },
    { nick: 'cf', text: `${LONG_TEXT} — 你好 🎉` },
    { nick: 'cf', text: '</script><script>window.pwned=1</script>' },
  ];
  for (const p of payloads) await publish(p, channel);
  await page.waitForFunction((n) => window.cf.pubs.length >= n, payloads.length, { timeout: STEP_MS });
  assert.deepEqual(await page.evaluate(() => window.cf.pubs), payloads);
  await page.evaluate(() => window.cf.ws.close());
  assert.ok((await compressedConnections()) > before, '/metrics counts the compressed connection');
  await assertNoInjection();
});

test('switching transports while messages are published loses and repeats nothing', { timeout: TEST_MS }, async () => {
  const ids = [];
  const order = ['ws', 'poll', 'sse', 'longpoll', 'iframe', 'ws'];
  for (const name of order) {
    await page.evaluate((n) => window.heraldDemo.setTransport(n), name);
    // published before the new transport is live: it must come from history on resume
    ids.push(await publish({ nick: 'switcher', text: `during switch to ${name}` }));
    await waitConnected(name);
    ids.push(await publish({ nick: 'switcher', text: `after switch to ${name}` }));
  }
  await waitForIds(ids);
  await assertOnceEachInOrder();
  await assertNoInjection();
});

test('the send box publishes and the message comes back', { timeout: TEST_MS }, async () => {
  await page.selectOption('#transport', 'sse');
  await waitConnected('sse');
  await page.fill('#nick', 'typist');
  const text = `typed at ${Date.now()} — ünïcödé <i>not html</i>`;
  await page.fill('#text', text);
  await page.click('#send-button');
  await page.waitForFunction(
    (t) => [...document.querySelectorAll('.msg .text')].some((e) => e.textContent === t),
    text,
    { timeout: STEP_MS },
  );
  const msgs = await shown();
  const m = msgs[msgs.length - 1];
  assert.equal(m.text, text);
  assert.equal(m.nick, 'typist');
  assert.equal(m.transport, 'sse');
  assert.equal(await page.inputValue('#text'), '', 'the send box is cleared after sending');
  // And the server has it as the JSON the page promised to send.
  const r = await fetch(`${base}/messages/?cid=${CHANNEL}&since=${m.id - 1}`);
  const body = await r.json();
  assert.deepEqual(body.messages[0].data, { nick: 'typist', text });
  await assertOnceEachInOrder();
});

test('no errors in the page', { timeout: TEST_MS }, async () => {
  assert.deepEqual(pageErrors, []);
});
