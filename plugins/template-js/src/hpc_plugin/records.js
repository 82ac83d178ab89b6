// Job records in kv, as JSON objects, with `internal` errors rather than traps.
import { internal } from './errors.js';

export function encode(record) {
  try {
    return new TextEncoder().encode(JSON.stringify(record));
  } catch (e) {
    throw internal(`cannot encode a job record: ${e.message}`);
  }
}

export function decode(bytes) {
  let v;
  try {
    v = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (e) {
    throw internal(`not a job record: ${e.message}`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw internal('not a job record: not a JSON object');
  }
  return v;
}

/** Records under `<prefix><id>` in the plugin's own kv namespace. */
export class Records {
  constructor(host, prefix = 'job/') {
    this.host = host;
    this.prefix = prefix;
  }
  key(id) { return this.prefix + id; }
  get(id) {
    const d = this.host.kvGet(this.key(id));
    return d === undefined ? undefined : decode(d);
  }
  getMany(ids) {
    if (ids.length === 0) return [];
    return this.host.kvGetMany(ids.map((i) => this.key(i))).map((d) => (d === undefined ? undefined : decode(d)));
  }
  put(id, record) { this.host.kvSet(this.key(id), encode(record)); }
  /** Best effort (caching a job's end): a store down now loses nothing. */
  putQuietly(id, record) {
    try { this.put(id, record); } catch { /* the supervisor still has the end */ }
  }
  delete(id) { return this.host.kvDelete(this.key(id)); }
}
