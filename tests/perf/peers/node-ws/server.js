// Herald perf peer: Node.js `http` + the `ws` library, broadcast by looping over a channel's
// sockets (ws has no pub/sub of its own).
//
//   GET  /sub?cid=CH   WebSocket upgrade; the socket joins channel CH
//   POST /pub?cid=CH   body = message; sent to every open socket of CH as one text frame
//                      holding the bare body; answers 200 with the number of sockets sent to
//
// Usage: node server.js PORT      (listens on 127.0.0.1 only; start-node-ws.sh sets NODE_PATH)
'use strict';

const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');

const port = Number.parseInt(process.argv[2] ?? '', 10);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node server.js PORT');
  process.exit(2);
}

/** channel id -> Set of its open WebSockets */
const channels = new Map();

/** Split a request target into its path and `cid` query parameter. */
function route(target) {
  const q = target.indexOf('?');
  if (q < 0) return { path: target, cid: '' };
  const params = new URLSearchParams(target.slice(q + 1));
  return { path: target.slice(0, q), cid: params.get('cid') ?? '' };
}

function join(cid, ws) {
  let members = channels.get(cid);
  if (members === undefined) {
    members = new Set();
    channels.set(cid, members);
  }
  members.add(ws);
  ws.once('close', () => {
    members.delete(ws);
    if (members.size === 0 && channels.get(cid) === members) channels.delete(cid);
  });
}

function broadcast(cid, body) {
  const members = channels.get(cid);
  if (members === undefined) return 0;
  let sent = 0;
  for (const ws of members) {
    if (ws.readyState !== WebSocket.OPEN) continue;
    ws.send(body, { binary: false, compress: false, fin: true });
    sent += 1;
  }
  return sent;
}

const server = http.createServer((req, res) => {
  const { path, cid } = route(req.url);
  if (req.method !== 'POST' || path !== '/pub') {
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end('not found\n');
    return;
  }
  const parts = [];
  req.on('data', (part) => parts.push(part));
  req.on('end', () => {
    const body = parts.length === 1 ? parts[0] : Buffer.concat(parts);
    const reply = `${broadcast(cid, body)}\n`;
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': reply.length });
    res.end(reply);
  });
});

const wss = new WebSocketServer({
  noServer: true,
  perMessageDeflate: false,
  clientTracking: false, // channels hold the sockets
  maxPayload: 64 * 1024,
});

server.on('upgrade', (req, socket, head) => {
  const { path, cid } = route(req.url);
  if (path !== '/sub') {
    socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    return;
  }
  socket.on('error', () => {});
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.on('error', () => {});
    join(cid, ws);
  });
});

// The publisher keeps its connections open for the whole run (pipelined POSTs).
server.keepAliveTimeout = 120_000;
server.headersTimeout = 125_000;

server.on('error', (err) => {
  console.error(`node-ws: ${err.message}`);
  process.exit(1);
});

server.listen({ host: '127.0.0.1', port, backlog: 4096 }, () => {
  console.error(`node-ws ${process.version}: listening on 127.0.0.1:${port}`);
});

process.on('SIGTERM', () => {
  server.close();
  process.exit(0);
});
