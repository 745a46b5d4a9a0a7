// Every string the section shows, in Spanish, in one place (a translation is this file).

export const TABLES: Record<string, string> = {
  profiles: 'perfil',
  businesses: 'negocios',
  products: 'productos',
  clients: 'clientes',
  orders: 'pedidos',
  order_items: 'líneas de pedido',
  notifications: 'notificaciones',
  user_settings: 'ajustes',
};
export const tableName = (t: string): string => TABLES[t] ?? t;

export const TYPES: Record<string, string> = { full: 'Completo', incremental: 'Incremental', differential: 'Diferencial' };
export const STATUSES: Record<string, string> = {
  pending: 'Pendiente', running: 'En curso', completed: 'Completado', failed: 'Fallido', expired: 'Caducado', deleted: 'Borrado',
};

/** The worker's stage names (proto/README.md, progress events), as the page says them. */
const STAGES: Record<string, string> = {
  queued: 'en cola',
  starting: 'empezando',
  snapshot: 'instantánea de los datos',
  changes: 'cambios',
  deletions: 'borrados',
  uploading: 'subiendo',
  finalizing: 'terminando',
  done: 'terminado',
  checking: 'comprobando',
  preparing: 'preparando',
  committing: 'guardando los cambios',
  'rolling back (dry run)': 'deshaciendo (vista previa)',
  exporting: 'exportando',
  copying: 'copiando',
  'change segments': 'segmentos de cambios',
};

/** A stage in Spanish: a known name, a table (its rows are being read or written), or a
 * stage with details ("downloading <backup>", "replaying changes (1 of 3 segments)"). */
export function stageLabel(stage: string | undefined): string {
  if (!stage) return '';
  if (STAGES[stage]) return STAGES[stage];
  if (TABLES[stage]) return TABLES[stage];
  if (stage.startsWith('downloading ')) return 'descargando el backup';
  const m = /^replaying changes \((\d+) of (\d+) segments?\)$/.exec(stage);
  if (m) return `aplicando los cambios (${m[1]} de ${m[2]})`;
  return 'en curso';
}

export const S = {
  title: 'Backup de datos',
  signOut: 'Salir',
  stats: { total: 'Backups', size: 'Almacenamiento', rate: 'Tasa de éxito', last: 'Último backup' },
  createFull: 'Crear backup completo',
  createIncremental: 'Backup incremental',
  cleanup: 'Limpiar backups antiguos',
  cleanupConfirm: '¿Borrar los backups antiguos? Se conserva siempre el último backup completo.',
  columns: ['Fecha', 'Tipo', 'Estado', 'Tamaño', 'Filas', 'Verificado', ''],
  yes: 'Sí',
  no: 'No',
  empty: 'Todavía no hay backups.',
  restore: 'Restaurar',
  download: 'Descargar',
  downloadReady: 'Tu descarga está lista:',
  downloadLink: 'descargar mis datos (JSON, gzip)',
  downloadValid: (until: string) => `El enlace vale hasta las ${until}.`,
  jobs: {
    full: 'Backup completo',
    incremental: 'Backup incremental',
    restore: 'Restauración',
    preview: 'Vista previa',
    pitrPreview: 'Vista previa',
    pitr: 'Restauración a un momento',
    cleanup: 'Limpieza',
    export: 'Exportación',
  },
  state: { queued: 'En cola', running: 'En curso', completed: 'Completado', failed: 'Fallido' } as Record<string, string>,
  stage: (s: string) => `Etapa: ${s}`,
  rows: (n: number, total?: number) => `${n}${total ? ` / ${total}` : ''} filas`,
  completed: (title: string) => `${title}: completado`,
  dialog: {
    title: (date: string) => `Restaurar el backup del ${date}`,
    loading: 'Calculando qué cambiaría…',
    intro: 'Esto es lo que cambiaría en tus datos. Elige las tablas que quieres restaurar; nada cambia hasta que confirmes.',
    columns: ['', 'Tabla', 'Cambios'],
    nothing: 'sin cambios',
    confirm: 'Restaurar las tablas elegidas',
    cancel: 'Cancelar',
    noneChosen: 'Elige al menos una tabla.',
  },
  /** "se insertarán 2, se actualizarán 3, se eliminarán 1" */
  changes: (c: { inserted?: number; updated?: number; deleted?: number }, done = false): string => {
    const parts: string[] = [];
    if (c.inserted) parts.push(`${done ? 'se insertaron' : 'se insertarán'} ${c.inserted}`);
    if (c.updated) parts.push(`${done ? 'se actualizaron' : 'se actualizarán'} ${c.updated}`);
    if (c.deleted) parts.push(`${done ? 'se eliminaron' : 'se eliminarán'} ${c.deleted}`);
    return parts.join(', ');
  },
  pitr: {
    title: 'Volver a un momento',
    intro: 'Tus datos tal como estaban en un instante: el último backup anterior y los cambios registrados hasta entonces. Primero la vista previa; nada cambia hasta que confirmes.',
    moment: 'Momento',
    preview: 'Vista previa',
    restore: 'Restaurar a este momento',
    columns: ['Tabla', 'Se recuperan', 'Se actualizan', 'Se borran', 'Sin cambios'],
    activity: 'Actividad registrada',
    refresh: 'Actualizar',
    none: 'Sin actividad registrada todavía (la captura de cambios, BACKUP_TRACKING=wal, la registra).',
    justBefore: 'Justo antes',
    justBeforeTitle: 'Restaurar al instante anterior a este cambio',
    choose: 'Elige un momento (o «Justo antes» de un cambio de la lista).',
    confirm: (when: string) => `¿Restaurar tus datos a como estaban el ${when}? Se aplicarán los cambios de la vista previa.`,
    emptied: (t: string) => `${t} vaciada`,
    noRows: 'sin filas',
    transactions: (n: number) => ` (${n} transacciones)`,
  },
  signIn: {
    title: 'Iniciar sesión',
    intro: 'Pega el token de acceso (JWT de Supabase) de tu sesión.',
    button: 'Entrar',
  },
};

export const fmtBytes = (n: number | null | undefined): string => {
  if (n === null || n === undefined) return '–';
  const u = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < u.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i ? 1 : 0)} ${u[i]}`;
};
export const fmtDate = (s: string | null | undefined): string => (s ? new Date(s).toLocaleString('es') : '–');
