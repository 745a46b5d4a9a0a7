// faultproxy: an HTTP proxy for tests that injects S3 faults in front of a
// real S3 server, on loopback only.
//
//   node tests/faultproxy.js UPSTREAM_HOST UPSTREAM_PORT   -> prints "listening PORT"
//   With FAULTPROXY_TLS_CERT and FAULTPROXY_TLS_KEY (PEM files) it serves HTTPS.
//
// Control (requests whose path starts with /__):
//   POST /__plan   body "RULE,RULE,...": each RULE is METHOD[~text]:FAULT:COUNT and
//                  hits the next COUNT requests with that method (or *) whose URL
//                  contains text; rules are tried in order
//   POST /__always body "METHOD[~text]:FAULT" hits every matching request ("" clears)
//   GET  /__stats  {"requests","faults","reused_signatures","stale_dates","with_token",
//                  "last_key"}: requests carrying x-amz-security-token, the last key id; a reused
//                  signature is one seen again a second or more after its first use
//                  (x-amz-date has one-second resolution, so a retry signed afresh
//                  within the same second may legitimately repeat it); a stale date
//                  is an x-amz-date more than two seconds older than the request
//   GET  /__log    the requests since the last clear, one "METHOD URL" per line (the last 10,000)
//   POST /__clear  forget the log, the plan and the always rule
//   POST /__cut    cut every stalled request now
//   POST /__rate   body "N": forward request bodies at N bytes per second (0 or "": full speed)
// Faults: 503 (SlowDown), 500 (InternalError), 429 (SlowDown), 403 (AccessDenied), 200err (a 200
// carrying an <Error>), reset (GET: half the body, then the connection is cut;
// others: cut at once), stall (no answer; cut after 20 s so nothing hangs), skew
// (403 RequestTimeTooSkewed with a Date five minutes ahead); stats also give
// "max_ahead_s", the furthest an x-amz-date was ahead of the proxy's clock.
'use strict';
const fs = require('fs');
const http = require('http');
const https = require('https');

const [upHost, upPort] = process.argv.slice(2);
let plan = [];
let always = null;
let requests = 0;
let faults = 0;
let reused = 0;
let stale = 0;
let withToken = 0;
let maxAhead = 0;
let lastKey = '';
let log = [];
let rate = 0;
const seen = new Map();
const stalled = new Set();

function parseRule(text) {
  const [head, fault, count] = text.trim().split(':');
  const [method, match] = head.split('~');
  return { method, match: match || '', fault, left: Number(count || 1) };
}

function matches(rule, req) {
  return (rule.method === '*' || rule.method === req.method) && req.url.includes(rule.match);
}

function pick(req) {
  if (always && matches(always, req)) return always.fault;
  for (const r of plan) {
    if (r.left > 0 && matches(r, req)) {
      r.left--;
      return r.fault;
    }
  }
  return null;
}

function errorBody(code) {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>injected by faultproxy</Message></Error>`;
}

function control(req, res, body) {
  const send = (status, text) => {
    res.writeHead(status, { 'content-type': 'text/plain' });
    res.end(text);
  };
  if (req.method === 'POST' && req.url === '/__plan') {
    plan = body.trim() ? body.split(',').map(parseRule) : [];
    return send(200, 'ok');
  }
  if (req.method === 'POST' && req.url === '/__always') {
    always = body.trim() ? parseRule(body) : null;
    return send(200, 'ok');
  }
  if (req.method === 'POST' && req.url === '/__clear') {
    plan = [];
    always = null;
    requests = faults = reused = stale = withToken = maxAhead = 0;
    lastKey = '';
    log = [];
    seen.clear();
    return send(200, 'ok');
  }
  if (req.method === 'POST' && req.url === '/__rate') {
    rate = Number(body.trim() || 0);
    return send(200, 'ok');
  }
  if (req.method === 'POST' && req.url === '/__cut') {
    for (const sock of stalled) sock.destroy();
    stalled.clear();
    return send(200, 'ok');
  }
  if (req.method === 'GET' && req.url === '/__log') {
    return send(200, log.map((l) => l + '\n').join(''));
  }
  if (req.method === 'GET' && req.url === '/__stats') {
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(JSON.stringify({ requests, faults, reused_signatures: reused, stale_dates: stale,
                                    with_token: withToken, last_key: lastKey, max_ahead_s: maxAhead }));
  }
  send(404, 'unknown control path');
}

function forward(req, res, cutGet) {
  const up = http.request({ host: upHost, port: upPort, method: req.method, path: req.url, headers: req.headers }, (ur) => {
    res.writeHead(ur.statusCode, ur.headers);
    if (!cutGet) return ur.pipe(res);
    // send about half the body, then cut the connection
    const total = Number(ur.headers['content-length'] || 0);
    let sent = 0;
    ur.on('data', (chunk) => {
      if (sent >= total / 2) return;
      const room = Math.max(1, Math.floor(total / 2) - sent);
      const part = chunk.subarray(0, Math.min(chunk.length, room));
      sent += part.length;
      res.write(part);
      if (sent >= total / 2) {
        ur.destroy();
        req.socket.destroy();
      }
    });
  });
  up.on('error', () => req.socket.destroy());
  if (!rate) return req.pipe(up);
  // a slow link: each chunk goes out, then the body waits as long as the rate says
  req.on('data', (chunk) => {
    up.write(chunk);
    req.pause();
    setTimeout(() => req.resume(), Math.ceil((chunk.length * 1000) / rate));
  });
  req.on('end', () => up.end());
}

const tls = process.env.FAULTPROXY_TLS_CERT
  ? { cert: fs.readFileSync(process.env.FAULTPROXY_TLS_CERT), key: fs.readFileSync(process.env.FAULTPROXY_TLS_KEY) }
  : null;
const handler = (req, res) => {
  if (req.url.startsWith('/__')) {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => control(req, res, body));
    return;
  }
  requests++;
  if (log.length < 10000) log.push(`${req.method} ${req.url}`);
  const m = /Signature=([0-9a-f]+)/.exec(req.headers.authorization || '') || /X-Amz-Signature=([0-9a-f]+)/.exec(req.url);
  const now = Date.now();
  const cred = /Credential=([A-Z0-9]+)\//.exec(req.headers.authorization || '');
  if (cred) lastKey = cred[1];
  if (req.headers['x-amz-security-token']) withToken++;
  if (m) {
    if (seen.has(m[1]) && now - seen.get(m[1]) >= 1000) reused++;
    if (!seen.has(m[1])) seen.set(m[1], now);
  }
  const d = /^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z$/.exec(req.headers['x-amz-date'] || '');
  if (d && now - Date.UTC(d[1], d[2] - 1, d[3], d[4], d[5], d[6]) > 2000) stale++;
  if (d) maxAhead = Math.max(maxAhead, Math.round((Date.UTC(d[1], d[2] - 1, d[3], d[4], d[5], d[6]) - now) / 1000));
  const fault = pick(req);
  if (!fault) return forward(req, res, false);
  faults++;
  if (fault === 'reset') {
    if (req.method === 'GET') return forward(req, res, true);
    return req.socket.destroy();
  }
  req.resume();
  req.on('end', () => {
    if (fault === 'skew') {
      // the server's clock is five minutes ahead of ours: S3 says so and sends its Date
      res.writeHead(403, { 'content-type': 'application/xml', date: new Date(Date.now() + 300000).toUTCString() });
      return res.end(errorBody('RequestTimeTooSkewed'));
    }
    if (fault === 'stall') {
      stalled.add(req.socket);
      setTimeout(() => { stalled.delete(req.socket); req.socket.destroy(); }, 20000).unref();
      return;
    }
    const [status, code] = {
      503: [503, 'SlowDown'],
      500: [500, 'InternalError'],
      429: [429, 'SlowDown'],
      '200err': [200, 'InternalError'],
      403: [403, 'AccessDenied'],
    }[fault] || [500, 'InternalError'];
    res.writeHead(status, { 'content-type': 'application/xml' });
    res.end(errorBody(code));
  });
};
const server = tls ? https.createServer(tls, handler) : http.createServer(handler);
server.keepAliveTimeout = 1000;
server.listen(0, '127.0.0.1', () => console.log(`listening ${server.address().port}`));
process.on('SIGTERM', () => process.exit(0));
