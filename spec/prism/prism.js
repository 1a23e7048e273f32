#!/usr/bin/env node
// The pinned Prism CLI, with two additions, used by ./run:
//
//   USERLIST_PRISM_VALIDATE_RESPONSE=0 node prism.js proxy DOC UPSTREAM --errors
//
// 1. With USERLIST_PRISM_VALIDATE_RESPONSE=0, RESPONSE validation is off, so
//    the proxy still answers an invalid request with 422 problem+json (and
//    never forwards it) but passes every upstream response through
//    unvalidated. Without the variable this part changes nothing.
//
//    Why: @stoplight/prism-cli 5.14.2 hard-codes `validateResponse: true`
//    (dist/util/createServer.js) and has no flag for it; with --errors a
//    response that does not match the document is replaced by a 500, which
//    would turn the emulator's realistic answers (e.g. Arthur's zone-less
//    datetimes) into failures of tests that only mean to check requests. The
//    CLI reaches createServer through the exports of
//    @stoplight/prism-http-server's dist/server.js at call time, so wrapping
//    that one function is enough.
//
// 2. Always: one log line per request that Prism REJECTED (answered itself
//    with a problem+json of type https://stoplight.io/prism/errors#..., other
//    than a response violation), with the method, the URL as received and
//    every violation, which Prism's own log line ("Request terminated with
//    error: ...") leaves out:
//
//      userlist-prism: rejected request: GET /path?query -> 422 UNPROCESSABLE_ENTITY: query.x: message; ...
//
//    (report mode: "reported request violation: ..." for a forwarded request
//    whose sl-violations header names request violations). The line is
//    written synchronously before the answer goes out, so it is in the log
//    by the time the client has the answer; Prism's own lines go through an
//    asynchronous logger and may still be on their way.
//
//    A test that sends a request it KNOWS the document forbids (a documented
//    divergence between the real server and its document) declares it with
//    the request header
//
//      X-Userlist-Expect-Rejection: query.start_time, query.end_time
//
//    (the `location`s of the violations, joined by "."). When Prism answers
//    422 and the violations' locations are exactly that set, the line says
//    "expected rejection:" instead, and `run check` does not count it. Any
//    other outcome of such a request is logged and counted as usual.
//    Prism ignores the header (an undeclared header is no violation).
//
// Hooks: http.createServer (micri, which prism-http-server uses, looks it up
// at call time) wraps the request listener to watch res.end. The versions are
// pinned by package-lock.json; whoever changes them re-runs the checks in
// README.md ("Proof").
'use strict';
const path = require('path');
const http = require('http');

if (process.env.USERLIST_PRISM_VALIDATE_RESPONSE === '0') {
  const serverJs = path.join(path.dirname(require.resolve('@stoplight/prism-http-server')), 'server.js');
  const server = require(serverJs);
  const createServer = server.createServer;
  if (typeof createServer !== 'function') {
    throw new Error(`prism.js: ${serverJs} exports no createServer; update the shim`);
  }
  server.createServer = (operations, opts) =>
    createServer(operations, { ...opts, config: { ...opts.config, validateResponse: false } });
}

const PRISM_ERRORS = 'https://stoplight.io/prism/errors#';
const EXPECT_HEADER = 'x-userlist-expect-rejection';

const oneLine = s => String(s).replace(/[\r\n]+/g, ' ');

function parseList(value) {
  return String(value || '').split(',').map(s => s.trim()).filter(Boolean).sort();
}

const where = v => (Array.isArray(v.location) ? v.location.join('.') : String(v.location));

// report mode: the request violations Prism only reported, in the
// sl-violations header of an answer it forwarded.
function auditReported(req, res) {
  const header = res.getHeader('sl-violations');
  if (!header) return;
  let list;
  try {
    list = JSON.parse(String(header));
  } catch (e) {
    list = null; // "Too many violations! ..." (cut at 8 KB)
  }
  if (!Array.isArray(list)) {
    if (/"location":\["request"/.test(String(header))) {
      process.stdout.write(oneLine(`userlist-prism: reported request violation: ${req.method} ${req.url} -> ` +
        `${res.statusCode}: ${String(header).slice(0, 2000)}`) + '\n');
    }
    return;
  }
  const mine = list.filter(v => v && Array.isArray(v.location) && v.location[0] === 'request');
  if (mine.length === 0) return;
  process.stdout.write(oneLine(`userlist-prism: reported request violation: ${req.method} ${req.url} -> ` +
    `${res.statusCode}: ${mine.map(v => `${where(v)}: ${v.message} (${v.severity})`).join('; ')}`) + '\n');
}

// Called once per finished answer, before it is sent (so the line is in the
// log before the client has the answer): logs Prism's own rejections.
function audit(req, res, chunks) {
  const type = String(res.getHeader('content-type') || '');
  if (!type.startsWith('application/problem+json')) return auditReported(req, res);
  let problem;
  try {
    problem = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (e) {
    return;
  }
  if (!problem || typeof problem.type !== 'string' || !problem.type.startsWith(PRISM_ERRORS)) return;
  const kind = problem.type.slice(PRISM_ERRORS.length);
  // VIOLATIONS: a response violation (full mode); not the request's fault.
  if (kind === 'VIOLATIONS') return;
  const violations = Array.isArray(problem.validation) ? problem.validation : [];
  const locations = violations.filter(v => v && v.severity === 'Error').map(where);
  const detail = violations.length
    ? violations.map(v => `${where(v)}: ${v.message}`).join('; ')
    : problem.detail || problem.title || '';
  const declared = req.headers[EXPECT_HEADER];
  const want = parseList(declared);
  const got = [...new Set(locations)].sort();
  const expected = declared !== undefined && kind === 'UNPROCESSABLE_ENTITY' &&
    want.length > 0 && want.join(',') === got.join(',');
  const label = expected ? 'expected rejection' : 'rejected request';
  const note = declared !== undefined && !expected ? ` (the test expected exactly: ${want.join(', ')})` : '';
  process.stdout.write(oneLine(`userlist-prism: ${label}: ${req.method} ${req.url} -> ${res.statusCode} ` +
    `${kind}: ${detail}${note}`) + '\n');
}

const createHttpServer = http.createServer;
http.createServer = function (...args) {
  const i = args.findIndex(a => typeof a === 'function');
  if (i >= 0) {
    const listener = args[i];
    args[i] = function (req, res) {
      const chunks = [];
      const write = res.write;
      const end = res.end;
      let audited = false;
      // only problem+json bodies are kept (Prism sets the type before it writes)
      const keep = c => {
        if (!c || typeof c === 'function') return;
        if (!String(res.getHeader('content-type') || '').startsWith('application/problem+json')) return;
        chunks.push(Buffer.isBuffer(c) ? c : Buffer.from(String(c)));
      };
      res.write = function (c, ...rest) {
        keep(c);
        return write.call(this, c, ...rest);
      };
      res.end = function (c, ...rest) {
        keep(c);
        try {
          if (!audited) audit(req, res, chunks);
          audited = true;
        } catch (e) {
          process.stdout.write(`userlist-prism: audit failed: ${oneLine(e && e.stack)}\n`);
        }
        return end.call(this, c, ...rest);
      };
      return listener.call(this, req, res);
    };
  }
  return createHttpServer.apply(this, args);
};

require('@stoplight/prism-cli/dist/index.js');
