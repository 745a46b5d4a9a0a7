// The backup page in a real browser (Debian's chromium, headless, driven by playwright-core),
// the page built from @backup-worker/react: sign in with an ES256 token from the test project's
// JWKS, start a full backup, watch the bar reach 100 %, see the backup listed, preview a restore
// (per-table counts, nothing written), restore two tables only, download the data and open it.
// Screenshots of the preview dialog and of the finished restore land in $BW_TEST_OUTPUT
// (build/test-output/web).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { chromium } from 'playwright-core';
import { OUT, startStack, makeTenant, signedInPage, keyToken } from './lib.mjs';

const CHROMIUM = process.env.BW_CHROMIUM || '/usr/bin/chromium';
let S, browser, user;

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: tools/devenv install installs Debian's chromium`);
  S = await startStack();
  user = await makeTenant(200);
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
});

after(async () => {
  await browser?.close();
  await S?.close();
});

async function shot(page, name) {
  mkdirSync(OUT, { recursive: true });
  const path = join(OUT, name);
  await page.screenshot({ path, fullPage: true });
  assert.ok(statSync(path).size > 10000);
  process.stdout.write(`# screenshot: ${path}\n`);
}

test('the backup page: sign in (ES256), back up, preview and restore two tables, download my data', async () => {
  const tok = await keyToken(user, { email: 'dueña@example.com' });
  const { page, problems } = await signedInPage(browser, S.url, user, 900, tok);
  assert.equal(await page.textContent('#who'), 'dueña@example.com');
  assert.equal(await page.isVisible('#cleanup'), true, 'an owner sees cleanup');
  assert.equal(await page.textContent('#stat-total'), '0');

  // a full backup, its bar followed to 100 %, its stages said in Spanish
  const values = [];
  const stages = new Set();
  await page.exposeFunction('recordProgress', (v, stage) => {
    values.push(Number(v));
    if (stage) stages.add(stage);
  });
  await page.evaluate(() => {
    // progress.value reflects its content attribute: every change is a mutation
    new MutationObserver(() => {
      const bar = document.getElementById('job-progress');
      if (bar) window.recordProgress(bar.value, document.getElementById('job-stage')?.textContent);
    }).observe(document.body, { subtree: true, attributes: true, attributeFilter: ['value'], childList: true, characterData: true });
  });
  await page.click('#backup-full');
  await page.waitForSelector('#job[data-state="completed"]', { timeout: 60000 });
  assert.equal(await page.$eval('#job-progress', (b) => b.value), 100);
  assert.equal(await page.textContent('#job-state'), 'Completado');
  assert.ok(values.length >= 2 && values.includes(100), `bar values ${values.join(',')}`);
  assert.match(await page.textContent('#job-rows'), /filas/);
  const english = [...stages].filter((s) => /\b(snapshot|uploading|finalizing|starting|done|orders|deletions)\b/.test(s));
  assert.deepEqual(english, [], `stages shown: ${[...stages].join(' | ')}`);

  // listed, completed, with its size and rows
  const row = page.locator('#backups tbody tr').first();
  await row.waitFor();
  assert.equal(await page.locator('#backups tbody tr').count(), 1);
  assert.equal(await row.getAttribute('data-status'), 'completed');
  const backupId = await row.getAttribute('data-backup-id');
  assert.match(backupId, new RegExp(`^backup-${user}-`));
  assert.match(await row.textContent(), /Completo/);
  assert.equal(await page.textContent('#stat-total'), '1');

  // some damage: 20 orders deleted (their items with them), a product and a client renamed
  const n = async (sql) => (await S.pool.query(sql, [user])).rows[0].n;
  await S.pool.query('DELETE FROM orders WHERE id IN (SELECT id FROM orders WHERE user_id = $1 ORDER BY id LIMIT 20)', [user]);
  await S.pool.query("UPDATE products SET name = 'renombrado' WHERE id = (SELECT id FROM products WHERE user_id = $1 ORDER BY id LIMIT 1)", [user]);
  await S.pool.query("UPDATE clients SET name = 'renombrada' WHERE id = (SELECT id FROM clients WHERE user_id = $1 ORDER BY id LIMIT 1)", [user]);
  const items = await n('SELECT count(*)::int AS n FROM order_items i JOIN orders o ON o.id = i.order_id WHERE o.user_id = $1');

  // "Restaurar": the preview first, per table, nothing written
  await row.locator('button.restore').click();
  await page.waitForSelector('#restore-dialog[data-ready]', { timeout: 60000 });
  const changes = async (t) => page.textContent(`#restore-preview tr[data-table="${t}"] td.changes`);
  assert.equal(await changes('orders'), 'se insertarán 20');
  assert.match(await changes('order_items'), /^se insertarán \d+$/);
  assert.equal(await changes('products'), 'se actualizarán 1');
  assert.equal(await changes('clients'), 'se actualizarán 1');
  assert.equal(await changes('profiles'), 'sin cambios');
  assert.equal(await n('SELECT count(*)::int AS n FROM orders WHERE user_id = $1'), 180, 'the preview wrote nothing');
  for (const t of ['orders', 'order_items', 'products', 'clients'])
    assert.equal(await page.isChecked(`#restore-preview input[name="${t}"]`), true, `${t} chosen to begin with`);
  assert.equal(await page.isChecked('#restore-preview input[name="profiles"]'), false, 'a table without changes is not');
  // two tables only: the orders and their items
  await page.uncheck('#restore-preview input[name="products"]');
  await page.uncheck('#restore-preview input[name="clients"]');
  await shot(page, 'restore-preview.png');
  await page.click('#restore-confirm');
  await page.waitForFunction(() => document.getElementById('job-title')?.textContent === 'Restauración');
  await page.waitForSelector('#job[data-state="completed"]', { timeout: 60000 });
  await page.waitForFunction(() => document.getElementById('message')?.textContent !== '');
  assert.match(await page.textContent('#message'), /^Restauración: completado \(se insertaron \d+\)$/);
  assert.equal(await n('SELECT count(*)::int AS n FROM orders WHERE user_id = $1'), 200, 'the deleted orders are back');
  assert.ok(await n('SELECT count(*)::int AS n FROM order_items i JOIN orders o ON o.id = i.order_id WHERE o.user_id = $1') > items);
  assert.equal(await n("SELECT count(*)::int AS n FROM products WHERE user_id = $1 AND name = 'renombrado'"), 1, 'products not chosen: kept');
  assert.equal(await n("SELECT count(*)::int AS n FROM clients WHERE user_id = $1 AND name = 'renombrada'"), 1, 'clients not chosen: kept');
  await shot(page, 'restore-done.png');

  // "Descargar": the export written by the worker, then a link of 15 minutes to the user's data
  await row.locator('button.download').click();
  await page.waitForSelector('#download-link', { timeout: 60000 });
  assert.match(await page.textContent('#message'), /^Exportación: completado/);
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download-link')]);
  assert.match(download.suggestedFilename(), /^mis-datos-\d{4}-\d\d-\d\d\.json\.gz$/);
  const file = join(OUT, 'mis-datos.json.gz');
  await download.saveAs(file);
  const doc = JSON.parse(gunzipSync(readFileSync(file)).toString('utf8'));
  assert.equal(doc.format, 'pedidolist-export');
  assert.equal(doc.backup_id, backupId);
  assert.equal(doc.user_id, user);
  assert.equal(doc.tables.orders.length, 200);
  assert.ok(doc.tables.orders.every((o) => o.user_id === user));
  assert.deepEqual(problems, []);
});
