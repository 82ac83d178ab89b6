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

    // The same with real instances: a core module in WAT whose memories and
    // table grow at run time, on the host's own engine. Growth only reserves
    // address space until touched, so the host's RSS stays small; the
    // limiter's counter is what these tests assert.

    const BUDGET: usize = 64 << 20;
    /// 1000 pages of 64 KiB: 62.5 MiB, just under the budget.
    const NEAR: i32 = 1000;

    /// A module with `memories` linear memories (0 pages each) and a table,
    /// exporting `grow<i>(pages)` per memory and `grow-table(elements)`.
    fn module(memories: usize) -> (wasmtime::Engine, wasmtime::Module) {
        let mut wat = String::from("(module\n  (table $t 0 funcref)\n");
        for i in 0..memories {
            wat += &format!(
                "  (memory $m{i} 0)\n  (func (export \"grow{i}\") (param i32) (result i32)\n    (memory.grow $m{i} (local.get 0)))\n"
            );
        }
        wat += "  (func (export \"grow-table\") (param i32) (result i32)\n    (table.grow $t (ref.null func) (local.get 0))))";
        let engine = crate::runtime::engine::Engine::new(None, false)
            .unwrap()
            .engine;
        let bytes = wat::parse_str(&wat).unwrap();
        let module = wasmtime::Module::new(&engine, &bytes).unwrap();
        (engine, module)
    }

    fn instance(
        engine: &wasmtime::Engine,
        module: &wasmtime::Module,
    ) -> Result<(wasmtime::Store<Limiter>, wasmtime::Instance)> {
        let mut store = wasmtime::Store::new(engine, Limiter::new(BUDGET));
        store.limiter(|l| l);
        store.set_epoch_deadline(1 << 40);
        let instance = wasmtime::Instance::new(&mut store, module, &[])?;
        Ok((store, instance))
    }

    fn grow(
        store: &mut wasmtime::Store<Limiter>,
        instance: &wasmtime::Instance,
        export: &str,
        n: i32,
    ) -> Result<i32> {
        instance
            .get_typed_func::<i32, i32>(&mut *store, export)?
            .call(&mut *store, n)
    }

    #[test]
    fn several_memories_each_under_the_limit_are_refused_together() {
        let (engine, module) = module(4);
        let (mut store, instance) = instance(&engine, &module).unwrap();
        // One memory just under the budget: fine on its own.
        assert_eq!(grow(&mut store, &instance, "grow0", NEAR).unwrap(), 0);
        assert_eq!(store.data().used(), NEAR as usize * 65536);
        // A second one as big: each alone is under the limit, together over.
        for other in ["grow1", "grow2", "grow3"] {
            let e = grow(&mut store, &instance, other, NEAR).unwrap_err();
            let m = format!("{e:#}");
            assert!(
                m.contains("`memory_mb` of 64 MiB") && m.contains("linear memories"),
                "{m}"
            );
        }
        // What is left of the budget can still be used, in any memory.
        assert_eq!(grow(&mut store, &instance, "grow1", 20).unwrap(), 0);
        assert_eq!(grow(&mut store, &instance, "grow2", 4).unwrap(), 0);
        assert!(grow(&mut store, &instance, "grow3", 1).is_err());
        assert_eq!(store.data().used(), 1024 * 65536);
        assert!(store.data().used() <= BUDGET);
        // The memories really are that size.
        let size = |s: &mut wasmtime::Store<Limiter>, i: usize| {
            grow(s, &instance, &format!("grow{i}"), 0).unwrap()
        };
        assert_eq!(
            (0..4).map(|i| size(&mut store, i)).collect::<Vec<_>>(),
            [NEAR, 20, 4, 0]
        );
    }

    #[test]
    fn a_huge_table_is_refused_and_shares_the_budget_with_memories() {
        let (engine, module) = module(1);
        let (mut store, instance) = instance(&engine, &module).unwrap();
        // 100 million elements: 800 MB of host memory if it were allowed.
        let e = grow(&mut store, &instance, "grow-table", 100_000_000).unwrap_err();
        let m = format!("{e:#}");
        assert!(
            m.contains("by its tables") && m.contains("memory_mb"),
            "{m}"
        );
        assert_eq!(store.data().used(), 0);
        // A memory near the budget leaves room for a small table only.
        assert_eq!(grow(&mut store, &instance, "grow0", NEAR).unwrap(), 0);
        assert_eq!(grow(&mut store, &instance, "grow-table", 1000).unwrap(), 0);
        let left = (BUDGET - store.data().used()) / TABLE_ELEMENT_BYTES;
        assert!(grow(&mut store, &instance, "grow-table", left as i32 + 1).is_err());
        assert!(store.data().used() <= BUDGET);
    }

    #[test]
    fn more_memories_than_allowed_do_not_instantiate() {
        let (engine, nine) = module(MAX_MEMORIES + 1);
        let e = instance(&engine, &nine).err().unwrap();
        assert!(format!("{e:#}").contains("memor"), "{e:#}");
        let (engine, eight) = module(MAX_MEMORIES);
        assert!(instance(&engine, &eight).is_ok());
    }
}
