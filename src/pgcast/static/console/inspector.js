// The inspector: one subscription (table + filter) through the browser client, as any
// client of the gateway makes it, showing each change as it arrives (newest first).

import { createClient } from './js/pgcast.js';

const KEEP = 200;
const $ = (id) => /** @type {HTMLInputElement} */ (document.getElementById(id));

/** @type {import('./js/pgcast.js').Client | null} */
let client = null;

function status(text) {
  $('inspect-status').textContent = text;
}

function stop() {
  if (client) client.close();
  client = null;
  $('inspect-stop').disabled = true;
  $('inspect-start').disabled = false;
}

function start() {
  stop();
  const [schema, table] = splitName($('inspect-table').value.trim());
  const filter = $('inspect-filter').value.trim();
  const token = $('inspect-token').value.trim();
  // The gateway's WebSocket, where this page is served (also below a mount point).
  const url = new URL('../', location.href).href;
  client = createClient({ url, token: token || undefined });
  client.on('status', (s) => status(`connection: ${s}`));
  const log = $('inspect-log');
  log.replaceChildren();
  const request = { table, ...(schema ? { schema } : {}), ...(filter ? { filter } : {}) };
  client.subscribe(request, {
    onSubscribed: () => status(`live: ${schema ? `${schema}.` : ''}${table}${filter ? ` where ${filter}` : ''}`),
    onChange: (change) => {
      const li = document.createElement('li');
      li.className = 'change';
      li.dataset.op = change.op;
      const time = change.committed_at ? new Date(change.committed_at).toLocaleTimeString() : '';
      const row = change.record ?? change.old_record;
      li.textContent = `${time} ${change.op} #${change.id} ${JSON.stringify(row)}`;
      log.prepend(li);
      while (log.children.length > KEEP) log.lastElementChild?.remove();
    },
    onError: (error) => status(`refused: ${error.code}: ${error.message}`),
  });
  $('inspect-stop').disabled = false;
}

/** @param {string} name "table" or "schema.table" */
function splitName(name) {
  const dot = name.indexOf('.');
  return dot < 0 ? ['', name] : [name.slice(0, dot), name.slice(dot + 1)];
}

export function startInspector() {
  document.getElementById('inspect-form')?.addEventListener('submit', (event) => {
    event.preventDefault();
    start();
  });
  document.getElementById('inspect-stop')?.addEventListener('click', stop);
}
