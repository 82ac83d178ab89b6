//! A minimal hpc-host backend to copy: it drives a site scheduler through
//! five command-line tools the site's policy maps to real programs.
//!
//! | logical program | called as                                          | prints            |
//! |-----------------|----------------------------------------------------|-------------------|
//! | `submit`        | `submit [--time SECONDS] [--mem-mib MIB] [--tag KEY] -- argv…` | the new job's id  |
//! | `find`          | `find --tag KEY`                                   | the id of the job tagged KEY, or nothing |
//! | `status`        | `status ID…`                                       | `ID STATE [EXIT]` per line |
//! | `cancel`        | `cancel ID`                                        | nothing           |
//! | `logs`          | `logs ID`                                          | the job's output  |
//!
//! `STATE` is one of `PENDING`, `RUNNING`, `COMPLETED`, `FAILED`. Replace the
//! tools and the parsing with your scheduler's. The logic is the `Backend` impl in [`backend`],
//! written over the SDK's `Host` trait so that `cargo test` runs it natively
//! against the SDK's fake host; this file only connects it to the component.

pub mod backend;

/// The backend: its operations are the `Backend` impl in [`backend`].
pub struct Template;

// The contract's exports, with the real host; natively nothing is exported.
hpc_plugin_sdk::export_backend!(Template);
