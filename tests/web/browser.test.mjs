// The backup page in a real browser (Debian's chromium, headless, driven by
// playwright-core): sign in with a test JWT, start a full backup, watch the
// bar reach 100 %, see the backup listed, restore it, see the restore complete.
// The screenshot lands in $BW_TEST_OUTPUT (build/test-output/web).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { OUT, startStack, makeTenant, signedInPage } from './lib.mjs';

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

test('the backup page: sign in, back up, watch, list, restore', async () => {
  const { page, problems } = await signedInPage(browser, S.url, user);
  assert.equal(await page.textContent('#who'), 'dueña@example.com');
  assert.equal(await page.isVisible('#cleanup'), true, 'an owner sees cleanup');
  assert.equal(await page.textContent('#stat-total'), '0');

  // a full backup, its bar followed to 100 %
  const values = [];
  await page.exposeFunction('recordProgress', (v) => values.push(Number(v)));
  await page.evaluate(() => {
    // progress.value reflects its content attribute: every change is a mutation
    const bar = document.getElementById('job-progress');
    new MutationObserver(() => window.recordProgress(bar.value)).observe(bar, { attributeFilter: ['value'] });
  });
  await page.click('#backup-full');
  await page.waitForSelector('#job[data-state="completed"]', { timeout: 60000 });
  assert.equal(await page.$eval('#job-progress', (b) => b.value), 100);
  assert.equal(await page.textContent('#job-state'), 'Completado');
  assert.ok(values.length >= 2 && values.includes(100), `bar values ${values.join(',')}`);
  assert.match(await page.textContent('#job-rows'), /filas/);

  // listed, completed, with its size and rows
  const row = page.locator('#backups tbody tr').first();
  await row.waitFor();
  assert.equal(await page.locator('#backups tbody tr').count(), 1);
  assert.equal(await row.getAttribute('data-status'), 'completed');
  const backupId = await row.getAttribute('data-backup-id');
  assert.match(backupId, new RegExp(`^backup-${user}-`));
  assert.match(await row.textContent(), /Completo/);
  assert.equal(await page.textContent('#stat-total'), '1');

  // some damage, then the restore, confirmed
  await S.pool.query('DELETE FROM orders WHERE id IN (SELECT id FROM orders WHERE user_id = $1 LIMIT 20)', [user]);
  let asked = '';
  page.once('dialog', (d) => {
    asked = d.message();
    d.accept();
  });
  await row.locator('button.restore').click();
  await page.waitForFunction(() => document.getElementById('job-title').textContent === 'Restauración');
  await page.waitForSelector('#job[data-state="completed"]', { timeout: 60000 });
  assert.match(asked, /Restaurar el backup/);
  assert.match(await page.textContent('#message'), /Restauración: completado/);
  const { rows } = await S.pool.query('SELECT count(*)::int AS n FROM orders WHERE user_id = $1', [user]);
  assert.equal(rows[0].n, 200, 'the deleted orders are back');

  mkdirSync(OUT, { recursive: true });
  const shot = join(OUT, 'backup-page.png');
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(statSync(shot).size > 10000);
  process.stdout.write(`# screenshot: ${shot}\n`);
  assert.deepEqual(problems, []);
});
