// A fake host for tests: the RealHost's methods in memory, with supervised
// jobs whose end a test decides, and a record of calls. No wasm: `node
// --test` imports the backend and calls it with a FakeHost.
import { KvFailure, ProcessFailure } from './errors.js';

export class FakeHost {
  constructor({ settings = {}, kvDown = false, spawnError } = {}) {
    this.clock = 1_700_000_000;
    this.settings = { ...settings };
    this.kv = new Map();
    this.jobs = new Map();
    this.logs = [];
    this.calls = [];
    this.programs = {};
    this.kvDown = kvDown;
    this.spawnError = spawnError; // a process-error {tag, val} for spawnJob
  }

  // what a test does to the jobs
  exit(id, code = 0, { signal, cancelled = false, timedOut = false, wall = 1 } = {}) {
    this.jobs.get(id).state = {
      tag: 'exited',
      val: {
        exitCode: signal === undefined ? code : undefined, signal,
        wallTimeSeconds: wall, cpuSeconds: wall / 2, peakRssBytes: 1n << 20n,
        cancelled, timedOut,
      },
    };
  }
  lose(id, why = 'the supervisor vanished') { this.jobs.get(id).state = { tag: 'lost', val: why }; }

  now() { return this.clock; }
  setting(key) { this.calls.push(`setting ${key}`); return this.settings[key]; }
  log(level, message) { this.logs.push([level, message]); }

  run(req) {
    this.calls.push(`run ${req.program} ${req.args.join(' ')}`);
    const p = this.programs[req.program];
    if (!p) throw new ProcessFailure({ tag: 'denied', val: `program \`${req.program}\` is not granted` });
    return p(req);
  }
  spawnJob(req) {
    this.calls.push(`spawn-job ${req.id}`);
    if (this.spawnError) throw new ProcessFailure(this.spawnError);
    if (this.jobs.has(req.id)) throw new ProcessFailure({ tag: 'invalid', val: `job \`${req.id}\` exists` });
    if (req.timeLimitSeconds !== undefined && typeof req.timeLimitSeconds !== 'bigint') {
      throw new TypeError('time-limit-seconds is a u64: pass a BigInt');
    }
    this.jobs.set(req.id, { req, started: this.clock, state: { tag: 'running', val: this.clock }, stdout: '', stderr: '' });
  }
  jobStates(ids) {
    this.calls.push(`job-states ${ids.length}`);
    return ids.map((i) => {
      const j = this.jobs.get(i);
      return j ? { tag: 'ok', val: j.state } : { tag: 'err', val: { tag: 'not-found', val: `no job \`${i}\`` } };
    });
  }
  killJob(id) {
    this.calls.push(`kill-job ${id}`);
    const j = this.jobs.get(id);
    if (!j) throw new ProcessFailure({ tag: 'not-found', val: `no job \`${id}\`` });
    if (j.state.tag !== 'running') return false;
    this.exit(id, 0, { signal: 15, cancelled: true, wall: this.clock - j.started });
    return true;
  }
  readJobLog(id, which, maxBytes) {
    const j = this.jobs.get(id);
    if (!j) throw new ProcessFailure({ tag: 'not-found', val: `no job \`${id}\`` });
    const bytes = new TextEncoder().encode(which === 'stdout' ? j.stdout : j.stderr);
    return new TextDecoder().decode(bytes.slice(Math.max(0, bytes.length - Number(maxBytes))));
  }

  #up() { if (this.kvDown) throw new KvFailure({ tag: 'unavailable', val: 'connection refused' }); }
  kvGet(key) { this.#up(); return this.kv.get(key); }
  kvGetMany(keys) { this.#up(); this.calls.push(`kv-get-many ${keys.length}`); return keys.map((k) => this.kv.get(k)); }
  kvSet(key, value) { this.#up(); this.kv.set(key, Uint8Array.from(value)); }
  kvDelete(key) { this.#up(); return this.kv.delete(key); }
  kvListKeys(prefix) { this.#up(); return [...this.kv.keys()].filter((k) => k.startsWith(prefix)).sort(); }
}
