// The profile page's "Backup de datos" section, on the browser BackupService.
import { BackupService, BackupError } from '/assets/client/browser.js';

const $ = (id) => document.getElementById(id);
const svc = new BackupService({ getToken: () => sessionStorage.getItem('bw_token') });

const fmtBytes = (n) => {
  if (n === null || n === undefined) return '–';
  const u = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(i ? 1 : 0)} ${u[i]}`;
};
const fmtDate = (s) => (s ? new Date(s).toLocaleString('es') : '–');
const TYPE = { full: 'Completo', incremental: 'Incremental', differential: 'Diferencial' };
const STATUS = { pending: 'Pendiente', running: 'En curso', completed: 'Completado', failed: 'Fallido', expired: 'Caducado', deleted: 'Borrado' };

function say(text, error = false) {
  $('message').textContent = text;
  $('message').className = error ? 'error' : '';
}

let busy = false;
function setBusy(b) {
  busy = b;
  for (const id of ['backup-full', 'backup-incremental', 'cleanup', 'pitr-preview']) $(id).disabled = b;
  $('pitr-restore').disabled = b || !previewed;
  for (const btn of document.querySelectorAll('button.restore')) btn.disabled = b;
}

// ---- back to a point in time: the timeline of the user's transactions, a preview, the restore ----

let pitrAt = null; // the point chosen, exact (an RFC 3339 UTC time with microseconds)
let previewed = null; // the point the preview shown is of
const TABLE = { profiles: 'perfil', businesses: 'negocios', products: 'productos', clients: 'clientes', orders: 'pedidos',
  order_items: 'líneas de pedido', notifications: 'notificaciones', user_settings: 'ajustes' };

// The instant just before a commit (its time minus one microsecond): "just before the mistake".
function justBefore(t) {
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?Z$/.exec(t);
  if (!m) return t;
  const us = BigInt(Date.parse(`${m[1]}Z`)) * 1000n + BigInt((m[2] ?? '').padEnd(6, '0')) - 1n;
  const ms = new Date(Number(us / 1000n)).toISOString().slice(0, 19);
  return `${ms}.${String(us % 1000000n).padStart(6, '0')}Z`;
}

// datetime-local shows local time to the second
const toLocalInput = (iso) => {
  const d = new Date(iso);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
};

function choose(at, li) {
  pitrAt = at;
  previewed = null;
  $('pitr-at').value = toLocalInput(at);
  $('pitr').dataset.at = at;
  $('pitr-restore').disabled = true;
  $('pitr-result').hidden = true;
  for (const x of document.querySelectorAll('#timeline li')) x.classList.toggle('chosen', x === li);
}

function summary(counts) {
  const parts = [];
  for (const [t, c] of Object.entries(counts ?? {})) {
    if (c.t) { parts.push(`${TABLE[t] ?? t} vaciada`); continue; }
    const n = [c.i ? `+${c.i}` : '', c.u ? `~${c.u}` : '', c.d ? `−${c.d}` : ''].filter(Boolean).join(' ');
    if (n) parts.push(`${TABLE[t] ?? t} ${n}`);
  }
  return parts.join('; ') || 'sin filas';
}

async function loadTimeline() {
  const entries = await svc.timeline();
  const list = $('timeline');
  list.replaceChildren();
  for (const e of [...entries].reverse()) { // newest first
    const li = document.createElement('li');
    li.dataset.time = e.time;
    const when = document.createElement('span');
    when.className = 'when';
    when.textContent = new Date(e.time).toLocaleString('es');
    const what = document.createElement('span');
    what.textContent = summary(e.counts) + (e.transactions > 1 ? ` (${e.transactions} transacciones)` : '');
    const btn = document.createElement('button');
    btn.type = 'button';
    btn.className = 'link before';
    btn.textContent = 'Justo antes';
    btn.title = 'Restaurar al instante anterior a este cambio';
    btn.addEventListener('click', () => choose(justBefore(e.time), li));
    li.append(when, what, ' ', btn);
    list.append(li);
  }
  $('timeline-empty').hidden = entries.length > 0;
  $('pitr').dataset.entries = String(entries.length);
}

function showPreview(result) {
  const body = $('pitr-result').querySelector('tbody');
  body.replaceChildren();
  for (const [t, c] of Object.entries(result.tables ?? {})) {
    const tr = document.createElement('tr');
    tr.dataset.table = t;
    for (const text of [TABLE[t] ?? t, c.inserted, c.updated, c.deleted, c.unchanged]) {
      const td = document.createElement('td');
      td.textContent = String(text);
      tr.append(td);
    }
    body.append(tr);
  }
  $('pitr-result').hidden = false;
}

async function preview() {
  if (!pitrAt) { say('Elige un momento (o «Justo antes» de un cambio de la lista).', true); return; }
  const at = pitrAt;
  const done = await track('Vista previa', () => svc.restoreBackup({ at, dryRun: true }));
  if (!done) return;
  showPreview(done.result ?? {});
  previewed = at;
  $('pitr-restore').disabled = false;
  $('pitr').dataset.previewed = at;
}

async function restoreAt() {
  if (!previewed) return;
  const at = previewed;
  if (!confirm(`¿Restaurar tus datos a como estaban el ${new Date(at).toLocaleString('es')}? Se aplicarán los cambios de la vista previa.`)) return;
  previewed = null;
  await track('Restauración a un momento', () => svc.restoreBackup({ at }));
}

async function refresh() {
  loadTimeline().catch((e) => say(e.message, true));
  const [stats, list] = await Promise.all([svc.getStatus(), svc.listBackups()]);
  $('stat-total').textContent = String(stats.total_backups);
  $('stat-size').textContent = fmtBytes(stats.total_size_bytes);
  $('stat-rate').textContent = stats.success_rate === null ? '–' : `${stats.success_rate} %`;
  $('stat-last').textContent = fmtDate(stats.last_backup_at);
  const body = $('backups').querySelector('tbody');
  body.replaceChildren();
  for (const b of list) {
    const tr = document.createElement('tr');
    tr.dataset.backupId = b.id;
    tr.dataset.status = b.status;
    for (const text of [fmtDate(b.created_at), TYPE[b.type] ?? b.type, STATUS[b.status] ?? b.status,
      fmtBytes(b.size), b.rows ?? '–', b.verified ? 'Sí' : 'No']) {
      const td = document.createElement('td');
      td.textContent = String(text);
      tr.append(td);
    }
    const td = document.createElement('td');
    if (b.status === 'completed') {
      const btn = document.createElement('button');
      btn.type = 'button';
      btn.className = 'restore';
      btn.textContent = 'Restaurar';
      btn.disabled = busy;
      btn.addEventListener('click', () => restore(b));
      td.append(btn);
    }
    tr.append(td);
    body.append(tr);
  }
  $('empty').hidden = list.length > 0;
  // tells a reader (and the browser test) that the figures shown are loaded
  $('backup').dataset.loaded = String(Number($('backup').dataset.loaded ?? 0) + 1);
}

async function track(title, start) {
  setBusy(true);
  say('');
  $('job').hidden = false;
  $('job').dataset.state = 'queued';
  $('job-title').textContent = title;
  $('job-state').textContent = 'En cola';
  $('job-progress').value = 0;
  $('job-stage').textContent = $('job-rows').textContent = $('job-bytes').textContent = '';
  try {
    const { jobId } = await start();
    $('job').dataset.jobId = jobId;
    const done = await svc.watch(jobId, {
      onProgress: (s) => {
        $('job-state').textContent = s.status === 'running' ? 'En curso' : s.status === 'queued' ? 'En cola' : s.status;
        $('job-progress').value = s.progress;
        $('job-stage').textContent = s.stage ? `Etapa: ${s.stage}` : '';
        $('job-rows').textContent = s.rows ? `${s.rows}${s.rowsTotal ? ' / ' + s.rowsTotal : ''} filas` : '';
        $('job-bytes').textContent = s.bytes ? fmtBytes(s.bytes) : '';
      },
    });
    $('job-progress').value = 100;
    $('job-state').textContent = 'Completado';
    $('job').dataset.state = 'completed';
    say(done.note ? `${title}: completado (${done.note})` : `${title}: completado`);
    return done;
  } catch (e) {
    $('job-state').textContent = 'Fallido';
    $('job').dataset.state = 'failed';
    say(e instanceof BackupError ? e.message : String(e), true);
    return null;
  } finally {
    setBusy(false);
    await refresh().catch((e) => say(e.message, true));
  }
}

function restore(b) {
  if (!confirm(`¿Restaurar el backup del ${fmtDate(b.created_at)}? Los datos actuales se reemplazarán por los del backup.`)) return;
  track('Restauración', () => svc.restoreBackup({ backupId: b.id }));
}

async function signedIn() {
  try {
    const me = await svc.me();
    $('who').textContent = me.email ?? me.userId;
    $('cleanup').hidden = !me.owner;
    $('signin').hidden = true;
    $('backup').hidden = false;
    await refresh();
  } catch (e) {
    sessionStorage.removeItem('bw_token');
    $('signin').hidden = false;
    $('backup').hidden = true;
    say('');
    alertSignin(e instanceof BackupError ? e.message : String(e));
  }
}

function alertSignin(text) {
  let p = $('signin-error');
  if (!p) {
    p = document.createElement('p');
    p.id = 'signin-error';
    p.className = 'error';
    $('signin').append(p);
  }
  p.textContent = text;
}

$('signin-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  sessionStorage.setItem('bw_token', $('token').value.trim());
  signedIn();
});
$('signout').addEventListener('click', () => {
  sessionStorage.removeItem('bw_token');
  location.reload();
});
$('backup-full').addEventListener('click', () => track('Backup completo', () => svc.createBackup({ type: 'full' })));
$('backup-incremental').addEventListener('click', () => track('Backup incremental', () => svc.createBackup({ type: 'incremental' })));
$('pitr-at').addEventListener('change', () => {
  const v = $('pitr-at').value;
  if (v) choose(new Date(v).toISOString(), null);
});
$('pitr-preview').addEventListener('click', preview);
$('pitr-restore').addEventListener('click', restoreAt);
$('timeline-refresh').addEventListener('click', () => loadTimeline().catch((e) => say(e.message, true)));
$('cleanup').addEventListener('click', () => {
  if (!confirm('¿Borrar los backups antiguos? Se conserva siempre el último backup completo.')) return;
  track('Limpieza', () => svc.cleanup());
});

if (sessionStorage.getItem('bw_token')) signedIn();
