#!/usr/bin/env node
// The pinned Prism CLI, with the one switch it lacks, used by ./run:
//
//   USERLIST_PRISM_VALIDATE_RESPONSE=0 node prism.js proxy DOC UPSTREAM --errors
//
// turns RESPONSE validation off, so that the proxy still answers an invalid
// request with 422 problem+json (and never forwards it) but passes every
// upstream response through unvalidated. Without the variable this is exactly
// `prism` (node_modules/.bin/prism).
//
// Why a shim: @stoplight/prism-cli 5.14.2 hard-codes `validateResponse: true`
// (dist/util/createServer.js) and has no flag for it; with --errors a response
// that does not match the document is replaced by a 500, which would turn the
// emulator's realistic answers (e.g. Arthur's zone-less datetimes) into
// failures of tests that only mean to check requests. The CLI reaches
// createServer through the exports of @stoplight/prism-http-server's
// dist/server.js at call time, so wrapping that one function is enough. The
// versions are pinned by package-lock.json; whoever changes them re-runs the
// checks in README.md ("Proof").
'use strict';
const path = require('path');

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

require('@stoplight/prism-cli/dist/index.js');
