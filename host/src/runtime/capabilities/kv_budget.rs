//! What the host allocates and stores on a plugin's behalf through `kv`,
//! bounded per call.
//!
//! A `get-many` answer is built by the host before the plugin sees it, so its
//! size is the host's memory, not the plugin's: repeated keys are fetched
//! once, keys are fetched in small chunks, and the answer stops at
//! [`MAX_ANSWER_BYTES`]. Writes are bounded per call in bytes and in keys.

use super::kv::KvFault;
use crate::store::Store;
use std::collections::HashMap;

/// The most bytes of values one `get-many` may return.
pub const MAX_ANSWER_BYTES: usize = 16 << 20;
/// Keys fetched per round trip: at most this many values are in flight.
const CHUNK: usize = 16;
/// Bytes of values one call may write.
pub const MAX_WRITE_BYTES_PER_CALL: usize = 16 << 20;
/// `set` and `increment` calls one plugin call may make.
pub const MAX_WRITES_PER_CALL: usize = 10_000;

/// The writes of one call so far.
#[derive(Clone, Debug, Default)]
pub struct WriteBudget {
    bytes: usize,
    writes: usize,
}

impl WriteBudget {
    /// Count one write of `bytes`, or refuse it.
    pub fn spend(&mut self, bytes: usize) -> Result<(), KvFault> {
        if self.writes >= MAX_WRITES_PER_CALL {
            return Err(KvFault::Invalid(format!(
                "at most {MAX_WRITES_PER_CALL} writes per call"
            )));
        }
        if self.bytes + bytes > MAX_WRITE_BYTES_PER_CALL {
            return Err(KvFault::Invalid(format!(
                "at most {MAX_WRITE_BYTES_PER_CALL} bytes written per call"
            )));
        }
        self.writes += 1;
        self.bytes += bytes;
        Ok(())
    }
}

/// `get-many` of full keys, each distinct key fetched once, the answer at
/// most [`MAX_ANSWER_BYTES`].
pub async fn get_many_bounded(
    store: &Store,
    keys: Vec<String>,
) -> Result<Vec<Option<Vec<u8>>>, KvFault> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut unique: Vec<String> = Vec::new();
    for k in &keys {
        if !index.contains_key(k.as_str()) {
            index.insert(k, unique.len());
            unique.push(k.clone());
        }
    }
    let repeats = {
        let mut r = vec![0usize; unique.len()];
        for k in &keys {
            r[index[k.as_str()]] += 1;
        }
        r
    };
    let mut values: Vec<Option<Vec<u8>>> = Vec::with_capacity(unique.len());
    let mut total = 0usize;
    for chunk in unique.chunks(CHUNK) {
        let got = store.get_many(chunk.to_vec()).await?;
        for v in got {
            let i = values.len();
            total = total.saturating_add(v.as_ref().map_or(0, Vec::len).saturating_mul(repeats[i]));
            if total > MAX_ANSWER_BYTES {
                return Err(KvFault::Invalid(format!(
                    "the answer would exceed {MAX_ANSWER_BYTES} bytes: ask for fewer keys at once"
                )));
            }
            values.push(v);
        }
    }
    Ok(keys
        .iter()
        .map(|k| values[index[k.as_str()]].clone())
        .collect())
}
