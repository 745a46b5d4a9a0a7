// The operators' files: the alert rules pass promtool (syntax and their unit
// tests), and every bw_* metric the Grafana dashboard and the rules name is
// exported by a running worker, in a format promtool accepts.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { ROOT, startStack, until } from './lib.mjs';

const DASH = join(ROOT, 'deploy/grafana/backup-worker.json');
const RULES = join(ROOT, 'deploy/prometheus/alerts.yaml');
let S, exposition;

before(async () => {
  S = await startStack();
  exposition = await until('the worker\'s metrics', async () => {
    const r = await fetch(`http://127.0.0.1:${S.metricsPort}/metrics`).catch(() => null);
    return r && r.ok ? r.text() : null;
  });
});

after(async () => {
  await S?.close();
});

const promtool = (args, input) => spawnSync('promtool', args, { input, encoding: 'utf8', cwd: join(ROOT, 'deploy/prometheus') });

/** Metric names in a PromQL expression that are ours (Prometheus's own `up` aside). */
const names = (expr) => [...expr.matchAll(/\b(bw_[a-z0-9_]+)/g)].map((m) => m[1]);

function dashboardExprs(d) {
  const out = [];
  const walk = (panels) => {
    for (const p of panels ?? []) {
      for (const t of p.targets ?? []) out.push({ panel: p.title, expr: t.expr });
      walk(p.panels);
    }
  };
  walk(d.panels);
  return out;
}

test('promtool: the rules are valid and their unit tests pass', () => {
  const check = promtool(['check', 'rules', RULES]);
  assert.equal(check.status, 0, check.stdout + check.stderr);
  const t = promtool(['test', 'rules', 'alerts.test.yaml']);
  assert.equal(t.status, 0, t.stdout + t.stderr);
});

test('the rules cover what operators need', () => {
  const alerts = parse(readFileSync(RULES, 'utf8')).groups.flatMap((g) => g.rules).map((r) => r.alert);
  for (const a of ['BackupWorkerDown', 'BackupDeadLettersGrowing', 'BackupJobsWaitingTooLong',
    'BackupEventLoopLagHigh', 'BackupsFailing', 'NoBackupCompleted'])
    assert.ok(alerts.includes(a), a);
});

test('the worker\'s exposition passes promtool check metrics', () => {
  const r = promtool(['check', 'metrics'], exposition);
  assert.equal(r.status, 0, r.stdout + r.stderr);
});

test('every metric of the dashboard and the rules is exported by a running worker', () => {
  const exported = new Set(exposition.split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.split(/[{ ]/)[0]));
  const dash = JSON.parse(readFileSync(DASH, 'utf8'));
  const exprs = dashboardExprs(dash);
  assert.ok(exprs.length >= 15, `${exprs.length} queries`);
  const rules = parse(readFileSync(RULES, 'utf8')).groups.flatMap((g) => g.rules);
  exprs.push(...rules.map((r) => ({ panel: `alert ${r.alert}`, expr: r.expr })));
  const missing = [];
  let n = 0;
  for (const { panel, expr } of exprs)
    for (const m of names(expr)) {
      n++;
      if (!exported.has(m)) missing.push(`${panel}: ${m}`);
    }
  assert.ok(n >= 25, `${n} metric references`);
  assert.deepEqual(missing, []);
  // what the issue asks the dashboard to show
  const all = exprs.map((e) => e.expr).join('\n');
  for (const m of ['bw_jobs_completed_total', 'bw_jobs_failed_total', 'bw_job_duration_seconds_bucket', 'bw_queue_waiting',
    'bw_queue_pending', 'bw_queue_delayed', 'bw_queue_dead', 'bw_queue_oldest_waiting_seconds', 'bw_event_loop_lag_seconds',
    'bw_s3_retries_total', 'bw_s3_bytes_total', 'bw_pg_pool_connections', 'bw_backup_last_completed_timestamp_seconds'])
    assert.ok(all.includes(m), m);
});

test('the dashboard is a Grafana dashboard: unique panel ids, a Prometheus data source on every query', () => {
  const dash = JSON.parse(readFileSync(DASH, 'utf8'));
  assert.equal(dash.uid, 'backup-worker');
  const ids = [];
  const walk = (panels) => {
    for (const p of panels ?? []) {
      ids.push(p.id);
      assert.ok(p.gridPos && p.title, `panel ${p.id}`);
      for (const t of p.targets ?? []) assert.equal(t.datasource.type, 'prometheus', p.title);
      walk(p.panels);
    }
  };
  walk(dash.panels);
  assert.equal(new Set(ids).size, ids.length);
});
