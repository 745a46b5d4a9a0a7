// Local S3 server for development and tests: @20minutes/s3rver on loopback.
// It verifies SigV4 signatures (account S3RVER / S3RVER), so a wrong signer fails.
// Environment: S3_PORT (default 14568), S3_DIR (storage folder), S3_BUCKET.
'use strict';
const S3rver = require('@20minutes/s3rver');

const port = Number(process.env.S3_PORT || 14568);
const bucket = process.env.S3_BUCKET || 'pedidolist-backups';
const server = new S3rver({
  address: '127.0.0.1',
  port,
  directory: process.env.S3_DIR || '/tmp/backup-worker-dev/s3',
  silent: true,
  configureBuckets: [{ name: bucket }],
});

// s3rver writes an object as separate files, not atomically: a server killed mid-write (the
// outage tests kill it) leaves an object without its metadata, or with a truncated one, and
// then every listing of the bucket (HEAD bucket too) fails with HTTP 500. S3 never shows a
// write it did not finish: such objects are removed before the server starts.
const fs = require('fs');
const path = require('path');
function recover(dir) {
  let removed = 0;
  let entries;
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) {
      removed += recover(p);
      continue;
    }
    const m = /^(.*)\._S3rver_(object|metadata\.json)$/.exec(e.name);
    if (!m) continue;
    const base = path.join(dir, m[1]);
    let ok = true;
    try {
      JSON.parse(fs.readFileSync(`${base}._S3rver_metadata.json`, 'utf8'));
      ok = fs.existsSync(`${base}._S3rver_object`);
    } catch {
      ok = false;
    }
    if (!ok) {
      for (const suffix of ['._S3rver_object', '._S3rver_object.md5', '._S3rver_metadata.json']) {
        try {
          fs.unlinkSync(base + suffix);
        } catch {}
      }
      removed++;
    }
  }
  return removed;
}
const removed = recover(process.env.S3_DIR || '/tmp/backup-worker-dev/s3');
if (removed) console.log(`s3rver: removed ${removed} object(s) a killed server left half-written`);

server.run().then(
  (addr) => console.log(`s3rver listening on ${addr.address}:${addr.port}, bucket ${bucket}`),
  (err) => {
    console.error(`s3rver failed to start: ${err.message}`);
    process.exit(1);
  },
);
// close() waits for idle keep-alive connections: give it a moment, then go
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    setTimeout(() => process.exit(0), 500).unref();
    server.close().then(() => process.exit(0));
  });
}
