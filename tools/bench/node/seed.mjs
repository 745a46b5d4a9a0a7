// The seed's backup design, as a peer for tools/bench/small.sh: node-postgres
// reads each table of one user, JSON.stringify builds the document, gzip
// compresses it, one PutObject (AWS SDK v3) stores it, one INSERT records it.
// Concurrency N: N users at a time over a pool of N connections.
//
//   node tools/bench/node/seed.mjs USERS_FILE [--concurrency 8]
// Prints one JSON line: {"backups":..,"seconds":..,"per_second":..,"bytes":..}
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { gzip } from 'node:zlib';
import { promisify } from 'node:util';
import pg from 'pg';
import { S3Client, PutObjectCommand } from '@aws-sdk/client-s3';

const gz = promisify(gzip);
const args = process.argv.slice(2);
const file = args[0];
const conc = Number(args[args.indexOf('--concurrency') + 1] || 8);
if (!file) {
  console.error('usage: seed.mjs USERS_FILE [--concurrency N]');
  process.exit(2);
}
const users = readFileSync(file, 'utf8').split('\n').filter(Boolean);
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: conc });
const s3 = new S3Client({
  region: process.env.AWS_REGION || 'us-east-1',
  endpoint: process.env.S3_ENDPOINT,
  forcePathStyle: process.env.S3_FORCE_PATH_STYLE === 'true',
  credentials: { accessKeyId: process.env.AWS_ACCESS_KEY_ID, secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY },
});
const bucket = process.env.S3_BUCKET;

// the seed's queries: each table of the user, order items through their orders
const QUERIES = {
  profiles: 'SELECT * FROM profiles WHERE id = $1',
  businesses: 'SELECT * FROM businesses WHERE owner_id = $1',
  products: 'SELECT * FROM products WHERE user_id = $1',
  clients: 'SELECT * FROM clients WHERE user_id = $1',
  orders: 'SELECT * FROM orders WHERE user_id = $1',
  order_items: 'SELECT oi.* FROM order_items oi JOIN orders o ON o.id = oi.order_id WHERE o.user_id = $1',
  notifications: 'SELECT * FROM notifications WHERE user_id = $1',
  user_settings: 'SELECT * FROM user_settings WHERE user_id = $1',
};

let bytes = 0;
let seq = 0;
async function backupOne(userId) {
  const started = Date.now();
  const id = `backup-${userId}-${started}seed${seq++}`;
  const tables = {};
  let rows = 0;
  for (const [t, q] of Object.entries(QUERIES)) {
    const r = await pool.query(q, [userId]);
    tables[t] = r.rows;
    rows += r.rowCount;
  }
  const body = await gz(JSON.stringify({ version: '1.0', user_id: userId, created_at: new Date().toISOString(), tables }));
  const checksum = createHash('sha256').update(body).digest('hex');
  const key = `backups/${userId}/${id}.json.gz`;
  await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ContentType: 'application/gzip', Metadata: { checksum } }));
  bytes += body.length;
  await pool.query(
    `INSERT INTO backup_metadata (id, user_id, type, status, s3_key, size, checksum, row_counts, job_id, completed_at, duration_ms)
     VALUES ($1, $2, 'full', 'completed', $3, $4, $5, $6, $7, now(), $8)`,
    [id, userId, key, body.length, checksum, JSON.stringify({ total: rows }), `seed-${id}`, Date.now() - started]);
}

const t0 = process.hrtime.bigint();
let next = 0;
await Promise.all(Array.from({ length: conc }, async () => {
  while (next < users.length) await backupOne(users[next++]);
}));
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
await pool.end();
console.log(JSON.stringify({ backups: users.length, seconds, per_second: users.length / seconds, bytes }));
