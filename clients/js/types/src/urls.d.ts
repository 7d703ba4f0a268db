/**
 * The gateway WebSocket endpoint for `url`: ws(s)://host/.../ws. `http(s)` maps to
 * `ws(s)`; a relative URL ("/ws", "/app/") or none at all resolves against
 * `location` in a browser. The query string is kept.
 * @param {string | null} [url]
 * @param {string} [base] default: the page's location
 * @returns {string}
 */
export declare function normalizeUrl(url?: string | null, base?: string): string;
/**
 * `url` with `?token=` (or `&token=`) appended when there is a token.
 * @param {string} url
 * @param {string | null | undefined} token
 */
export declare function withToken(url: string, token: string | null | undefined): string;
/**
 * The SSE URL (`.../sse?table=...`) for one subscription request; see the README.
 * @param {string} wsUrl
 * @param {import('./types.js').TableRequest | {channel: string}} request
 * @param {{since?: string | null, token?: string | null}} [options]
 * @returns {string}
 */
export declare function sseUrl(wsUrl: string, request: import('./types.js').TableRequest | {
    channel: string;
}, { since, token }?: {
    since?: string | null;
    token?: string | null;
}): string;
