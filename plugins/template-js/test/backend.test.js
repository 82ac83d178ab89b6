// The backend's contract promises, against the fake host (no wasm).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as backend from '../src/backend.js';
import * as ids from '../src/hpc_plugin/ids.js';
import { BackendFailure, toBackendFailure } from '../src/hpc_plugin/errors.js';
import { FakeHost } from '../src/hpc_plugin/fake.js';
import { NOT_STARTED } from '../src/hpc_plugin/states.js';

function spec(argv, { key, hours, sif, env = [] } = {}) {
  return {
    executionCommand: argv, imageRef: undefined, sifPath: sif, inputDir: '/in', outputDir: undefined,
    workspaceDir: undefined, manifestPath: undefined,
    resourceRequirements: { cpu: undefined, memoryGb: undefined, timeHours: hours, gpus: undefined, nodes: undefined, extra: [] },
    environmentVariables: env, jobName: 't', idempotencyKey: key,
  };
}

async function tagOf(f) {
  try {
    await f();
  } catch (e) {
    return toBackendFailure(e).payload.tag;
  }
  assert.fail('no error');
}

const record = (h, id) => JSON.parse(new TextDecoder().decode(h.kv.get(`job/${id}`)));

test('submit runs the command and keeps a record', async () => {
  const h = new FakeHost();
  const id = await backend.submit(h, spec(['echo', 'hi'], { env: [['A', '1']] }));
  assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.deepEqual(h.jobs.get(id).req.argv, ['echo', 'hi']);
  assert.deepEqual(h.jobs.get(id).req.env, [['A', '1']]);
  assert.deepEqual(record(h, id).argv, ['echo', 'hi']);
  assert.equal(backend.getStatus(h, id).status, 'running');
});

test('ends are reported with metrics and reasons', async () => {
  const h = new FakeHost();
  const ok = await backend.submit(h, spec(['true']));
  const bad = await backend.submit(h, spec(['false']));
  h.exit(ok, 0, { wall: 2 });
  h.exit(bad, 3);
  const [a, b] = backend.getStatuses(h, [ok, bad]);
  assert.equal(a.tag, 'ok');
  assert.equal(a.val.status, 'completed');
  assert.equal(a.val.exitCode, 0);
  assert.equal(a.val.wallTimeSeconds, 2);
  assert.ok(Math.abs(a.val.cpuHours - 1 / 3600) < 1e-12);
  assert.deepEqual([b.val.status, b.val.exitCode, b.val.reason], ['failed', 3, 'exit code 3']);
});

test('statuses keep order with per-id errors', async () => {
  const h = new FakeHost();
  const a = await backend.submit(h, spec(['a']));
  const b = await backend.submit(h, spec(['b']));
  const out = backend.getStatuses(h, [b, 'nonsense', a, ids.newId()]);
  assert.deepEqual(out.map((r) => r.tag), ['ok', 'err', 'ok', 'err']);
  assert.equal(out[0].val.jobId, b);
  assert.equal(out[2].val.jobId, a);
  assert.equal(out[1].val.tag, 'not-found');
  assert.equal(out[3].val.tag, 'not-found');
  assert.equal(h.calls.filter((c) => c === 'kv-get-many 3').length, 1);
});

test('unknown ids are not-found everywhere', async () => {
  const h = new FakeHost();
  for (const bad of ['', 'x', ids.newId(), '../../etc']) {
    for (const f of [backend.getStatus, backend.cancel, backend.getLogs]) {
      assert.equal(await tagOf(() => f(h, bad)), 'not-found', `${f.name} ${bad}`);
    }
  }
});

test('cancel stops a running job; an ended one is no error', async () => {
  const h = new FakeHost();
  const id = await backend.submit(h, spec(['sleep', '100']));
  backend.cancel(h, id);
  const info = backend.getStatus(h, id);
  assert.deepEqual([info.status, info.nativeState], ['failed', 'CANCELLED']);
  const kills = h.calls.filter((c) => c === `kill-job ${id}`).length;
  backend.cancel(h, id);
  assert.equal(h.calls.filter((c) => c === `kill-job ${id}`).length, kills);
});

test('time limit is passed and reported with a reason', async () => {
  const h = new FakeHost();
  const id = await backend.submit(h, spec(['sleep', '100'], { hours: 1.5 }));
  assert.equal(h.jobs.get(id).req.timeLimitSeconds, 5400n);
  h.exit(id, 0, { signal: 15, timedOut: true });
  const info = backend.getStatus(h, id);
  assert.deepEqual([info.status, info.nativeState, info.reason], ['failed', 'TIMEOUT', 'time limit reached']);
});

test('states never go backwards', async () => {
  const h = new FakeHost();
  const id = await backend.submit(h, spec(['x']));
  h.exit(id, 0);
  assert.equal(backend.getStatus(h, id).status, 'completed');
  h.jobs.get(id).state = { tag: 'running', val: h.clock };
  assert.equal(backend.getStatus(h, id).status, 'completed');
  h.jobs.delete(id);
  assert.equal(backend.getStatus(h, id).status, 'completed');
});

test('a keyed submit makes one job, and find-job finds it', async () => {
  const h = new FakeHost();
  assert.equal(await backend.findJob(h, 'run-1', 0), undefined);
  const first = await backend.submit(h, spec(['x'], { key: 'run-1' }));
  assert.equal(first, await ids.keyedId('run-1'));
  assert.equal(await backend.submit(h, spec(['x'], { key: 'run-1' })), first);
  assert.equal(h.jobs.size, 1);
  assert.equal(await backend.findJob(h, 'run-1', 0), first);
  assert.equal(await backend.findJob(h, 'run-2', 0), undefined);
  h.exit(first, 0);
  assert.equal(await backend.findJob(h, 'run-1', 0), first);
});

test('invalid specs are invalid-request and start nothing', async () => {
  const h = new FakeHost();
  for (const bad of [spec([]), spec(['']), spec(['a\0b']), spec(['x'], { hours: 0 }), spec(['x'], { hours: NaN }),
    spec(['x'], { hours: -1 }), spec(['x'], { env: [['A=B', '1']] }), spec(['x'], { sif: 'rel.sif' })]) {
    assert.equal(await tagOf(() => backend.submit(h, bad)), 'invalid-request');
  }
  assert.equal(h.jobs.size, 0);
  assert.equal(h.kv.size, 0);
});

test('sif_path runs under apptainer', async () => {
  const h = new FakeHost({ settings: { HPC_APPTAINER: '/opt/apptainer' } });
  const id = await backend.submit(h, spec(['python', 'x.py'], { sif: '/img/a.sif', env: [['A', '1']] }));
  assert.deepEqual(h.jobs.get(id).req.argv, ['/opt/apptainer', 'exec', '--bind', '/in', '/img/a.sif', 'python', 'x.py']);
  assert.deepEqual(h.jobs.get(id).req.env, [['A', '1'], ['APPTAINERENV_A', '1']]);
});

test('a store that is down is unavailable, and nothing starts', async () => {
  const h = new FakeHost({ kvDown: true });
  assert.equal(await tagOf(() => backend.submit(h, spec(['x']))), 'unavailable');
  assert.equal(h.jobs.size, 0);
});

test('a spawn failure leaves no record', async () => {
  const h = new FakeHost({ spawnError: { tag: 'invalid', val: 'no such program `nope`' } });
  assert.equal(await tagOf(() => backend.submit(h, spec(['nope']))), 'invalid-request');
  assert.equal(h.kv.size, 0);
});

test('logs, and a lost supervisor', async () => {
  const h = new FakeHost();
  const id = await backend.submit(h, spec(['x']));
  Object.assign(h.jobs.get(id), { stdout: 'out\n', stderr: 'err\n' });
  assert.deepEqual(backend.getLogs(h, id), { stdout: 'out\n', stderr: 'err\n' });
  h.lose(id, 'machine rebooted');
  const info = backend.getStatus(h, id);
  assert.deepEqual([info.status, info.nativeState, info.reason], ['failed', 'LOST', 'machine rebooted']);
});

test('a job the store lost is found again', async () => {
  const h = new FakeHost();
  const id = await backend.submit(h, spec(['x']));
  h.kv.clear();
  assert.equal(backend.getStatus(h, id).status, 'running');
  assert.ok(h.kv.has(`job/${id}`));
});

test('describe names the settings it reads', () => {
  const d = backend.describe();
  assert.equal(d.name, backend.NAME);
  assert.deepEqual(d.settings, ['HPC_APPTAINER']);
});

test('BackendFailure carries the contract error as payload', () => {
  const f = new BackendFailure('not-found', 'x');
  assert.deepEqual(f.payload, { tag: 'not-found', val: 'x' });
});

test('submitMany answers each spec and refuses only the bad one', async () => {
  const h = new FakeHost();
  const [a, bad, b] = await backend.submitMany(h, [spec(['echo', 'a']), spec([]), spec(['echo', 'b'], { key: 'k-b' })]);
  assert.equal(a.tag, 'ok');
  assert.equal(b.tag, 'ok');
  assert.notEqual(a.val, b.val);
  assert.deepEqual(bad, { tag: 'err', val: bad.val });
  assert.equal(bad.val.tag, 'invalid-request');
  assert.deepEqual(h.jobs.get(a.val).req.argv, ['echo', 'a']);
  assert.deepEqual(h.jobs.get(b.val).req.argv, ['echo', 'b']);
  assert.equal(await backend.findJob(h, 'k-b', 0), b.val);
});

test('a job waiting for a slot is pending with the reason, then running', async () => {
  // The host answers `running(NOT_STARTED)` for a job accepted but waiting
  // for a free slot (`max_running_jobs`).
  const h = new FakeHost();
  const id = await backend.submit(h, spec(['true']));
  h.jobs.get(id).state = { tag: 'running', val: NOT_STARTED };
  let s = backend.getStatus(h, id);
  assert.deepEqual([s.status, s.nativeState, s.reason, s.wallTimeSeconds],
    ['pending', 'PENDING', backend.WAITING_REASON, undefined]);
  // A store that lost the record still finds the job, and records no start
  // time of infinity for it.
  h.kv.clear();
  assert.equal(backend.getStatus(h, id).status, 'pending');
  assert.ok(!h.kv.has(`job/${id}`) || !String(h.kv.get(`job/${id}`)).includes('Infinity'));
  h.jobs.get(id).state = { tag: 'running', val: h.clock };
  s = backend.getStatus(h, id);
  assert.deepEqual([s.status, s.reason], ['running', undefined]);
});
