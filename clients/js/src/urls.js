// Gateway URLs: the WebSocket endpoint a client connects to, the token in its query
// string, and the Server-Sent Events URL of one subscription.

import { PgcastError } from './errors.js';

/**
 * The gateway WebSocket endpoint for `url`: ws(s)://host/.../ws. `http(s)` maps to
 * `ws(s)`; a relative URL ("/ws", "/app/") or none at all resolves against
 * `location` in a browser. The query string is kept.
 * @param {string | null} [url]
 * @param {string} [base] default: the page's location
 * @returns {string}
 */
export function normalizeUrl(url, base = globalThis.location && globalThis.location.href) {
  let parsed;
  try {
    parsed = base ? new URL(url ?? '/ws', base) : new URL(/** @type {string} */ (url));
  } catch {
    throw notAGatewayUrl(url);
  }
  const scheme = { 'http:': 'ws:', 'https:': 'wss:' }[parsed.protocol] || parsed.protocol;
  if ((scheme !== 'ws:' && scheme !== 'wss:') || !parsed.host) {
    throw notAGatewayUrl(url);
  }
  let path = parsed.pathname.replace(/\/+$/, '');
  if (!path.endsWith('/ws')) path += '/ws';
  return `${scheme}//${parsed.host}${path}${parsed.search}`;
}

/** @param {unknown} url */
function notAGatewayUrl(url) {
  return new PgcastError('bad_url', `not a gateway URL: ${JSON.stringify(url)}`, {
    hint: 'use ws://host:port or wss://host (for example ws://127.0.0.1:8000)',
  });
}

/**
 * `url` with `?token=` (or `&token=`) appended when there is a token.
 * @param {string} url
 * @param {string | null | undefined} token
 */
export function withToken(url, token) {
  if (!token) return url;
  return `${url}${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}`;
}

/**
 * The SSE URL (`.../sse?table=...`) for one subscription request; see the README.
 * @param {string} wsUrl
 * @param {import('./types.js').TableRequest | {channel: string}} request
 * @param {{since?: string | null, token?: string | null}} [options]
 * @returns {string}
 */
export function sseUrl(wsUrl, request, { since, token } = {}) {
  const url = new URL(wsUrl.replace(/^ws/, 'http'));
  url.pathname = url.pathname.replace(/\/ws$/, '/sse');
  const q = url.searchParams;
  if ('channel' in request) q.set('channel', request.channel);
  else {
    q.set('table', request.table);
    if (request.schema != null) q.set('schema', request.schema);
    if (request.filter != null && request.filter !== '') q.set('filter', request.filter);
    if (request.events != null) q.set('events', request.events.map((e) => String(e).toUpperCase()).join(','));
    if (request.columns != null) q.set('columns', request.columns.join(','));
    if (since != null) q.set('since', since);
    else if (request.snapshot) q.set('snapshot', 'true');
  }
  if (token) q.set('token', token);
  return url.toString();
}
