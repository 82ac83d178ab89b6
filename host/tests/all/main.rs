//! Integration tests: the real `hpc-host` binary against real processes, files
//! and Redis. One test binary (see STYLE.md §7).
//!
//! Tests that need a Redis server are `#[ignore = "needs redis"]` so a plain
//! `cargo test` works anywhere; the README's test command (`scripts/test.sh`)
//! starts Redis and runs them with `--include-ignored`, where a missing server
//! is a failure.

mod batch;
mod common;
mod conformance;
mod contain;
mod daemon;
mod errors;
mod first_contact;
mod hostile;
mod idempotency;
mod kube;
mod kube_fake;
mod load_memo;
mod local;
mod redis_store;
mod requests;
mod slurm;
mod slurm_array;
mod trust;
