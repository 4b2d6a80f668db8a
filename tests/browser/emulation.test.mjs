// Centrifugo's bidirectional emulation in a real browser (Debian's headless Chromium): the
// official centrifuge-js SDK (npm `centrifuge`, installed for tests/centrifugo) on its
// `http_stream` and `sse` transports, commands posted to /emulation, against herald. Each
// transport connects, subscribes, receives publications from the server API in order,
// publishes from the client and reads history: every command goes over /emulation, every
// reply and push down the stream.
//
// Builds nothing: HERALD_BIN names the binary (default ../../target/release/herald).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const HERALD_BIN = process.env.HERALD_BIN || resolve(here, '../../target/release/herald');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const SDK = resolve(here, '../centrifugo/node_modules/centrifuge/dist/centrifuge.js');

let herald = null;
let heraldLog = '';
let base = '';
let browser = null;

function startHerald() {
  const cfg = resolve(tmpdir(), `herald-emulation-${process.pid}.json`);
  writeFileSync(cfg, JSON.stringify({
    http_api: { insecure: true },
    client: { allow_anonymous_connect_without_token: true },
    channel: { without_namespace: {
      allow_subscribe_for_client: true, allow_subscribe_for_anonymous: true,
      allow_publish_for_client: true, allow_publish_for_anonymous: true,
      allow_history_for_client: true, allow_history_for_anonymous: true,
      history_size: 10, history_ttl: '60s',
    } },
  }));
  return new Promise((resolveStart, rejectStart) => {
    assert.ok(existsSync(HERALD_BIN), `herald binary not found at ${HERALD_BIN}`);
    const child = spawn(HERALD_BIN, ['--bind', '127.0.0.1', '--port', '0', '--workers', '2', '--config', cfg], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    herald = child;
    const timer = setTimeout(() => rejectStart(new Error(`herald did not start:\n${heraldLog}`)), 10_000);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      heraldLog = (heraldLog + chunk).slice(-20_000);
      const m = /listening on (127\.0\.0\.1:\d+)/.exec(heraldLog);
      if (m && !base) { base = `http://${m[1]}`; clearTimeout(timer); resolveStart(); }
    });
    child.on('exit', (code, sig) => { if (!base) { clearTimeout(timer); rejectStart(new Error(`herald exited ${code ?? sig}`)); } });
  });
}

async function apiPublish(channel, data) {
  const r = await fetch(`${base}/api/publish`, {
    method: 'POST', body: JSON.stringify({ channel, data }), signal: AbortSignal.timeout(5_000),
  });
  assert.equal(r.status, 200, await r.text());
}

before(async () => {
  assert.ok(existsSync(SDK), `centrifuge-js not found at ${SDK} (npm ci in tests/centrifugo)`);
  await startHerald();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
});

after(async () => {
  if (browser) await browser.close();
  if (herald && herald.exitCode === null) {
    const exited = new Promise((r) => herald.once('exit', r));
    herald.kill('SIGTERM');
    await exited;
  }
});

for (const transport of ['http_stream', 'sse']) {
  test(`centrifuge-js over ${transport} emulation in Chromium`, { timeout: 30_000 }, async () => {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`${base}/health`); // same origin as herald, any page will do
    await page.addScriptTag({ path: SDK });
    const channel = `emu-${transport}`;
    // Connect and subscribe in the page; it collects what arrives.
    await page.evaluate(async ({ transport, channel }) => {
      const endpoint = transport === 'sse' ? '/connection/sse' : '/connection/http_stream';
      const c = new Centrifuge([{ transport, endpoint }], { emulationEndpoint: '/emulation' });
      window.got = [];
      window.centrifuge = c;
      const sub = c.newSubscription(channel);
      sub.on('publication', (ctx) => window.got.push(ctx.data));
      window.sub = sub;
      const subscribed = new Promise((res, rej) => { sub.on('subscribed', res); sub.on('error', rej); setTimeout(() => rej(new Error('no subscribe')), 10_000); });
      c.connect();
      sub.subscribe();
      await subscribed;
      window.transportUsed = c._transport && c._transport.name();
    }, { transport, channel });
    assert.equal(await page.evaluate(() => window.transportUsed), transport, 'the emulation transport was used');
    for (let i = 1; i <= 5; i++) await apiPublish(channel, { n: i });
    await page.waitForFunction(() => window.got.length >= 5, null, { timeout: 10_000 });
    assert.deepEqual(await page.evaluate(() => window.got.map((d) => d.n)), [1, 2, 3, 4, 5]);
    // A client publish and a history call: commands over /emulation, replies down the stream.
    const hist = await page.evaluate(async () => {
      await window.sub.publish({ n: 6 });
      const h = await window.sub.history({ limit: 10 });
      return h.publications.map((p) => p.data.n);
    });
    assert.deepEqual(hist, [1, 2, 3, 4, 5, 6]);
    await page.waitForFunction(() => window.got.length >= 6, null, { timeout: 10_000 });
    await page.evaluate(() => window.centrifuge.disconnect());
    assert.deepEqual(errors, [], 'no page errors');
    await page.close();
  });
}
