// model.mjs: the randomized model test (issue 29). One seed drives a real application workload
// on real PostgreSQL for a few users, interleaved with full, incremental and differential
// backups and restores of random earlier backups, some while the application keeps writing.
//
// The oracle: each user's rows (to_jsonb, the tracking stamp aside) recorded in the very state
// each backup's snapshot saw. The model writes nothing while a backup takes its snapshot except
// through transactions that stay open across it (committed once the backup is done), so the
// committed state read just before the enqueue is what the snapshot sees. Every completed
// restore must leave exactly the recorded state for its user and change no other user's rows;
// every backup and every restore of a completed backup must complete.
//
//   node tests/model.mjs --seeds 1,2,3 [--steps N] [--prefix P] [--segments BACKUPCTL]
//
// --segments (BACKUP_TRACKING=wal, a capture running since before the seed began): a second
// oracle at the end of each seed. Each user's change segments, replayed from nothing in commit
// order (insert and update set the row, the "unchanged" columns kept from the row before, delete
// removes it, or every row its "where" names, truncate empties the table), must be exactly the
// user's rows in the database.
// And restores to points in time (restore with `at`): after some application writes the
// database's clock is read and the users' rows recorded (nothing else commits in between); a
// restore of a user to such an instant must leave exactly the rows recorded then, or be refused
// because the user had no backup before it, or because a row it held is another user's now.
//
// And exports ("download my data"): some full backups, and every user's last one at the end, are
// exported; the document's rows must be exactly the rows recorded for that backup (read from the
// store with --ctl BACKUPCTL, or from the directory of BACKUP_STORE=file://...).
//
// Needs DATABASE_URL, REDIS_URL and a worker consuming PREFIX:jobs with BACKUP_NOTIFY=false.
// On a failure it prints the seed, the step, the last operations and the rows that differ, and
// exits 1; the same seed replays the same operations.
import pg from 'pg';
import Redis from 'ioredis';
import { spawnSync } from 'node:child_process';
import { gunzipSync } from 'node:zlib';
import { readFileSync } from 'node:fs';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((a, v, i, all) => (v.startsWith('--') ? [...a, [v.slice(2), all[i + 1]]] : a), []));
const seeds = (args.seeds || '1').split(',').map(Number);
const STEPS = Number(args.steps || 60);
const P = args.prefix || process.env.REDIS_PREFIX || 'model';
const DB = process.env.DATABASE_URL;
const TABLES = ['profiles', 'businesses', 'products', 'clients', 'orders', 'order_items', 'notifications',
  'user_settings'];
const OWNER = { profiles: 'id', businesses: 'owner_id', order_items: null };
const CTL = args.segments;
const READER = args.ctl || CTL; // backupctl, to read exports from S3
const STORE_DIR = (process.env.BACKUP_STORE || '').startsWith('file://') ? process.env.BACKUP_STORE.slice(7) : null;
// JSON with its objects' keys in order: the same row from two writers compares equal
const canon = (v) => (Array.isArray(v) ? `[${v.map(canon).join(',')}]`
  : v && typeof v === 'object' ? `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canon(v[k])}`).join(',')}}`
    : JSON.stringify(v));

function rng(seed) { // mulberry32: small, seedable, the same on every machine
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class Failure extends Error {}

async function main() {
  const redis = new Redis(process.env.REDIS_URL, { lazyConnect: false, maxRetriesPerRequest: 2 });
  let failed = 0;
  for (const seed of seeds) {
    const t0 = Date.now();
    const m = new Model(seed, redis);
    try {
      await m.run();
      console.log(`ok   seed ${seed}: ${m.stats()} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    } catch (e) {
      failed++;
      console.log(`FAIL seed ${seed} at step ${m.step}: ${e.message}`);
      console.log('  last operations:\n    ' + m.log.slice(-25).join('\n    '));
      if (!(e instanceof Failure)) console.log(e.stack);
    } finally {
      await m.close();
    }
  }
  redis.disconnect();
  process.exit(failed ? 1 : 0);
}

class Model {
  constructor(seed, redis) {
    this.seed = seed;
    this.r = rng(seed);
    this.redis = redis;
    this.step = 0;
    this.log = [];
    this.backups = []; // {id, user, mode, state}
    this.points = []; // --segments: {at, states: {user: rows}, backed: users with a backup before}
    this.n = { backup: 0, restore: 0, refused: 0, same: 0, kept: 0, concurrent: 0, ops: 0, truncate: 0, move: 0, long: 0,
      pitr: 0, pitrRefused: 0, exports: 0 };
    const s = String(seed % 100000).padStart(5, '0');
    this.users = [1, 2, 3].map((k) => `0de1${s.slice(0, 4)}-${s.slice(4)}00${k}-4000-8000-0000000000${k}0`);
    this.jobs = 0;
    this.xr = rng(seed * 104729 + 1); // exports' draws
    this.toExport = [];
  }

  stats() {
    const n = this.n;
    return `${Math.min(this.step, STEPS)} steps, ${n.ops} writes (${n.move} moves, ${n.truncate} truncates, ${n.long} open across a ` +
      `backup), ${n.backup} backups, ${n.restore} restores, ${n.refused} refused (a row moved to another user) (${n.concurrent} with the application writing: ` +
      `${n.same} transactions on the restored user's rows, ${n.kept} rows of them kept as after the restore), ` +
      `${n.exports} exports` +
      (CTL ? `; ${n.changes} changes in ${n.segments} segments replayed to the rows; ${n.pitr} restores to a point in time ` +
        `(${n.pitrRefused} refused: no backup before it, or a row moved away)` : '');
  }

  // keys from the seed too: the same seed picks the same rows
  uuid() {
    const h = () => Math.floor(this.r() * 0x10000).toString(16).padStart(4, '0');
    return `${h()}${h()}-${h()}-4${h().slice(1)}-8${h().slice(1)}-${h()}${h()}${h()}`;
  }

  pick(a) { return a[Math.floor(this.r() * a.length)]; }
  int(n) { return Math.floor(this.r() * n); }
  note(s) { this.log.push(`${this.step}: ${s}`); }

  async close() {
    for (const c of [this.db, this.db2, this.db3]) if (c) await c.end().catch(() => {});
  }

  async connect() {
    const mk = async () => { const c = new pg.Client({ connectionString: DB }); await c.connect(); return c; };
    this.db = await mk();
    this.db2 = await mk(); // the transaction left open across a backup
    this.db3 = await mk(); // the application writing while a restore runs
  }

  // ---- setup ----
  async setup() {
    await this.connect();
    const db = this.db;
    await db.query('DELETE FROM profiles WHERE id = ANY($1)', [this.users]);
    await db.query('DELETE FROM backup_metadata WHERE user_id = ANY($1)', [this.users]);
    await db.query('DELETE FROM restore_history WHERE user_id = ANY($1)', [this.users]);
    await db.query('DELETE FROM backup_exports WHERE user_id = ANY($1)', [this.users]);
    for (const u of this.users) {
      await db.query(`INSERT INTO profiles (id, email, full_name) VALUES ($1, $2, 'Model')`, [u, `${u}@example.com`]);
      await db.query(`INSERT INTO user_settings (user_id) VALUES ($1)`, [u]);
      await db.query(`INSERT INTO businesses (id, owner_id, name) VALUES ($2, $1, 'Shop')`, [u, this.uuid()]);
      for (let i = 0; i < 3; i++) {
        await db.query(`INSERT INTO products (id, user_id, name, price) VALUES ($4, $1, $2, $3)`, [u, `p${i}`, 1 + i, this.uuid()]);
        await db.query(`INSERT INTO clients (id, user_id, name) VALUES ($3, $1, $2)`, [u, `c${i}`, this.uuid()]);
      }
      for (let i = 0; i < 4; i++) await this.newOrder(db, u);
      for (let i = 0; i < 3; i++) await this.newNotification(db, u);
    }
  }

  // ---- the application ----
  async one(db, sql, params) { const r = await db.query(sql, params); return r.rows[0]; }
  async any(db, sql, params) { return (await db.query(sql, params)).rows.map((x) => Object.values(x)[0]); }

  async newOrder(db, u) {
    const client = (await this.any(db, 'SELECT id FROM clients WHERE user_id = $1 ORDER BY id', [u]))[0] ?? null;
    const o = await this.one(db, `INSERT INTO orders (id, user_id, client_id, number, total, notes)
      VALUES ($6, $1, $2, $3, $4, $5) RETURNING id`,
      [u, this.r() < 0.7 ? client : null, this.int(1e6), this.int(1000), `n${this.int(100)}`, this.uuid()]);
    const products = await this.any(db, 'SELECT id FROM products WHERE user_id = $1 ORDER BY id', [u]);
    // half the orders name products; those are never moved (a moved order keeps its items, whose
    // products would be another user's: a restore rightly refuses such a backup)
    const named = this.r() < 0.5;
    for (let i = 1 + this.int(3); i > 0; i--)
      await db.query(`INSERT INTO order_items (id, order_id, product_id, quantity, unit_price) VALUES ($5, $1, $2, $3, $4)`,
        [o.id, named && products.length ? this.pick(products) : null, 1 + this.int(5), this.int(100), this.uuid()]);
    return o.id;
  }

  async newNotification(db, u) {
    await db.query(`INSERT INTO notifications (id, user_id, type, title) VALUES ($3, $1, 'info', $2)`,
      [u, `t${this.int(1000)}`, this.uuid()]);
  }

  async randomRow(db, sql, u) {
    const ids = await this.any(db, sql + ' ORDER BY 1', [u]);
    return ids.length ? this.pick(ids) : null;
  }
  orderOf(db, u) { return this.randomRow(db, 'SELECT id FROM orders WHERE user_id = $1', u); }
  itemOf(db, u) {
    return this.randomRow(db, 'SELECT i.id FROM order_items i JOIN orders o ON o.id = i.order_id WHERE o.user_id = $1', u);
  }

  // One application write on db, as one transaction unless inTx (the caller's).
  async write(db, u, kinds, inTx = false) {
    const kind = this.pick(kinds);
    const v = this.pick(this.users.filter((x) => x !== u));
    if (!inTx) await db.query('BEGIN');
    try {
      switch (kind) {
        case 'new-order': await this.newOrder(db, u); break;
        case 'update-order': {
          const o = await this.orderOf(db, u);
          if (o) await db.query(`UPDATE orders SET total = $2, status = $3 WHERE id = $1`,
            [o, this.int(1000), this.pick(['pending', 'confirmed', 'shipped'])]);
          break;
        }
        case 'delete-order': {
          const o = await this.orderOf(db, u);
          if (o) await db.query('DELETE FROM orders WHERE id = $1', [o]);
          break;
        }
        case 'add-item': {
          const o = await this.orderOf(db, u);
          if (o) await db.query(`INSERT INTO order_items (id, order_id, quantity, unit_price) VALUES ($3, $1, 1, $2)`,
            [o, this.int(50), this.uuid()]);
          break;
        }
        case 'update-item': {
          const i = await this.itemOf(db, u);
          if (i) await db.query('UPDATE order_items SET quantity = quantity + 1 WHERE id = $1', [i]);
          break;
        }
        case 'delete-item': {
          const i = await this.itemOf(db, u);
          if (i) await db.query('DELETE FROM order_items WHERE id = $1', [i]);
          break;
        }
        case 'move-order': { // an order (and so its items) given to another user
          const o = await this.randomRow(db, `SELECT id FROM orders x WHERE user_id = $1 AND NOT EXISTS
            (SELECT 1 FROM order_items i WHERE i.order_id = x.id AND i.product_id IS NOT NULL)`, u);
          const c = (await this.any(db, 'SELECT id FROM clients WHERE user_id = $1 ORDER BY id', [v]))[0] ?? null;
          if (o) { await db.query('UPDATE orders SET user_id = $2, client_id = $3 WHERE id = $1', [o, v, c]); this.n.move++; }
          break;
        }
        case 'move-item': { // an item moved to another user's order
          const i = await this.itemOf(db, u);
          const o = await this.orderOf(db, v);
          if (i && o) { await db.query('UPDATE order_items SET order_id = $2, product_id = NULL WHERE id = $1', [i, o]); this.n.move++; }
          break;
        }
        case 'reinsert': { // a key deleted and inserted again in one transaction, with new items
          const o = await this.orderOf(db, u);
          if (!o) break;
          const items = await this.any(db, 'SELECT id FROM order_items WHERE order_id = $1 ORDER BY id', [o]);
          await db.query('DELETE FROM orders WHERE id = $1', [o]);
          await db.query(`INSERT INTO orders (id, user_id, number, total, notes) VALUES ($1, $2, $3, $4, 'again')`,
            [o, u, this.int(1e6), this.int(1000)]);
          if (items.length)
            await db.query(`INSERT INTO order_items (id, order_id, quantity, unit_price) VALUES ($1, $2, 7, 7)`, [items[0], o]);
          break;
        }
        case 'notification': await this.newNotification(db, u); break;
        case 'read-notification':
          await db.query(`UPDATE notifications SET read = NOT read WHERE id = (SELECT id FROM notifications
            WHERE user_id = $1 ORDER BY id LIMIT 1)`, [u]);
          break;
        case 'delete-notification':
          await db.query(`DELETE FROM notifications WHERE id = (SELECT id FROM notifications WHERE user_id = $1
            ORDER BY id DESC LIMIT 1)`, [u]);
          break;
        case 'client': { // a client deleted: its orders' client_id set NULL by the foreign key
          const c = await this.randomRow(db, 'SELECT id FROM clients WHERE user_id = $1', u);
          if (c && this.r() < 0.5) await db.query('DELETE FROM clients WHERE id = $1', [c]);
          else await db.query(`INSERT INTO clients (id, user_id, name) VALUES ($2, $1, 'new')`, [u, this.uuid()]);
          break;
        }
        case 'product': {
          const p = await this.randomRow(db, 'SELECT id FROM products WHERE user_id = $1', u);
          if (p && this.r() < 0.3) await db.query('DELETE FROM products WHERE id = $1', [p]);
          else if (p) await db.query('UPDATE products SET stock = stock + 1 WHERE id = $1', [p]);
          break;
        }
        case 'settings':
          await db.query(`UPDATE user_settings SET locale = $2 WHERE user_id = $1`, [u, this.pick(['es', 'en', 'pt'])]);
          await db.query(`UPDATE profiles SET full_name = $2 WHERE id = $1`, [u, `n${this.int(100)}`]);
          break;
        case 'truncate': { // every user's rows at once
          const t = this.pick(['notifications', 'orders CASCADE', 'order_items', 'notifications+insert']);
          if (t === 'notifications+insert') {
            await db.query('TRUNCATE notifications');
            await this.newNotification(db, u);
          } else await db.query(`TRUNCATE ${t}`);
          this.n.truncate++;
          this.note(`  truncate ${t}`);
          break;
        }
        default: throw new Error(`unknown write ${kind}`);
      }
      if (!inTx) await db.query('COMMIT');
    } catch (e) {
      if (!inTx) await db.query('ROLLBACK');
      throw new Failure(`application write ${kind} for ${u} failed: ${e.message}`);
    }
    this.n.ops++;
    return kind;
  }

  // COPY into notifications, through psql (the pg client has no COPY FROM STDIN)
  copyNotifications(u) {
    const lines = Array.from({ length: 1 + this.int(3) }, (_, i) => `${this.uuid()}\t${u}\tcopy\tc${this.int(1000)}-${i}\n`).join('');
    const r = spawnSync('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', DB, '-c',
      '\\copy notifications (id, user_id, type, title) FROM STDIN'], { input: lines, encoding: 'utf8' });
    if (r.status !== 0) throw new Failure(`COPY failed: ${r.stderr}`);
    this.n.ops++;
  }

  // ---- the oracle ----
  async state(db = this.db) { // {user: {table: [row text, sorted]}}
    const out = {};
    for (const u of this.users) out[u] = {};
    for (const t of TABLES) {
      const owner = t === 'order_items' ? '(SELECT user_id FROM orders o WHERE o.id = x.order_id)' : `x.${OWNER[t] || 'user_id'}`;
      const rows = await db.query(`SELECT ${owner}::text AS u, (to_jsonb(x) - 'backup_xid')::text AS j FROM ${t} x
        WHERE ${owner} = ANY($1) ORDER BY 2`, [this.users]);
      for (const u of this.users) out[u][t] = [];
      for (const row of rows.rows) out[row.u][t].push(row.j);
    }
    return out;
  }

  diff(want, got, what) {
    const lines = [];
    for (const t of TABLES) {
      const w = new Set(want[t]), g = new Set(got[t]);
      const missing = want[t].filter((x) => !g.has(x)), extra = got[t].filter((x) => !w.has(x));
      if (missing.length || extra.length)
        lines.push(`${t}: ${missing.length} missing, ${extra.length} unexpected` +
          (missing.length ? `\n      missing ${missing[0].slice(0, 300)}` : '') +
          (extra.length ? `\n      unexpected ${extra[0].slice(0, 300)}` : ''));
    }
    if (lines.length) throw new Failure(`${what}:\n    ${lines.join('\n    ')}`);
  }

  // ---- the second oracle: the change segments (--segments) ----
  async segments() {
    const db = this.db;
    const { rows: [{ l }] } = await db.query('SELECT pg_current_wal_flush_lsn()::text AS l');
    const deadline = Date.now() + 30000;
    for (;;) { // the capture confirms a position only once what precedes it is recorded
      const r = await db.query(`SELECT confirmed_flush_lsn >= $1::pg_lsn AS ok FROM pg_replication_slots
        WHERE slot_name = 'backup_capture'`, [l]);
      if (r.rows[0]?.ok) break;
      if (Date.now() > deadline) throw new Failure(`the capture did not confirm ${l} within 30 s`);
      await sleep(100);
    }
    const want = await this.state();
    let changes = 0, segs = 0;
    for (const u of this.users) {
      const keys = await this.any(db, 'SELECT s3_key FROM change_segments WHERE user_id = $1 ORDER BY end_lsn, start_lsn', [u]);
      const st = Object.fromEntries(TABLES.map((t) => [t, new Map()]));
      for (const k of keys) {
        const r = spawnSync(CTL, ['s3', 'get', k, '-'], { maxBuffer: 1 << 28 });
        if (r.status !== 0) throw new Failure(`backupctl s3 get ${k}: ${r.stderr}`);
        const lines = gunzipSync(r.stdout).toString('utf8').split('\n').filter(Boolean);
        segs++;
        for (const line of lines.slice(1, -1)) {
          const c = JSON.parse(line);
          const m = st[c.table];
          if (c.op === 't') m.clear();
          else if (c.op === 'd' && c.where) { // every row whose column is the value: a moved parent's children
            const [col, v] = Object.entries(c.where)[0];
            for (const [k, row] of m) if (row[col] === v) m.delete(k);
          } else if (c.op === 'd') m.delete(c.key);
          else {
            for (const col of c.unchanged ?? []) {
              const prev = m.get(c.key);
              if (!prev) throw new Failure(`segment ${k}: ${c.table} ${c.key}: "${col}" unchanged, and no row before`);
              c.row[col] = prev[col];
            }
            m.set(c.key, c.row);
          }
          changes++;
        }
      }
      const got = {}, w = {};
      for (const t of TABLES) {
        got[t] = [...st[t].values()].map(canon).sort();
        w[t] = want[u][t].map((j) => canon(JSON.parse(j))).sort();
      }
      this.diff(w, got, `user ${u}: its change segments replayed are not its rows`);
    }
    this.n.segments = segs;
    this.n.changes = changes;
  }

  // ---- jobs ----
  async job(fields, timeoutMs = 60000) {
    const id = `m${this.seed}-${++this.jobs}-${Date.now()}`;
    await this.redis.xadd(`${P}:jobs`, '*', 'job_id', id, ...fields);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const h = await this.redis.hgetall(`${P}:job:${id}`);
      if (h.status === 'completed' || h.status === 'dead') return h;
      if (Date.now() > deadline) throw new Failure(`job ${id} (${fields.join(' ')}) did not end in ${timeoutMs / 1000} s: ${JSON.stringify(h)}`);
      await sleep(50);
    }
  }

  // --segments: the instant after the last commit, and every user's rows then
  async point() {
    const { rows: [{ at }] } = await this.db.query(
      `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at`);
    const states = await this.state();
    const backed = new Set(this.backups.map((b) => b.user));
    this.points.push({ at, states, backed });
  }

  async backup(u, mode) {
    // a transaction open across the backup's snapshot: its writes are not in the backup
    let open = false;
    if (this.r() < 0.25) {
      await this.db2.query('BEGIN');
      const k = await this.write(this.db2, this.pick(this.users), ['new-order', 'update-order', 'delete-item', 'notification',
        'move-order', 'delete-order'], true);
      this.note(`  open transaction: ${k}`);
      open = true;
      this.n.long++;
    }
    const st = await this.state();
    const h = await this.job(['type', 'backup', 'user_id', u, 'mode', mode]);
    if (open) await this.db2.query('COMMIT');
    if (h.status !== 'completed') throw new Failure(`backup ${mode} of ${u} failed: ${h.error}`);
    this.backups.push({ id: h.backup_id, user: u, mode, state: st[u] });
    this.n.backup++;
    this.note(`backup ${mode} of ${u.slice(0, 13)}: ${h.backup_id}${h.note ? ` (${h.note})` : ''}`);
    // an export now and then, drawn from an rng of its own (the seed's operations stay the same),
    // later on, after other writes: its rows are still the backup's
    if (mode === 'full' && this.xr() < 0.3) this.toExport.push(this.backups[this.backups.length - 1]);
    else if (this.toExport.length && this.xr() < 0.5) await this.exportCheck(this.toExport.shift());
  }

  // An object of the store, whole
  readObject(key) {
    if (STORE_DIR) return readFileSync(`${STORE_DIR}/${key}`);
    if (!READER) throw new Failure('exports are read with backupctl: --ctl BACKUPCTL');
    const r = spawnSync(READER, ['s3', 'get', key, '-'], { maxBuffer: 1 << 28 });
    if (r.status !== 0) throw new Failure(`backupctl s3 get ${key}: ${r.stderr}`);
    return r.stdout;
  }

  // "download my data": the export of a full backup holds exactly the rows recorded for it
  async exportCheck(b) {
    const h = await this.job(['type', 'export', 'user_id', b.user, 'backup_id', b.id]);
    this.note(`export of ${b.id} (${b.mode}): ${h.status} ${h.error || ''}`);
    if (h.status !== 'completed') throw new Failure(`export of completed backup ${b.id} failed: ${h.error}`);
    const res = JSON.parse(h.result);
    const doc = JSON.parse(gunzipSync(this.readObject(res.key)).toString('utf8'));
    if (doc.format !== 'pedidolist-export' || doc.backup_id !== b.id || doc.user_id !== b.user)
      throw new Failure(`export of ${b.id}: header ${doc.format} ${doc.backup_id} ${doc.user_id}`);
    const got = {}, want = {};
    for (const t of TABLES) {
      got[t] = (doc.tables[t] ?? []).map(canon).sort();
      want[t] = b.state[t].map((j) => canon(JSON.parse(j))).sort();
    }
    this.diff(want, got, `the export of ${b.id} is not the rows recorded at that backup`);
    this.n.exports++;
  }

  async restore(b, concurrent) {
    const before = await this.state();
    let writer = null, stop = false, writes = 0;
    const others = this.users.filter((x) => x !== b.user);
    const markers = [], txns = [];
    const dry = this.r() < 0.15;
    if (concurrent) {
      // the application keeps writing meanwhile: other users' rows, and a few transactions on the
      // restored user's orders (two rows each: each must end wholly before or wholly after)
      const wr = rng(this.seed * 7919 + this.step); // its own: the writes it gets in vary with timing
      const now = new Set(before[b.user].orders.map((j) => JSON.parse(j).id));
      const mine = b.state.orders.map((j) => JSON.parse(j).id).filter((id) => now.has(id)).sort();
      writer = (async () => {
        for (let k = 0; !stop; k++) {
          if (mine.length >= 2 && txns.length < 3 && k % 4 === 1) {
            const i = Math.floor(wr() * mine.length), ids = [mine[i], mine[(i + 1) % mine.length]];
            const mark = `cw${this.seed}-${this.step}-${txns.length}`;
            try {
              await this.db3.query(`UPDATE orders SET notes = $1 WHERE id = ANY($2::uuid[])`, [mark, ids]);
            } catch (e) {
              throw new Failure(`the application's transaction on ${b.user}'s orders failed during a restore: ${e.message}`);
            }
            txns.push({ mark, ids });
            this.n.same++;
          }
          const u = others[Math.floor(wr() * others.length)], mark = `w${this.seed}-${writes++}`;
          await this.db3.query(`INSERT INTO notifications (user_id, type, title) VALUES ($1, 'concurrent', $2)`, [u, mark]);
          markers.push([u, mark]);
          await sleep(5);
        }
      })();
      this.n.concurrent++;
    }
    const fields = ['type', 'restore', 'user_id', b.user, ...(b.at ? ['at', b.at] : ['backup_id', b.id])];
    if (dry) fields.push('dry_run', 'true');
    let h;
    try { h = await this.job(fields); } finally { stop = true; if (writer) await writer; }
    this.note(`restore${dry ? ' (dry run)' : ''} of ${b.id} (${b.mode})${concurrent ? ` while writing (${txns.length} on its orders)` : ''}: ` +
      `${h.status} ${h.note || h.error || ''}`);
    const after = await this.state();
    let want = dry ? before[b.user] : b.state;
    if (h.status !== 'completed') {
      // the one refusal allowed: a row of the backup now belongs to another user (restoring it
      // would take it from them); then nothing may have changed
      // (to a point: also when the user had no backup before it)
      const moved = await this.movedAway(b);
      const noBase = b.at && !b.backed && /before the oldest backup|has no completed backup/.test(h.error || '');
      if (!noBase && (!moved || !/belong to rows of another user/.test(h.error || '')))
        throw new Failure(`restore ${b.at ? `to ${b.at}` : `of completed backup ${b.id}`} failed: ${h.error}`);
      if (b.at) this.n.pitrRefused++;
      else this.n.refused++;
      want = before[b.user];
    } else if (b.at) this.n.pitr++;
    else this.n.restore++;
    const got = this.wholly(txns, want, after[b.user]);
    this.diff(want, got, `user ${b.user} after ${dry ? 'a dry-run ' : ''}restore of ${b.id} (${b.mode}, ${b.index}) differs from ${dry ? 'before' : 'the backup'}`);
    for (const u of others) {
      const want = { ...before[u] };
      want.notifications = [...before[u].notifications];
      const got = { ...after[u], notifications: after[u].notifications.filter((j) => !j.includes('"concurrent"')) };
      this.diff(want, got, `restore of ${b.user}'s backup changed user ${u}'s rows`);
      const titles = new Set(after[u].notifications.map((j) => JSON.parse(j).title));
      for (const [mu, mark] of markers) if (mu === u && !titles.has(mark)) throw new Failure(`a concurrent write of ${u} was lost (${mark})`);
    }
    if (markers.length) await this.db.query(`DELETE FROM notifications WHERE type = 'concurrent' AND user_id = ANY($1)`, [this.users]);
  }

  // The application's transactions during a restore (txns, in commit order), each wholly before
  // the restore (its marks overwritten) or wholly after it (its marks kept, but for rows a later
  // one wrote): throws when one is half applied. Returns got with the kept marks' rows taken as
  // want's (their notes and updated_at are the application's), for the exact comparison.
  wholly(txns, want, got) {
    if (!txns.length) return got;
    const finalMark = new Map();
    for (const j of got.orders) { const o = JSON.parse(j); if (txns.some((t) => t.mark === o.notes)) finalMark.set(o.id, o.notes); }
    txns.forEach((t, k) => {
      const kept = t.ids.filter((id) => finalMark.get(id) === t.mark);
      if (!kept.length || kept.length === t.ids.length) return;
      for (const id of t.ids) {
        if (kept.includes(id)) continue;
        const later = txns.slice(k + 1).some((u) => u.ids.includes(id) && finalMark.get(id) === u.mark);
        if (!later) throw new Failure(`an application transaction (${t.mark} on orders ${t.ids.join(', ')}) is half applied after a restore`);
      }
    });
    this.n.kept += finalMark.size;
    const wantBy = new Map(want.orders.map((j) => [JSON.parse(j).id, j]));
    const orders = got.orders.map((j) => {
      const o = JSON.parse(j);
      if (!finalMark.has(o.id) || !wantBy.has(o.id)) return j;
      const w = JSON.parse(wantBy.get(o.id));
      const same = Object.keys(w).every((c) => c === 'notes' || c === 'updated_at' || JSON.stringify(w[c]) === JSON.stringify(o[c]));
      return same ? wantBy.get(o.id) : j;
    }).sort();
    return { ...got, orders };
  }

  // A key of the backup's rows that is now another user's row: the restore must refuse it.
  async movedAway(b) {
    for (const t of TABLES) {
      const key = t === 'user_settings' ? 'user_id' : 'id';
      const keys = b.state[t].map((j) => JSON.parse(j)[key]);
      if (!keys.length) continue;
      const owner = t === 'order_items' ? '(SELECT user_id FROM orders o WHERE o.id = x.order_id)' : `x.${OWNER[t] || 'user_id'}`;
      const n = await this.one(this.db, `SELECT count(*)::int AS n FROM ${t} x WHERE x.${key} = ANY($1::uuid[])
        AND ${owner} IS DISTINCT FROM $2::uuid`, [keys, b.user]);
      if (n.n > 0) return `${t}`;
    }
    return null;
  }

  async run() {
    await this.setup();
    const writes = ['new-order', 'new-order', 'update-order', 'update-order', 'delete-order', 'add-item', 'update-item',
      'delete-item', 'move-order', 'move-order', 'move-item', 'reinsert', 'notification', 'read-notification',
      'delete-notification', 'client', 'product', 'settings', 'truncate'];
    for (this.step = 1; this.step <= STEPS; this.step++) {
      const x = this.r();
      const u = this.pick(this.users);
      if (x < 0.5) {
        const k = await this.write(this.db, u, writes);
        this.note(`${k} (${u.slice(0, 13)})`);
        if (CTL && this.r() < 0.35) await this.point();
      } else if (x < 0.55) {
        this.copyNotifications(u);
        this.note(`copy notifications (${u.slice(0, 13)})`);
      } else if (x < 0.8 || this.backups.length === 0) {
        const has = this.backups.some((b) => b.user === u);
        await this.backup(u, has ? this.pick(['full', 'incremental', 'incremental', 'differential']) : 'full');
      } else if (CTL && this.points.length && this.r() < 0.5) { // to a point in time
        const p = this.pick(this.points);
        const b = { at: p.at, user: u, mode: 'point in time', id: `${u.slice(0, 13)} at ${p.at}`, state: p.states[u],
          backed: p.backed.has(u), index: this.points.indexOf(p) };
        await this.restore(b, this.r() < 0.3);
      } else {
        const b = this.pick(this.backups);
        b.index = this.backups.indexOf(b);
        await this.restore(b, this.r() < 0.3);
      }
    }
    // the end: every user restored to its last backup, exactly; its last full backup exported
    for (const u of this.users) {
      const last = this.backups.filter((b) => b.user === u).pop();
      if (last) { last.index = this.backups.indexOf(last); await this.restore(last, false); }
      const full = this.backups.filter((b) => b.user === u && b.mode === 'full').pop();
      if (full) await this.exportCheck(full);
    }
    if (CTL) await this.segments();
  }
}

main().catch((e) => { console.error(e); process.exit(2); });
