/**
 * Benchmark peer: Node's `ws` library (WebSocketServer in noServer mode,
 * routed on the request path of the HTTP upgrade).
 *
 * Implements benches/PROTOCOL.md: /echo, /sub, /pub, /chat on 127.0.0.1:PORT.
 * Broadcast iterates the room's members and calls send() on each open one.
 * perMessageDeflate is off; ws has no keepalive pings by default (kept so).
 *
 * Setup: npm ci (or npm install) in this directory.
 * Run:   node server.js PORT
 */
'use strict';

const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.argv[2]);
const rooms = { bench: new Set(), chat: new Set() };

function broadcast(members, data, isBinary) {
  for (const client of members) {
    if (client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
  }
}

function join(ws, room) {
  rooms[room].add(ws);
  ws.on('close', () => rooms[room].delete(ws));
}

const routes = {
  '/echo': (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })),
  '/sub': (ws) => join(ws, 'bench'), // its messages are ignored
  '/pub': (ws) => ws.on('message', (data, isBinary) => broadcast(rooms.bench, data, isBinary)),
  '/chat': (ws) => {
    join(ws, 'chat');
    ws.on('message', (data, isBinary) => broadcast(rooms.chat, data, isBinary));
  },
};

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 16 * 1024 * 1024 });
const server = http.createServer((req, res) => res.writeHead(404).end());
const ignore = () => {}; // abrupt disconnects (ECONNRESET, EPIPE) are expected

server.on('upgrade', (req, socket, head) => {
  const route = routes[new URL(req.url, 'http://localhost').pathname];
  socket.on('error', ignore);
  if (!route) {
    socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.on('error', ignore);
    route(ws);
  });
});

server.listen(port, '127.0.0.1');
