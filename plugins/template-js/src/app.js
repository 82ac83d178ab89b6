// The component's entry point: componentize-js builds this module and calls
// `hpcBackend`'s functions for the contract's exports. Each delegates to
// `backend.js` with the real host; `guard` turns any exception into the
// contract's `backend-error` (a BackendFailure as it is, a host error
// mapped, a bug `internal` with its stack logged through wasi:logging)
// rather than a trap.
import * as backend from './backend.js';
import { BackendFailure, toBackendFailure } from './hpc_plugin/errors.js';
import { RealHost } from './hpc_plugin/host.js';

const host = new RealHost(backend.NAME);

async function guard(f) {
  try {
    return await f();
  } catch (e) {
    const failure = toBackendFailure(e);
    if (!(e instanceof BackendFailure) && failure.payload.tag === 'internal') {
      host.log('error', e && e.stack ? `${e}\n${e.stack}` : String(e));
    }
    throw failure;
  }
}

export const hpcBackend = {
  submit: (spec) => guard(() => backend.submit(host, spec)),
  // Each element carries its own error: nothing to guard.
  submitMany: (specs) => backend.submitMany(host, specs),
  findJob: (key, since) => guard(() => backend.findJob(host, key, since)),
  getStatus: (id) => guard(() => backend.getStatus(host, id)),
  getStatuses: (ids) => guard(() => backend.getStatuses(host, ids)),
  cancel: (id) => guard(() => backend.cancel(host, id)),
  getLogs: (id) => guard(() => backend.getLogs(host, id)),
  describe: () => backend.describe(),
};
