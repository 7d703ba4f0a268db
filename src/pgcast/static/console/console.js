// The operator console: polls api/stats once a second with the admin token and draws
// the figures, the charts and the tables. The token comes from the form or from the
// page's fragment (#token=...), which never reaches a server; it is kept for the tab
// only (sessionStorage).

import { drawChart, format } from './charts.js';
import { startInspector } from './inspector.js';

const KEY = 'pgcast-console-token';
const EVERY_MS = 1000;
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

let token = takeToken();
let timer = 0;

function takeToken() {
  const hash = new URLSearchParams(location.hash.slice(1));
  const fromHash = hash.get('token');
  if (fromHash) {
    sessionStorage.setItem(KEY, fromHash);
    history.replaceState(null, '', location.pathname + location.search);
  }
  return sessionStorage.getItem(KEY) || '';
}

function seconds(value) {
  if (value === null || value === undefined) return '–';
  return value < 1 ? `${Math.round(value * 1000)} ms` : `${format(value)} s`;
}

function show(id, text, raw) {
  const el = $(id);
  el.textContent = text;
  el.dataset.value = String(raw);
}

function render(stats) {
  const now = stats.now;
  show('connections', String(now.connections), now.connections);
  show('subscriptions', String(now.subscriptions), now.subscriptions);
  show('changes-rate', format(now.changes_per_s), now.changes_per_s);
  show('deliveries-rate', format(now.deliveries_per_s), now.deliveries_per_s);
  show('listener-lag', seconds(now.listener_lag), now.listener_lag);
  show('capture-lag', seconds(now.capture_lag), now.capture_lag);
  const wal = now.wal_lag_bytes;
  show('wal-lag', wal === null ? 'no slot' : `${format(wal / 1024)} KiB`, wal);
  show('slow-closes', String(now.slow_closes_total), now.slow_closes_total);

  const state = $('node-state');
  const listening = stats.node.listener.state === 'listening';
  state.textContent = `${stats.node.listener.state} · v${stats.node.version}`;
  state.className = `badge ${listening ? 'ok' : 'bad'}`;

  const series = stats.series;
  // At least a minute wide; up to the five minutes the gateway keeps.
  const capacity = Math.max(60, series.at.length);
  drawChart(/** @type {any} */ ($('chart-changes')), series.changes_per_s, capacity);
  drawChart(/** @type {any} */ ($('chart-deliveries')), series.deliveries_per_s, capacity);
  drawChart(/** @type {any} */ ($('chart-connections')), series.connections, capacity);
  drawChart(/** @type {any} */ ($('chart-lag')), series.listener_lag, capacity);

  const tables = Object.entries(now.tables).sort((a, b) => b[1] - a[1]);
  $('tables').replaceChildren(
    ...(tables.length ? tables.map(([name, count]) => row([name, String(count)])) : [row(['no table subscriptions', ''])]),
  );

  const cluster = stats.cluster;
  $('nodes').replaceChildren(
    ...cluster.nodes.map((node) => {
      const tr = row([
        `${node.pid}${node.self ? ' (this node)' : ''}`,
        address(node),
        node.since ? new Date(node.since).toLocaleString() : '–',
        node.state || '–',
      ]);
      if (node.self) tr.className = 'self';
      return tr;
    }),
  );
  $('nodes-note').textContent = cluster.error
    ? cluster.error
    : `${cluster.nodes.length} gateway node(s) hold a LISTEN connection to this database.`;
}

/** Where a node connects from; PostgreSQL hides it from a role without the right. */
function address(node) {
  if (node.port === -1) return 'local socket';
  if (node.address === null) return 'hidden (another role)';
  return `${node.address}:${node.port}`;
}

/** @param {string[]} cells */
function row(cells) {
  const tr = document.createElement('tr');
  for (const text of cells) {
    const td = document.createElement('td');
    td.textContent = text;
    tr.append(td);
  }
  return tr;
}

async function poll() {
  timer = 0;
  if (!token) {
    $('message').textContent = 'Enter the admin token (the admin_token setting) to open the console.';
    return;
  }
  try {
    const response = await fetch('api/stats', {
      headers: { Authorization: `Bearer ${token}` },
      cache: 'no-store',
    });
    if (response.status === 401 || response.status === 403) {
      sessionStorage.removeItem(KEY);
      token = '';
      $('message').textContent = 'The gateway refused this admin token: enter the admin_token setting.';
      $('node-state').textContent = 'not connected';
      $('node-state').className = 'badge bad';
      return;
    }
    if (!response.ok) throw new Error(`the gateway answered ${response.status}`);
    render(await response.json());
    $('message').textContent = '';
  } catch (error) {
    $('message').textContent = `Cannot reach the gateway: ${error instanceof Error ? error.message : error}`;
    $('node-state').className = 'badge bad';
  }
  timer = window.setTimeout(poll, EVERY_MS);
}

$('token-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const input = /** @type {HTMLInputElement} */ ($('admin-token'));
  token = input.value.trim();
  input.value = '';
  if (token) sessionStorage.setItem(KEY, token);
  if (timer) window.clearTimeout(timer);
  poll();
});

startInspector();
poll();
