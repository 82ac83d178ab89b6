//! The test-only plugins, built by this crate's build script: a
//! dev-dependency of `hpc-host`, whose tests install them from [`DIR`].

/// The folder holding `hostile.wasm`, `misbehave.wasm` and `wrong-version.wasm`.
pub const DIR: &str = env!("HPC_HOST_TEST_PLUGINS");
