// The official Centrifugo JavaScript SDK (npm `centrifuge` 5.x), unchanged, against herald's
// Centrifugo v6 compatible endpoints: the bidirectional JSON protocol at
// /connection/websocket and the server HTTP API at /api/<method>. Every expectation is
// Centrifugo v6's documented behaviour (centrifugal.dev docs, the Centrifugo and centrifuge
// sources), not herald's.
//
// Builds nothing: HERALD_BIN names the binary (default ../../target/release/herald).
// Run: tests/centrifugo/run.sh   (or `node --test` in this folder once `npm ci` has run)
//
// On a failure the error carries the protocol exchange of that test: every WebSocket frame
// the SDK sent (C>S) and received (S>C), close codes, and the HTTP API calls made, so the
// server side can be compared with Centrifugo's replies frame by frame.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Centrifuge } from 'centrifuge';
import http from 'node:http';
import WebSocket from 'ws';

const here = dirname(fileURLToPath(import.meta.url));
const HERALD_BIN = process.env.HERALD_BIN || resolve(here, '../../target/release/herald');
const PYTHON = process.env.PYTHON || 'python3';
const STEP_MS = 5_000; // bound on any single wait
const TEST_MS = 25_000; // bound on one test

const SECRET = randomBytes(24).toString('hex');
const API_KEY = randomBytes(16).toString('hex');

// Centrifugo v6 configuration shape (nested objects), plus herald's flags on the command line.
const CONFIG = {
  client: {
    token: { hmac_secret_key: SECRET },
    allow_anonymous_connect_without_token: true,
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
        allow_subscribe_for_client: true,
        allow_publish_for_subscriber: true,
        allow_history_for_subscriber: true,
        allow_presence_for_subscriber: true,
      },
      // Subscribable, but no client publish permission of any kind.
      { name: 'ro', allow_subscribe_for_client: true },
      // Subscribable only with a subscription token.
      { name: 'closed', allow_subscribe_for_client: false },
      // Subscribable by anonymous connections too.
      { name: 'anon', allow_subscribe_for_client: true, allow_subscribe_for_anonymous: true },
    ],
  },
};

let herald = null;
let BASE = ''; // http://127.0.0.1:PORT
let WS_URL = ''; // ws://127.0.0.1:PORT/connection/websocket
let tmpDir = '';
let configPath = '';
let genToken = null; // {token} or {error}

// ---------------------------------------------------------------------------------------
// JWT (HS256) by hand.

const b64url = (s) => Buffer.from(s).toString('base64url');
function jwt(claims, secret = SECRET) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}
const nowS = () => Math.floor(Date.now() / 1000);
const connToken = (user, ttl = 3600) => jwt({ sub: user, exp: nowS() + ttl });
const subToken = (user, channel, ttl = 3600) => jwt({ sub: user, channel, exp: nowS() + ttl });

// ---------------------------------------------------------------------------------------
// herald process.

// Starts a herald with the given config file; resolves with {child, addr, log()}.
function launchHerald(cfgPath) {
  return new Promise((resolveStart, rejectStart) => {
    if (!existsSync(HERALD_BIN)) {
      rejectStart(new Error(`herald binary not found at ${HERALD_BIN} (build it, or set HERALD_BIN)`));
      return;
    }
    const child = spawn(
      HERALD_BIN,
      ['--config', cfgPath, '--bind', '127.0.0.1', '--port', '0', '--workers', '2'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const inst = { child, addr: '', text: '', log() { return this.text; } };
    const timer = setTimeout(
      () => rejectStart(new Error(`herald did not report "listening on 127.0.0.1:PORT" within 10 s:\n${inst.text}`)),
      10_000,
    );
    const onData = (chunk) => {
      inst.text = (inst.text + chunk).slice(-200_000);
      const m = /listening on (127\.0\.0\.1:\d+)/.exec(inst.text);
      if (m && !inst.addr) {
        inst.addr = m[1];
        clearTimeout(timer);
        resolveStart(inst);
      }
    };
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', (e) => { clearTimeout(timer); rejectStart(e); });
    child.on('exit', (code, sig) => {
      if (!inst.addr) { clearTimeout(timer); rejectStart(new Error(`herald exited (${code ?? sig}) before listening:\n${inst.text}`)); }
    });
  });
}

// Stops one herald by its PID: SIGTERM, then SIGKILL after 5 s.
async function killHerald(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  process.kill(child.pid, 'SIGTERM');
  const timer = setTimeout(() => { try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ } }, 5_000);
  await exited;
  clearTimeout(timer);
}

let mainInstance = null;
async function startHerald() {
  mainInstance = await launchHerald(configPath);
  herald = mainInstance.child;
  BASE = `http://${mainInstance.addr}`;
  WS_URL = `ws://${mainInstance.addr}/connection/websocket`;
}

async function stopHerald() {
  await killHerald(herald);
}

function run(bin, args, { timeout = 20_000 } = {}) {
  return new Promise((res) => {
    execFile(bin, args, { timeout, cwd: here }, (error, stdout, stderr) => {
      res({ code: error ? (typeof error.code === 'number' ? error.code : -1) : 0, stdout, stderr, error });
    });
  });
}
const JWT_RE = /[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}/;

before(async () => {
  tmpDir = mkdtempSync(join(os.tmpdir(), 'herald-centrifugo-'));
  configPath = join(tmpDir, 'config.json');
  writeFileSync(configPath, JSON.stringify(CONFIG, null, 2));
  await startHerald();
  const r = await run(HERALD_BIN, ['gentoken', '-u', 'gen-user', '--ttl', '600', '-c', configPath]);
  const m = JWT_RE.exec(r.stdout);
  genToken = r.code === 0 && m ? { token: m[0] } : { error: `herald gentoken exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}` };
});

after(async () => {
  await stopHerald();
  if (tmpDir) rmSync(tmpDir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------
// Per-test environment: clients, recorded frames, cleanup, diagnostics.

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class Env {
  constructor(name) {
    this.name = name;
    this.t0 = Date.now();
    this.log = [];
    this.received = []; // parsed server frames (each JSON line)
    this.sockets = 0;
    this.clients = [];
    this.cleanups = [];
    const env = this;
    // A WebSocket class for the SDK that records every frame both ways.
    this.WS = class RecordingWebSocket extends WebSocket {
      constructor(url, protocols) {
        super(url, protocols);
        const id = ++env.sockets;
        this._sid = id;
        env.note(`ws#${id} dial ${url}${protocols ? ` subprotocol=${protocols}` : ''}`);
        this.on('upgrade', (res) => env.note(`ws#${id} HTTP ${res.statusCode} (Sec-WebSocket-Protocol: ${res.headers['sec-websocket-protocol'] ?? '-'})`));
        this.on('message', (data, isBinary) => {
          const text = isBinary ? `<binary ${data.length} bytes>` : data.toString('utf8');
          env.note(`ws#${id} S>C ${text}`);
          if (!isBinary) {
            for (const line of text.split('\n')) {
              if (!line.trim()) continue;
              try { env.received.push(JSON.parse(line)); } catch { /* recorded as text */ }
            }
          }
        });
        this.on('close', (code, reason) => env.note(`ws#${id} closed code=${code} reason=${JSON.stringify(reason.toString())}`));
        this.on('error', (e) => env.note(`ws#${id} error ${e.message}`));
      }
      send(data, ...rest) {
        env.note(`ws#${this._sid} C>S ${typeof data === 'string' ? data : `<binary ${data.length} bytes>`}`);
        return super.send(data, ...rest);
      }
    };
  }

  note(s) { this.log.push(`[+${String(Date.now() - this.t0).padStart(5)}ms] ${s}`); }

  client(opts = {}, url = WS_URL) {
    const c = new Centrifuge(url, {
      websocket: this.WS,
      minReconnectDelay: 50,
      maxReconnectDelay: 300,
      timeout: 4_000,
      ...opts,
    });
    const n = this.clients.length + 1;
    this.clients.push(c);
    c.on('state', (ctx) => this.note(`client#${n} state ${ctx.oldState} -> ${ctx.newState}`));
    c.on('connecting', (ctx) => this.note(`client#${n} connecting code=${ctx.code} reason=${ctx.reason}`));
    c.on('disconnected', (ctx) => this.note(`client#${n} disconnected code=${ctx.code} reason=${ctx.reason}`));
    c.on('error', (ctx) => this.note(`client#${n} error ${JSON.stringify(ctx)}`));
    return c;
  }

  sub(client, channel, opts) {
    const s = client.newSubscription(channel, opts);
    s.on('error', (ctx) => this.note(`sub ${channel} error ${JSON.stringify(ctx)}`));
    s.on('unsubscribed', (ctx) => this.note(`sub ${channel} unsubscribed code=${ctx.code} reason=${ctx.reason}`));
    return s;
  }

  async api(method, body = {}, { key = API_KEY, query = '' } = {}) {
    const headers = { 'Content-Type': 'application/json' };
    if (key !== null) headers['X-API-Key'] = key;
    const path = `/api/${method}${query}`;
    const r = await fetch(`${BASE}${path}`, {
      method: 'POST', headers, body: JSON.stringify(body), signal: AbortSignal.timeout(STEP_MS),
    });
    const text = await r.text();
    this.note(`HTTP POST ${path}${key === null ? ' (no X-API-Key)' : key === API_KEY ? '' : ' (wrong X-API-Key)'} ${JSON.stringify(body)} -> ${r.status} ${text.trim()}`);
    let json = null;
    try { json = JSON.parse(text); } catch { /* not JSON */ }
    return { status: r.status, text, json };
  }

  // A successful API call: 200 and {"result": ...} without "error".
  async apiOk(method, body = {}) {
    const r = await this.api(method, body);
    assert.equal(r.status, 200, `POST /api/${method} ${JSON.stringify(body)} answered ${r.status}: ${r.text}`);
    assert.ok(r.json && typeof r.json === 'object', `POST /api/${method}: body is not JSON: ${r.text}`);
    assert.equal(r.json.error, undefined, `POST /api/${method} ${JSON.stringify(body)} returned an error: ${r.text}`);
    assert.ok(r.json.result !== undefined && r.json.result !== null, `POST /api/${method}: no "result" in ${r.text}`);
    return r.json.result;
  }

  async simplePublish(channel, body) {
    const r = await fetch(`${BASE}/publish/?cid=${encodeURIComponent(channel)}`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(STEP_MS),
    });
    const text = await r.text();
    this.note(`HTTP POST /publish/?cid=${channel} ${JSON.stringify(body)} -> ${r.status} ${text.trim()}`);
    assert.equal(r.status, 200, `simple publish answered ${r.status}: ${text}`);
    return JSON.parse(text);
  }

  async cent(channel, data) {
    const args = [join(here, 'cent_publish.py'), `${BASE}/api`, API_KEY, channel, JSON.stringify(data)];
    const r = await run(PYTHON, args);
    this.note(`cent_publish.py ${channel} ${JSON.stringify(data)} -> exit ${r.code} stdout=${r.stdout.trim()} stderr=${r.stderr.trim().slice(-2000)}`);
    assert.equal(r.code, 0, `cent_publish.py failed (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
    return JSON.parse(r.stdout);
  }

  dump() {
    return `\n--- protocol exchange of "${this.name}" ---\n${this.log.join('\n')}\n--- herald log (tail) ---\n${(mainInstance ? mainInstance.text : '').slice(-3000)}`;
  }

  async close() {
    for (const c of this.clients) { try { c.disconnect(); } catch { /* ignore */ } }
    for (const f of this.cleanups.reverse()) { try { await f(); } catch { /* ignore */ } }
  }
}

function sdkTest(name, fn) {
  test(name, { timeout: TEST_MS }, async () => {
    const env = new Env(name);
    try {
      await fn(env);
      if (process.env.CF_TRACE) console.log(env.dump()); // CF_TRACE=1: the exchange of passing tests too
    } catch (err) {
      const e = new Error(`${err && err.message ? err.message : String(err)}${env.dump()}`);
      e.cause = err;
      throw e;
    } finally {
      await env.close();
    }
  });
}

// Resolves with the first event (passing filter) or rejects after timeout.
function once(emitter, event, { timeout = STEP_MS, filter = () => true, what = '' } = {}) {
  return new Promise((res, rej) => {
    const handler = (ctx) => {
      if (!filter(ctx)) return;
      clearTimeout(timer);
      emitter.removeListener(event, handler);
      res(ctx);
    };
    const timer = setTimeout(() => {
      emitter.removeListener(event, handler);
      rej(new Error(`timed out after ${timeout} ms waiting for '${event}'${what ? ` (${what})` : ''}`));
    }, timeout);
    emitter.on(event, handler);
  });
}

function collect(emitter, event) {
  const items = [];
  emitter.on(event, (ctx) => items.push(ctx));
  return items;
}

async function waitUntil(cond, what, timeout = STEP_MS) {
  const end = Date.now() + timeout;
  while (Date.now() < end) {
    if (await cond()) return;
    await sleep(10);
  }
  throw new Error(`timed out after ${timeout} ms waiting until ${what}`);
}

async function connected(env, c) {
  const p = once(c, 'connected', { what: 'connect reply' });
  c.connect();
  return p;
}

async function subscribed(sub) {
  const p = once(sub, 'subscribed', { what: `subscribe reply for ${sub.channel}` });
  sub.subscribe();
  return p;
}

async function rejectsWithCode(promise, code, what) {
  let got;
  try {
    await promise;
  } catch (e) {
    got = e;
  }
  assert.ok(got, `${what}: expected error ${code}, but the call succeeded`);
  assert.equal(got.code, code, `${what}: expected error code ${code}, got ${JSON.stringify(got)}`);
  return got;
}

// ---------------------------------------------------------------------------------------
// Tests.

sdkTest('connect with an HS256 token made here: connected event, client id', async (env) => {
  const c = env.client({ token: connToken('alice') });
  const ctx = await connected(env, c);
  assert.equal(typeof ctx.client, 'string', 'connect result has no client id');
  assert.ok(ctx.client.length > 0, 'empty client id');
  assert.equal(ctx.transport, 'websocket');
  assert.equal(c.state, 'connected');
  const reply = env.received.find((f) => f.connect);
  assert.ok(reply, 'no {"id":1,"connect":{...}} reply seen');
  assert.equal(reply.id, 1, 'connect reply must carry the id of the connect command');
  assert.equal(reply.connect.client, ctx.client);
});

sdkTest('connect with a token printed by `herald gentoken`', async (env) => {
  assert.ok(genToken && genToken.token, genToken ? genToken.error : 'gentoken did not run');
  const c = env.client({ token: genToken.token });
  const ctx = await connected(env, c);
  assert.ok(ctx.client);
});

sdkTest('CLI: genconfig writes Centrifugo v6 keys; checkconfig; checktoken', async (env) => {
  const gen = join(tmpDir, 'generated.json');
  let r = await run(HERALD_BIN, ['genconfig', '-c', gen]);
  env.note(`herald genconfig -c ${gen} -> ${r.code} ${r.stdout}${r.stderr}`);
  assert.equal(r.code, 0, `genconfig exited ${r.code}: ${r.stderr}`);
  const cfg = JSON.parse(readFileSync(gen, 'utf8'));
  env.note(`generated: ${JSON.stringify(cfg)}`);
  assert.equal(typeof cfg?.client?.token?.hmac_secret_key, 'string', 'client.token.hmac_secret_key missing');
  assert.ok(cfg.client.token.hmac_secret_key.length >= 16, 'hmac secret too short');
  assert.equal(typeof cfg?.http_api?.key, 'string', 'http_api.key missing');
  assert.ok(cfg.http_api.key.length >= 16, 'api key too short');

  r = await run(HERALD_BIN, ['checkconfig', '-c', gen]);
  assert.equal(r.code, 0, `checkconfig of the generated config exited ${r.code}: ${r.stdout}${r.stderr}`);
  r = await run(HERALD_BIN, ['checkconfig', '-c', configPath]);
  assert.equal(r.code, 0, `checkconfig of the test config exited ${r.code}: ${r.stdout}${r.stderr}`);
  const badCfg = join(tmpDir, 'bad.json');
  writeFileSync(badCfg, JSON.stringify({ channel: { namespaces: [{ name: 'x', history_size: 'many' }] } }));
  r = await run(HERALD_BIN, ['checkconfig', '-c', badCfg]);
  assert.notEqual(r.code, 0, 'checkconfig accepted history_size: "many"');

  const tok = connToken('cli-user');
  r = await run(HERALD_BIN, ['checktoken', tok, '-c', configPath]);
  env.note(`herald checktoken <valid> -> ${r.code} ${r.stdout}${r.stderr}`);
  assert.equal(r.code, 0, `checktoken of a valid token exited ${r.code}: ${r.stdout}${r.stderr}`);
  assert.match(r.stdout + r.stderr, /cli-user/, 'checktoken should name the user');
  r = await run(HERALD_BIN, ['checktoken', jwt({ sub: 'cli-user', exp: nowS() + 60 }, 'another-secret'), '-c', configPath]);
  assert.notEqual(r.code, 0, 'checktoken accepted a token signed with another secret');
});

sdkTest('subscribe chat:room: publications from the cent client and from POST /publish/ arrive with their offsets', async (env) => {
  const c = env.client({ token: connToken('bob') });
  const sub = env.sub(c, 'chat:room');
  const pubs = collect(sub, 'publication');
  const subCtx = subscribed(sub);
  await connected(env, c);
  const sctx = await subCtx;
  assert.equal(sctx.recoverable, true, 'chat has force_recovery: the subscribe result must say recoverable: true');
  assert.ok(sctx.streamPosition && typeof sctx.streamPosition.epoch === 'string' && sctx.streamPosition.epoch !== '',
    'recoverable subscribe result must carry epoch and offset');

  const r = await env.cent('chat:room', { text: 'from cent' });
  assert.equal(typeof r.offset, 'number', `cent PublishResult has no offset: ${JSON.stringify(r)}`);
  assert.ok(r.offset > 0);
  assert.equal(r.epoch, sctx.streamPosition.epoch, 'publish result epoch differs from the subscription epoch');
  await waitUntil(() => pubs.length >= 1, 'the cent publication arrives');
  assert.deepEqual(pubs[0].data, { text: 'from cent' });
  assert.equal(pubs[0].offset, r.offset, 'publication offset must equal the offset the API returned');

  const s = await env.simplePublish('chat:room', { text: 'from simple' });
  assert.equal(s.channel, 'chat:room');
  await waitUntil(() => pubs.length >= 2, 'the /publish/ publication arrives');
  assert.deepEqual(pubs[1].data, { text: 'from simple' });
  assert.equal(pubs[1].offset, s.id, 'a /publish/ id must be the Centrifugo offset');
  assert.equal(s.id, r.offset + 1, 'offsets are per channel and consecutive');
  await sleep(100);
  assert.equal(pubs.length, 2, 'each publication must arrive exactly once');
});

sdkTest('history: limit, since, reverse, limit 0 (position only)', async (env) => {
  const ch = 'chat:hist';
  const offsets = [];
  let epoch = '';
  for (let n = 1; n <= 5; n++) {
    const res = await env.apiOk('publish', { channel: ch, data: { n } });
    assert.equal(typeof res.offset, 'number', `publish result has no offset: ${JSON.stringify(res)}`);
    offsets.push(res.offset);
    epoch = res.epoch;
  }
  assert.deepEqual(offsets, [1, 2, 3, 4, 5], 'first publications of a new channel get offsets 1..5');
  assert.ok(typeof epoch === 'string' && epoch !== '', 'publish result has no epoch');

  const c = env.client({ token: connToken('hist-user') });
  const sub = env.sub(c, ch);
  const sp = subscribed(sub);
  await connected(env, c);
  await sp;

  const h = await sub.history({ limit: 10 });
  assert.deepEqual(h.publications.map((p) => p.data.n), [1, 2, 3, 4, 5]);
  assert.deepEqual(h.publications.map((p) => p.offset), offsets);
  assert.equal(h.offset, 5, 'history result offset is the stream top');
  assert.equal(h.epoch, epoch);

  const since = await sub.history({ limit: 2, since: { offset: 2, epoch } });
  assert.deepEqual(since.publications.map((p) => p.offset), [3, 4], 'since {offset: 2}, limit 2 -> offsets 3, 4');

  const rev = await sub.history({ limit: 2, reverse: true });
  assert.deepEqual(rev.publications.map((p) => p.offset), [5, 4], 'reverse, limit 2 -> newest first: 5, 4');

  const revSince = await sub.history({ limit: 2, reverse: true, since: { offset: 4, epoch } });
  assert.deepEqual(revSince.publications.map((p) => p.offset), [3, 2], 'reverse since {offset: 4}, limit 2 -> 3, 2');

  const pos = await sub.history({ limit: 0 });
  assert.deepEqual(pos.publications, [], 'limit 0 returns no publications');
  assert.equal(pos.offset, 5);
  assert.equal(pos.epoch, epoch);

  // centrifuge node.history: a since epoch that is not the stream's -> 112 unrecoverable
  // position; reverse with since offset 0 -> 107 bad request.
  await rejectsWithCode(sub.history({ limit: 2, since: { offset: 1, epoch: 'not-the-epoch' } }), 112, 'history since a foreign epoch');

  // allow_history_for_subscriber: a client not subscribed to the channel is refused.
  await rejectsWithCode(c.history('chat:hist-other', { limit: 1 }), 103, 'history of a chat: channel the client is not subscribed to');
});

sdkTest('presence, presenceStats, join and leave at a second client', async (env) => {
  const ch = 'chat:presence';
  const a = env.client({ token: connToken('alice') });
  const subA = env.sub(a, ch, { joinLeave: true });
  const joins = collect(subA, 'join');
  const leaves = collect(subA, 'leave');
  const spA = subscribed(subA);
  const aCtx = await connected(env, a);
  await spA;

  const b = env.client({ token: connToken('bob') });
  const subB = env.sub(b, ch);
  const spB = subscribed(subB);
  const bCtx = await connected(env, b);
  await spB;

  await waitUntil(() => joins.some((j) => j.info.client === bCtx.client), "alice receives bob's join");
  const join = joins.find((j) => j.info.client === bCtx.client);
  assert.equal(join.info.user, 'bob');
  assert.equal(join.channel, ch);

  const p = await subA.presence();
  assert.deepEqual(Object.keys(p.clients).sort(), [aCtx.client, bCtx.client].sort(), 'presence lists both clients by client id');
  assert.equal(p.clients[aCtx.client].user, 'alice');
  assert.equal(p.clients[aCtx.client].client, aCtx.client);
  assert.equal(p.clients[bCtx.client].user, 'bob');

  const st = await subA.presenceStats();
  assert.deepEqual(st, { numClients: 2, numUsers: 2 });

  b.disconnect();
  await waitUntil(() => leaves.some((l) => l.info.client === bCtx.client), "alice receives bob's leave");
  assert.equal(leaves.find((l) => l.info.client === bCtx.client).info.user, 'bob');
  let st2 = null;
  await waitUntil(async () => {
    st2 = await subA.presenceStats();
    return st2.numClients === 1;
  }, `presence_stats shows 1 client after bob left (last: ${JSON.stringify(st2)})`).catch((e) => {
    throw new Error(`${e.message}; last presenceStats ${JSON.stringify(st2)}`);
  });
  assert.deepEqual(st2, { numClients: 1, numUsers: 1 }, 'presence_stats after bob left');
});

sdkTest('client publish: allowed in chat: for a subscriber, refused (103) in ro: and for a non-subscriber', async (env) => {
  const c = env.client({ token: connToken('carol') });
  const sub = env.sub(c, 'chat:pub');
  const pubs = collect(sub, 'publication');
  const sp = subscribed(sub);
  const cctx = await connected(env, c);
  await sp;

  const res = await c.publish('chat:pub', { text: 'hi' });
  assert.deepEqual(res, {});
  await waitUntil(() => pubs.length >= 1, 'the client publication comes back to the subscriber');
  assert.deepEqual(pubs[0].data, { text: 'hi' });
  assert.equal(typeof pubs[0].offset, 'number');
  assert.ok(pubs[0].info, 'a client publication carries the publisher ClientInfo ("info")');
  assert.equal(pubs[0].info.user, 'carol');
  assert.equal(pubs[0].info.client, cctx.client);

  await sub.publish({ text: 'via sub' });
  await waitUntil(() => pubs.length >= 2, 'sub.publish comes back');

  const ro = env.sub(c, 'ro:room');
  await subscribed(ro);
  await rejectsWithCode(c.publish('ro:room', { x: 1 }), 103, 'publish into ro: (no publish permission)');
  await rejectsWithCode(c.publish('chat:elsewhere', { x: 1 }), 103, 'publish into chat: without being subscribed');
  // The connection survives refused commands.
  assert.equal(c.state, 'connected');
  await c.publish('chat:pub', { text: 'still here' });
});

async function subscribedClient(env, user, ch) {
  const c = env.client({ token: connToken(user) });
  const sub = env.sub(c, ch);
  const pubs = collect(sub, 'publication');
  const sp = subscribed(sub);
  await connected(env, c);
  await sp;
  return { c, sub, pubs };
}

sdkTest('publication data round-trip: strings, numbers, arrays, unicode', async (env) => {
  const ch = 'chat:data';
  const { pubs } = await subscribedClient(env, 'dora', ch);
  const values = ['plain string', 42, 1.5, true, [1, 'x', { y: [] }], { emoji: '😀', sep: '\u2028\u2029', quote: '"</script>', nested: { a: { b: [1, 2] } } }];
  for (const data of values) await env.apiOk('publish', { channel: ch, data });
  await waitUntil(() => pubs.length === values.length, `all ${values.length} publications arrive`);
  assert.deepEqual(pubs.map((p) => p.data), values);
  const h = await env.apiOk('history', { channel: ch, limit: 100 });
  assert.deepEqual(h.publications.map((p) => p.data), values, 'history keeps the data as published');
});

sdkTest('publish tags reach subscribers and history', async (env) => {
  const ch = 'chat:tags';
  const { pubs } = await subscribedClient(env, 'tara', ch);
  await env.apiOk('publish', { channel: ch, data: { tagged: 1 }, tags: { kind: 'news', lang: 'en' } });
  await waitUntil(() => pubs.length === 1, 'the tagged publication arrives');
  assert.deepEqual(pubs[0].tags, { kind: 'news', lang: 'en' }, 'Publication.tags ({"pub":{"data":..,"offset":..,"tags":{..}}})');
  const h = await env.apiOk('history', { channel: ch, limit: 10 });
  assert.deepEqual(h.publications[0].tags, { kind: 'news', lang: 'en' }, 'history publications keep tags');
});

sdkTest('publish skip_history: delivered, kept out of history', async (env) => {
  const ch = 'chat:skip';
  const { pubs } = await subscribedClient(env, 'sam', ch);
  await env.apiOk('publish', { channel: ch, data: { n: 1 } });
  const skipped = await env.apiOk('publish', { channel: ch, data: { skipped: 1 }, skip_history: true });
  await waitUntil(() => pubs.length === 2, 'the skip_history publication is still delivered');
  assert.deepEqual(pubs[1].data, { skipped: 1 });
  const h = await env.apiOk('history', { channel: ch, limit: 100 });
  assert.deepEqual(h.publications.map((p) => p.data), [{ n: 1 }], 'skip_history keeps it out of history');
  assert.equal(h.offset, 1, `skip_history does not move the stream top (its publish result: ${JSON.stringify(skipped)})`);
});

sdkTest('publish idempotency_key: a retried publish is accepted once (documented for the memory engine)', async (env) => {
  const ch = 'chat:idem';
  const c = env.client({ token: connToken('ivan') });
  const sub = env.sub(c, ch);
  const pubs = collect(sub, 'publication');
  const sp = subscribed(sub);
  await connected(env, c);
  await sp;
  const a = await env.apiOk('publish', { channel: ch, data: { n: 1 }, idempotency_key: 'k-1' });
  const b = await env.apiOk('publish', { channel: ch, data: { n: 1 }, idempotency_key: 'k-1' });
  assert.deepEqual(b, a, 'the retry returns the first result');
  await env.apiOk('publish', { channel: ch, data: { n: 2 } });
  await waitUntil(() => pubs.length >= 2, 'publications arrive');
  await sleep(100);
  assert.deepEqual(pubs.map((p) => p.data.n), [1, 2], 'the retried publication is delivered once');
});

sdkTest('subscription "since" option: recovery on the first subscribe; a foreign epoch is not recovered', async (env) => {
  const ch = 'chat:since';
  let epoch = '';
  for (let n = 1; n <= 4; n++) epoch = (await env.apiOk('publish', { channel: ch, data: { n } })).epoch;
  const c = env.client({ token: connToken('sina') });
  const sub = env.sub(c, ch, { since: { offset: 2, epoch } });
  const pubs = collect(sub, 'publication');
  const sp = subscribed(sub);
  await connected(env, c);
  const ctx = await sp;
  assert.equal(ctx.wasRecovering, true);
  assert.equal(ctx.recovered, true);
  await waitUntil(() => pubs.length === 2, 'publications 3 and 4 are recovered');
  assert.deepEqual(pubs.map((p) => p.offset), [3, 4]);

  const other = env.sub(c, 'chat:since2', { since: { offset: 1, epoch: 'bogus' } });
  await env.apiOk('publish', { channel: 'chat:since2', data: { n: 1 } });
  const ctx2 = await subscribed(other);
  assert.equal(ctx2.wasRecovering, true);
  assert.equal(ctx2.recovered, false, 'recovery from another epoch must report recovered: false');
});

sdkTest('unsubscribe: no more publications, presence and channels drop the client; same user twice = 1 user', async (env) => {
  const ch = 'chat:unsub';
  const a = env.client({ token: connToken('uma') });
  const b = env.client({ token: connToken('uma') });
  const subA = env.sub(a, ch);
  const subB = env.sub(b, ch);
  const pubsA = collect(subA, 'publication');
  const pa = subscribed(subA);
  const pb = subscribed(subB);
  await connected(env, a);
  await connected(env, b);
  await pa;
  await pb;
  assert.deepEqual(await env.apiOk('presence_stats', { channel: ch }), { num_clients: 2, num_users: 1 });

  const u = once(subA, 'unsubscribed');
  subA.unsubscribe();
  assert.equal((await u).code, 0);
  await waitUntil(() => env.received.some((f) => f.unsubscribe !== undefined && f.id), 'the unsubscribe reply');
  await env.apiOk('publish', { channel: ch, data: { after: 1 } });
  await sleep(150);
  assert.equal(pubsA.length, 0, 'no publication after unsubscribe');
  assert.deepEqual(await env.apiOk('presence_stats', { channel: ch }), { num_clients: 1, num_users: 1 });
  b.disconnect();
  await waitUntil(async () => {
    const r = await env.apiOk('channels', { pattern: ch });
    return !r.channels[ch];
  }, 'channels no longer lists a channel without subscribers');
});

sdkTest('token refresh: connection token and subscription token near expiry are refreshed in place', async (env) => {
  let connCalls = 0;
  let subCalls = 0;
  const c = env.client({
    token: connToken('rick', 2),
    getToken: async () => { connCalls++; return connToken('rick'); },
  });
  const sub = env.sub(c, 'closed:refresh', {
    token: subToken('rick', 'closed:refresh', 2),
    getToken: async (ctx) => { subCalls++; return subToken('rick', ctx.channel); },
  });
  const sp = subscribed(sub);
  await connected(env, c);
  await sp;
  const connectReply = env.received.find((f) => f.connect);
  assert.equal(connectReply.connect.expires, true, 'a token with exp -> connect result expires: true');
  assert.ok(connectReply.connect.ttl > 0 && connectReply.connect.ttl <= 2, 'ttl: seconds until exp');
  const subReply = env.received.find((f) => f.subscribe);
  assert.equal(subReply.subscribe.expires, true, 'a subscription token with exp -> subscribe result expires: true');
  await waitUntil(() => env.received.some((f) => f.refresh && f.id), 'a refresh reply', 6_000);
  await waitUntil(() => env.received.some((f) => f.sub_refresh && f.id), 'a sub_refresh reply', 6_000);
  assert.ok(connCalls >= 1 && subCalls >= 1);
  const refresh = env.received.find((f) => f.refresh && f.id).refresh;
  assert.equal(refresh.expires, true);
  assert.ok(refresh.ttl > 3000, `refreshed ttl follows the new token, got ${refresh.ttl}`);
  await sleep(300);
  assert.equal(c.state, 'connected');
  assert.equal(sub.state, 'subscribed');
  assert.equal(env.sockets, 1, 'refresh happens on the same connection');
});

// A TCP proxy between the SDK and herald that the test can cut and block.
function startProxy(targetPort) {
  const pairs = new Set();
  const state = { blocked: false, accepted: 0 };
  const server = net.createServer((down) => {
    state.accepted++;
    if (state.blocked) { down.resetAndDestroy(); return; }
    const up = net.connect(targetPort, '127.0.0.1');
    const pair = { down, up };
    pairs.add(pair);
    const end = () => { pairs.delete(pair); down.destroy(); up.destroy(); };
    down.on('error', end); up.on('error', end); down.on('close', end); up.on('close', end);
    down.pipe(up); up.pipe(down);
  });
  return new Promise((res) => {
    server.listen(0, '127.0.0.1', () => {
      res({
        port: server.address().port,
        state,
        cut() {
          for (const { down, up } of pairs) { down.resetAndDestroy(); up.resetAndDestroy(); }
          pairs.clear();
        },
        close() { this.cut(); return new Promise((r) => server.close(() => r())); },
      });
    });
  });
}

sdkTest('recovery: socket cut, 3 publications meanwhile, resubscribe recovers them exactly once in order', async (env) => {
  const ch = 'chat:recover';
  const port = Number(new URL(BASE).port);
  const proxy = await startProxy(port);
  env.cleanups.push(() => proxy.close());
  const c = env.client({ token: connToken('rita') }, `ws://127.0.0.1:${proxy.port}/connection/websocket`);
  const sub = env.sub(c, ch);
  const pubs = collect(sub, 'publication');
  const subs = collect(sub, 'subscribed');
  const sp = subscribed(sub);
  await connected(env, c);
  const first = await sp;
  assert.equal(first.recoverable, true);
  assert.equal(first.wasRecovering, false);

  for (let n = 1; n <= 2; n++) await env.apiOk('publish', { channel: ch, data: { n } });
  await waitUntil(() => pubs.length === 2, 'the two publications before the cut arrive');
  const before = pubs.map((p) => p.offset);

  env.note('--- proxy: cutting the TCP connection (RST) and refusing new ones ---');
  const connecting = once(c, 'connecting', { what: 'client notices the cut' });
  proxy.state.blocked = true;
  proxy.cut();
  await connecting;

  const missed = [];
  for (let n = 3; n <= 5; n++) missed.push((await env.apiOk('publish', { channel: ch, data: { n } })).offset);
  assert.deepEqual(missed, [before[1] + 1, before[1] + 2, before[1] + 3]);

  env.note('--- proxy: accepting connections again ---');
  const resub = once(sub, 'subscribed', { timeout: 8_000, what: 'resubscribe after reconnect' });
  proxy.state.blocked = false;
  const ctx = await resub;
  assert.equal(ctx.wasRecovering, true, 'subscribe reply must carry was_recovering: true');
  assert.equal(ctx.recovered, true, 'subscribe reply must carry recovered: true');
  await waitUntil(() => pubs.length >= 5, 'the 3 missed publications arrive');
  await sleep(200);
  assert.deepEqual(pubs.map((p) => p.data.n), [1, 2, 3, 4, 5], 'every publication exactly once, in order');
  assert.deepEqual(pubs.slice(2).map((p) => p.offset), missed);
  assert.equal(subs.length, 2);
  // The resubscribe command asked for recovery from the last offset seen.
  const resubCmd = env.log.filter((l) => l.includes('C>S') && l.includes('"subscribe"')).pop() ?? '';
  assert.match(resubCmd, /"recover":true/, 'SDK sent recover: true (sanity)');
});

sdkTest('bad token (wrong signature) -> disconnected 3500 "invalid token", no reconnect', async (env) => {
  const c = env.client({ token: jwt({ sub: 'mallory', exp: nowS() + 3600 }, 'not-the-secret') });
  const d = once(c, 'disconnected', { what: 'disconnect after an invalid token' });
  c.connect();
  const ctx = await d;
  assert.equal(ctx.code, 3500, `expected disconnect code 3500, got ${ctx.code} (${ctx.reason})`);
  assert.equal(ctx.reason, 'invalid token');
  await sleep(700);
  assert.equal(c.state, 'disconnected');
  assert.equal(env.sockets, 1, 'the SDK must not reconnect after 3500');

  const g = env.client({ token: 'not.a.jwt' });
  const d2 = once(g, 'disconnected', { what: 'disconnect after a malformed token' });
  g.connect();
  assert.equal((await d2).code, 3500);
});

sdkTest('expired token -> error 109 -> SDK calls getToken and connects with the fresh token', async (env) => {
  let calls = 0;
  const c = env.client({
    token: jwt({ sub: 'dave', exp: nowS() - 120 }),
    getToken: async () => { calls++; return connToken('dave'); },
  });
  const ctx = await connected(env, c);
  assert.ok(ctx.client);
  assert.ok(calls >= 1, 'getToken was not called');
  const err = env.received.find((f) => f.error);
  assert.ok(err, 'no error reply to the first connect');
  assert.equal(err.error.code, 109, `first connect must be answered with error 109 "token expired", got ${JSON.stringify(err)}`);
  assert.equal(err.id, 1);
});

sdkTest('subscribe errors: unknown namespace 102, no permission 103; subscription tokens', async (env) => {
  const c = env.client({ token: connToken('erin') });
  await connected(env, c);

  const unknown = env.sub(c, 'nope:room');
  const u1 = once(unknown, 'unsubscribed');
  unknown.subscribe();
  assert.equal((await u1).code, 102, 'unknown namespace -> 102 unknown channel');

  const closed = env.sub(c, 'closed:room');
  const u2 = once(closed, 'unsubscribed');
  closed.subscribe();
  assert.equal((await u2).code, 103, 'allow_subscribe_for_client false and no token -> 103');

  const priv = env.sub(c, '$secret-a');
  const u3 = once(priv, 'unsubscribed');
  priv.subscribe();
  assert.equal((await u3).code, 103, '$ channel without a subscription token -> 103');

  const forged = env.sub(c, '$secret-c', { token: jwt({ sub: 'erin', channel: '$secret-c', exp: nowS() + 60 }, 'not-the-secret') });
  const u4 = once(forged, 'unsubscribed');
  forged.subscribe();
  assert.equal((await u4).code, 103, 'subscription token with a bad signature -> 103');

  const ok = env.sub(c, '$secret-b', { token: subToken('erin', '$secret-b') });
  const pubs = collect(ok, 'publication');
  await subscribed(ok);
  await env.apiOk('publish', { channel: '$secret-b', data: { private: true } });
  await waitUntil(() => pubs.length === 1, 'publication in the private channel');
  assert.deepEqual(pubs[0].data, { private: true });

  let asked = 0;
  const viaGetToken = env.sub(c, 'closed:room2', { getToken: async (ctx) => { asked++; return subToken('erin', ctx.channel); } });
  await subscribed(viaGetToken);
  assert.equal(asked, 1);
  assert.equal(c.state, 'connected', 'refused subscriptions must not end the connection');
});

sdkTest('anonymous connection (allow_anonymous_connect_without_token): chat: refused 103, anon: allowed', async (env) => {
  const c = env.client({});
  const ctx = await connected(env, c);
  assert.ok(ctx.client);
  const s1 = env.sub(c, 'chat:anon');
  const u = once(s1, 'unsubscribed');
  s1.subscribe();
  assert.equal((await u).code, 103, 'allow_subscribe_for_client does not cover anonymous users');
  const s2 = env.sub(c, 'anon:room');
  await subscribed(s2);
});

sdkTest('server API auth: 401 without or with a wrong key; X-API-Key, Authorization: apikey', async (env) => {
  let r = await env.api('publish', { channel: 'chat:api', data: {} }, { key: null });
  assert.equal(r.status, 401, 'no X-API-Key -> 401');
  r = await env.api('info', {}, { key: 'wrong' });
  assert.equal(r.status, 401, 'wrong X-API-Key -> 401');
  r = await env.api('info', {});
  assert.equal(r.status, 200, 'X-API-Key -> 200');
  const a = await fetch(`${BASE}/api/info`, { method: 'POST', headers: { Authorization: `apikey ${API_KEY}` }, body: '{}' });
  env.note(`HTTP POST /api/info (Authorization: apikey KEY) {} -> ${a.status} ${(await a.text()).trim()}`);
  assert.equal(a.status, 200, 'Authorization: apikey KEY -> 200');
});

sdkTest('server API auth: ?api_key= query parameter (documented for http_api.key)', async (env) => {
  const r = await env.api('info', {}, { key: null, query: `?api_key=${API_KEY}` });
  assert.equal(r.status, 200, 'centrifugal.dev server_api.md: "It\'s also possible to pass API key over URL query param ... ?api_key=<YOUR_API_KEY>"');
  const w = await env.api('info', {}, { key: null, query: '?api_key=wrong' });
  assert.equal(w.status, 401);
});

sdkTest('server API shapes: channels, info, presence, presence_stats, history, history_remove, broadcast, batch', async (env) => {
  let r;
  const c = env.client({ token: connToken('frank') });
  const sub = env.sub(c, 'chat:api-ch');
  const sp = subscribed(sub);
  const cctx = await connected(env, c);
  await sp;

  const info = await env.apiOk('info');
  assert.ok(Array.isArray(info.nodes) && info.nodes.length >= 1, 'info.nodes is a non-empty array');
  const node = info.nodes[0];
  assert.ok(typeof node.uid === 'string' && node.uid, 'node.uid');
  assert.ok(typeof node.name === 'string' && node.name, 'node.name');
  assert.ok(node.num_clients >= 1, 'node.num_clients counts the connected client');
  assert.ok(node.num_channels >= 1, 'node.num_channels counts chat:api-ch');

  const chans = await env.apiOk('channels');
  assert.equal(typeof chans.channels, 'object');
  assert.deepEqual(chans.channels['chat:api-ch'], { num_clients: 1 });
  const filtered = await env.apiOk('channels', { pattern: 'chat:api-*' });
  assert.deepEqual(Object.keys(filtered.channels), ['chat:api-ch'], 'pattern filters channels');

  const pres = await env.apiOk('presence', { channel: 'chat:api-ch' });
  assert.deepEqual(Object.keys(pres.presence), [cctx.client]);
  assert.equal(pres.presence[cctx.client].user, 'frank');
  assert.equal(pres.presence[cctx.client].client, cctx.client);
  const ps = await env.apiOk('presence_stats', { channel: 'chat:api-ch' });
  assert.deepEqual(ps, { num_clients: 1, num_users: 1 });

  const p1 = await env.apiOk('publish', { channel: 'chat:api-ch', data: { a: 1 } });
  const p2 = await env.apiOk('publish', { channel: 'chat:api-ch', data: { a: 2 } });
  assert.equal(p2.offset, p1.offset + 1);
  const hist = await env.apiOk('history', { channel: 'chat:api-ch', limit: 10 });
  assert.deepEqual(hist.publications, [{ data: { a: 1 }, offset: p1.offset }, { data: { a: 2 }, offset: p2.offset }]);
  assert.equal(hist.offset, p2.offset);
  assert.equal(hist.epoch, p1.epoch);
  const top = await env.apiOk('history', { channel: 'chat:api-ch' });
  assert.ok(!top.publications || top.publications.length === 0, 'no limit -> position only, no publications');
  assert.equal(top.offset, p2.offset);

  assert.deepEqual(await env.apiOk('history_remove', { channel: 'chat:api-ch' }), {});
  const afterRm = await env.apiOk('history', { channel: 'chat:api-ch', limit: 10 });
  assert.ok(!afterRm.publications || afterRm.publications.length === 0, 'history_remove empties history');
  assert.equal(afterRm.offset, p2.offset, 'history_remove keeps the stream position');
  assert.equal(afterRm.epoch, p1.epoch);

  r = await env.api('publish', { channel: 'nope:x', data: {} });
  assert.equal(r.status, 200, 'API errors are 200 with an error object');
  assert.equal(r.json?.error?.code, 102, 'publish to an unknown namespace -> error 102');

  const bc = await env.apiOk('broadcast', { channels: ['chat:api-ch', 'chat:api-ch2'], data: { b: 1 } });
  assert.equal(bc.responses.length, 2);
  assert.equal(bc.responses[0].result.offset, p2.offset + 1);
  assert.equal(bc.responses[1].result.offset, 1);

  r = await env.api('batch', { commands: [{ publish: { channel: 'chat:api-ch', data: { c: 1 } } }, { publish: { channel: 'nope:y', data: {} } }] });
  assert.equal(r.status, 200);
  assert.ok(Array.isArray(r.json?.replies) && r.json.replies.length === 2, `batch -> {"replies":[...]}: ${r.text}`);
  assert.equal(r.json.replies[0].publish.offset, p2.offset + 2);
  assert.equal(r.json.replies[1].error.code, 102);
});

sdkTest('server API subscribe/unsubscribe/disconnect reach the SDK', async (env) => {
  const c = env.client({ token: connToken('gina') });
  await connected(env, c);

  // Server-side subscription.
  const ss = once(c, 'subscribed', { filter: (x) => x.channel === 'chat:srv', what: 'server-side subscribe push' });
  assert.deepEqual(await env.apiOk('subscribe', { user: 'gina', channel: 'chat:srv' }), {});
  await ss;
  const sp = once(c, 'publication', { filter: (x) => x.channel === 'chat:srv' });
  await env.apiOk('publish', { channel: 'chat:srv', data: { srv: 1 } });
  assert.deepEqual((await sp).data, { srv: 1 });
  const su = once(c, 'unsubscribed', { filter: (x) => x.channel === 'chat:srv', what: 'server-side unsubscribe push' });
  await env.apiOk('unsubscribe', { user: 'gina', channel: 'chat:srv' });
  await su;

  // Client-side subscription unsubscribed by the server: code 2000.
  const sub = env.sub(c, 'chat:srv2');
  await subscribed(sub);
  const u = once(sub, 'unsubscribed');
  await env.apiOk('unsubscribe', { user: 'gina', channel: 'chat:srv2' });
  const uctx = await u;
  assert.equal(uctx.code, 2000, `server unsubscribe -> code 2000, got ${uctx.code} (${uctx.reason})`);

  // Disconnect: DisconnectForceNoReconnect (3503) by default.
  const d = once(c, 'disconnected');
  await env.apiOk('disconnect', { user: 'gina' });
  const dctx = await d;
  assert.equal(dctx.code, 3503, `API disconnect -> 3503 "force disconnect", got ${dctx.code} (${dctx.reason})`);
  await sleep(400);
  assert.equal(c.state, 'disconnected');
  assert.equal(env.sockets, 1, 'no reconnect after 3503');
});

sdkTest('server API refresh expire_at: the client gets a refresh push with the new ttl', async (env) => {
  const c = env.client({ token: connToken('rosa') });
  await connected(env, c);
  assert.deepEqual(await env.apiOk('refresh', { user: 'rosa', expire_at: nowS() + 7200 }), {});
  await waitUntil(() => env.received.some((f) => f.push && f.push.refresh), 'a {"push":{"refresh":{"expires":true,"ttl":N}}} frame (centrifuge Client.Refresh)');
  const push = env.received.find((f) => f.push && f.push.refresh).push.refresh;
  assert.equal(push.expires, true);
  assert.ok(push.ttl > 3600 && push.ttl <= 7200, `ttl follows expire_at, got ${push.ttl}`);
  assert.equal(c.state, 'connected');
});

sdkTest('server API refresh expired: true -> disconnect 3005 "connection expired", the SDK reconnects', async (env) => {
  const c = env.client({ token: connToken('rhea') });
  const first = await connected(env, c);
  const connecting = once(c, 'connecting', { what: 'reconnect after "connection expired"' });
  const again = once(c, 'connected', { timeout: 8_000, what: 'connected again' });
  assert.deepEqual(await env.apiOk('refresh', { user: 'rhea', expired: true }), {});
  const ctx = await connecting;
  assert.equal(ctx.code, 3005, `refresh expired -> DisconnectExpired 3005, got ${ctx.code} (${ctx.reason})`);
  const second = await again;
  assert.notEqual(second.client, first.client);
});

sdkTest('pings: client.ping_interval 1s / pong_timeout 500ms; the SDK answers {} and stays; a silent client gets 3012', async (env) => {
  const cfg = JSON.parse(JSON.stringify(CONFIG));
  cfg.client.ping_interval = '1s';
  cfg.client.pong_timeout = '500ms';
  const path = join(tmpDir, 'ping.json');
  writeFileSync(path, JSON.stringify(cfg, null, 2));
  const inst = await launchHerald(path);
  env.cleanups.push(() => killHerald(inst.child));
  const url = `ws://${inst.addr}/connection/websocket`;

  const c = env.client({ token: connToken('pia') }, url);
  const ctx = await connected(env, c);
  const reply = env.received.find((f) => f.connect);
  assert.equal(reply.connect.ping, 1, 'connect result ping: the interval in seconds');
  assert.equal(reply.connect.pong, true, 'connect result pong: true (bidirectional client must answer)');
  await sleep(2_700);
  const pings = env.log.filter((l) => / S>C \{\}$/.test(l)).length;
  const pongs = env.log.filter((l) => / C>S \{\}$/.test(l)).length;
  assert.ok(pings >= 2, `expected >= 2 server pings {} in 2.7 s, saw ${pings}`);
  assert.ok(pongs >= 2, `the SDK answers each ping with {} (saw ${pongs})`);
  assert.equal(c.state, 'connected');
  assert.equal(env.sockets, 1, 'answered pings keep the connection');
  assert.ok(ctx.client);

  // A raw client that never answers pings: disconnected with 3012 "no pong".
  const raw = new WebSocket(url);
  env.cleanups.push(() => raw.terminate());
  const closed = new Promise((res) => raw.on('close', (code, reason) => res({ code, reason: reason.toString() })));
  await new Promise((res, rej) => { raw.on('open', res); raw.on('error', rej); });
  raw.send(JSON.stringify({ id: 1, connect: { token: connToken('silent') } }));
  const t0 = Date.now();
  const timeout = sleep(4_000).then(() => ({ code: 'none within 4 s' }));
  const res = await Promise.race([closed, timeout]);
  env.note(`raw client without pongs: closed ${JSON.stringify(res)} after ${Date.now() - t0} ms`);
  assert.equal(res.code, 3012, `no pong -> close 3012, got ${JSON.stringify(res)}`);
});

// Centrifugo's proxies (issue #13): no token; a backend (node's http server here) decides
// the connect (user, data, a server-side subscription), subscribes, publications (data
// rewritten) and answers an RPC, with Centrifugo v6's request and answer bodies.
sdkTest('connect proxy: a backend decides connect, subscribe, publish and rpc for a client without a token', async (env) => {
  const seen = [];
  const backend = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      const b = JSON.parse(body || '{}');
      seen.push({ path: req.url, body: b, headers: req.headers });
      env.note(`backend ${req.url} <- ${body}`);
      let answer = {};
      if (req.url === '/connect') {
        answer = b.data && b.data.deny
          ? { error: { code: 4001, message: 'denied by backend' } }
          : { result: { user: `u-${b.data.user}`, data: { greeting: 'hello' }, channels: ['px:news'] } };
      } else if (req.url === '/subscribe') {
        answer = b.channel === 'px:secret'
          ? { error: { code: 403, message: 'forbidden' } }
          : { result: { data: { welcome: b.channel }, info: { role: 'reader' } } };
      } else if (req.url === '/publish') {
        answer = { result: { data: { ...b.data, by: b.user } } };
      } else if (req.url === '/rpc') {
        answer = { result: { data: { method: b.method, echo: b.data } } };
      }
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(answer));
    });
  });
  await new Promise((r) => backend.listen(0, '127.0.0.1', r));
  env.cleanups.push(() => new Promise((r) => { backend.closeAllConnections(); backend.close(r); }));
  const base = `http://127.0.0.1:${backend.address().port}`;
  const cfg = JSON.parse(JSON.stringify(CONFIG));
  cfg.client.allow_anonymous_connect_without_token = false;
  cfg.client.proxy = { connect: { enabled: true, endpoint: `${base}/connect`, http_headers: ['User-Agent'] } };
  cfg.channel.proxy = { subscribe: { endpoint: `${base}/subscribe` }, publish: { endpoint: `${base}/publish` } };
  cfg.channel.namespaces.push({ name: 'px', subscribe_proxy_enabled: true, publish_proxy_enabled: true });
  cfg.rpc = { proxy: { endpoint: `${base}/rpc` }, without_namespace: { proxy_enabled: true } };
  const path = join(tmpDir, 'proxy.json');
  writeFileSync(path, JSON.stringify(cfg, null, 2));
  const inst = await launchHerald(path);
  env.cleanups.push(() => killHerald(inst.child));
  const url = `ws://${inst.addr}/connection/websocket`;

  const c = env.client({ data: { user: 'ann' } }, url);
  const serverPubs = collect(c, 'publication');
  const ctx = await connected(env, c);
  assert.deepEqual(ctx.data, { greeting: 'hello' }, 'the connect proxy result data reaches the connected event');
  const conn = seen.find((s) => s.path === '/connect');
  assert.equal(conn.body.client, ctx.client);
  assert.equal(conn.body.transport, 'websocket');
  assert.equal(conn.body.protocol, 'json');
  assert.deepEqual(conn.body.data, { user: 'ann' });
  assert.equal(conn.body.name, 'js', 'the SDK name');

  // The server-side subscription from the connect result's channels.
  const r = await fetch(`http://${inst.addr}/api/publish`, {
    method: 'POST', headers: { 'X-API-Key': API_KEY }, body: JSON.stringify({ channel: 'px:news', data: { n: 1 } }),
  });
  assert.equal(r.status, 200);
  await waitUntil(() => serverPubs.some((p) => p.channel === 'px:news'), 'a publication on the server-side subscription');

  const sub = env.sub(c, 'px:room');
  const pubs = collect(sub, 'publication');
  const sctx = await subscribed(sub);
  assert.deepEqual(sctx.data, { welcome: 'px:room' }, 'the subscribe proxy result data reaches the subscribed event');
  await c.publish('px:room', { text: 'hi' });
  await waitUntil(() => pubs.length >= 1, 'the publication, as the publish proxy rewrote it');
  assert.deepEqual(pubs[0].data, { text: 'hi', by: 'u-ann' });
  assert.deepEqual(pubs[0].info.chanInfo, { role: 'reader' }, 'chan_info from the subscribe proxy');

  const denied = env.sub(c, 'px:secret');
  const err = once(denied, 'unsubscribed', { what: 'the subscribe proxy refusal' });
  denied.subscribe();
  const u = await err;
  assert.equal(u.code, 403, `the backend's code reaches the SDK, got ${JSON.stringify(u)}`);

  const rpc = await c.rpc('sum', { a: 1 });
  assert.deepEqual(rpc.data, { method: 'sum', echo: { a: 1 } });

  // The backend refuses: its error code ends the SDK's attempts.
  const d = env.client({ data: { deny: true } }, url);
  const disc = once(d, 'disconnected', { what: 'refused by the connect proxy' });
  d.connect();
  const dctx = await disc;
  assert.equal(dctx.code, 4001, `got ${JSON.stringify(dctx)}`);
});
