// The host's interfaces behind one object, for the component (imports of
// the `backend-process` world). Tests use `fake.js`'s FakeHost, which has
// the same methods. Host errors are thrown as `ProcessFailure` / `KvFailure`.
//
// `console.log` output goes nowhere in a plugin: log with `host.log(level,
// message)`, which is `wasi:logging` (the host prints it tagged with the
// plugin's name).
import * as process from 'ccat:hpc/process@0.1.0';
import * as kv from 'ccat:hpc/kv@0.1.0';
import * as store from 'wasi:config/store@0.2.0-rc.1';
import * as logging from 'wasi:logging/logging@0.1.0-draft';
import { hostError, KvFailure, ProcessFailure } from './errors.js';

function call(Failure, f) {
  try {
    return f();
  } catch (e) {
    const err = hostError(e);
    if (err) throw new Failure(err);
    throw e;
  }
}

export class RealHost {
  constructor(context) { this.context = context; }
  now() { return Date.now() / 1000; }
  setting(key) {
    try {
      return store.get(key) ?? undefined;
    } catch {
      return undefined;
    }
  }
  /** level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'critical' */
  log(level, message) { logging.log(level, this.context, message); }
  // ccat:hpc/process
  run(req) { return call(ProcessFailure, () => process.run(req)); }
  spawnJob(req) { call(ProcessFailure, () => process.spawnJob(req)); }
  /** [{tag: 'ok', val: job-state} | {tag: 'err', val: process-error}], in order */
  jobStates(ids) { return ids.length === 0 ? [] : process.jobStates(ids); }
  killJob(id) { return call(ProcessFailure, () => process.killJob(id)); }
  readJobLog(id, which, maxBytes) {
    return call(ProcessFailure, () => process.readJobLog(id, which, BigInt(maxBytes)));
  }
  // ccat:hpc/kv
  kvGet(key) { return call(KvFailure, () => kv.get(key)); }
  kvGetMany(keys) { return call(KvFailure, () => kv.getMany(keys)); }
  kvSet(key, value, ttlSeconds) { call(KvFailure, () => kv.set(key, value, ttlSeconds)); }
  kvDelete(key) { return call(KvFailure, () => kv.delete(key)); }
  kvListKeys(prefix) { return call(KvFailure, () => kv.listKeys(prefix)); }
}
