// The official Centrifugo JavaScript SDK in protobuf mode (npm `centrifuge` 5.x,
// `import { Centrifuge } from 'centrifuge/build/protobuf'`), unchanged, against herald's
// /connection/websocket. The SDK offers the `centrifuge-protobuf` WebSocket subprotocol
// and sends varint-delimited protobuf commands in binary frames; publication data is
// bytes (herald sends the JSON text it stores, as Centrifugo passes JSON through).
// Expectations are Centrifugo v6's behaviour, not herald's.
//
// Builds nothing: HERALD_BIN names the binary (default ../../target/release/herald).
// Run: tests/centrifugo/run.sh   (or `node --test protobuf.test.mjs` here after `npm ci`)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Centrifuge as CentrifugeJson } from 'centrifuge';
import { Centrifuge } from 'centrifuge/build/protobuf';
import WebSocket from 'ws';

const here = dirname(fileURLToPath(import.meta.url));
const HERALD_BIN = process.env.HERALD_BIN || resolve(here, '../../target/release/herald');
const STEP_MS = 5_000;
const TEST_MS = 25_000;
const SECRET = randomBytes(24).toString('hex');
const API_KEY = randomBytes(16).toString('hex');

const CONFIG = {
  client: {
    token: { hmac_secret_key: SECRET },
    // Short pings: the pong path (an empty Command) is exercised within a test.
    ping_interval: '2s',
    pong_timeout: '1s',
  },
  http_api: { key: API_KEY },
  channel: {
    without_namespace: { allow_subscribe_for_client: true },
    namespaces: [
      {
        name: 'chat',
        history_size: 100,
        history_ttl: '300s',
        force_recovery: true,
        presence: true,
        join_leave: true,
        force_push_join_leave: true,
        allow_subscribe_for_client: true,
        allow_publish_for_subscriber: true,
        allow_history_for_subscriber: true,
        allow_presence_for_subscriber: true,
      },
      { name: 'closed', allow_subscribe_for_client: false },
    ],
  },
};

const b64url = (s) => Buffer.from(s).toString('base64url');
function jwt(claims) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}
const connToken = (user, extra = {}) => jwt({ sub: user, exp: Math.floor(Date.now() / 1000) + 3600, ...extra });
const enc = (v) => new TextEncoder().encode(JSON.stringify(v));
const dec = (b) => JSON.parse(new TextDecoder().decode(b));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let child = null;
let out = '';
let BASE = '';
let WS_URL = '';
let tmpDir = '';

before(async () => {
  if (!existsSync(HERALD_BIN)) throw new Error(`herald binary not found at ${HERALD_BIN}`);
  tmpDir = mkdtempSync(join(os.tmpdir(), 'herald-cf-pb-'));
  const cfg = join(tmpDir, 'config.json');
  writeFileSync(cfg, JSON.stringify(CONFIG));
  child = spawn(HERALD_BIN, ['--config', cfg, '--bind', '127.0.0.1', '--port', '0', '--workers', '2'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const addr = await new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`herald did not start:\n${out}`)), 10_000);
    const onData = (c) => {
      out = (out + c).slice(-100_000);
      const m = /listening on (127\.0\.0\.1:\d+)/.exec(out);
      if (m) { clearTimeout(timer); res(m[1]); }
    };
    child.stdout.setEncoding('utf8').on('data', onData);
    child.stderr.setEncoding('utf8').on('data', onData);
    child.on('exit', (code) => { clearTimeout(timer); rej(new Error(`herald exited ${code}:\n${out}`)); });
  });
  BASE = `http://${addr}`;
  WS_URL = `ws://${addr}/connection/websocket`;
});

after(async () => {
  if (child && child.exitCode === null) {
    const exited = new Promise((r) => child.once('exit', r));
    process.kill(child.pid, 'SIGTERM');
    await exited;
  }
  if (tmpDir) rmSync(tmpDir, { recursive: true, force: true });
});

// Per test: clients, a log of frames (both ways), and cleanup.
class Env {
  constructor() {
    this.log = [];
    this.clients = [];
    this.subprotocols = [];
    const env = this;
    this.WS = class extends WebSocket {
      constructor(url, protocols) {
        super(url, protocols);
        this.on('upgrade', (r) => env.subprotocols.push(r.headers['sec-websocket-protocol'] ?? ''));
        this.on('message', (d, bin) => env.log.push(`S>C ${bin ? `<binary ${d.length}: ${Buffer.from(d).toString('hex').slice(0, 120)}>` : d}`));
        this.on('close', (code) => env.log.push(`closed ${code}`));
      }
      send(d, ...rest) {
        env.log.push(`C>S ${typeof d === 'string' ? d : `<binary ${d.length}>`}`);
        return super.send(d, ...rest);
      }
    };
  }
  client(opts = {}, Ctor = Centrifuge) {
    const c = new Ctor(WS_URL, { websocket: this.WS, minReconnectDelay: 50, maxReconnectDelay: 300, timeout: 4_000, ...opts });
    this.clients.push(c);
    return c;
  }
  async api(method, body) {
    const r = await fetch(`${BASE}/api/${method}`, {
      method: 'POST', headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json' }, body: JSON.stringify(body),
    });
    const j = await r.json();
    assert.equal(j.error, undefined, JSON.stringify(j));
    return j.result;
  }
  close() { for (const c of this.clients) c.disconnect(); }
}

function pbTest(name, fn) {
  test(name, { timeout: TEST_MS }, async () => {
    const env = new Env();
    try {
      await fn(env);
    } catch (err) {
      throw new Error(`${err.message}\n--- frames ---\n${env.log.join('\n')}\n--- herald ---\n${out.slice(-2000)}`, { cause: err });
    } finally {
      env.close();
    }
  });
}

function once(emitter, event, { timeout = STEP_MS, filter = () => true } = {}) {
  return new Promise((res, rej) => {
    const h = (ctx) => { if (filter(ctx)) { clearTimeout(t); emitter.removeListener(event, h); res(ctx); } };
    const t = setTimeout(() => { emitter.removeListener(event, h); rej(new Error(`timed out waiting for '${event}'`)); }, timeout);
    emitter.on(event, h);
  });
}

async function connected(env, user, opts = {}) {
  const c = env.client({ token: connToken(user), ...opts });
  const p = once(c, 'connected');
  c.connect();
  const ctx = await p;
  return { c, ctx };
}

async function subscribed(c, channel, opts) {
  const s = c.newSubscription(channel, opts);
  const p = once(s, 'subscribed');
  s.subscribe();
  return { s, ctx: await p };
}

pbTest('protobuf: connect over the centrifuge-protobuf subprotocol', async (env) => {
  const { ctx } = await connected(env, 'alice');
  assert.equal(ctx.transport, 'websocket');
  assert.match(ctx.client, /^[0-9a-f-]{36}$/);
  assert.deepEqual(env.subprotocols, ['centrifuge-protobuf']);
  assert.ok(env.log.some((l) => l.startsWith('S>C <binary')), 'binary frames');
});

pbTest('protobuf: publish from the client and from the API reach a subscriber as JSON bytes', async (env) => {
  const { c } = await connected(env, 'alice');
  const { s } = await subscribed(c, 'chat:pb1');
  const p1 = once(s, 'publication');
  await s.publish(enc({ text: 'hello' }));
  const pub1 = await p1;
  assert.ok(pub1.data instanceof Uint8Array);
  assert.deepEqual(dec(pub1.data), { text: 'hello' });
  assert.equal(pub1.info.user, 'alice');
  assert.ok(pub1.offset > 0);
  const p2 = once(s, 'publication');
  await env.api('publish', { channel: 'chat:pb1', data: { n: 2 }, tags: { k: 'v' } });
  const pub2 = await p2;
  assert.deepEqual(dec(pub2.data), { n: 2 });
  assert.deepEqual(pub2.tags, { k: 'v' });
  assert.equal(pub2.offset, pub1.offset + 1);
});

pbTest('protobuf: history, presence and presence stats', async (env) => {
  const { c } = await connected(env, 'alice');
  const { s } = await subscribed(c, 'chat:pb2');
  for (let i = 1; i <= 3; i++) await env.api('publish', { channel: 'chat:pb2', data: { i } });
  const h = await s.history({ limit: -1 });
  assert.deepEqual(h.publications.map((p) => dec(p.data)), [{ i: 1 }, { i: 2 }, { i: 3 }]);
  assert.equal(h.offset, 3);
  assert.ok(h.epoch);
  const rev = await s.history({ limit: 2, reverse: true });
  assert.deepEqual(rev.publications.map((p) => dec(p.data)), [{ i: 3 }, { i: 2 }]);
  const pres = await s.presence();
  assert.deepEqual(Object.values(pres.clients).map((i) => i.user), ['alice']);
  const st = await s.presenceStats();
  assert.deepEqual([st.numClients, st.numUsers], [1, 1]);
});

pbTest('protobuf: recovery after a reconnect', async (env) => {
  const { c } = await connected(env, 'alice');
  const { s, ctx } = await subscribed(c, 'chat:pb3');
  assert.equal(ctx.recoverable, true);
  const first = once(s, 'publication');
  await env.api('publish', { channel: 'chat:pb3', data: { n: 1 } });
  await first;
  const down = once(c, 'disconnected');
  c.disconnect();
  await down;
  await env.api('publish', { channel: 'chat:pb3', data: { n: 2 } });
  await env.api('publish', { channel: 'chat:pb3', data: { n: 3 } });
  const pubs = [];
  s.on('publication', (p) => pubs.push(dec(p.data)));
  const re = once(s, 'subscribed');
  c.connect();
  const r = await re;
  assert.equal(r.wasRecovering, true);
  assert.equal(r.recovered, true);
  await sleep(100);
  assert.deepEqual(pubs, [{ n: 2 }, { n: 3 }]);
});

pbTest('protobuf: errors, join/leave and a JSON client on the same channel', async (env) => {
  const { c } = await connected(env, 'alice');
  const bad = c.newSubscription('closed:x');
  const gone = once(bad, 'unsubscribed');
  bad.subscribe();
  assert.equal((await gone).code, 103);
  const { s } = await subscribed(c, 'chat:pb4', { joinLeave: true });
  const joined = once(s, 'join', { filter: (j) => j.info.user === 'bob' });
  const bob = env.client({ token: connToken('bob') }, CentrifugeJson);
  bob.connect();
  const bs = bob.newSubscription('chat:pb4');
  const bsub = once(bs, 'subscribed');
  bs.subscribe();
  await bsub;
  await joined;
  const both = [once(s, 'publication'), once(bs, 'publication')];
  await env.api('publish', { channel: 'chat:pb4', data: { x: 1 } });
  const [pb, js] = await Promise.all(both);
  assert.deepEqual(dec(pb.data), { x: 1 });
  assert.deepEqual(js.data, { x: 1 });
  const left = once(s, 'leave', { filter: (l) => l.info.user === 'bob' });
  bs.unsubscribe();
  await left;
});

pbTest('protobuf: pongs keep the connection; server-side subscriptions and API unsubscribe', async (env) => {
  const c = env.client({ token: connToken('carol', { channels: ['news'] }) });
  const sp = once(c, 'subscribed', { filter: (x) => x.channel === 'news' });
  c.connect();
  await sp;
  let disconnects = 0;
  c.on('disconnected', () => disconnects++);
  c.on('connecting', () => disconnects++);
  await sleep(4_500); // two 2 s pings, each answered with an empty Command
  assert.equal(disconnects, 0);
  const got = once(c, 'publication', { filter: (x) => x.channel === 'news' });
  await env.api('publish', { channel: 'news', data: { s: 1 } });
  assert.deepEqual(dec((await got).data), { s: 1 });
  const gone = once(c, 'unsubscribed', { filter: (x) => x.channel === 'news' });
  await env.api('unsubscribe', { user: 'carol', channel: 'news' });
  await gone;
});

pbTest('protobuf: a 1 MB history reply (paced by herald) arrives whole', async (env) => {
  const { c } = await connected(env, 'alice');
  const { s } = await subscribed(c, 'chat:pbbig');
  const pad = 'x'.repeat(10_000);
  for (let i = 1; i <= 100; i++) await env.api('publish', { channel: 'chat:pbbig', data: { i, pad } });
  const h = await s.history({ limit: -1 });
  assert.equal(h.publications.length, 100);
  assert.deepEqual(h.publications.map((p) => dec(p.data).i), Array.from({ length: 100 }, (_, i) => i + 1));
  assert.equal(h.offset, 100);
  // The connection goes on: a ping answered, a publication after the big reply.
  const next = once(s, 'publication');
  await env.api('publish', { channel: 'chat:pbbig', data: { after: true } });
  assert.deepEqual(dec((await next).data), { after: true });
});
