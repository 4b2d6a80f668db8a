// Differential tests: the same client code against herald and against the real Centrifugo
// v6.9.1 (built by oracle.sh), with the same configuration, comparing everything observable.
//
// Each scenario drives raw WebSocket connections (the JSON client protocol, frames written by
// hand) and the HTTP server API, and records a transcript: every reply, push, close code and
// API response, in order. The two transcripts must be deeply equal after normalising only
// values that legitimately differ between two servers: client ids, epochs, timestamps, node
// ids and names, version strings (each replaced by a stable placeholder, so "the same client
// id twice" still has to hold on both). Nothing else is loosened.
//
// A scenario whose difference is known and explained in README ("Known differences") is
// listed in KNOWN with that reason: it must still differ (when the difference goes away the
// test fails, asking for the entry to be removed), and both transcripts are printed.
//
// Needs: HERALD_BIN (default ../../target/release/herald), CENTRIFUGO_BIN (default: what
// `oracle.sh build` prints). Results: target/centrifugo-diff/summary.md (and printed).
// Run: tests/centrifugo/diff.sh   (DIFF_SHOW=<part of a scenario name> prints both transcripts)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import http from 'node:http';
import WebSocket from 'ws';
import { Centrifuge } from 'centrifuge';

const here = dirname(fileURLToPath(import.meta.url));
const HERALD_BIN = process.env.HERALD_BIN || resolve(here, '../../target/release/herald');
const CENTRIFUGO_BIN = process.env.CENTRIFUGO_BIN
  || execFileSync('bash', [join(here, 'oracle.sh'), 'build'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
const OUT_DIR = resolve(here, '../../target/centrifugo-diff');
const STEP_MS = 3_000;
const SETTLE_MS = 250; // time allowed for pushes to arrive after an action

const SECRET = randomBytes(24).toString('hex');
const API_KEY = randomBytes(16).toString('hex');

// One configuration, in Centrifugo v6's shape, for both servers (herald reads the same keys).
const CONFIG = {
  client: {
    token: { hmac_secret_key: SECRET },
    allow_anonymous_connect_without_token: true,
    allowed_origins: ['http://allowed.example'],
    channel_limit: 5, // low, so that the limit is reached in a scenario
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
      { name: 'ro', allow_subscribe_for_client: true },
      { name: 'closed', allow_subscribe_for_client: false },
      { name: 'anon', allow_subscribe_for_client: true, allow_subscribe_for_anonymous: true },
    ],
  },
};

// ---------------------------------------------------------------------------------------
// Tokens.

const b64url = (s) => Buffer.from(s).toString('base64url');
function jwt(claims, secret = SECRET) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}
const nowS = () => Math.floor(Date.now() / 1000);
const connToken = (user, ttl = 3600, extra = {}) => jwt({ sub: user, exp: nowS() + ttl, ...extra });
const subToken = (user, channel, ttl = 3600) => jwt({ sub: user, channel, exp: nowS() + ttl });

// ---------------------------------------------------------------------------------------
// Servers.

function freePort() {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); });
    s.on('error', rej);
  });
}

async function waitTcp(port, child, logOf, what) {
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${what} exited (${child.exitCode}) before listening:\n${logOf()}`);
    const ok = await new Promise((r) => {
      const s = net.connect(port, '127.0.0.1', () => { s.destroy(); r(true); });
      s.on('error', () => r(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${what} not listening on ${port} within 15 s:\n${logOf()}`);
    await sleep(50);
  }
}

async function launch(name, bin, args, port) {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  const onData = (c) => { text = (text + c).slice(-100_000); };
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  await waitTcp(port, child, () => text, name);
  return { name, child, base: `http://127.0.0.1:${port}`, ws: `ws://127.0.0.1:${port}/connection/websocket`, log: () => text };
}

async function stop(srv) {
  const child = srv?.child;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  process.kill(child.pid, 'SIGTERM');
  const timer = setTimeout(() => { try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ } }, 3_000);
  await exited;
  clearTimeout(timer);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let tmpDir = '';
const servers = {}; // herald, centrifugo

before(async () => {
  tmpDir = mkdtempSync(join(os.tmpdir(), 'herald-cfdiff-'));
  const hPath = join(tmpDir, 'herald.json');
  writeFileSync(hPath, JSON.stringify(CONFIG, null, 2));
  const cPort = await freePort();
  const cPath = join(tmpDir, 'centrifugo.json');
  writeFileSync(cPath, JSON.stringify({
    ...CONFIG,
    http_server: { address: '127.0.0.1', port: cPort },
    // Off by default in Centrifugo; Herald always serves them.
    uni_websocket: { enabled: true },
    uni_sse: { enabled: true },
    uni_http_stream: { enabled: true },
    log: { level: 'error' },
  }, null, 2));
  const hPort = await freePort();
  servers.herald = await launch('herald', HERALD_BIN,
    ['--config', hPath, '--bind', '127.0.0.1', '--port', String(hPort), '--workers', '2'], hPort);
  servers.centrifugo = await launch('centrifugo', CENTRIFUGO_BIN, ['--config', cPath], cPort);
});

const results = []; // {name, verdict, note}

after(async () => {
  await stop(servers.herald);
  await stop(servers.centrifugo);
  if (proxied.servers) {
    await stop(proxied.servers.herald);
    await stop(proxied.servers.centrifugo);
    proxied.backend.closeAllConnections();
    proxied.backend.close();
  }
  if (tmpDir) rmSync(tmpDir, { recursive: true, force: true });
  mkdirSync(OUT_DIR, { recursive: true });
  const lines = [
    '| scenario | herald vs Centrifugo v6.9.1 |',
    '|---|---|',
    ...results.map((r) => `| ${r.name} | ${r.verdict}${r.note ? ` (${r.note})` : ''} |`),
  ];
  const kind = (v) => (v.startsWith('match except') ? 'match except known differences' : v.startsWith('known difference:') ? 'known difference (whole scenario)' : v);
  const counts = results.reduce((m, r) => { m[kind(r.verdict)] = (m[kind(r.verdict)] || 0) + 1; return m; }, {});
  lines.push('', Object.entries(counts).map(([k, v]) => `${v} ${k}`).join(', '));
  writeFileSync(join(OUT_DIR, 'summary.md'), `${lines.join('\n')}\n`);
  console.log(`\n${lines.join('\n')}`);
});

// ---------------------------------------------------------------------------------------
// A raw client: JSON protocol frames by hand.

class Raw {
  constructor(srv, rec, label, { origin, headers: extra = {} } = {}) {
    this.srv = srv;
    this.rec = rec;
    this.label = label;
    this.nextId = 1;
    this.waiters = new Map();
    this.pushes = [];
    this.closeInfo = null;
    const headers = origin ? { Origin: origin, ...extra } : { ...extra };
    this.ws = new WebSocket(srv.ws, { headers });
    this.httpStatus = null;
    this.opened = new Promise((res) => {
      this.ws.once('open', () => res(true));
      this.ws.once('unexpected-response', (_req, r) => { this.httpStatus = r.statusCode; res(false); });
      this.ws.once('error', () => res(false));
    });
    this.closed = new Promise((res) => {
      this.ws.on('close', (code, reason) => { this.closeInfo = { code, reason: reason.toString() }; res(this.closeInfo); });
    });
    this.ws.on('message', (data) => {
      for (const line of data.toString('utf8').split('\n')) {
        if (!line.trim()) continue;
        const m = JSON.parse(line);
        if (m.id && this.waiters.has(m.id)) { const w = this.waiters.get(m.id); this.waiters.delete(m.id); w(m); } else if (Object.keys(m).length === 0) {
          this.ws.send('{}'); // ping -> pong
        } else this.pushes.push(m);
      }
    });
  }

  // Sends one command; resolves with its reply (without id) or {timeout: true}.
  async cmd(body) {
    if (!(await this.opened)) return { notOpen: this.httpStatus };
    const id = this.nextId++;
    const reply = new Promise((res) => {
      this.waiters.set(id, res);
      setTimeout(() => { if (this.waiters.delete(id)) res({ id, timeout: true }); }, STEP_MS);
    });
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ id, ...body }));
    const r = await Promise.race([reply, this.closed.then(() => ({ id, closedBeforeReply: true }))]);
    const { id: _drop, ...rest } = r;
    return rest;
  }

  // Sends a command and records its reply in the transcript.
  async do(what, body) {
    const r = await this.cmd(body);
    this.rec(`${this.label} ${what}`, r);
    return r;
  }

  // Records the pushes received so far (after SETTLE_MS) and clears them.
  // byChannel: grouped by channel, order kept within each (Centrifugo's broadcast publishes
  // to its channels concurrently, so the order across channels is not defined).
  async drain(what = 'pushes', { byChannel = false } = {}) {
    await sleep(SETTLE_MS);
    const p = this.pushes.splice(0);
    if (byChannel) p.sort((x, y) => String(x.push?.channel).localeCompare(String(y.push?.channel)));
    this.rec(`${this.label} ${what}`, p);
    return p;
  }

  // Records whether (and how) the server closed the connection within ms.
  async closeState(ms = SETTLE_MS) {
    await Promise.race([this.closed, sleep(ms)]);
    this.rec(`${this.label} close`, this.closeInfo ?? 'open');
  }

  close() { try { this.ws.terminate(); } catch { /* closed */ } }
}

// ---------------------------------------------------------------------------------------
// Normalisation: only values that legitimately differ between two servers.

function normaliser() {
  const alias = new Map();
  const named = (kind, v) => {
    const k = `${kind}:${v}`;
    if (!alias.has(k)) alias.set(k, `<${kind}#${[...alias.keys()].filter((x) => x.startsWith(`${kind}:`)).length + 1}>`);
    return alias.get(k);
  };
  const walk = (v, key) => {
    if (Array.isArray(v)) return v.map((x) => walk(x, key));
    if (v && typeof v === 'object') {
      const o = {};
      for (const [k, x] of Object.entries(v)) {
        // Maps keyed by client id (presence results).
        const nk = (key === 'presence' || key === 'clients') && /^[0-9a-f-]{8,}$/i.test(k) ? named('client', k) : k;
        o[nk] = walk(x, k);
      }
      return o;
    }
    if (typeof v === 'string') {
      if (key === 'client') return named('client', v);
      if (key === 'epoch') return named('epoch', v);
      if (key === 'version' || key === 'node' || key === 'uid' || key === 'name') return v === '' ? v : `<${key}>`;
    }
    if (typeof v === 'number' && (key === 'time' || key === 'uptime' || key === 'timestamp')) return `<${key}>`;
    // Seconds left on a token: counts down with the clock, so a run that crosses a second
    // boundary sees one less. Compared to the nearest 10 s.
    if (typeof v === 'number' && key === 'ttl') return `~${Math.round(v / 10) * 10}`;
    return v;
  };
  return (x) => walk(x, '');
}

// ---------------------------------------------------------------------------------------
// Scenarios.

class Run {
  constructor(srv) { this.srv = srv; this.log = []; this.clients = []; this.norm = normaliser(); }
  // Records (and forgets) the requests the application backend got from this server so far:
  // path, JSON body and the forwarded Cookie header.
  backend(what = 'backend got') {
    const mine = proxied.seen.filter((x) => x.server === this.srv.name);
    proxied.seen = proxied.seen.filter((x) => x.server !== this.srv.name);
    this.rec(what, mine.map(({ path, body, cookie }) => ({ path, body, cookie })));
  }
  rec(what, v) { this.log.push([what, this.norm(v)]); }
  client(label, opts) { const c = new Raw(this.srv, (w, v) => this.rec(w, v), label, opts); this.clients.push(c); return c; }
  async api(method, body, { key = API_KEY, label = '' } = {}) {
    const headers = { 'Content-Type': 'application/json' };
    if (key !== null) headers['X-API-Key'] = key;
    const r = await fetch(`${this.srv.base}/api/${method}`, { method: 'POST', headers, body: typeof body === 'string' ? body : JSON.stringify(body), signal: AbortSignal.timeout(STEP_MS) });
    const text = await r.text();
    let json;
    try { json = JSON.parse(text); } catch { json = { notJson: text.trim() }; }
    this.rec(`api ${method}${label ? ` ${label}` : ''}`, { status: r.status, body: json });
    return json;
  }
  done() { for (const c of this.clients) c.close(); }
}

// Known differences, each explained in README ("Coming from Centrifugo", "Known
// differences"). Each is a rewrite of exactly that difference, applied to one side's
// transcript before the comparison; everything else in the scenario is still compared.
// A rewrite that changes nothing fails the test (the difference went away: remove it here
// and in README), and so does a scenario that still differs after its rewrites.
const walkAll = (v, f) => {
  if (Array.isArray(v)) return v.map((x) => walkAll(x, f));
  if (v && typeof v === 'object') return f(Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walkAll(x, f)])));
  return v;
};
const DIFFS = {
  pubEpoch: {
    why: 'Centrifugo puts the stream epoch on the publication with offset 1 (centrifuge node.go, "deliver epoch in the first publication"); Herald\'s publications carry no epoch',
    side: 'centrifugo',
    rewrite: (log) => walkAll(log, (o) => {
      if ('data' in o && o.offset === 1 && 'epoch' in o) { const { epoch: _e, ...rest } = o; return rest; }
      return o;
    }),
  },
  noHistoryOffset: {
    why: 'Herald sequences every channel in its hub (the simple endpoints\' own history, top-level history_size), so pushes on a namespace without history (here `news` and `px:`) carry an offset; Centrifugo\'s carry none',
    side: 'herald',
    rewrite: (log) => walkAll(log, (o) => {
      const noHistory = o.push?.channel === 'news' || String(o.push?.channel).startsWith('px:');
      if (noHistory && o.push.pub && 'offset' in o.push.pub) {
        const { offset: _o, ...pub } = o.push.pub;
        return { push: { ...o.push, pub } };
      }
      return o;
    }),
  },
  disconnectReason: {
    why: 'the server API\'s disconnect keeps the code but not a custom reason text: Herald closes with reason "disconnect" (close reasons are static strings in Herald)',
    side: 'centrifugo',
    rewrite: (log) => log.map(([w, v]) => (w === 'b close' && v?.reason === 'bye' ? [w, { ...v, reason: 'disconnect' }] : [w, v])),
  },
  infoFields: {
    why: 'info: Herald\'s node has no `metrics` object (Centrifugo\'s internal metric names) and adds `num_connections` (all transports)',
    side: 'both',
    rewrite: (log) => walkAll(log, (o) => {
      if ('uid' in o && 'num_clients' in o) {
        const { metrics: _m, num_connections: _n, ...rest } = o;
        return rest;
      }
      return o;
    }),
  },
  replyAfterOwnPush: {
    why: 'a client publish answered in the same frame batch: Centrifugo\'s in-memory engine delivers the publication to the publisher\'s own subscription before the publish reply; Herald replies first, then delivers (Centrifugo itself does not promise this order: with its Redis engine the reply comes first too)',
    side: 'centrifugo',
    rewrite: (log) => log.map(([w, v]) => {
      if (!Array.isArray(v)) return [w, v];
      const i = v.findIndex((m) => m.id === 3 && 'publish' in m);
      const j = v.findIndex((m) => m.push?.pub);
      if (i < 0 || j < 0 || j > i) return [w, v];
      const out = v.slice();
      const [reply] = out.splice(i, 1);
      out.splice(j, 0, reply);
      return [w, out];
    }),
  },
  uniConnect: {
    why: 'the connect result on the unidirectional transports: Centrifugo adds a `session` id and leaves out `pong` (false); Herald has no session and writes `"pong":false`',
    side: 'both',
    rewrite: (log) => walkAll(log, (o) => {
      if (o.connect && typeof o.connect === 'object' && 'client' in o.connect) {
        const { session: _s, ...c } = o.connect;
        if (c.pong === false) delete c.pong;
        return { ...o, connect: c };
      }
      return o;
    }),
  },
  pingCommand: {
    why: 'a `ping` command (protocol v1 SDKs): Herald answers `{"ping":{}}`; Centrifugo v6 disconnects with 3501 bad request',
    side: 'herald',
    rewrite: (log) => log.map(([w, v]) => {
      if (w === 'a ping' && v?.ping) return [w, { closedBeforeReply: true }];
      if (w === 'a close' && v === 'open') return [w, { code: 3501, reason: 'bad request' }];
      return [w, v];
    }),
  },
  unsubscribeAll: {
    why: 'the API\'s unsubscribe with an empty channel: Centrifugo sends the user an unsubscribe push without a channel (which SDKs cannot match to a subscription); Herald answers `{}` and does nothing',
    side: 'centrifugo',
    rewrite: (log) => log.map(([w, v]) => (Array.isArray(v) ? [w, v.filter((m) => !(m.push?.unsubscribe && !m.push.channel))] : [w, v])),
  },
  apiBodies: {
    why: 'bodies of refused API requests: Herald answers JSON saying what is wrong; Centrifugo an empty 401, Go\'s plain-text "404 page not found" and "Bad Request" (the HTTP statuses match, compared in their own scenario)',
    whole: true,
  },
};
const KNOWN = {
  'publish from client': ['pubEpoch'],
  'history: limit, since, reverse (client and API)': ['pubEpoch'],
  'recovery: recovered true, then false with a wrong epoch': ['pubEpoch'],
  'API: publish and broadcast': ['pubEpoch', 'noHistoryOffset'],
  'API: disconnect and unsubscribe': ['disconnectReason'],
  'API: info (shape)': ['infoFields'],
  'API: refused requests (body)': ['apiBodies'],
  'connect: token without exp, with info and channels (server-side subscriptions)': ['pubEpoch'],
  'connect: subs claim with options': ['pubEpoch'],
  'several commands in one frame': ['replyAfterOwnPush', 'pubEpoch'],
  'uni_websocket, uni_sse, uni_http_stream: connect and receive': ['pubEpoch', 'uniConnect'],
  'history: since beyond the top, limit beyond the size, unknown namespace': ['pubEpoch'],
  'ping command (protocol v1)': ['pingCommand'],
  'API: empty user (anonymous connections) and unsubscribe from every channel': ['unsubscribeAll'],
  'proxies: connect proxy result, error, disconnect, no result, expired, unknown channel': ['noHistoryOffset'],
  'proxies: subscribe, publish (data rewritten, refused, meta sent), rpc': ['noHistoryOffset'],
};

function scenario(name, fn, { withProxies = false } = {}) {
  test(name, async () => {
    const out = {};
    const pair = withProxies ? await proxyServers() : servers;
    for (const which of ['herald', 'centrifugo']) {
      const run = new Run(pair[which]);
      try { await fn(run, which); } finally { run.done(); }
      out[which] = run.log;
      await sleep(100);
    }
    if (process.env.DIFF_SHOW && name.includes(process.env.DIFF_SHOW)) {
      console.log(`# ${name}\n## herald\n${fmt(out.herald)}\n## centrifugo\n${fmt(out.centrifugo)}`);
    }
    const known = KNOWN[name] ?? [];
    if (isDeepStrictEqual(out.herald, out.centrifugo)) {
      results.push({ name, verdict: known.length ? 'now matches (remove from KNOWN)' : 'match' });
      if (known.length) assert.fail(`${name}: listed with known differences (${known.join(', ')}) but both servers agree; remove them from KNOWN and README`);
      return;
    }
    const adj = { herald: out.herald, centrifugo: out.centrifugo };
    for (const k of known) {
      const d = DIFFS[k];
      if (d.whole) {
        results.push({ name, verdict: `known difference: ${k}` });
        console.log(`# ${name}: known difference ${k} (${d.why})\n${diffText(out.herald, out.centrifugo)}`);
        return;
      }
      let changed = false;
      for (const side of d.side === 'both' ? ['herald', 'centrifugo'] : [d.side]) {
        const before = adj[side];
        adj[side] = d.rewrite(before);
        changed ||= !isDeepStrictEqual(before, adj[side]);
      }
      if (!changed) {
        results.push({ name, verdict: `known difference ${k} no longer seen` });
        assert.fail(`${name}: known difference ${k} not seen any more; remove it from KNOWN and README\n${diffText(out.herald, out.centrifugo)}`);
      }
    }
    const same = isDeepStrictEqual(adj.herald, adj.centrifugo); // key order is not compared
    results.push({ name, verdict: same ? (known.length ? `match except known: ${known.join(', ')}` : 'match') : 'DIFFERENT' });
    if (!same) assert.fail(`${name}: herald and Centrifugo differ${known.length ? ` (after the known ${known.join(', ')})` : ''}\n${diffText(adj.herald, adj.centrifugo)}`);
  });
}
// The transcript entries that differ, side by side.
function diffText(h, c) {
  const lines = [];
  for (let i = 0; i < Math.max(h.length, c.length); i++) {
    if (isDeepStrictEqual(h[i], c[i])) continue;
    lines.push(`  [${i}] herald:     ${h[i] ? `${h[i][0]}: ${JSON.stringify(h[i][1])}` : '(none)'}`);
    lines.push(`  [${i}] centrifugo: ${c[i] ? `${c[i][0]}: ${JSON.stringify(c[i][1])}` : '(none)'}`);
  }
  return lines.join('\n');
}
const fmt = (log) => log.map(([w, v]) => `  ${w}: ${JSON.stringify(v)}`).join('\n');

// --- connect

scenario('connect: valid token', async (r) => {
  const a = r.client('a');
  await a.do('connect', { connect: { token: connToken('u1', 3600, { info: { n: 1 } }), name: 'diff' } });
  await a.closeState();
});

scenario('connect: expired token (109)', async (r) => {
  const a = r.client('a');
  await a.do('connect', { connect: { token: connToken('u1', -60) } });
  await a.closeState();
});

scenario('connect: bad signature (3500)', async (r) => {
  const a = r.client('a');
  await a.do('connect', { connect: { token: jwt({ sub: 'u1', exp: nowS() + 60 }, 'wrong-secret') } });
  await a.closeState(1000);
});

scenario('connect: anonymous (no token)', async (r) => {
  const a = r.client('a');
  await a.do('connect', { connect: {} });
  await a.closeState();
});

scenario('connect: malformed token (3500)', async (r) => {
  const a = r.client('a');
  await a.do('connect', { connect: { token: 'not.a.jwt' } });
  await a.closeState(1000);
});

scenario('connect: command before connect', async (r) => {
  const a = r.client('a');
  await a.do('subscribe', { subscribe: { channel: 'chat:x' } });
  await a.closeState(1000);
});

scenario('connect: allowed and foreign Origin', async (r) => {
  const a = r.client('a', { origin: 'http://allowed.example' });
  r.rec('allowed origin opened', await a.opened);
  const b = r.client('b', { origin: 'http://evil.example' });
  r.rec('foreign origin opened', await b.opened);
  r.rec('foreign origin HTTP status', b.httpStatus);
});

// --- subscribe on each permission path

async function connected(r, label, user = 'u1') {
  const c = r.client(label);
  await c.do('connect', { connect: user === null ? {} : { token: connToken(user) } });
  return c;
}

scenario('subscribe: allowed namespace with history (positioned/recoverable)', async (r) => {
  const a = await connected(r, 'a');
  await a.do('subscribe chat:s1', { subscribe: { channel: 'chat:s1' } });
  await a.do('subscribe chat:s1 again (105)', { subscribe: { channel: 'chat:s1' } });
  await a.do('subscribe news (no namespace)', { subscribe: { channel: 'news' } });
  await a.closeState();
});

scenario('subscribe: permission denied (103) and unknown namespace (102)', async (r) => {
  const a = await connected(r, 'a');
  await a.do('subscribe closed:x', { subscribe: { channel: 'closed:x' } });
  await a.do('subscribe nope:x', { subscribe: { channel: 'nope:x' } });
  await a.do('subscribe empty channel', { subscribe: { channel: '' } });
  await a.closeState();
});

for (const m of ['publish', 'history', 'presence', 'unsubscribe']) {
  scenario(`${m} with an empty channel`, async (r) => {
    const a = await connected(r, 'a');
    await a.do(`${m} ''`, { [m]: m === 'publish' ? { channel: '', data: {} } : { channel: '' } });
    await a.closeState();
  });
}

scenario('subscribe: subscription token (closed namespace, private channel)', async (r) => {
  const a = await connected(r, 'a');
  await a.do('subscribe $chat:p without token', { subscribe: { channel: '$chat:p' } });
  await a.do('subscribe $chat:p with token', { subscribe: { channel: '$chat:p', token: subToken('u1', '$chat:p') } });
  await a.do('subscribe closed:y with token', { subscribe: { channel: 'closed:y', token: subToken('u1', 'closed:y') } });
  await a.do('subscribe closed:z with token for another user', { subscribe: { channel: 'closed:z', token: subToken('u2', 'closed:z') } });
  await a.do('subscribe closed:w with token for another channel', { subscribe: { channel: 'closed:w', token: subToken('u1', 'closed:other') } });
  await a.do('subscribe closed:v with expired token', { subscribe: { channel: 'closed:v', token: subToken('u1', 'closed:v', -60) } });
  await a.closeState();
});

scenario('subscribe: anonymous', async (r) => {
  const a = await connected(r, 'a', null);
  await a.do('subscribe chat:x', { subscribe: { channel: 'chat:x' } });
  await a.do('subscribe anon:x', { subscribe: { channel: 'anon:x' } });
  await a.closeState();
});

scenario('unsubscribe', async (r) => {
  const a = await connected(r, 'a');
  await a.do('subscribe chat:u', { subscribe: { channel: 'chat:u' } });
  await a.do('unsubscribe chat:u', { unsubscribe: { channel: 'chat:u' } });
  await a.do('unsubscribe chat:u again', { unsubscribe: { channel: 'chat:u' } });
  await a.do('publish chat:u after unsubscribe', { publish: { channel: 'chat:u', data: { x: 1 } } });
});

// --- publish from client

scenario('publish from client', async (r) => {
  const a = await connected(r, 'a');
  const b = await connected(r, 'b', 'u2');
  await a.do('subscribe chat:p1', { subscribe: { channel: 'chat:p1' } });
  await b.do('subscribe chat:p1', { subscribe: { channel: 'chat:p1' } });
  await a.do('publish chat:p1', { publish: { channel: 'chat:p1', data: { text: 'hi' } } });
  await a.drain();
  await b.drain();
  await a.do('publish chat:notsub (not subscribed)', { publish: { channel: 'chat:notsub', data: { x: 1 } } });
  await a.do('subscribe ro:x', { subscribe: { channel: 'ro:x' } });
  await a.do('publish ro:x (no permission)', { publish: { channel: 'ro:x', data: { x: 1 } } });
  await a.do('publish nope:x (unknown namespace)', { publish: { channel: 'nope:x', data: { x: 1 } } });
});

// --- history

scenario('history: limit, since, reverse (client and API)', async (r) => {
  for (let i = 1; i <= 5; i++) await r.api('publish', { channel: 'chat:h1', data: { n: i } });
  const a = await connected(r, 'a');
  await a.do('history before subscribe', { history: { channel: 'chat:h1', limit: 10 } });
  const s = await a.do('subscribe chat:h1', { subscribe: { channel: 'chat:h1' } });
  await a.do('history limit 2', { history: { channel: 'chat:h1', limit: 2 } });
  await a.do('history limit 0 (position only)', { history: { channel: 'chat:h1' } });
  await a.do('history limit -1 (all)', { history: { channel: 'chat:h1', limit: -1 } });
  const epoch = s.subscribe?.epoch;
  await a.do('history since offset 2', { history: { channel: 'chat:h1', limit: 10, since: { offset: 2, epoch } } });
  await a.do('history reverse limit 2', { history: { channel: 'chat:h1', limit: 2, reverse: true } });
  await a.do('history since offset 4 reverse', { history: { channel: 'chat:h1', limit: 10, since: { offset: 4, epoch }, reverse: true } });
  await a.do('history since wrong epoch', { history: { channel: 'chat:h1', limit: 10, since: { offset: 2, epoch: 'xyz' } } });
  await a.do('history ro:x (no history)', { history: { channel: 'ro:x', limit: 10 } });
  await r.api('history', { channel: 'chat:h1', limit: 2 });
  await r.api('history', { channel: 'chat:h1', limit: 2, reverse: true });
  await r.api('history', { channel: 'chat:h1', limit: 10, since: { offset: 3, epoch } });
  await r.api('history', { channel: 'chat:h1' }, { label: 'no limit' });
  await r.api('history', { channel: 'ro:x', limit: 10 }, { label: 'no history' });
  await r.api('history_remove', { channel: 'chat:h1' });
  await r.api('history', { channel: 'chat:h1', limit: 10 }, { label: 'after remove' });
});

// --- recovery

scenario('recovery: recovered true, then false with a wrong epoch', async (r) => {
  const a = await connected(r, 'a');
  const s = await a.do('subscribe chat:r1', { subscribe: { channel: 'chat:r1', recover: true } });
  await r.api('publish', { channel: 'chat:r1', data: { n: 1 } });
  await a.drain();
  a.close();
  await sleep(100);
  const { offset = 0, epoch } = s.subscribe ?? {};
  await r.api('publish', { channel: 'chat:r1', data: { n: 2 } });
  await r.api('publish', { channel: 'chat:r1', data: { n: 3 } });
  const b = await connected(r, 'b');
  await b.do('subscribe chat:r1 recover from the last offset seen', { subscribe: { channel: 'chat:r1', recover: true, offset: offset + 1, epoch } });
  await b.drain();
  const c = await connected(r, 'c');
  await c.do('subscribe chat:r1 recover with a wrong epoch', { subscribe: { channel: 'chat:r1', recover: true, offset: 1, epoch: 'wrong' } });
  await c.drain();
  const d = await connected(r, 'd');
  await d.do('subscribe chat:r1 recover from offset 0', { subscribe: { channel: 'chat:r1', recover: true, offset: 0, epoch } });
});

// --- presence and join/leave

scenario('presence and presence_stats (client and API)', async (r) => {
  const a = r.client('a');
  await a.do('connect', { connect: { token: connToken('u1', 3600, { info: { role: 'x' } }) } });
  const b = await connected(r, 'b', 'u2');
  await a.do('presence before subscribe (103)', { presence: { channel: 'chat:pr' } });
  await a.do('subscribe chat:pr', { subscribe: { channel: 'chat:pr' } });
  await b.do('subscribe chat:pr', { subscribe: { channel: 'chat:pr' } });
  await a.do('presence', { presence: { channel: 'chat:pr' } });
  await a.do('presence_stats', { presence_stats: { channel: 'chat:pr' } });
  await a.do('subscribe ro:pr', { subscribe: { channel: 'ro:pr' } });
  await a.do('presence ro:pr (not available)', { presence: { channel: 'ro:pr' } });
  await r.api('presence', { channel: 'chat:pr' });
  await r.api('presence_stats', { channel: 'chat:pr' });
  await r.api('presence', { channel: 'ro:pr' }, { label: 'not available' });
});

scenario('join and leave pushes', async (r) => {
  const a = await connected(r, 'a');
  await a.do('subscribe chat:jl (join_leave)', { subscribe: { channel: 'chat:jl', join_leave: true } });
  const b = r.client('b');
  await b.do('connect', { connect: { token: connToken('u2', 3600, { info: { n: 2 } }) } });
  await b.do('subscribe chat:jl', { subscribe: { channel: 'chat:jl' } });
  await a.drain('pushes after b joined');
  await b.do('unsubscribe chat:jl', { unsubscribe: { channel: 'chat:jl' } });
  await a.drain('pushes after b left');
  await b.do('subscribe chat:jl again', { subscribe: { channel: 'chat:jl' } });
  await a.drain('pushes after b joined again');
  b.close();
  await a.drain('pushes after b disconnected');
  await b.drain('b pushes');
});

// --- server API

scenario('API: publish and broadcast', async (r) => {
  const a = await connected(r, 'a');
  await a.do('subscribe chat:api', { subscribe: { channel: 'chat:api' } });
  await a.do('subscribe news', { subscribe: { channel: 'news' } });
  await r.api('publish', { channel: 'chat:api', data: { n: 1 } });
  await r.api('publish', { channel: 'news', data: { n: 2 }, tags: { k: 'v' } });
  await r.api('publish', { channel: 'chat:api', data: { n: 3 }, idempotency_key: 'k1' });
  await r.api('publish', { channel: 'chat:api', data: { n: 3 }, idempotency_key: 'k1' }, { label: 'same idempotency key' });
  await r.api('publish', { channel: 'chat:api', data: { n: 4 }, skip_history: true });
  await a.drain();
  await r.api('broadcast', { channels: ['chat:api', 'news', 'chat:other'], data: { b: 1 } });
  await a.drain('pushes after broadcast', { byChannel: true });
  await r.api('publish', { channel: 'nope:x', data: {} }, { label: 'unknown namespace' });
  await r.api('publish', { channel: '', data: {} }, { label: 'empty channel' });
  await r.api('publish', { channel: 'chat:x' }, { label: 'no data' });
  await r.api('broadcast', { channels: ['chat:x', 'nope:y'], data: { b: 1 } }, { label: 'one unknown namespace' });
  await r.api('broadcast', { channels: [], data: { b: 1 } }, { label: 'no channels' });
});

// The HTTP status of refused requests, then (separately) their bodies.
async function apiErrors(r, recordBody) {
  const calls = [
    ['publish', { channel: 'chat:x', data: {} }, { key: null, label: 'no key' }],
    ['publish', { channel: 'chat:x', data: {} }, { key: 'wrong', label: 'wrong key' }],
    ['nosuchmethod', {}, { label: 'unknown method' }],
    ['publish', 'not json', { label: 'body not JSON' }],
    ['publish', '{"channel": 5}', { label: 'wrong type' }],
    ['publish', '[1]', { label: 'array body' }],
  ];
  for (const [m, body, opts] of calls) {
    const sub = new Run(r.srv);
    await sub.api(m, body, opts);
    const [[what, v]] = sub.log;
    r.rec(what, recordBody ? v : { status: v.status });
  }
}
scenario('API: refused requests (HTTP status)', (r) => apiErrors(r, false));
scenario('API: refused requests (body)', (r) => apiErrors(r, true));

scenario('API: channels', async (r) => {
  const a = await connected(r, 'a');
  const b = await connected(r, 'b', 'u2');
  await a.do('subscribe chat:chan1', { subscribe: { channel: 'chat:chan1' } });
  await b.do('subscribe chat:chan1', { subscribe: { channel: 'chat:chan1' } });
  await a.do('subscribe chat:chan2', { subscribe: { channel: 'chat:chan2' } });
  await r.api('channels', { pattern: 'chat:chan*' });
  await r.api('channels', { pattern: 'chat:chan2' }, { label: 'exact' });
  await r.api('channels', { pattern: 'nothing*' }, { label: 'no match' });
});

// info describes the nodes (ids, names, versions, counters, metrics): its shape is compared,
// and the counters that follow from this test's own connections.
const shape = (v) => (Array.isArray(v) ? v.map(shape) : v && typeof v === 'object'
  ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, shape(v[k])])) : typeof v);
scenario('API: info (shape)', async (r) => {
  const a = await connected(r, 'a');
  await a.do('subscribe chat:i', { subscribe: { channel: 'chat:i' } });
  const headers = { 'Content-Type': 'application/json', 'X-API-Key': API_KEY };
  const resp = await fetch(`${r.srv.base}/api/info`, { method: 'POST', headers, body: '{}' });
  const j = await resp.json();
  r.rec('info status', resp.status);
  r.rec('info shape', shape(j));
  // The counters themselves are not compared: Centrifugo's are a periodic snapshot that may
  // still count the previous scenario's clients.
  r.rec('info nodes', j.result?.nodes?.length);
});

scenario('API: disconnect and unsubscribe', async (r) => {
  const a = await connected(r, 'a', 'victim');
  await a.do('subscribe chat:d1', { subscribe: { channel: 'chat:d1' } });
  await a.do('subscribe news', { subscribe: { channel: 'news' } });
  await r.api('unsubscribe', { user: 'victim', channel: 'chat:d1' });
  await a.drain('pushes after API unsubscribe');
  await r.api('subscribe', { user: 'victim', channel: 'chat:d2' });
  await a.drain('pushes after API subscribe');
  await r.api('disconnect', { user: 'victim' });
  await a.drain('pushes after API disconnect');
  await a.closeState(1000);
  await r.api('disconnect', { user: 'nobody', disconnect: { code: 4000, reason: 'custom' } }, { label: 'unknown user' });
  const b = await connected(r, 'b', 'victim2');
  await r.api('disconnect', { user: 'victim2', disconnect: { code: 4500, reason: 'bye' } }, { label: 'custom code' });
  await b.closeState(1000);
});

scenario('API: refresh and batch', async (r) => {
  await r.api('refresh', { user: 'nobody', expired: true });
  await r.api('batch', { commands: [{ publish: { channel: 'chat:b', data: { n: 1 } } }, { publish: { channel: 'nope:b', data: {} } }] });
});

// --- client-side misc

scenario('client: rpc, send, ping, refresh without proxy', async (r) => {
  const a = await connected(r, 'a');
  await a.do('rpc', { rpc: { method: 'm', data: {} } });
  await a.do('empty command', {});
  await a.closeState(500);
});

// --- tokens: claims beyond sub/exp, refresh

scenario('connect: token not yet valid (nbf) and audience-less', async (r) => {
  const a = r.client('a');
  await a.do('connect', { connect: { token: jwt({ sub: 'u1', exp: nowS() + 3600, nbf: nowS() + 600 }) } });
  await a.closeState(1000);
});

scenario('connect: token without exp, with info and channels (server-side subscriptions)', async (r) => {
  const a = r.client('a');
  await a.do('connect', { connect: { token: jwt({ sub: 'u1', info: { k: 1 }, channels: ['chat:srv', 'news'] }) } });
  await r.api('publish', { channel: 'chat:srv', data: { n: 1 } });
  await a.drain();
});

scenario('connect: subs claim with options', async (r) => {
  const a = r.client('a');
  await a.do('connect', { connect: { token: jwt({ sub: 'u1', exp: nowS() + 3600, subs: { 'chat:subs': { info: { s: 1 } } } }) } });
  await r.api('publish', { channel: 'chat:subs', data: { n: 1 } });
  await a.drain();
});

scenario('refresh and sub_refresh', async (r) => {
  const a = r.client('a');
  await a.do('connect', { connect: { token: connToken('u1', 100) } });
  await a.do('refresh with a new token', { refresh: { token: connToken('u1', 200) } });
  await a.do('refresh with another user\'s token', { refresh: { token: connToken('u2', 200) } });
  await a.closeState(500);
  const b = r.client('b');
  await b.do('connect', { connect: { token: connToken('u1', 100) } });
  await b.do('subscribe closed:sr', { subscribe: { channel: 'closed:sr', token: subToken('u1', 'closed:sr', 100) } });
  await b.do('sub_refresh', { sub_refresh: { channel: 'closed:sr', token: subToken('u1', 'closed:sr', 300) } });
  await b.do('sub_refresh not subscribed', { sub_refresh: { channel: 'closed:other', token: subToken('u1', 'closed:other', 300) } });
  await b.do('refresh with a bad signature', { refresh: { token: jwt({ sub: 'u1', exp: nowS() + 60 }, 'wrong') } });
  await b.closeState(1000);
});

scenario('several commands in one frame', async (r) => {
  const a = r.client('a');
  await a.opened;
  const t = connToken('u1');
  a.ws.send([
    JSON.stringify({ id: 1, connect: { token: t } }),
    JSON.stringify({ id: 2, subscribe: { channel: 'chat:multi' } }),
    JSON.stringify({ id: 3, publish: { channel: 'chat:multi', data: { x: 1 } } }),
  ].join('\n'));
  await sleep(SETTLE_MS);
  r.rec('replies and pushes', a.pushes.splice(0));
  // Replies to commands sent in one frame come back; ids 1..3 land in waiters only if
  // registered, so they are in `pushes` here, in the order received.
});

// --- the centrifuge SDK (npm, JSON protocol): what an application sees

const once = (emitter, ev, ms = STEP_MS) => new Promise((res) => {
  const t = setTimeout(() => res({ timeout: ev }), ms);
  emitter.once(ev, (ctx) => { clearTimeout(t); res(ctx); });
});
const settle = (p) => p.then((v) => ({ ok: v }), (e) => ({ err: { code: e?.code, message: e?.message } }));

scenario('centrifuge-js: connect, subscribe, publish, history, presence, recover', async (r) => {
  const c = new Centrifuge(r.srv.ws, { websocket: WebSocket, token: connToken('sdk-user'), minReconnectDelay: 50, maxReconnectDelay: 200, timeout: STEP_MS });
  r.clients.push({ close: () => c.disconnect() });
  const connected = once(c, 'connected');
  c.connect();
  const cc = await connected;
  r.rec('connected', { transport: cc.transport, client: cc.client, data: cc.data });
  const sub = c.newSubscription('chat:sdk', { joinLeave: true });
  const pubs = [];
  sub.on('publication', (ctx) => pubs.push({ channel: ctx.channel, data: ctx.data, info: ctx.info, offset: ctx.offset, tags: ctx.tags }));
  const subscribed = once(sub, 'subscribed');
  sub.subscribe();
  const sc = await subscribed;
  r.rec('subscribed', { ...sc, streamPosition: sc.streamPosition && { ...sc.streamPosition } });
  r.rec('publish', await settle(sub.publish({ hello: 'world' })));
  await r.api('publish', { channel: 'chat:sdk', data: { from: 'api' }, tags: { t: '1' } });
  await sleep(SETTLE_MS);
  r.rec('publications', pubs.splice(0));
  r.rec('history', await settle(sub.history({ limit: 10 })));
  r.rec('history reverse since', await settle(sub.history({ limit: 1, reverse: true })));
  r.rec('presence', await settle(sub.presence()));
  r.rec('presenceStats', await settle(sub.presenceStats()));
  r.rec('client publish to ro:x', await settle(c.publish('ro:x', { n: 1 })));
  r.rec('rpc', await settle(c.rpc('m', {})));
  // A dropped connection: the SDK reconnects and recovers what it missed.
  const resubscribed = once(sub, 'subscribed', 8_000);
  const t = c._transport; // the SDK's current transport; closed from outside
  await r.api('publish', { channel: 'chat:sdk', data: { n: 'before drop' } });
  await sleep(100);
  t._transport.terminate();
  await r.api('publish', { channel: 'chat:sdk', data: { n: 'while away' } });
  const rc = await resubscribed;
  r.rec('resubscribed', { wasRecovering: rc.wasRecovering, recovered: rc.recovered, hasRecoveredPublications: rc.hasRecoveredPublications });
  await sleep(SETTLE_MS);
  r.rec('publications around the drop', pubs.splice(0));
  // A refused subscribe: the SDK unsubscribes with the server's code (103 is not temporary).
  const closedSub = c.newSubscription('closed:sdk');
  const failed = once(closedSub, 'unsubscribed');
  closedSub.subscribe();
  const fe = await failed;
  r.rec('subscribe closed:sdk', fe.timeout ? fe : { code: fe.code, reason: fe.reason, state: closedSub.state });
  c.disconnect();
});

// --- unidirectional transports

async function readStream(url, init, ms) {
  const ac = new AbortController();
  const res = await fetch(url, { ...init, signal: ac.signal });
  const out = { status: res.status, contentType: (res.headers.get('content-type') || '').split(';')[0], text: '' };
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  const stopAt = Date.now() + ms;
  try {
    for (;;) {
      const left = stopAt - Date.now();
      if (left <= 0) break;
      const r = await Promise.race([reader.read(), sleep(left).then(() => ({ timeout: true }))]);
      if (r.timeout || r.done) break;
      out.text += dec.decode(r.value, { stream: true });
    }
  } finally { ac.abort(); }
  return out;
}

scenario('uni_websocket, uni_sse, uni_http_stream: connect and receive', async (r) => {
  const base = r.srv.base;
  const token = jwt({ sub: 'uni', exp: nowS() + 3600, channels: ['chat:uni'] });
  const connect = JSON.stringify({ token });
  // uni_websocket
  const ws = new WebSocket(`${base.replace('http', 'ws')}/connection/uni_websocket?cf_connect=${encodeURIComponent(connect)}`);
  const got = [];
  ws.on('message', (d) => { for (const l of d.toString().split('\n')) if (l.trim()) got.push(JSON.parse(l)); });
  await new Promise((res) => { ws.once('open', res); ws.once('error', res); });
  await sleep(SETTLE_MS);
  await r.api('publish', { channel: 'chat:uni', data: { n: 1 } });
  await sleep(SETTLE_MS);
  ws.terminate();
  r.rec('uni_websocket messages', got);
  // uni_sse (GET with cf_connect) and uni_http_stream (POST body): the stream's opening
  const sseP = readStream(`${base}/connection/uni_sse?cf_connect=${encodeURIComponent(connect)}`, {}, 600);
  const hsP = readStream(`${base}/connection/uni_http_stream`, { method: 'POST', body: connect, headers: { 'Content-Type': 'application/json' } }, 600);
  await sleep(300);
  await r.api('publish', { channel: 'chat:uni', data: { n: 2 } });
  const [sse, hs] = await Promise.all([sseP, hsP]);
  const parse = (l) => { try { return JSON.parse(l); } catch { return { notJson: l }; } };
  const sseData = sse.text.split('\n').filter((l) => l.startsWith('data:')).map((l) => parse(l.slice(5)));
  r.rec('uni_sse', { status: sse.status, contentType: sse.contentType, data: sseData });
  r.rec('uni_http_stream', { status: hs.status, contentType: hs.contentType, data: hs.text.split('\n').filter((l) => l.trim()).map(parse) });
});

// --- more edges

scenario('history: since beyond the top, limit beyond the size, unknown namespace', async (r) => {
  for (let i = 1; i <= 3; i++) await r.api('publish', { channel: 'chat:h2', data: { n: i } });
  const a = await connected(r, 'a');
  const s = await a.do('subscribe chat:h2', { subscribe: { channel: 'chat:h2' } });
  const epoch = s.subscribe?.epoch;
  await a.do('history since offset 10 (beyond the top)', { history: { channel: 'chat:h2', limit: 10, since: { offset: 10, epoch } } });
  await a.do('history limit 1000', { history: { channel: 'chat:h2', limit: 1000 } });
  await a.do('history since offset 0 reverse', { history: { channel: 'chat:h2', limit: 2, since: { offset: 0, epoch }, reverse: true } });
  await a.do('history nope:x', { history: { channel: 'nope:x', limit: 1 } });
  await r.api('history', { channel: 'nope:x', limit: 1 }, { label: 'unknown namespace' });
  await r.api('history', { channel: 'chat:h2', limit: 10, since: { offset: 2, epoch: 'wrong' } }, { label: 'wrong epoch' });
});

scenario('API: subscribe, unsubscribe, presence, channels errors', async (r) => {
  await r.api('subscribe', { user: 'x', channel: 'nope:x' }, { label: 'unknown namespace' });
  await r.api('subscribe', { channel: 'chat:x' }, { label: 'no user' });
  await r.api('unsubscribe', { user: 'x', channel: '' }, { label: 'empty channel' });
  await r.api('presence', { channel: 'nope:x' }, { label: 'unknown namespace' });
  await r.api('presence_stats', { channel: '' }, { label: 'empty channel' });
  await r.api('history_remove', { channel: 'nope:x' }, { label: 'unknown namespace' });
  await r.api('channels', {}, { label: 'no pattern, nothing subscribed' });
  await r.api('disconnect', {}, { label: 'no user' });
});

scenario('user-limited channel, presence_stats not subscribed, publish without data', async (r) => {
  const a = await connected(r, 'a');
  await a.do('subscribe chat:dm#u1,u2 (not allowed in chat)', { subscribe: { channel: 'chat:dm#u1,u2' } });
  await a.do('presence_stats not subscribed', { presence_stats: { channel: 'chat:none' } });
  await a.do('publish without data', { publish: { channel: 'chat:none' } });
  await a.closeState(500);
});

scenario('ping command (protocol v1)', async (r) => {
  const a = await connected(r, 'a');
  await a.do('ping', { ping: {} });
  await a.closeState(500);
});

scenario('API: empty user (anonymous connections) and unsubscribe from every channel', async (r) => {
  const anon = await connected(r, 'anon', null);
  await anon.do('subscribe anon:e', { subscribe: { channel: 'anon:e' } });
  const u = await connected(r, 'u', 'eve');
  await u.do('subscribe chat:e1', { subscribe: { channel: 'chat:e1' } });
  await u.do('subscribe chat:e2', { subscribe: { channel: 'chat:e2' } });
  await r.api('unsubscribe', { user: 'eve', channel: '' }, { label: 'empty channel' });
  await u.drain('u pushes after unsubscribe with an empty channel');
  await r.api('subscribe', { user: '', channel: 'anon:e2' }, { label: 'empty user' });
  await anon.drain('anon pushes after subscribe with an empty user');
  await r.api('disconnect', { user: '' }, { label: 'empty user' });
  await anon.closeState(1000);
  await u.closeState(300);
});

scenario('join/leave without asking (no join_leave in subscribe)', async (r) => {
  const a = await connected(r, 'a');
  await a.do('subscribe chat:jl2', { subscribe: { channel: 'chat:jl2' } });
  const b = await connected(r, 'b', 'u2');
  await b.do('subscribe chat:jl2', { subscribe: { channel: 'chat:jl2' } });
  await a.drain('a pushes (did not ask for join/leave)');
});

scenario('channel limit (client.channel_limit 5)', async (r) => {
  const a = await connected(r, 'a');
  for (let i = 1; i <= 6; i++) await a.do(`subscribe chat:lim${i}`, { subscribe: { channel: `chat:lim${i}` } });
  await a.closeState(500);
});

// --- proxies to the application backend (issue #13): a second herald/Centrifugo pair whose
// proxies point at one node backend; each server's requests are told apart by path prefix,
// recorded (body, forwarded Cookie) and compared like replies.

const proxied = { servers: null, backend: null, seen: [] };

function backendAnswer(path, b) {
  const d = b.data || {};
  switch (path) {
    case '/connect':
      switch (d.mode) {
        case 'error': return { error: { code: 4000, message: 'custom refusal' } };
        case 'temporary': return { error: { code: 4001, message: 'later', temporary: true } };
        case 'disconnect': return { disconnect: { code: 4501, reason: 'not welcome' } };
        case 'none': return {};
        case 'expired': return { result: { user: 'x', expire_at: 1000 } };
        case 'unknown': return { result: { user: 'x', channels: ['nope:x'] } };
        default: return { result: { user: `p-${d.user}`, info: { i: 1 }, data: { hello: d.user },
          channels: ['px:news'], subs: { 'px:subs': { info: { s: 1 }, data: { d: 1 } } }, meta: { m: 1 } } };
      }
    case '/subscribe':
      if (b.channel === 'px:deny') return { error: { code: 403, message: 'forbidden' } };
      if (b.channel === 'px:kick') return { disconnect: { code: 4403, reason: 'kicked' } };
      return { result: { info: { r: 1 }, data: { welcome: b.channel } } };
    case '/publish':
      if (d.text === 'bad') return { error: { code: 1001, message: 'not allowed' } };
      return { result: { data: { ...d, checked: true } } };
    case '/rpc':
      if (b.method === 'px:fail') return { error: { code: 1500, message: 'failed' } };
      return { result: { data: { method: b.method, echo: b.data ?? null } } };
    default: return {};
  }
}

async function proxyServers() {
  if (proxied.servers) return proxied.servers;
  proxied.backend = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      const [, server, ...rest] = req.url.split('/');
      const path = `/${rest.join('/')}`;
      const b = JSON.parse(body || '{}');
      proxied.seen.push({ server, path, body: b, cookie: req.headers.cookie ?? null });
      if (path === '/status') { res.writeHead(500); res.end('oops'); return; }
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(backendAnswer(path, b)));
    });
  });
  await new Promise((r) => proxied.backend.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${proxied.backend.address().port}`;
  const cfg = (who) => {
    const c = JSON.parse(JSON.stringify(CONFIG));
    c.client.allow_anonymous_connect_without_token = false;
    c.client.proxy = { connect: { enabled: true, endpoint: `${base}/${who}/connect`, timeout: '2s', http_headers: ['Cookie'] } };
    c.channel.proxy = {
      subscribe: { endpoint: `${base}/${who}/subscribe`, timeout: '2s' },
      publish: { endpoint: `${base}/${who}/publish`, timeout: '2s', include_connection_meta: true },
    };
    c.channel.namespaces.push({ name: 'px', subscribe_proxy_enabled: true, publish_proxy_enabled: true });
    c.proxies = [{ name: 'broken', endpoint: `${base}/${who}/status`, timeout: '2s' }];
    c.channel.namespaces.push({ name: 'pb', subscribe_proxy_enabled: true, subscribe_proxy_name: 'broken' });
    c.rpc = { proxy: { endpoint: `${base}/${who}/rpc`, timeout: '2s' }, namespaces: [{ name: 'px', proxy_enabled: true }] };
    return c;
  };
  const hPath = join(tmpDir, 'herald-proxy.json');
  writeFileSync(hPath, JSON.stringify(cfg('herald'), null, 2));
  const cPort = await freePort();
  const cPath = join(tmpDir, 'centrifugo-proxy.json');
  writeFileSync(cPath, JSON.stringify({ ...cfg('centrifugo'), http_server: { address: '127.0.0.1', port: cPort }, log: { level: 'error' } }, null, 2));
  const hPort = await freePort();
  proxied.servers = {
    herald: await launch('herald', HERALD_BIN, ['--config', hPath, '--bind', '127.0.0.1', '--port', String(hPort), '--workers', '2'], hPort),
    centrifugo: await launch('centrifugo', CENTRIFUGO_BIN, ['--config', cPath], cPort),
  };
  return proxied.servers;
}

scenario('proxies: connect proxy result, error, disconnect, no result, expired, unknown channel', async (r) => {
  for (const mode of ['error', 'temporary', 'disconnect', 'none', 'expired', 'unknown']) {
    const c = r.client(mode);
    await c.do('connect', { connect: { data: { mode } } });
    await c.closeState(300);
  }
  const a = r.client('a', { headers: { Cookie: 'session=abc' } });
  await a.do('connect', { connect: { data: { user: 'ann' }, name: 'raw', version: '1.0' } });
  r.backend();
  await r.api('publish', { channel: 'px:news', data: { n: 1 } });
  await r.api('publish', { channel: 'px:subs', data: { n: 2 } });
  await a.drain();
  await a.do('presence stats refused, still connected', { presence_stats: { channel: 'px:news' } });
}, { withProxies: true });

scenario('proxies: subscribe, publish (data rewritten, refused, meta sent), rpc', async (r) => {
  const a = r.client('a');
  await a.do('connect', { connect: { data: { user: 'bob' } } });
  await a.do('subscribe px:room', { subscribe: { channel: 'px:room', data: { want: 1 } } });
  await a.do('subscribe px:deny', { subscribe: { channel: 'px:deny' } });
  await a.do('subscribe pb:x (backend answers 500)', { subscribe: { channel: 'pb:x' } });
  await a.do('publish px:room', { publish: { channel: 'px:room', data: { text: 'hi' } } });
  await a.do('publish px:room refused', { publish: { channel: 'px:room', data: { text: 'bad' } } });
  await a.drain();
  await a.do('rpc px:sum', { rpc: { method: 'px:sum', data: { a: 1 } } });
  await a.do('rpc px:fail', { rpc: { method: 'px:fail' } });
  await a.do('rpc without a namespace (108)', { rpc: { method: 'plain' } });
  await a.do('rpc unknown namespace (104)', { rpc: { method: 'zz:x' } });
  r.backend();
  await a.do('subscribe px:kick', { subscribe: { channel: 'px:kick' } });
  await a.closeState(500);
}, { withProxies: true });
