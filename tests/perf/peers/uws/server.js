// Herald perf peer: uWebSockets.js with its built-in topic pub/sub.
//
//   GET  /sub?cid=CH   WebSocket upgrade; the socket subscribes to topic CH
//   POST /pub?cid=CH   body = message; app.publish(CH, body) sends it to every subscriber as
//                      one text frame holding the bare body; answers 200 with the topic's
//                      subscriber count
//
// Usage: node server.js PORT      (listens on 127.0.0.1 only; start-uws.sh sets NODE_PATH)
//
// UWS_COMPRESSION=shared: permessage-deflate with uWS's SHARED_COMPRESSOR (one deflate
// stream per thread, no context takeover: no per-socket zlib state), negotiated with clients
// that offer it, and publishes sent with compress=true. Default: compression DISABLED.
//
// The npm package's entry point falls back to a pure-JS implementation (on top of `ws`) when
// the native addon does not load; a benchmark must not measure that by accident, so the
// prebuilt addon for this platform and Node ABI is loaded by path, and a missing one is fatal.
'use strict';

const fs = require('fs');
const path = require('path');

function loadNative() {
  const pkg = path.dirname(require.resolve('@trufflesuite/uws-js-unofficial/package.json'));
  const file = `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`;
  const full = path.join(pkg, 'binaries', file);
  if (!fs.existsSync(full)) {
    const have = fs.readdirSync(path.join(pkg, 'binaries')).join(', ');
    throw new Error(`no native uWS addon ${file} for Node ${process.version}; the package has: ${have}`);
  }
  return require(full);
}

const uWS = loadNative();
const port = Number.parseInt(process.argv[2] ?? '', 10);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node server.js PORT');
  process.exit(2);
}

const app = uWS.App();
const SHARED = process.env.UWS_COMPRESSION === 'shared';
if (SHARED) console.error('uws: permessage-deflate with SHARED_COMPRESSOR');

app.ws('/sub', {
  compression: SHARED ? uWS.SHARED_COMPRESSOR : uWS.DISABLED,
  maxPayloadLength: 64 * 1024,
  // Idle sockets get a ping before this many seconds pass without traffic (load clients answer).
  idleTimeout: 120,
  // Past this many buffered bytes a subscriber would silently miss publishes; keep it well above
  // what a benchmark window can queue so that any loss shows up as slowness instead.
  maxBackpressure: 4 * 1024 * 1024,

  upgrade: (res, req, context) => {
    // `req` is only valid synchronously inside this handler: read everything now.
    const cid = req.getQuery('cid') ?? '';
    res.upgrade(
      { cid },
      req.getHeader('sec-websocket-key'),
      req.getHeader('sec-websocket-protocol'),
      req.getHeader('sec-websocket-extensions'),
      context,
    );
  },

  open: (ws) => {
    ws.subscribe(ws.getUserData().cid);
  },

  // Subscribers only listen; anything they send is ignored.
  message: () => {},
});

app.post('/pub', (res, req) => {
  const cid = req.getQuery('cid') ?? '';
  let aborted = false;
  let body = null; // Buffer once the first chunk arrived
  res.onAborted(() => {
    aborted = true;
  });
  res.onData((chunk, isLast) => {
    // `chunk` is detached when this callback returns: copy what we keep.
    const piece = Buffer.from(new Uint8Array(chunk));
    body = body === null ? piece : Buffer.concat([body, piece]);
    if (!isLast) return;
    app.publish(cid, body, false, SHARED);
    if (aborted) return;
    const n = app.numSubscribers(cid);
    res.cork(() => {
      res.writeStatus('200 OK').writeHeader('Content-Type', 'text/plain').end(`${n}\n`);
    });
  });
});

app.any('/*', (res) => {
  res.writeStatus('404 Not Found').end('not found\n');
});

let listenSocket = null;
app.listen('127.0.0.1', port, (token) => {
  if (!token) {
    console.error(`uws: cannot listen on 127.0.0.1:${port}`);
    process.exit(1);
  }
  listenSocket = token;
  console.error(`uws ${process.version}: listening on 127.0.0.1:${port}`);
});

process.on('SIGTERM', () => {
  if (listenSocket) uWS.us_listen_socket_close(listenSocket);
  process.exit(0);
});
