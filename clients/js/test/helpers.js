// Test helpers: an event recorder for client handlers and a client factory with
// fast timings. Everything is awaited on events with timeouts, never slept on.
import { EventEmitter } from 'node:events';
import WebSocket from 'ws';
import { createClient } from '../pgcast.js';
import { until, waitForEvent } from './fake-gateway.js';

export { until, waitForEvent };

/** Collects what a client and its subscriptions report; `wait(check)` re-checks on each record. */
export class Recorder extends EventEmitter {
  constructor() {
    super();
    this.changes = [];
    this.snapshots = [];
    this.resyncs = [];
    this.errors = [];
    this.subscribed = [];
    this.messages = [];
    this.statuses = [];
  }
  record(list, value) {
    this[list].push(value);
    this.emit('record', list, value);
  }
  handlers() {
    return {
      onChange: (f) => this.record('changes', f),
      onSnapshot: (f) => this.record('snapshots', f),
      onResync: (f) => this.record('resyncs', f),
      onError: (e) => this.record('errors', e),
      onSubscribed: (f) => this.record('subscribed', f),
    };
  }
  watch(client) {
    client.on('status', (s) => this.record('statuses', s));
    client.on('error', (e) => this.record('errors', e));
    return this;
  }
  wait(check, ms = 5000) {
    return until(this, 'record', check, ms);
  }
  get changeIds() {
    return this.changes.map((c) => c.id);
  }
}

export function fastClient(gateway, options = {}) {
  return createClient({
    url: gateway.url,
    WebSocket,
    backoff: { initialMs: 5, maxMs: 40, factor: 2, jitter: 0.5 },
    ...options,
  });
}

/** A promise with its resolve function exposed. */
export function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
