//! A plugin's compiled code while it is idle.
//!
//! A component loaded from the compile cache is the cache file mapped privately and never written
//! (wasmtime makes the image read-only, its text read-and-execute, before it runs). Parsing the
//! image and running `init` fault most of it in (the kernel maps the neighbours of each faulting
//! page), so every loaded plugin kept its whole compiled image resident — about 520 KiB of a
//! 560 KiB image for the benchmark's one-header hook, most of a thousand idle plugins' memory
//! (BENCHMARKS.md, "Memory per idle plugin"). Once a plugin has started, [`MappedCode::release`]
//! drops the image's pages from plugd's page tables: they stay in the page cache, clean and
//! reclaimable, and a later call faults back only the pages it runs (a minor fault each, from
//! the page cache; a read from disk only if the kernel reclaimed them meanwhile).

use std::ops::Range;

use wasmtime::component::Component;

/// The pages of one compiled image, mapped from its cache file.
#[derive(Clone)]
pub(crate) struct MappedCode {
    /// Held so that the mapping outlives every release: the addresses below are never another
    /// mapping's.
    _component: Component,
    /// Page-aligned start address and length, as integers: nothing dereferences them.
    start: usize,
    len: usize,
}

impl std::fmt::Debug for MappedCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedCode")
            .field("start", &format_args!("{:#x}", self.start))
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl MappedCode {
    /// The image of `component`.
    ///
    /// # Safety
    /// `component` must have been deserialized from a file (`Component::deserialize_file`): its
    /// image is then a private mapping of that file, which wasmtime never writes after loading,
    /// so dropping its pages loses nothing. The image of a component deserialized from bytes in
    /// memory is anonymous memory: releasing it would zero the code.
    pub(crate) unsafe fn of(component: &Component) -> MappedCode {
        let range: Range<*const u8> = component.image_range();
        let page = page_size();
        let start = range.start.addr();
        let end = range.end.addr();
        // The mapping starts on a page; only whole pages inside the image are released.
        let start_aligned = start.next_multiple_of(page);
        let end_aligned = end - end % page;
        MappedCode {
            _component: component.clone(),
            start: start_aligned,
            len: end_aligned.saturating_sub(start_aligned),
        }
    }

    /// Drop the image's resident pages from this process (`MADV_DONTNEED`); the next call that
    /// runs them maps them again from the page cache. Best effort: a refusal is logged.
    pub(crate) fn release(&self, plugin: &str) {
        if self.len == 0 {
            return;
        }
        if let Err(error) = self.advise_dontneed() {
            tracing::debug!(plugin, %error, "could not release the compiled code's pages");
        }
    }
}

impl MappedCode {
    #[cfg(unix)]
    fn advise_dontneed(&self) -> std::io::Result<()> {
        // SAFETY: the range is whole pages of a private, read-only file mapping (see `of`), kept
        // alive by the `Component` this holds; MADV_DONTNEED on such a mapping only
        // discards page-table entries, and the contents come back unchanged from the file.
        let rc = unsafe {
            libc::madvise(
                self.start as *mut libc::c_void,
                self.len,
                libc::MADV_DONTNEED,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    #[cfg(not(unix))]
    fn advise_dontneed(&self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(unix)]
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|s| *s > 0)
        .unwrap_or(4096)
}

#[cfg(not(unix))]
fn page_size() -> usize {
    4096
}
