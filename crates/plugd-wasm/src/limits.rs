//! The memory cap of one instance: wasmtime's `ResourceLimiter` over its linear memories and
//! tables together, and a record of the growth it refused, so that a trap that follows (a Rust
//! guest aborts when its allocator gets no memory) is reported as what it is: out of memory.

use wasmtime::ResourceLimiter;

/// What one table element counts against the memory cap: a pointer in wasmtime's tables.
pub(crate) const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

/// The largest table any instance may have, whatever its memory cap. Rust guests use about a
/// hundred elements, interpreters compiled to wasm about twenty thousand.
pub(crate) const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// Core instances, tables and linear memories one store may create (a Rust guest's component
/// instantiates 4 core modules, with 2 tables and 1 memory).
const MAX_INSTANCES: usize = 64;
const MAX_TABLES: usize = 64;
const MAX_MEMORIES: usize = 16;

/// The memory cap of one instance: the bytes of its linear memories plus
/// [`TABLE_ELEMENT_BYTES`] per table element may not exceed `cap`.
#[derive(Debug)]
pub(crate) struct Limiter {
    cap: usize,
    memory_bytes: usize,
    table_elements: usize,
    /// The growth allowed last, undone if wasmtime then fails to perform it.
    pending: Option<Growth>,
    /// The first growth refused since [`Limiter::reset`].
    refused: Option<Refusal>,
}

#[derive(Debug, Clone, Copy)]
enum Growth {
    Memory(usize),
    Table(usize),
}

/// A growth the limiter (or the allocator behind it) refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// What the instance's memories and tables would have held, in bytes.
    pub(crate) wanted: usize,
}

impl Limiter {
    /// A limiter for an instance capped at `cap` bytes.
    pub(crate) fn new(cap: usize) -> Limiter {
        Limiter {
            cap,
            memory_bytes: 0,
            table_elements: 0,
            pending: None,
            refused: None,
        }
    }

    /// Forget refusals: called before each guest call, so that a failure is only blamed on
    /// memory when that call ran out of it.
    pub(crate) fn reset(&mut self) {
        self.refused = None;
    }

    /// The growth refused since the last [`Limiter::reset`], if any.
    pub(crate) fn refused(&self) -> Option<Refusal> {
        self.refused
    }

    /// Bytes the instance holds now (memories and tables).
    pub(crate) fn used(&self) -> usize {
        self.memory_bytes
            .saturating_add(self.table_elements.saturating_mul(TABLE_ELEMENT_BYTES))
    }

    fn refuse(&mut self, wanted: usize) -> bool {
        self.refused.get_or_insert(Refusal { wanted });
        false
    }
}

/// wasmtime reports a growth beyond a memory's or table's own declared maximum with this text;
/// that is the guest's business (the growth returns -1), not the cap's.
fn is_type_limit(error: &wasmtime::Error) -> bool {
    error.to_string().contains("type's limits")
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let delta = desired.saturating_sub(current);
        let wanted = self.used().saturating_add(delta);
        if wanted > self.cap {
            return Ok(self.refuse(wanted));
        }
        self.memory_bytes += delta;
        self.pending = Some(Growth::Memory(delta));
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        if is_type_limit(&error) {
            return Ok(());
        }
        // Allowed here, refused by the allocator (a pool slot is smaller than the cap, or the
        // host is out of address space): the instance is out of memory all the same.
        if let Some(Growth::Memory(delta)) = self.pending.take() {
            let wanted = self.used();
            self.memory_bytes -= delta;
            self.refuse(wanted);
        }
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let delta = desired.saturating_sub(current);
        let wanted = self
            .used()
            .saturating_add(delta.saturating_mul(TABLE_ELEMENT_BYTES));
        if desired > MAX_TABLE_ELEMENTS || wanted > self.cap {
            return Ok(self.refuse(wanted));
        }
        self.table_elements += delta;
        self.pending = Some(Growth::Table(delta));
        Ok(true)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        if is_type_limit(&error) {
            return Ok(());
        }
        if let Some(Growth::Table(delta)) = self.pending.take() {
            let wanted = self.used();
            self.table_elements -= delta;
            self.refuse(wanted);
        }
        Ok(())
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

/// `bytes` as MiB for messages: "64 MiB", "64.5 MiB".
pub(crate) fn mib(bytes: usize) -> String {
    let m = bytes as f64 / (1024.0 * 1024.0);
    if m.fract() == 0.0 {
        format!("{m:.0} MiB")
    } else {
        format!("{m:.1} MiB")
    }
}

/// The wasm stack of one call (wasmtime's default, stated here because it is a limit: deeper
/// recursion traps as a stack overflow).
pub(crate) const MAX_WASM_STACK_BYTES: usize = 512 * 1024;

/// Where a plugin's instances are allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    /// From the pooling allocator's slots.
    Pooling,
    /// With `mmap` at each instantiation: plugins whose memory cap exceeds a slot, or whose
    /// component does not fit one (guests of interpreted languages, with many core instances).
    OnDemand,
}

impl Allocator {
    /// "pooling" or "on-demand".
    pub fn as_str(self) -> &'static str {
        match self {
            Allocator::Pooling => "pooling",
            Allocator::OnDemand => "on-demand",
        }
    }
}

/// The message of a response body over its plugin's cap.
pub(crate) fn response_too_large(plugin: &str, len: usize, cap: usize, what: &str) -> String {
    format!(
        "response too large: plugin '{plugin}' produced a body of {len} bytes ({}) in {what}, over its limit of {cap} bytes ({}, limits.max_response_bytes)",
        mib(len),
        mib(cap)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn memories_and_tables_share_one_cap() {
        let mut l = Limiter::new(4 * MIB);
        assert!(l.memory_growing(0, 3 * MIB, None).unwrap());
        // 3 MiB of memory + 128 Ki elements × 8 bytes = 4 MiB: exactly the cap.
        assert!(l.table_growing(0, 128 * 1024, None).unwrap());
        assert_eq!(l.used(), 4 * MIB);
        assert_eq!(l.refused(), None);
        assert!(!l.memory_growing(3 * MIB, 3 * MIB + 65536, None).unwrap());
        assert_eq!(
            l.refused(),
            Some(Refusal {
                wanted: 4 * MIB + 65536
            })
        );
        assert!(!l.table_growing(128 * 1024, 128 * 1024 + 1, None).unwrap());
        // The first refusal is the one reported; reset forgets it.
        assert_eq!(l.refused().unwrap().wanted, 4 * MIB + 65536);
        l.reset();
        assert_eq!(l.refused(), None);
    }

    #[test]
    fn a_declared_maximum_is_the_guests_business() {
        let mut l = Limiter::new(64 * MIB);
        assert!(!l.memory_growing(MIB, 2 * MIB, Some(MIB)).unwrap());
        assert_eq!(l.refused(), None);
        l.memory_grow_failed(wasmtime::format_err!(
            "memory growth exceeds memory type's limits"
        ))
        .unwrap();
        assert_eq!(l.refused(), None);
    }

    #[test]
    fn a_growth_the_allocator_fails_is_undone_and_refused() {
        let mut l = Limiter::new(64 * MIB);
        assert!(l.memory_growing(0, MIB, None).unwrap());
        assert!(l.memory_growing(MIB, 9 * MIB, None).unwrap());
        l.memory_grow_failed(wasmtime::format_err!("Memory maximum size exceeded"))
            .unwrap();
        assert_eq!(l.used(), MIB);
        assert_eq!(l.refused(), Some(Refusal { wanted: 9 * MIB }));
    }

    #[test]
    fn tables_have_an_absolute_ceiling() {
        let mut l = Limiter::new(usize::MAX);
        assert!(!l.table_growing(0, MAX_TABLE_ELEMENTS + 1, None).unwrap());
        assert!(l.refused().is_some());
    }

    /// A module that grows a table or its memory until refused, under the limiter in a store.
    fn bomb(export: &str, cap: usize) -> (i32, Limiter) {
        let engine = wasmtime::Engine::default();
        let module = wasmtime::Module::new(
            &engine,
            r#"(module
                (table $t 1 funcref)
                (memory 1)
                (func (export "tables") (result i32)
                    (loop $again
                        (br_if $again
                            (i32.ne (table.grow $t (ref.null func) (i32.const 4096)) (i32.const -1))))
                    (table.size $t))
                (func (export "memory") (result i32)
                    (loop $again
                        (br_if $again (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
                    (memory.size)))"#,
        )
        .unwrap();
        let mut store = wasmtime::Store::new(&engine, Limiter::new(cap));
        store.limiter(|l| l);
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        let grow = instance
            .get_typed_func::<(), i32>(&mut store, export)
            .unwrap();
        let size = grow.call(&mut store, ()).unwrap();
        (size, store.into_data())
    }

    #[test]
    fn a_table_bomb_stops_at_the_cap_in_a_real_store() {
        let (elements, limiter) = bomb("tables", 4 * MIB);
        let used = 65536 + elements as usize * TABLE_ELEMENT_BYTES;
        assert!(used <= 4 * MIB, "{used}");
        assert!(used + 4096 * TABLE_ELEMENT_BYTES > 4 * MIB, "{used}");
        assert!(limiter.refused().unwrap().wanted > 4 * MIB);
    }

    #[test]
    fn a_memory_bomb_stops_at_the_cap_in_a_real_store() {
        let (pages, limiter) = bomb("memory", 4 * MIB);
        // 1 page to start, then 16 at a time: 49 pages (3 MiB + 64 KiB) fit beside the table.
        assert_eq!(pages, 49);
        assert!(limiter.used() <= 4 * MIB);
        assert!(limiter.refused().is_some());
    }

    #[test]
    fn mib_reads_well() {
        assert_eq!(mib(64 * MIB), "64 MiB");
        assert_eq!(mib(64 * MIB + MIB / 2), "64.5 MiB");
    }
}
