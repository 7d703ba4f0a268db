export * from './src/types.js';
export { PgcastError, FilterError } from './src/errors.js';
export { DEFAULT_BACKOFF, backoff, backoffDelay, closeAction } from './src/backoff.js';
export { FILTER_OPERATORS, parseFilter, matchesFilter } from './src/filters.js';
export { TableMirror } from './src/mirror.js';
export { RecentIds } from './src/subscription.js';
export { Topic, applyPresenceDiff } from './src/topic.js';
export { normalizeUrl, sseUrl } from './src/urls.js';
export { Client, createClient, getClient, closeAllClients } from './src/client.js';
