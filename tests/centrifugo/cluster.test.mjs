// The official Centrifugo SDKs across a cluster (issue #12): a private redis-server and three
// herald nodes A, B, C over it (the Redis engine), started here on free loopback ports.
// centrifuge-js (JSON, and its protobuf build) subscribed on B and C, and centrifuge-python
// (JSON and protobuf) on C, receive in order and with the same offsets what is published
// through A's /api/publish (fetch, and pycent) and /publish/; a client of B moves to C and
// recovers what it missed (a new instance with `since`, and the same instance reconnecting
// after its node is SIGKILLed); A's server API lists the clients of B and C in presence;
// join and leave cross nodes; A's API subscribe, unsubscribe and disconnect reach a user's
// connections on B and C.
//
// Builds nothing: HERALD_BIN names the binary (default ../../target/release/herald).
// Run: tests/centrifugo/run.sh   (or `node --test cluster.test.mjs` here after `npm ci`)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Centrifuge } from 'centrifuge';
import { Centrifuge as CentrifugePb } from 'centrifuge/build/protobuf';
import WebSocket from 'ws';
import { freePort, startCluster, stopChild } from '../common/cluster.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const HERALD_BIN = process.env.HERALD_BIN || resolve(here, '../../target/release/herald');
const PYTHON = process.env.PYTHON || 'python3';
const STEP_MS = 8_000; // bound on any single wait
const TEST_MS = 40_000; // bound on one test

const SECRET = randomBytes(24).toString('hex');
const API_KEY = randomBytes(16).toString('hex');

// As tests/cluster.rs: the Redis engine is added by startCluster.
const CONFIG = {
  client: { token: { hmac_secret_key: SECRET }, ping_interval: '10s', pong_timeout: '5s' },
  http_api: { key: API_KEY },
  channel: {
    without_namespace: { allow_subscribe_for_client: true, history_size: 100, history_ttl: '300s' },
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
    ],
  },
};

let cluster = null;

before(async () => {
  cluster = await startCluster(HERALD_BIN, CONFIG, { n: 3, prefix: `cf${process.pid}` });
}, { timeout: 60_000 });

after(async () => {
  if (cluster) await cluster.stop();
});

// ---------------------------------------------------------------------------------------
// Helpers.

const b64url = (s) => Buffer.from(s).toString('base64url');
function jwt(claims) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}
const connToken = (user) => jwt({ sub: user, exp: Math.floor(Date.now() / 1000) + 3600 });
const dec = (b) => JSON.parse(new TextDecoder().decode(b));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Per test: SDK clients (each on a node), a log of every frame both ways, spawned helper
// processes, and cleanup.
class Env {
  constructor(name) {
    this.name = name;
    this.t0 = Date.now();
    this.log = [];
    this.clients = [];
    this.children = [];
  }

  note(s) { this.log.push(`[+${String(Date.now() - this.t0).padStart(5)}ms] ${s}`); }

  // A WebSocket class for the SDK that records frames and dials `route.url` when set (so
  // one SDK instance can be sent to another node, as a load balancer would).
  wsClass(label, route = {}) {
    const env = this;
    return class extends WebSocket {
      constructor(url, protocols) {
        const to = route.url ? `${route.url}/connection/websocket` : url;
        super(to, protocols);
        env.note(`${label} dial ${to}`);
        this.on('message', (d, bin) => env.note(`${label} S>C ${bin ? `<binary ${d.byteLength ?? d.length}>` : d}`));
        this.on('close', (code) => env.note(`${label} closed ${code}`));
        this.on('error', (e) => env.note(`${label} error ${e.message}`));
      }
      send(d, ...rest) {
        env.note(`${label} C>S ${typeof d === 'string' ? d : `<binary ${d.length}>`}`);
        return super.send(d, ...rest);
      }
    };
  }

  // A centrifuge-js client of `node` (JSON, or protobuf with pb: true), not yet connected.
  client(node, user, { pb = false, route, ...opts } = {}) {
    const label = `${user}@${node.name}${pb ? '(pb)' : ''}`;
    const Ctor = pb ? CentrifugePb : Centrifuge;
    const c = new Ctor(`${node.ws}/connection/websocket`, {
      websocket: this.wsClass(label, route),
      token: connToken(user),
      minReconnectDelay: 50,
      maxReconnectDelay: 300,
      timeout: 4_000,
      ...opts,
    });
    c.on('state', (ctx) => this.note(`${label} state ${ctx.oldState} -> ${ctx.newState}`));
    this.clients.push(c);
    return c;
  }

  // A connected client with one subscription to `channel`; its publications (offset and
  // decoded data) are collected in `pubs`.
  async subscriber(node, user, channel, { pb = false, subOpts = {}, ...opts } = {}) {
    const c = this.client(node, user, { pb, ...opts });
    const sub = c.newSubscription(channel, subOpts);
    const pubs = [];
    sub.on('publication', (p) => pubs.push({ offset: p.offset, data: pb ? dec(p.data) : p.data, info: p.info }));
    sub.on('error', (ctx) => this.note(`sub ${channel} error ${JSON.stringify(ctx)}`));
    const connected = once(c, 'connected');
    const subscribed = once(sub, 'subscribed');
    c.connect();
    sub.subscribe();
    const [conn, ctx] = await Promise.all([connected, subscribed]);
    return { c, sub, pubs, client: conn.client, ctx };
  }

  // POST A's /api/publish with the API key: the result ({offset, epoch}).
  async apiPublish(node, channel, data) {
    return (await this.api(node, 'publish', { channel, data }));
  }

  async api(node, method, body) {
    const r = await fetch(`${node.base}/api/${method}`, {
      method: 'POST',
      headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(STEP_MS),
    });
    const text = await r.text();
    this.note(`POST ${node.name} /api/${method} ${JSON.stringify(body)} -> ${r.status} ${text.trim()}`);
    assert.equal(r.status, 200, `/api/${method} on ${node.name}: ${r.status} ${text}`);
    const j = JSON.parse(text);
    assert.equal(j.error, undefined, `/api/${method} on ${node.name}: ${text}`);
    return j.result;
  }

  // POST /publish/?cid=channel on `node`: the id it assigned.
  async simplePublish(node, channel, data) {
    const r = await fetch(`${node.base}/publish/?cid=${encodeURIComponent(channel)}`, {
      method: 'POST', body: JSON.stringify(data), signal: AbortSignal.timeout(STEP_MS),
    });
    const text = await r.text();
    this.note(`POST ${node.name} /publish/?cid=${channel} ${JSON.stringify(data)} -> ${r.status} ${text.trim()}`);
    assert.equal(r.status, 200, `/publish/ on ${node.name}: ${r.status} ${text}`);
    return JSON.parse(text).id;
  }

  // pycent's publish (cent_publish.py) against `node`'s /api: the result ({offset, epoch}).
  cent(node, channel, data) {
    return new Promise((res, rej) => {
      const args = [join(here, 'cent_publish.py'), `${node.base}/api`, API_KEY, channel, JSON.stringify(data)];
      execFile(PYTHON, args, { timeout: STEP_MS, cwd: here }, (error, stdout, stderr) => {
        this.note(`cent_publish.py on ${node.name} ${channel} ${JSON.stringify(data)} -> ${error ? `error ${error.message}` : 'ok'} ${stdout.trim()} ${stderr.trim().slice(-1_000)}`);
        if (error) rej(new Error(`cent_publish.py failed: ${error.message}\n${stdout}\n${stderr}`));
        else res(JSON.parse(stdout));
      });
    });
  }

  // Publishes n = 1..count through `node`, alternating /api/publish (fetch), /publish/ and
  // pycent; returns the offsets (ids) the node answered, in publish order.
  async publishMix(node, channel, from, to, { withCent = false } = {}) {
    const ids = [];
    for (let n = from; n <= to; n++) {
      const kind = withCent ? n % 3 : n % 2;
      if (kind === 1) ids.push((await this.apiPublish(node, channel, { n })).offset);
      else if (kind === 0) ids.push(await this.simplePublish(node, channel, { n }));
      else ids.push((await this.cent(node, channel, { n })).offset);
    }
    return ids;
  }

  // centrifuge-python subscribed on `node` (cluster_python_sub.py): {ready, done, lines}.
  python(node, user, channel, count, { pb = false } = {}) {
    const label = `python ${user}@${node.name}${pb ? '(pb)' : ''}`;
    const args = [join(here, 'cluster_python_sub.py'), `${node.ws}/connection/websocket`, connToken(user), channel, String(count)];
    if (pb) args.push('--protobuf');
    const child = spawn(PYTHON, args, { cwd: here, stdio: ['ignore', 'pipe', 'pipe'] });
    this.children.push(child);
    const lines = [];
    let err = '';
    let buf = '';
    let onLine = () => {};
    const ready = new Promise((res, rej) => {
      onLine = (ev) => { if (ev.event === 'subscribed') res(ev); else if (ev.event !== 'publication') rej(new Error(`${label}: ${JSON.stringify(ev)}`)); };
      child.once('exit', (code) => rej(new Error(`${label} exited ${code} before subscribing:\n${err}`)));
    });
    ready.catch(() => {});
    child.stdout.setEncoding('utf8').on('data', (chunk) => {
      buf += chunk;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (!line.trim()) continue;
        this.note(`${label} ${line}`);
        const ev = JSON.parse(line);
        lines.push(ev);
        onLine(ev);
      }
    });
    child.stderr.setEncoding('utf8').on('data', (c) => { err = (err + c).slice(-4_000); });
    const done = new Promise((res) => child.once('exit', (code) => res({ code, err })));
    return { ready, done, lines };
  }

  dump() {
    return `\n--- exchange of "${this.name}" ---\n${this.log.join('\n')}\n${cluster ? cluster.logs() : ''}`;
  }

  async close() {
    for (const c of this.clients) { try { c.disconnect(); } catch { /* ignore */ } }
    await Promise.all(this.children.map((ch) => stopChild(ch, 2_000)));
  }
}

function clusterTest(name, fn) {
  test(name, { timeout: TEST_MS }, async () => {
    const env = new Env(name);
    try {
      await fn(env);
      if (process.env.CF_TRACE) console.log(env.dump());
    } catch (err) {
      throw new Error(`${err && err.message ? err.message : String(err)}${env.dump()}`, { cause: err });
    } finally {
      await env.close();
    }
  });
}

function once(emitter, event, { timeout = STEP_MS, filter = () => true, what = '' } = {}) {
  return new Promise((res, rej) => {
    const h = (ctx) => {
      if (!filter(ctx)) return;
      clearTimeout(t);
      emitter.removeListener(event, h);
      res(ctx);
    };
    const t = setTimeout(() => {
      emitter.removeListener(event, h);
      rej(new Error(`timed out after ${timeout} ms waiting for '${event}'${what ? ` (${what})` : ''}`));
    }, timeout);
    emitter.on(event, h);
  });
}

async function waitUntil(cond, what, timeout = STEP_MS) {
  const end = Date.now() + timeout;
  while (Date.now() < end) {
    if (await cond()) return;
    await sleep(10);
  }
  throw new Error(`timed out after ${timeout} ms waiting until ${what}`);
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

// ---------------------------------------------------------------------------------------
// Tests.

clusterTest('centrifuge-js (JSON and protobuf) on B and C gets, in order with the same offsets, what A publishes via /api/publish and /publish/', async (env) => {
  const { A, B, C } = cluster;
  const ch = 'chat:fan';
  const subs = {};
  for (const [key, node, pb] of [['json@B', B, false], ['pb@B', B, true], ['json@C', C, false], ['pb@C', C, true]]) {
    subs[key] = await env.subscriber(node, `u-${key}`, ch, { pb });
    assert.equal(subs[key].ctx.recoverable, true, `${key}: chat: forces recovery`);
  }
  const ids = await env.publishMix(A, ch, 1, 10);
  assert.deepEqual(ids, range(1, 10), 'A answered one sequence: offsets 1..10');
  for (const [key, s] of Object.entries(subs)) {
    await waitUntil(() => s.pubs.length >= 10, `${key} has 10 publications`);
  }
  await sleep(100); // nothing more (no duplicates) arrives
  for (const [key, s] of Object.entries(subs)) {
    assert.deepEqual(s.pubs.map((p) => p.offset), ids, `${key}: offsets in publish order, as A answered`);
    assert.deepEqual(s.pubs.map((p) => p.data), range(1, 10).map((n) => ({ n })), `${key}: payloads in order`);
  }
  // The stream position as each node's subscribers and history see it.
  const hB = await subs['json@B'].sub.history({ limit: -1 });
  const hC = await subs['pb@C'].sub.history({ limit: -1 });
  assert.equal(hB.offset, 10);
  assert.deepEqual([hC.offset, hC.epoch], [hB.offset, hB.epoch], 'one stream (offset, epoch) on B and C');
  assert.deepEqual(hC.publications.map((p) => dec(p.data).n), range(1, 10));
});

clusterTest('centrifuge-python (JSON and protobuf) on C gets what A publishes via /api/publish, /publish/ and pycent', async (env) => {
  const { A, C } = cluster;
  const ch = 'chat:py';
  const json = env.python(C, 'py-json', ch, 9);
  const pb = env.python(C, 'py-pb', ch, 9, { pb: true });
  const [rj, rp] = await Promise.all([json.ready, pb.ready]);
  assert.equal(rj.recoverable, true);
  assert.equal(rp.recoverable, true);
  const ids = await env.publishMix(A, ch, 1, 9, { withCent: true });
  assert.deepEqual(ids, range(1, 9));
  for (const [key, p] of [['json', json], ['protobuf', pb]]) {
    const { code, err } = await Promise.race([p.done, sleep(STEP_MS).then(() => ({ code: 'timeout', err: '' }))]);
    assert.equal(code, 0, `centrifuge-python (${key}) exited ${code}: ${err}`);
    const got = p.lines.filter((l) => l.event === 'publication');
    assert.deepEqual(got.map((l) => l.offset), ids, `centrifuge-python (${key}): offsets`);
    assert.deepEqual(got.map((l) => l.data), range(1, 9).map((n) => ({ n })), `centrifuge-python (${key}): payloads`);
  }
});

clusterTest('a client of B moves to C with `since` and recovers what it missed', async (env) => {
  const { A, B, C } = cluster;
  const ch = 'chat:move';
  const onB = await env.subscriber(B, 'mover', ch);
  assert.deepEqual(await env.publishMix(A, ch, 1, 3), [1, 2, 3]);
  await waitUntil(() => onB.pubs.length === 3, 'B got 1..3');
  const epoch = onB.ctx.streamPosition.epoch;
  assert.ok(epoch, 'the subscribe result carries the epoch');
  const gone = once(onB.c, 'disconnected');
  onB.c.disconnect();
  await gone;
  assert.deepEqual(await env.publishMix(A, ch, 4, 6), [4, 5, 6]);
  const last = onB.pubs[onB.pubs.length - 1].offset;
  const onC = await env.subscriber(C, 'mover', ch, { subOpts: { since: { offset: last, epoch } } });
  assert.equal(onC.ctx.wasRecovering, true);
  assert.equal(onC.ctx.recovered, true, 'recovered from the shared history');
  await waitUntil(() => onC.pubs.length === 3, 'C delivers the 3 missed publications');
  assert.deepEqual(onC.pubs.map((p) => [p.offset, p.data.n]), [[4, 4], [5, 5], [6, 6]]);
  await env.publishMix(A, ch, 7, 7);
  await waitUntil(() => onC.pubs.length === 4, 'then live on C');
  assert.deepEqual(onC.pubs[3].offset, 7);
  assert.equal(onB.pubs.length, 3, 'nothing reaches the disconnected client');
});

clusterTest('the same SDK instance, its node SIGKILLed, reconnects to C and recovers (recovered: true)', async (env) => {
  const { A, C } = cluster;
  const D = await cluster.addNode('D');
  const ch = 'chat:failover';
  const route = { url: D.ws };
  for (const pb of [false, true]) {
    route.url = D.ws;
    const s = await env.subscriber(D, `fo-${pb ? 'pb' : 'json'}`, `${ch}-${pb}`, { pb, route });
    s.subscribed = [];
    s.sub.on('subscribed', (ctx) => s.subscribed.push(ctx));
    assert.deepEqual(await env.publishMix(A, `${ch}-${pb}`, 1, 3), [1, 2, 3]);
    await waitUntil(() => s.pubs.length === 3, 'D delivered 1..3');
    env[pb ? 'pb' : 'json'] = s;
  }
  // Node D dies without a goodbye; reconnects go nowhere until 4..6 are published.
  route.url = `ws://127.0.0.1:${await freePort()}`;
  await D.kill();
  for (const pb of [false, true]) {
    await waitUntil(() => env[pb ? 'pb' : 'json'].c.state !== 'connected', 'the SDK noticed its node is gone');
    assert.deepEqual(await env.publishMix(A, `${ch}-${pb}`, 4, 6), [4, 5, 6]);
  }
  route.url = C.ws;
  for (const pb of [false, true]) {
    const s = env[pb ? 'pb' : 'json'];
    await waitUntil(() => s.subscribed.length === 1, `${pb ? 'protobuf' : 'JSON'}: resubscribed on C`);
    assert.equal(s.subscribed[0].wasRecovering, true);
    assert.equal(s.subscribed[0].recovered, true, `${pb ? 'protobuf' : 'JSON'}: recovered on C`);
    await waitUntil(() => s.pubs.length === 6, 'the missed 4..6 delivered');
    assert.deepEqual(s.pubs.map((p) => p.offset), range(1, 6));
    assert.deepEqual(s.pubs.map((p) => p.data.n), range(1, 6));
  }
  assert.ok(env.log.some((l) => l.includes(`dial ${C.ws}/connection/websocket`)), 'the SDK dialled C');
  cluster.nodes.splice(cluster.nodes.indexOf(D), 1);
});

clusterTest('presence through A lists the clients of B and C; join and leave cross nodes', async (env) => {
  const { A, B, C } = cluster;
  const ch = 'chat:room';
  const alice = await env.subscriber(B, 'alice', ch, { subOpts: { joinLeave: true } });
  const joins = [];
  const leaves = [];
  alice.sub.on('join', (ctx) => { if (ctx.info.user !== 'alice') joins.push(ctx.info); });
  alice.sub.on('leave', (ctx) => leaves.push(ctx.info));
  const bob = await env.subscriber(C, 'bob', ch, { pb: true, subOpts: { joinLeave: true } });
  const carol = await env.subscriber(C, 'carol', ch);
  await waitUntil(() => joins.length >= 2, 'alice on B sees bob and carol join on C');
  assert.deepEqual(
    joins.map((i) => [i.user, i.client]).sort(),
    [['bob', bob.client], ['carol', carol.client]].sort(),
    'join pushes name the clients of C',
  );
  const bobJoins = [];
  bob.sub.on('join', (ctx) => { if (ctx.info.user === 'dave') bobJoins.push(ctx.info); });
  const dave = await env.subscriber(A, 'dave', ch);
  await waitUntil(() => bobJoins.length >= 1 && joins.length >= 3, 'bob (protobuf, C) and alice (B) see dave join on A');
  assert.deepEqual([bobJoins[0].user, bobJoins[0].client], ['dave', dave.client]);

  const p = await env.api(A, 'presence', { channel: ch });
  const byClient = Object.fromEntries(Object.entries(p.presence).map(([k, v]) => [k, v.user]));
  assert.deepEqual(byClient, {
    [alice.client]: 'alice', [bob.client]: 'bob', [carol.client]: 'carol', [dave.client]: 'dave',
  }, 'A lists the clients of A, B and C');
  assert.deepEqual(await env.api(A, 'presence_stats', { channel: ch }), { num_clients: 4, num_users: 4 });
  // A client's own presence call on B reads the same.
  const own = await alice.sub.presence();
  assert.deepEqual(Object.keys(own.clients).sort(), Object.keys(byClient).sort());

  // Leaves: bob unsubscribes (C), carol's connection closes (C); alice on B sees both.
  bob.sub.unsubscribe();
  carol.c.disconnect();
  await waitUntil(() => leaves.length >= 2, 'alice on B sees bob and carol leave');
  assert.deepEqual(leaves.map((i) => [i.user, i.client]).sort(), [['bob', bob.client], ['carol', carol.client]].sort());
  await waitUntil(async () => Object.keys((await env.api(A, 'presence', { channel: ch })).presence).length === 2,
    'A no longer lists bob and carol');
  const after = await env.api(A, 'presence', { channel: ch });
  assert.deepEqual(Object.keys(after.presence).sort(), [alice.client, dave.client].sort());
  // A client publish on A reaches B with the publisher's info.
  await dave.c.publish(ch, { hi: 'from A' });
  await waitUntil(() => alice.pubs.length === 1, 'alice on B gets dave\'s publication');
  assert.deepEqual([alice.pubs[0].data, alice.pubs[0].info.user], [{ hi: 'from A' }, 'dave']);
});

clusterTest('server API user commands through A reach SDK clients of B and C: subscribe, unsubscribe, disconnect', async (env) => {
  const { A, B, C } = cluster;
  const onB = env.client(B, 'erin');
  const onC = env.client(C, 'erin', { pb: true });
  const subs = { B: [], C: [] };
  const pubs = { B: [], C: [] };
  const unsubs = { B: [], C: [] };
  for (const [k, c] of [['B', onB], ['C', onC]]) {
    c.on('subscribed', (ctx) => subs[k].push(ctx.channel));
    c.on('publication', (ctx) => pubs[k].push({ channel: ctx.channel, offset: ctx.offset, data: k === 'C' ? dec(ctx.data) : ctx.data }));
    c.on('unsubscribed', (ctx) => unsubs[k].push(ctx.channel));
  }
  await Promise.all([once(onB, 'connected'), once(onC, 'connected'), onB.connect(), onC.connect()]);
  await env.api(A, 'subscribe', { user: 'erin', channel: 'srv-news' });
  await waitUntil(() => subs.B.length === 1 && subs.C.length === 1, 'both connections of erin got the server-side subscription');
  assert.deepEqual([subs.B, subs.C], [['srv-news'], ['srv-news']]);
  const r = await env.apiPublish(A, 'srv-news', { s: 1 });
  await waitUntil(() => pubs.B.length === 1 && pubs.C.length === 1, 'the publication on A reaches both');
  for (const k of ['B', 'C']) assert.deepEqual(pubs[k], [{ channel: 'srv-news', offset: r.offset, data: { s: 1 } }], k);
  await env.api(A, 'unsubscribe', { user: 'erin', channel: 'srv-news' });
  await waitUntil(() => unsubs.B.length === 1 && unsubs.C.length === 1, 'both unsubscribed');
  const gone = [once(onB, 'disconnected'), once(onC, 'disconnected')];
  await env.api(A, 'disconnect', { user: 'erin' });
  const [dB, dC] = await Promise.all(gone);
  assert.deepEqual([dB.code, dC.code], [3503, 3503], 'force disconnect on B and C');
});
