//! The SDK's fake host, set up as every SLURM test needs it.

use crate::backend::SETTING_PARTITION;
pub use hpc_plugin_sdk::fake::{FakeHost, fail, ok};

/// Makes the fake host for SLURM tests.
pub struct Fake;

impl Fake {
    /// A fake host whose `SLURM_PARTITION` is `debug`.
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> FakeHost {
        FakeHost::new().with_setting(SETTING_PARTITION, "debug")
    }
}
