// The backend's logic, over a host: a `local`-like backend that runs each
// job as a process under the host's supervisor (`process.spawn-job`) and
// keeps a JSON record per job in kv. Replace it with your scheduler's: the
// shape (records, keyed ids, per-id errors, states that only move forward)
// stays. Everything here runs under `node --test` with FakeHost.
import * as apptainer from './hpc_plugin/apptainer.js';
import * as ids from './hpc_plugin/ids.js';
import { BackendFailure, fromProcess, invalidRequest, notFound, toBackendFailure } from './hpc_plugin/errors.js';
import { NOT_STARTED, waitsForSlot } from './hpc_plugin/states.js';
import { Records } from './hpc_plugin/records.js';
import { checkCommand, checkNoNul, hoursToSeconds } from './hpc_plugin/spec.js';

/** The name the plugin is installed (`<name>.wasm`) and selected under. */
export const NAME = 'template-js';
export const VERSION = '0.1.0';
/** The most of each log stream `getLogs` returns (the tail is kept). */
export const MAX_LOG_BYTES = 4 << 20;
const MAX_NAME = 255;

export function describe() {
  return {
    name: NAME,
    version: VERSION,
    description: 'runs jobs as supervised processes on this machine (JavaScript template)',
    settings: [apptainer.SETTING_PROGRAM],
  };
}

function validate(spec) {
  checkCommand(spec.executionCommand);
  if (spec.jobName !== undefined) {
    if ([...spec.jobName].length > MAX_NAME) throw invalidRequest(`\`job_name\` is longer than ${MAX_NAME} characters`);
    if (/[\u0000-\u001f\u007f]/.test(spec.jobName)) throw invalidRequest('`job_name` contains a control character');
  }
  if (spec.workspaceDir !== undefined && !spec.workspaceDir.startsWith('/')) {
    throw invalidRequest(`\`workspace_dir\` must be an absolute path, not \`${spec.workspaceDir}\``);
  }
  for (const [name, value] of spec.environmentVariables) {
    if (name === '' || name.includes('=')) throw invalidRequest(`\`environment_variables\`: \`${name}\` is not a variable name`);
    checkNoNul(`\`environment_variables\` ${name}`, name + value);
  }
  const hours = spec.resourceRequirements.timeHours;
  return hours === undefined ? undefined : hoursToSeconds(hours);
}

function command(host, spec) {
  const argv = [...spec.executionCommand];
  const env = spec.environmentVariables.map(([n, v]) => [n, v]);
  if (spec.sifPath === undefined) return { argv, env };
  const program = host.setting(apptainer.SETTING_PROGRAM) || apptainer.DEFAULT_PROGRAM;
  const mounts = [['`input_dir`', spec.inputDir], ['`output_dir`', spec.outputDir], ['`workspace_dir`', spec.workspaceDir]];
  return { argv: apptainer.wrap(program, spec.sifPath, mounts, argv), env: apptainer.containerEnv(env) };
}

export async function submit(host, spec) {
  const timeLimit = validate(spec);
  const { argv, env } = command(host, spec);
  const key = spec.idempotencyKey;
  let id;
  if (key !== undefined) {
    // The host holds the key's claim: a job an earlier submit made is this one.
    const found = await findJob(host, key, 0);
    if (found !== undefined) return found;
    id = await ids.keyedId(key);
  } else {
    id = ids.newId();
  }
  const records = new Records(host);
  // The record first: if the store is down nothing starts.
  records.put(id, {
    job_id: id, job_name: spec.jobName ?? null, argv, submitted_at: host.now(),
    idempotency_key: key ?? null, outcome: null,
  });
  try {
    host.spawnJob({
      id, argv, env, workingDir: spec.workspaceDir,
      timeLimitSeconds: timeLimit === undefined ? undefined : BigInt(timeLimit),
    });
  } catch (e) {
    try { records.delete(id); } catch { /* best effort */ }
    throw e;
  }
  host.log('info', `submitted ${id}: ${argv[0]}`);
  return id;
}

/** The job a keyed submit made: the supervisor knows it. A record whose job
 * never started (its submitter died in between) is dropped. */
/**
 * Many jobs, in order: each `{tag: 'ok', val: id}` or its own
 * `{tag: 'err', val: backend-error}` (a refused spec does not stop the
 * others). One `submit` each here; a scheduler that can make many jobs in
 * one request (a job array) does that instead.
 */
export async function submitMany(host, specs) {
  const out = [];
  for (const spec of specs) {
    try {
      out.push({ tag: 'ok', val: await submit(host, spec) });
    } catch (e) {
      out.push({ tag: 'err', val: toBackendFailure(e).payload });
    }
  }
  return out;
}

export async function findJob(host, key, _since) {
  const id = await ids.keyedId(key);
  const [state] = host.jobStates([id]);
  if (state.tag === 'ok') return id;
  if (state.val.tag === 'not-found') {
    new Records(host).delete(id);
    return undefined;
  }
  throw fromProcess(state.val);
}

function outcome(state) {
  if (state.tag === 'lost') {
    return { completed: false, exit_code: null, wall_time_seconds: null, cpu_hours: null,
      peak_memory_gb: null, native_state: 'LOST', reason: state.val };
  }
  const u = state.val;
  let completed = false; let native; let reason = null;
  if (u.cancelled) { native = 'CANCELLED'; reason = 'cancelled by `hpc-host cancel`'; }
  else if (u.timedOut) { native = 'TIMEOUT'; reason = 'time limit reached'; }
  else if (u.signal !== undefined) { native = 'SIGNALED'; reason = `killed by signal ${u.signal}`; }
  else if (u.exitCode === 0) { completed = true; native = 'COMPLETED'; }
  else { native = 'FAILED'; reason = `exit code ${u.exitCode}`; }
  return { completed, exit_code: u.exitCode ?? null, wall_time_seconds: u.wallTimeSeconds,
    cpu_hours: u.cpuSeconds / 3600, peak_memory_gb: Number(u.peakRssBytes) / 2 ** 30,
    native_state: native, reason };
}

const opt = (v) => (v === null ? undefined : v);

/** Why a job accepted but not started is pending (see `NOT_STARTED`). */
export const WAITING_REASON =
  'waiting for a free slot: at most `max_running_jobs` local jobs run at once on this machine';

function info(jobId, o, runningSince, now) {
  if (!o && runningSince === NOT_STARTED) {
    return { jobId, status: 'pending', exitCode: undefined, wallTimeSeconds: undefined,
      cpuHours: undefined, peakMemoryGb: undefined, nativeState: 'PENDING', reason: WAITING_REASON };
  }
  if (!o) {
    return { jobId, status: 'running', exitCode: undefined,
      wallTimeSeconds: runningSince === undefined ? undefined : Math.max(now - runningSince, 0),
      cpuHours: undefined, peakMemoryGb: undefined, nativeState: 'RUNNING', reason: undefined };
  }
  return { jobId, status: o.completed ? 'completed' : 'failed', exitCode: opt(o.exit_code),
    wallTimeSeconds: opt(o.wall_time_seconds), cpuHours: opt(o.cpu_hours),
    peakMemoryGb: opt(o.peak_memory_gb), nativeState: o.native_state, reason: opt(o.reason) };
}

const errOf = (f) => ({ tag: 'err', val: f.payload });

/** One kv round trip and one supervisor query for all ids, in order; an id
 * we do not know is `not-found` for that id only. */
export function getStatuses(host, jobIds) {
  const records = new Records(host);
  const parsed = jobIds.map((j) => ids.parseId(j));
  const stored = records.getMany(parsed.filter((p) => p !== undefined));
  let k = 0;
  const recs = parsed.map((p) => (p === undefined ? undefined : stored[k++]));
  const ask = parsed.filter((p, i) => p !== undefined && (!recs[i] || !recs[i].outcome));
  const answers = host.jobStates(ask);
  const states = new Map(ask.map((p, i) => [p, answers[i]]));
  const now = host.now();
  return jobIds.map((raw, i) => {
    const p = parsed[i];
    let rec = recs[i];
    if (p === undefined) return errOf(notFound(`no job \`${raw}\` (not one of this backend's ids)`));
    if (rec && rec.outcome) return { tag: 'ok', val: info(p, rec.outcome, undefined, now) };
    const state = states.get(p);
    if (state.tag === 'err') {
      return errOf(state.val.tag === 'not-found' ? notFound(`no job \`${raw}\``) : fromProcess(state.val));
    }
    if (!rec) { // known to the supervisor, lost by the store: index it again
      rec = { job_id: p, job_name: null, argv: [], submitted_at: null, idempotency_key: null, outcome: null };
    }
    if (state.val.tag === 'running') {
      if (rec.submitted_at === null && !waitsForSlot(state.val)) {
        rec.submitted_at = state.val.val;
        records.putQuietly(p, rec);
      }
      return { tag: 'ok', val: info(p, undefined, state.val.val, now) };
    }
    rec.outcome = outcome(state.val); // recorded once; never changes after
    records.putQuietly(p, rec);
    return { tag: 'ok', val: info(p, rec.outcome, undefined, now) };
  });
}

export function getStatus(host, jobId) {
  const [r] = getStatuses(host, [jobId]);
  if (r.tag === 'err') throw new BackendFailure(r.val.tag, r.val.val);
  return r.val;
}

function known(host, jobId) {
  const p = ids.parseId(jobId);
  if (p === undefined) throw notFound(`no job \`${jobId}\` (not one of this backend's ids)`);
  const rec = new Records(host).get(p);
  if (rec === undefined) {
    const [state] = host.jobStates([p]);
    if (state.tag === 'err') throw state.val.tag === 'not-found' ? notFound(`no job \`${jobId}\``) : fromProcess(state.val);
  }
  return { id: p, rec };
}

/** Stop the job; a job that has already ended is no error. */
export function cancel(host, jobId) {
  const { id, rec } = known(host, jobId);
  if (rec && rec.outcome) return;
  host.killJob(id);
  getStatuses(host, [id]); // records the end if the job is gone already
}

export function getLogs(host, jobId) {
  const { id } = known(host, jobId);
  return {
    stdout: host.readJobLog(id, 'stdout', MAX_LOG_BYTES),
    stderr: host.readJobLog(id, 'stderr', MAX_LOG_BYTES),
  };
}


