// Back to a point in time from the page, in a real browser (Debian's chromium, playwright-core),
// with the change capture running (BACKUP_TRACKING=wal; the database is switched for this file
// and back to triggers after it): a full backup, then orders deleted by mistake; the timeline
// lists that transaction; "Justo antes" picks the instant before it; the preview counts what
// would come back and writes nothing; the restore, confirmed, brings the orders back.
// The screenshot of the timeline and the preview lands in $BW_TEST_OUTPUT.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { chromium } from 'playwright-core';
import pg from 'pg';
import { OUT, WORKER, startStack, makeTenant, signedInPage } from './lib.mjs';

const CHROMIUM = process.env.BW_CHROMIUM || '/usr/bin/chromium';
const CTL = join(dirname(WORKER), 'backupctl');
let S, browser, user;

const ctl = (...args) => execFileSync(CTL, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: tools/devenv install installs Debian's chromium`);
  ctl('tracking', 'wal');
  S = await startStack({ workerEnv: { BACKUP_TRACKING: 'wal', CAPTURE_FLUSH_INTERVAL: '300ms', CAPTURE_LEASE: '3s' } });
  user = await makeTenant(40);
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
});

after(async () => {
  await browser?.close();
  await S?.close();
  ctl('tracking', 'triggers');
  // the slot goes too: an idle one would hold WAL for the rest of the run
  const c = new pg.Client({ connectionString: process.env.DATABASE_URL });
  await c.connect();
  for (let i = 0; i < 50; i++) {
    const { rows } = await c.query(`SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name = 'backup_capture'
      AND active`);
    if (rows[0].n === 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await c.query(`SELECT pg_drop_replication_slot('backup_capture') FROM pg_replication_slots
    WHERE slot_name = 'backup_capture' AND NOT active`);
  await c.end();
});

test('the page: the timeline, "just before" a mistake, the preview, the restore', async () => {
  const { page, problems } = await signedInPage(browser, S.url, user, 1300);

  await page.click('#backup-full');
  await page.waitForSelector('#job[data-state="completed"]', { timeout: 60000 });
  // the application goes on, then the mistake: ten orders deleted in one transaction
  await S.pool.query('UPDATE orders SET notes = $2 WHERE id = (SELECT id FROM orders WHERE user_id = $1 ORDER BY id LIMIT 1)',
    [user, 'llamar al cliente']);
  await new Promise((r) => setTimeout(r, 300));
  await S.pool.query('DELETE FROM orders WHERE id IN (SELECT id FROM orders WHERE user_id = $1 ORDER BY id DESC LIMIT 10)', [user]);
  const left = async () => (await S.pool.query('SELECT count(*)::int AS n FROM orders WHERE user_id = $1', [user])).rows[0].n;
  assert.equal(await left(), 30);

  // the timeline shows it once captured (a few hundred ms): newest first
  let mistake;
  for (let i = 0; i < 100 && !mistake; i++) {
    await page.click('#timeline-refresh');
    await page.waitForTimeout(200);
    mistake = await page.$('#timeline li:first-child:has-text("pedidos −10")');
  }
  assert.ok(mistake, `the deletion is in the timeline: ${await page.textContent('#timeline')}`);
  const when = await mistake.getAttribute('data-time');
  await mistake.$('button.before').then((b) => b.click());
  const at = await page.getAttribute('#pitr', 'data-at');
  assert.ok(at < when && at.slice(0, 19) <= when.slice(0, 19), `${at} is just before ${when}`);

  // the preview: ten orders (and their items) would come back; nothing is written yet
  await page.click('#pitr-preview');
  await page.waitForSelector('#pitr[data-previewed]', { timeout: 60000 });
  const orders = page.locator('#pitr-result tr[data-table="orders"] td');
  assert.equal(await orders.nth(1).textContent(), '10', 'ten orders would come back');
  assert.equal(await orders.nth(3).textContent(), '0', 'none deleted');
  assert.equal(await left(), 30, 'the preview wrote nothing');
  assert.equal(await page.isEnabled('#pitr-restore'), true);
  mkdirSync(OUT, { recursive: true });
  const shot = join(OUT, 'pitr-page.png');
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(statSync(shot).size > 10000);
  process.stdout.write(`# screenshot: ${shot}\n`);

  // the restore, confirmed: the orders are back, the earlier note kept
  let asked = '';
  page.once('dialog', (d) => { asked = d.message(); d.accept(); });
  await page.click('#pitr-restore');
  await page.waitForFunction(() => document.getElementById('job-title').textContent === 'Restauración a un momento');
  await page.waitForSelector('#job[data-state="completed"]', { timeout: 60000 });
  assert.match(asked, /Restaurar tus datos a como estaban/);
  assert.equal(await left(), 40, 'the ten orders are back');
  const { rows } = await S.pool.query("SELECT count(*)::int AS n FROM orders WHERE user_id = $1 AND notes = 'llamar al cliente'", [user]);
  assert.equal(rows[0].n, 1, 'the change before the mistake is kept');
  assert.deepEqual(problems, []);
});
