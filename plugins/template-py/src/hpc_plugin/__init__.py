"""Helpers for hpc-host backend plugins written in Python (componentize-py).

The Python counterpart of the Rust SDK (`plugins/sdk`):

- `host`: the host's interfaces behind one object (`RealHost` in the
  component, `fake.FakeHost` under pytest), so backend logic takes a host and
  runs natively in tests;
- `errors`: `BackendFailure` and the mapping of the host's `process` / `kv`
  errors onto the contract's `backend-error`;
- `records`: JSON job records in kv;
- `ids`: job ids, and the id a keyed submit makes (from the idempotency key);
- `spec`: command checks, hours to seconds, as the Rust SDK does them;
- `apptainer`: `apptainer exec --bind … <sif> argv…` for a spec's `sif_path`.

Only the standard library: these modules import the generated bindings
(`wit_world`), never a native extension.
"""
