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
