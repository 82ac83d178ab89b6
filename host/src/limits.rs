//! The resource limiter of one plugin call: `memory_mb` bounds the plugin's
//! whole footprint in wasmtime, not each piece of it.
//!
//! wasmtime's own `StoreLimits` checks each linear memory and each table on
//! its own, and a component may have several of each: eight memories of just
//! under the limit each fit it. This limiter keeps one running total of every
//! linear memory's size and every table's elements (a pointer each, as
//! wasmtime stores them) for the whole store, refuses any growth that would
//! take the total over the budget, and turns the refusal into a trap naming
//! the policy key.

use wasmtime::{ResourceLimiter, Result};

/// Bytes the host spends per table element (a pointer, per wasmtime's docs).
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();
/// Instances of core modules one component may create.
const MAX_INSTANCES: usize = 32;
/// Tables one call may create.
const MAX_TABLES: usize = 64;
/// Linear memories one call may create.
const MAX_MEMORIES: usize = 8;

/// One budget for every memory and table of a store.
#[derive(Debug)]
pub struct Limiter {
    budget: usize,
    used: usize,
}

impl Limiter {
    /// A limiter allowing `budget` bytes of memories and tables in all.
    pub fn new(budget: usize) -> Self {
        Limiter { budget, used: 0 }
    }

    /// Bytes of memories and tables in use now.
    pub fn used(&self) -> usize {
        self.used
    }

    fn grow(&mut self, what: &str, more: usize) -> Result<bool> {
        match self.used.checked_add(more) {
            Some(total) if total <= self.budget => {
                self.used = total;
                Ok(true)
            }
            _ => Err(wasmtime::format_err!(
                "the plugin's memory would grow to {} MiB by its {what}, over its policy's `memory_mb` of {} MiB (memories and tables together)",
                self.used.saturating_add(more) >> 20,
                self.budget >> 20
            )),
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool> {
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        self.grow("linear memories", desired.saturating_sub(current))
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> Result<()> {
        Err(error.context("the plugin's memory could not grow"))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool> {
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        let more = desired
            .saturating_sub(current)
            .saturating_mul(TABLE_ELEMENT_BYTES);
        self.grow("tables", more)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> Result<()> {
        Err(error.context("the plugin's table could not grow"))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memories_and_tables_share_one_budget() {
        let mut l = Limiter::new(64 << 20);
        // Eight memories of 62.5 MiB each: the second one is over.
        assert!(l.memory_growing(0, 1000 << 16, None).unwrap());
        let e = l.memory_growing(0, 1000 << 16, None).unwrap_err();
        assert!(e.to_string().contains("memory_mb"), "{e}");
        assert!(l.table_growing(0, 1000, None).unwrap());
        assert!(l.table_growing(1000, 100_000_000, None).is_err());
        assert!(l.used() <= 64 << 20);
    }
}
