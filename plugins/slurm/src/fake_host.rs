//! A fake [`Host`] for tests: settings and kv in memory, scripted answers
//! per program, and a record of every command run.

use super::Host;
use crate::backend::SETTING_PARTITION;
use hpc_plugin_sdk::host::kv::KvError;
use hpc_plugin_sdk::host::process::{ProcessError, RunOutput, RunRequest};
use std::collections::{HashMap, VecDeque};

/// The fake host; `answers` are popped per program, in order.
#[derive(Default)]
pub struct Fake {
    pub settings: HashMap<String, String>,
    pub answers: HashMap<String, VecDeque<Result<RunOutput, ProcessError>>>,
    pub calls: Vec<RunRequest>,
    pub kv: HashMap<String, Vec<u8>>,
    /// kv writes fail from this many successful ones on.
    pub kv_fail_after: Option<usize>,
    pub kv_writes: usize,
    pub warnings: Vec<String>,
    pub clock: u64,
}

impl Fake {
    pub fn new() -> Self {
        let mut f = Fake::default();
        f.settings.insert(SETTING_PARTITION.into(), "debug".into());
        f
    }
    pub fn answer(&mut self, program: &str, answer: Result<RunOutput, ProcessError>) -> &mut Self {
        self.answers
            .entry(program.into())
            .or_default()
            .push_back(answer);
        self
    }
    pub fn calls_to(&self, program: &str) -> Vec<&RunRequest> {
        self.calls.iter().filter(|c| c.program == program).collect()
    }
}

impl Host for Fake {
    fn setting(&self, key: &str) -> Option<String> {
        self.settings.get(key).cloned()
    }
    fn run(&mut self, req: &RunRequest) -> Result<RunOutput, ProcessError> {
        self.calls.push(req.clone());
        self.answers
            .get_mut(&req.program)
            .and_then(VecDeque::pop_front)
            .unwrap_or_else(|| panic!("unexpected call to `{}` {:?}", req.program, req.args))
    }
    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.kv.get(key).cloned())
    }
    fn kv_set(&mut self, key: &str, value: &[u8], _ttl: Option<u32>) -> Result<(), KvError> {
        if self.kv_fail_after.is_some_and(|n| self.kv_writes >= n) {
            return Err(KvError::Unavailable("redis is down".into()));
        }
        self.kv_writes += 1;
        self.kv.insert(key.into(), value.to_vec());
        Ok(())
    }
    fn kv_delete(&mut self, key: &str) -> Result<bool, KvError> {
        Ok(self.kv.remove(key).is_some())
    }
    fn warn(&mut self, msg: &str) {
        self.warnings.push(msg.into());
    }
    fn now_millis(&mut self) -> u64 {
        self.clock += 1;
        1_700_000_000_000 + self.clock
    }
    fn random(&mut self) -> u64 {
        0xabcdef
    }
}

pub fn ok(stdout: &str) -> Result<RunOutput, ProcessError> {
    Ok(RunOutput {
        exit_code: Some(0),
        signal: None,
        stdout: stdout.into(),
        stderr: vec![],
        truncated: false,
    })
}

pub fn fail(stderr: &str) -> Result<RunOutput, ProcessError> {
    Ok(RunOutput {
        exit_code: Some(1),
        signal: None,
        stdout: vec![],
        stderr: stderr.into(),
        truncated: false,
    })
}
