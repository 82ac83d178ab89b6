// The helper library.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as apptainer from '../src/hpc_plugin/apptainer.js';
import * as ids from '../src/hpc_plugin/ids.js';
import * as records from '../src/hpc_plugin/records.js';
import * as spec from '../src/hpc_plugin/spec.js';
import { KvFailure, ProcessFailure, toBackendFailure } from '../src/hpc_plugin/errors.js';

test('keyed ids match the Rust local backend (and the Python template)', async () => {
  // sha256("abc") = ba7816bf 8f01cfea 414140de 5dae2223 …, version nibble 4, variant 10xx
  assert.equal(await ids.keyedId('abc'), 'ba7816bf-8f01-4fea-8141-40de5dae2223');
  assert.notEqual(await ids.keyedId('abd'), await ids.keyedId('abc'));
  assert.equal(await ids.digest('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  assert.equal(ids.parseId('BA7816BF-8F01-4FEA-8141-40DE5DAE2223'), 'ba7816bf-8f01-4fea-8141-40de5dae2223');
  assert.equal(ids.parseId('nope'), undefined);
});

test('errors map like the Rust SDK', () => {
  const tag = (e) => toBackendFailure(e).payload;
  assert.deepEqual(tag(new ProcessFailure({ tag: 'not-found', val: 'x' })), { tag: 'not-found', val: 'x' });
  assert.deepEqual(tag(new ProcessFailure({ tag: 'timed-out', val: 'x' })), { tag: 'unavailable', val: 'x' });
  assert.deepEqual(tag(new ProcessFailure({ tag: 'invalid', val: 'x' })), { tag: 'invalid-request', val: 'x' });
  assert.deepEqual(tag(new KvFailure({ tag: 'unavailable', val: 'down' })), { tag: 'unavailable', val: 'job store: down' });
  assert.deepEqual(tag(new KvFailure({ tag: 'invalid', val: 'big' })), { tag: 'invalid-request', val: 'big' });
  assert.deepEqual(tag(new TypeError('y')), { tag: 'internal', val: 'TypeError: y' });
});

test('records refuse garbage as internal', () => {
  assert.deepEqual(records.decode(records.encode({ a: 1 })), { a: 1 });
  for (const bad of ['{', '[1]', 'null']) {
    assert.throws(() => records.decode(new TextEncoder().encode(bad)), (e) => e.payload.tag === 'internal');
  }
  assert.throws(() => records.decode(Uint8Array.of(0xff)), (e) => e.payload.tag === 'internal');
});

test('hours round up without float noise', () => {
  assert.equal(spec.hoursToSeconds(1.5), 5400);
  assert.equal(spec.hoursToSeconds(1.1), 3960);
  assert.equal(spec.hoursToSeconds(0.0001), 1);
  for (const bad of [0, -1, NaN, Infinity, 1e300]) {
    assert.throws(() => spec.hoursToSeconds(bad), (e) => e.payload.tag === 'invalid-request');
  }
});

test('apptainer wrap', () => {
  assert.deepEqual(apptainer.wrap('/opt/a', '/i.sif', [['a', '/x'], ['b', '/x'], ['c', undefined]], ['true']),
    ['/opt/a', 'exec', '--bind', '/x', '/i.sif', 'true']);
  for (const [sif, mounts] of [['img.sif', []], ['/i.sif', [['o', '/a,b']]], ['/i.sif', [['o', 'rel']]]]) {
    assert.throws(() => apptainer.wrap('apptainer', sif, mounts, ['true']), (e) => e.payload.tag === 'invalid-request');
  }
  assert.deepEqual(apptainer.containerEnv([['P', '1']]), [['P', '1'], ['APPTAINERENV_P', '1']]);
});
