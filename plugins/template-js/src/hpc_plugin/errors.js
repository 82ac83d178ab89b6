// Errors: `BackendFailure` carries a contract `backend-error` ({tag, val});
// the host's `process` and `kv` errors map onto it as the Rust SDK maps them.
//
// componentize-js: an export that returns `result<T, E>` answers `err(E)`
// when it throws an object with a `payload` property (E); an import that
// returns a result throws its `err` the same way (we read `payload`, or the
// thrown value itself).

export class BackendFailure extends Error {
  constructor(tag, message) {
    super(`${tag}: ${message}`);
    // What componentize-js sends back as the `err` of the result.
    Object.defineProperty(this, 'payload', { value: { tag, val: message }, enumerable: true });
  }
}

export const invalidRequest = (m) => new BackendFailure('invalid-request', m);
export const notFound = (m) => new BackendFailure('not-found', m);
export const denied = (m) => new BackendFailure('denied', m);
export const unavailable = (m) => new BackendFailure('unavailable', m);
export const internal = (m) => new BackendFailure('internal', m);

/** The error value a host import threw (`{tag, val}`), or undefined. */
export function hostError(e) {
  const v = e && Object.prototype.hasOwnProperty.call(e, 'payload') ? e.payload : e;
  return v && typeof v === 'object' && typeof v.tag === 'string' && 'val' in v ? v : undefined;
}

const PROCESS = {
  denied: 'denied',
  'not-found': 'not-found',
  'timed-out': 'unavailable',
  invalid: 'invalid-request',
  failed: 'internal',
};

/** A `process-error` ({tag, val}) as a `BackendFailure`. */
export function fromProcess(e) {
  const tag = PROCESS[e.tag];
  if (!tag) throw new TypeError(`not a process error: ${JSON.stringify(e)}`);
  return new BackendFailure(tag, e.val);
}

/** A `kv-error` ({tag, val}) as a `BackendFailure`. */
export function fromKv(e) {
  switch (e.tag) {
    case 'unavailable': return unavailable(`job store: ${e.val}`);
    case 'denied': return denied(e.val);
    case 'invalid': return invalidRequest(e.val);
    case 'other': return internal(`job store: ${e.val}`);
    default: throw new TypeError(`not a kv error: ${JSON.stringify(e)}`);
  }
}

/** A host `process` call failed: `error` is its `process-error` ({tag, val}). */
export class ProcessFailure extends Error {
  constructor(error) {
    super(`process ${error.tag}: ${error.val}`);
    this.error = error;
  }
}

/** A host `kv` call failed: `error` is its `kv-error` ({tag, val}). */
export class KvFailure extends Error {
  constructor(error) {
    super(`kv ${error.tag}: ${error.val}`);
    this.error = error;
  }
}

/** Any exception as a `BackendFailure`: one as it is, a host error mapped,
 * anything else `internal` with its message. */
export function toBackendFailure(e) {
  if (e instanceof BackendFailure) return e;
  if (e instanceof ProcessFailure) return fromProcess(e.error);
  if (e instanceof KvFailure) return fromKv(e.error);
  return internal(e instanceof Error ? `${e.name}: ${e.message}` : String(e));
}
