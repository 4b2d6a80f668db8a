// Herald perf peer, TLS variant: uWebSockets.js's SSLApp with its built-in topic pub/sub.
//
//   wss://127.0.0.1:TLS_PORT/sub?cid=CH  WebSocket upgrade over TLS (SSLApp, the certificate
//                                        and key given); the socket subscribes to topic CH
//   POST http://127.0.0.1:PORT/pub?cid=CH plain App: body = message, published to topic CH on
//                                        the SSLApp (one text frame holding the bare body);
//                                        answers 200 with the topic's subscriber count
//
// The publisher stays on plain HTTP, as with Herald's `tls_port` in the TLS benchmark, so
// both servers spend their TLS work on the subscribers only.
//
// Usage: node ssl-server.js PORT TLS_PORT CERT_PEM KEY_PEM   (start-uws-ssl.sh sets NODE_PATH)
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
const [port, tlsPort] = process.argv.slice(2, 4).map((s) => Number.parseInt(s ?? '', 10));
const [cert, key] = process.argv.slice(4, 6);
if (![port, tlsPort].every((p) => Number.isInteger(p) && p > 0 && p < 65536) || !cert || !key) {
  console.error('usage: node ssl-server.js PORT TLS_PORT CERT_PEM KEY_PEM');
  process.exit(2);
}
for (const f of [cert, key]) fs.accessSync(f, fs.constants.R_OK);

const ssl = uWS.SSLApp({ cert_file_name: cert, key_file_name: key });
const app = uWS.App();

ssl.ws('/sub', {
  compression: uWS.DISABLED,
  maxPayloadLength: 64 * 1024,
  idleTimeout: 120,
  maxBackpressure: 4 * 1024 * 1024,
  upgrade: (res, req, context) => {
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
  message: () => {},
});

app.post('/pub', (res, req) => {
  const cid = req.getQuery('cid') ?? '';
  let aborted = false;
  let body = null;
  res.onAborted(() => {
    aborted = true;
  });
  res.onData((chunk, isLast) => {
    const piece = Buffer.from(new Uint8Array(chunk));
    body = body === null ? piece : Buffer.concat([body, piece]);
    if (!isLast) return;
    ssl.publish(cid, body, false, false);
    if (aborted) return;
    const n = ssl.numSubscribers(cid);
    res.cork(() => {
      res.writeStatus('200 OK').writeHeader('Content-Type', 'text/plain').end(`${n}\n`);
    });
  });
});

for (const a of [app, ssl]) a.any('/*', (res) => res.writeStatus('404 Not Found').end('not found\n'));

const sockets = [];
function listen(a, p, what) {
  a.listen('127.0.0.1', p, (token) => {
    if (!token) {
      console.error(`uws-ssl: cannot listen on 127.0.0.1:${p} (${what})`);
      process.exit(1);
    }
    sockets.push(token);
    console.error(`uws-ssl ${process.version}: ${what} on 127.0.0.1:${p}`);
  });
}
listen(app, port, 'plain (publish)');
listen(ssl, tlsPort, 'TLS (wss:// subscribe)');

process.on('SIGTERM', () => {
  for (const s of sockets) uWS.us_listen_socket_close(s);
  process.exit(0);
});
