// The browser across a cluster (issue #12): a private redis-server and three herald nodes
// A, B, C over it (the Redis engine), on free loopback ports. In headless Chromium the demo
// page is served by node B and receives, over each of its five transports (poll, longpoll,
// iframe, sse, ws), the messages this test publishes through node A's POST /publish/: in
// order, once each, with the ids A answered; every request of that page goes to B. Then
// the official centrifuge-js SDK, loaded in a page of node C, receives over WebSocket and
// over the http_stream and sse emulation what is published through A's /api/publish and
// /publish/, with the offsets A answered.
//
// Builds nothing: HERALD_BIN names the binary (default ../../target/release/herald).
// Run: tests/browser/run.sh   (or `node --test cluster.test.mjs` in this folder once `npm ci` has run)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startCluster } from '../common/cluster.mjs';
import { TRANSPORTS, demoPage, launchChromium } from './demo_page.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const HERALD_BIN = process.env.HERALD_BIN || resolve(here, '../../target/release/herald');
const SDK = resolve(here, '../centrifugo/node_modules/centrifuge/dist/centrifuge.js');
const CHANNEL = 'chat'; // the page's default
const STEP_MS = 10_000; // bound on any single wait
const TEST_MS = 30_000; // bound on one test
const API_KEY = 'cluster-browser-api-key';
const CONFIG = {
  http_api: { key: API_KEY },
  client: { allow_anonymous_connect_without_token: true },
  channel: {
    without_namespace: {
      allow_subscribe_for_client: true, allow_subscribe_for_anonymous: true,
      history_size: 100, history_ttl: '300s',
    },
  },
};

let cluster = null;
let browser = null;
let page = null; // the demo page, served by B
const pageErrors = [];
const pageUrls = []; // every request and WebSocket of the demo page
const { waitConnected, waitForIds, shown, assertOnceEachInOrder } = demoPage(() => page, STEP_MS);

/** POST /publish/?cid=channel on `node`: the id it answered. */
async function publish(node, body, channel = CHANNEL) {
  const r = await fetch(`${node.base}/publish/?cid=${encodeURIComponent(channel)}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5_000),
  });
  const text = await r.text();
  assert.equal(r.status, 200, `publish on ${node.name} answered ${r.status}: ${text}`);
  const j = JSON.parse(text);
  assert.equal(j.channel, channel);
  return j.id;
}

/** POST /api/publish on `node` with the API key: the publish result ({offset, epoch}). */
async function apiPublish(node, channel, data) {
  const r = await fetch(`${node.base}/api/publish`, {
    method: 'POST',
    headers: { 'X-API-Key': API_KEY },
    body: JSON.stringify({ channel, data }),
    signal: AbortSignal.timeout(5_000),
  });
  const text = await r.text();
  assert.equal(r.status, 200, `/api/publish on ${node.name} answered ${r.status}: ${text}`);
  const j = JSON.parse(text);
  assert.equal(j.error, undefined, text);
  return j.result;
}

function withLogs(fn) {
  return async () => {
    try {
      await fn();
    } catch (err) {
      throw new Error(`${err.message}\n${cluster ? cluster.logs() : ''}`, { cause: err });
    }
  };
}

before(async () => {
  assert.ok(existsSync(SDK), `centrifuge-js not found at ${SDK} (npm ci in tests/centrifugo)`);
  cluster = await startCluster(HERALD_BIN, CONFIG, { n: 3, prefix: `br${process.pid}` });
  browser = await launchChromium();
  page = await browser.newPage();
  page.setDefaultTimeout(STEP_MS);
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(`console: ${m.text()}`); });
  page.on('request', (r) => pageUrls.push(r.url()));
  page.on('websocket', (ws) => pageUrls.push(ws.url()));
  const resp = await page.goto(`${cluster.B.base}/`, { waitUntil: 'domcontentloaded' });
  assert.equal(resp.status(), 200);
  await page.waitForFunction(() => !!window.heraldDemo);
}, { timeout: 60_000 });

after(async () => {
  try { if (browser) await browser.close(); } finally { if (cluster) await cluster.stop(); }
});

for (const name of TRANSPORTS) {
  test(`the demo page served by B gets via ${name} what A publishes`, { timeout: TEST_MS }, withLogs(async () => {
    const { A } = cluster;
    await page.selectOption('#transport', name);
    await waitConnected(name);
    const before = (await shown()).length;
    const payloads = [
      { nick: `a-${name}`, text: `published on A, shown on B via ${name}` },
      { nick: `a-${name}`, text: '</script><script>window.pwned=1</script><!-- & <b>bold</b>' },
      { nick: `ä-${name} ✓`, text: 'héllo wörld — 你好 🎉 \u2028 "quotes" \\ backslash' },
    ];
    const ids = [];
    for (const p of payloads) ids.push(await publish(A, p));
    assert.deepEqual(ids, Array.from({ length: ids.length }, (_, i) => ids[0] + i), `A answered consecutive ids: ${ids}`);
    await waitForIds(ids);
    const msgs = await shown();
    assert.equal(msgs.length, before + payloads.length, 'exactly the new messages were added');
    const tail = msgs.slice(-payloads.length);
    assert.deepEqual(tail.map((m) => m.id), ids, 'shown in publish order, with the ids A answered');
    for (let i = 0; i < payloads.length; i++) {
      assert.equal(tail[i].transport, name, `message ${ids[i]} delivered by ${tail[i].transport}, not ${name}`);
      assert.deepEqual({ nick: tail[i].nick, text: tail[i].text }, payloads[i]);
    }
    assert.equal(await page.evaluate(() => window.pwned), undefined, 'message data ran as script');
    await assertOnceEachInOrder();
  }));
}

test('switching transports on B while A publishes loses and repeats nothing (resume from the shared history)', { timeout: TEST_MS }, withLogs(async () => {
  const { A } = cluster;
  const ids = [];
  for (const name of ['ws', 'sse', 'longpoll', 'iframe', 'poll', 'ws']) {
    await page.evaluate((n) => window.heraldDemo.setTransport(n), name);
    // Published through A before the new transport on B is live: B reads it from Redis.
    ids.push(await publish(A, { nick: 'switcher', text: `during switch to ${name}` }));
    await waitConnected(name);
    ids.push(await publish(A, { nick: 'switcher', text: `after switch to ${name}` }));
  }
  await waitForIds(ids);
  await assertOnceEachInOrder();
}));

test('every request of the demo page went to node B, and no errors in the page', { timeout: TEST_MS }, async () => {
  const { B } = cluster;
  assert.ok(pageUrls.length > 5, `requests seen: ${pageUrls}`);
  const elsewhere = pageUrls.filter((u) => !u.startsWith(`${B.base}/`) && !u.startsWith(`${B.ws}/`) && u !== 'about:blank');
  assert.deepEqual(elsewhere, [], 'requests to another origin than B');
  for (const t of ['/ws/', '/sse/', '/stream/', '/listen/', '/messages/']) {
    assert.ok(pageUrls.some((u) => u.includes(t)), `the page used ${t} on B`);
  }
  assert.deepEqual(pageErrors, []);
});

test('centrifuge-js in a page of node C (websocket, http_stream, sse) gets what A publishes', { timeout: TEST_MS }, withLogs(async () => {
  const { A, C } = cluster;
  const cpage = await browser.newPage();
  const errors = [];
  cpage.on('pageerror', (e) => errors.push(String(e)));
  try {
    await cpage.goto(`${C.base}/health`); // same origin as C
    await cpage.addScriptTag({ path: SDK });
    const channel = 'sdk-on-c';
    const transports = ['websocket', 'http_stream', 'sse'];
    const used = await cpage.evaluate(async ({ transports, channel, ws }) => {
      window.got = {};
      window.clients = [];
      const used = [];
      for (const transport of transports) {
        const endpoint = transport === 'websocket' ? `${ws}/connection/websocket`
          : transport === 'sse' ? '/connection/sse' : '/connection/http_stream';
        const c = new Centrifuge([{ transport, endpoint }], { emulationEndpoint: '/emulation' });
        window.clients.push(c);
        const got = [];
        window.got[transport] = got;
        const sub = c.newSubscription(channel);
        sub.on('publication', (ctx) => got.push({ offset: ctx.offset, data: ctx.data }));
        const subscribed = new Promise((res, rej) => {
          sub.on('subscribed', res);
          sub.on('error', (e) => rej(new Error(JSON.stringify(e))));
          setTimeout(() => rej(new Error(`no subscribe over ${transport}`)), 8_000);
        });
        c.connect();
        sub.subscribe();
        await subscribed;
        used.push(c._transport && c._transport.name());
      }
      return used;
    }, { transports, channel, ws: C.ws });
    assert.deepEqual(used, transports, 'each client used its transport');
    const offsets = [];
    for (let n = 1; n <= 6; n++) {
      offsets.push(n % 2 ? (await apiPublish(A, channel, { n })).offset : await publish(A, { n }, channel));
    }
    assert.deepEqual(offsets, [1, 2, 3, 4, 5, 6], 'A answered one sequence');
    await cpage.waitForFunction((ts) => ts.every((t) => window.got[t].length >= 6), transports, { timeout: STEP_MS });
    const got = await cpage.evaluate(() => window.got);
    for (const t of transports) {
      assert.deepEqual(got[t].map((p) => p.offset), offsets, `${t}: offsets as A answered`);
      assert.deepEqual(got[t].map((p) => p.data), offsets.map((n) => ({ n })), `${t}: payloads in order`);
    }
    await cpage.evaluate(() => window.clients.forEach((c) => c.disconnect()));
    assert.deepEqual(errors, [], 'no page errors');
  } finally {
    await cpage.close();
  }
}));
