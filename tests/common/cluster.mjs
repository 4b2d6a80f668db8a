// Shared by the JavaScript cluster tests (tests/centrifugo/cluster.test.mjs,
// tests/browser/cluster.test.mjs): a private redis-server on a free loopback port (no
// persistence, as tests/cluster.rs starts it) and herald nodes over it with the Redis
// engine. Node built-ins only, so either test folder can import it.
//
// Every process started here is remembered by its PID: stop() ends it (SIGTERM, SIGKILL
// after a bound), and a process 'exit' hook SIGKILLs whatever is still running, so a test
// that fails or times out leaves nothing behind. Nothing else is ever signalled.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { join } from 'node:path';

const started = new Set(); // child processes started here and not yet exited
process.on('exit', () => {
  for (const child of started) {
    try { process.kill(child.pid, 'SIGKILL'); } catch { /* already gone */ }
  }
});

function track(child) {
  started.add(child);
  child.once('exit', () => started.delete(child));
  return child;
}

/** A free TCP port on 127.0.0.1 (bound then released). */
export function freePort() {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function canConnect(port) {
  return new Promise((res) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => { s.destroy(); res(true); });
    s.once('error', () => res(false));
  });
}

/** Ends one child by its PID: SIGTERM, then SIGKILL after `graceMs`; resolves when it exited. */
export async function stopChild(child, graceMs = 5_000) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  try { process.kill(child.pid, 'SIGTERM'); } catch { /* gone */ }
  const timer = setTimeout(() => { try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ } }, graceMs);
  await exited;
  clearTimeout(timer);
}

/** Kills one child by its PID with SIGKILL (no goodbye); resolves when it exited. */
export async function killChild(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ }
  await exited;
}

/** A private redis-server on a free port: {child, port, url, stop()}. */
export async function startRedis() {
  const port = await freePort();
  const child = track(spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  ));
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (c) => { err = (err + c).slice(-4_000); });
  const spawnError = new Promise((_, rej) => child.once('error', (e) => rej(new Error(`redis-server: ${e.message} (tests/all.sh installs Debian's package)`))));
  spawnError.catch(() => {});
  const end = Date.now() + 10_000;
  while (!(await Promise.race([canConnect(port), spawnError]))) {
    if (child.exitCode !== null) throw new Error(`redis-server exited ${child.exitCode}: ${err}`);
    if (Date.now() > end) { await killChild(child); throw new Error(`redis-server did not listen on ${port} within 10 s: ${err}`); }
    await sleep(20);
  }
  return { child, port, url: `redis://127.0.0.1:${port}`, stop: () => stopChild(child) };
}

/**
 * Starts one herald with `config` (an object, written to a temp file) on 127.0.0.1, a free
 * port. Resolves with {child, addr, base, ws, log(), stop(), kill()} once it reports
 * "listening on"; rejects (and ends it) after 15 s or if it exits first.
 */
export function startHerald(bin, config, { workers = 2, name = 'herald' } = {}) {
  return new Promise((resolveStart, rejectStart) => {
    if (!existsSync(bin)) {
      rejectStart(new Error(`herald binary not found at ${bin} (cargo build --release, or set HERALD_BIN)`));
      return;
    }
    const dir = mkdtempSync(join(os.tmpdir(), `herald-${name}-`));
    const cfg = join(dir, 'config.json');
    writeFileSync(cfg, JSON.stringify(config));
    const child = track(spawn(bin, ['--config', cfg, '--bind', '127.0.0.1', '--port', '0', '--workers', String(workers)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    }));
    const node = {
      name, child, addr: '', base: '', ws: '', text: '',
      log() { return this.text; },
      stop: () => stopChild(child),
      kill: () => killChild(child),
    };
    child.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    const timer = setTimeout(() => {
      killChild(child);
      rejectStart(new Error(`${name} did not report "listening on 127.0.0.1:PORT" within 15 s:\n${node.text}`));
    }, 15_000);
    const onData = (chunk) => {
      // Keep draining so the pipe never fills; keep the tail for diagnostics.
      node.text = (node.text + chunk).slice(-100_000);
      const m = /listening on (127\.0\.0\.1:\d+)/.exec(node.text);
      if (m && !node.addr) {
        node.addr = m[1];
        node.base = `http://${m[1]}`;
        node.ws = `ws://${m[1]}`;
        clearTimeout(timer);
        resolveStart(node);
      }
    };
    child.stdout.setEncoding('utf8').on('data', onData);
    child.stderr.setEncoding('utf8').on('data', onData);
    child.on('error', (e) => { clearTimeout(timer); rejectStart(e); });
    child.on('exit', (code, sig) => {
      if (!node.addr) { clearTimeout(timer); rejectStart(new Error(`${name} exited (${code ?? sig}) before listening:\n${node.text}`)); }
    });
  });
}

/** The Redis engine section of a node's config (Centrifugo v6's engine.redis keys). */
export function redisEngine(redis, prefix) {
  return { type: 'redis', redis: { address: [redis.url], prefix, io_timeout: '2s' } };
}

/**
 * A private redis-server and `n` herald nodes over it, named A, B, C, ...:
 * {redis, nodes, A, B, C, addNode(name), stop(), logs()}. `config` is the node config
 * without the engine, which is set here. On a start-up failure everything started is ended.
 */
export async function startCluster(bin, config, { n = 3, prefix = `t${process.pid}`, workers = 2 } = {}) {
  const redis = await startRedis();
  const cluster = {
    redis,
    nodes: [],
    async addNode(name) {
      const node = await startHerald(bin, { ...config, engine: redisEngine(redis, prefix) }, { workers, name });
      this.nodes.push(node);
      return node;
    },
    async stop() {
      await Promise.all(this.nodes.map((nd) => nd.stop()));
      await redis.stop();
    },
    logs(max = 2_000) {
      return this.nodes.map((nd) => `--- node ${nd.name} (${nd.addr}) log tail ---\n${nd.text.slice(-max)}`).join('\n');
    },
  };
  try {
    for (let i = 0; i < n; i++) {
      const name = String.fromCharCode(65 + i);
      cluster[name] = await cluster.addNode(name);
    }
  } catch (e) {
    await cluster.stop();
    throw e;
  }
  return cluster;
}
