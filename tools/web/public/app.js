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
  for (const id of ['backup-full', 'backup-incremental', 'cleanup']) $(id).disabled = b;
  for (const btn of document.querySelectorAll('button.restore')) btn.disabled = b;
}

async function refresh() {
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
  } catch (e) {
    $('job-state').textContent = 'Fallido';
    $('job').dataset.state = 'failed';
    say(e instanceof BackupError ? e.message : String(e), true);
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
$('cleanup').addEventListener('click', () => {
  if (!confirm('¿Borrar los backups antiguos? Se conserva siempre el último backup completo.')) return;
  track('Limpieza', () => svc.cleanup());
});

if (sessionStorage.getItem('bw_token')) signedIn();
