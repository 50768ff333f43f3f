//! A small cache in front of CPython's arena allocator, so a greenlet per request costs no `mmap`.
//!
//! CPython 3.11+ keeps each thread state's frames in "data stack chunks"
//! (16 KiB and up) taken from the *arena allocator*, which on Linux is
//! `mmap`/`munmap`. A greenlet is a fresh thread state as far as frames go:
//! its first call takes a new chunk and greenlet gives it back when the
//! greenlet ends. In gevent mode that is one `mmap`, four page faults and
//! one `munmap` per request, about a sixth of a hello-world request's CPU
//! (bench/PROFILE.md). `install` puts a cache in front of the allocator
//! CPython had: freed blocks of up to `MAX_BLOCK` bytes are kept (at most
//! `MAX_CACHED` bytes in all) and handed out again for the same size;
//! everything else goes to the previous allocator. The previous allocator
//! is kept for those calls, so blocks it gave out before the switch are
//! freed the way they were made. CPython calls the allocator with the GIL
//! held; the lock here only guards against a caller that does not.

use parking_lot::Mutex;
use std::ffi::c_void;
use std::sync::OnceLock;

/// CPython's `PyObjectArenaAllocator` (stable layout since 3.4; not in
/// the limited API, so declared here).
#[repr(C)]
#[derive(Clone, Copy)]
struct ArenaAllocator {
    ctx: *mut c_void,
    alloc: Option<unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void>,
    free: Option<unsafe extern "C" fn(*mut c_void, *mut c_void, usize)>,
}

// SAFETY: the context pointer is CPython's own (null for the default
// allocator) and is only passed back to CPython's functions.
unsafe impl Send for ArenaAllocator {}
unsafe impl Sync for ArenaAllocator {}

extern "C" {
    fn PyObject_GetArenaAllocator(allocator: *mut ArenaAllocator);
    fn PyObject_SetArenaAllocator(allocator: *mut ArenaAllocator);
}

/// Largest block kept: data stack chunks are 16 KiB unless a frame needs
/// more; pymalloc's 1 MiB arenas go straight back.
const MAX_BLOCK: usize = 64 * 1024;
/// Most bytes kept at once (64 chunks of 16 KiB).
const MAX_CACHED: usize = 1024 * 1024;

/// Freed blocks, newest last.
struct Cache {
    blocks: Vec<(usize, usize)>,
    bytes: usize,
}

static PREVIOUS: OnceLock<ArenaAllocator> = OnceLock::new();
static CACHE: Mutex<Cache> = Mutex::new(Cache {
    blocks: Vec::new(),
    bytes: 0,
});

impl Cache {
    fn take(&mut self, size: usize) -> Option<usize> {
        let i = self.blocks.iter().rposition(|&(_, s)| s == size)?;
        let (ptr, _) = self.blocks.swap_remove(i);
        self.bytes -= size;
        Some(ptr)
    }

    /// Keeps the block if it fits; `false` hands it back to the caller.
    fn keep(&mut self, ptr: usize, size: usize) -> bool {
        if size > MAX_BLOCK || self.bytes + size > MAX_CACHED {
            return false;
        }
        self.blocks.push((ptr, size));
        self.bytes += size;
        true
    }
}

unsafe extern "C" fn cached_alloc(_ctx: *mut c_void, size: usize) -> *mut c_void {
    if let Some(ptr) = CACHE.try_lock().and_then(|mut c| c.take(size)) {
        return ptr as *mut c_void;
    }
    match PREVIOUS.get() {
        // SAFETY: CPython's allocator, called as CPython would call it.
        Some(&ArenaAllocator {
            ctx,
            alloc: Some(alloc),
            ..
        }) => unsafe { alloc(ctx, size) },
        _ => std::ptr::null_mut(),
    }
}

unsafe extern "C" fn cached_free(_ctx: *mut c_void, ptr: *mut c_void, size: usize) {
    if ptr.is_null() {
        return;
    }
    if CACHE
        .try_lock()
        .is_some_and(|mut c| c.keep(ptr as usize, size))
    {
        return;
    }
    if let Some(&ArenaAllocator {
        ctx,
        free: Some(free),
        ..
    }) = PREVIOUS.get()
    {
        // SAFETY: every block came from the previous allocator (directly,
        // or through the cache, which only hands out what it was given).
        unsafe { free(ctx, ptr, size) }
    }
}

/// Puts the cache in front of CPython's arena allocator (once per process;
/// later calls do nothing). Called with the GIL held.
pub(crate) fn install() {
    let mut previous = ArenaAllocator {
        ctx: std::ptr::null_mut(),
        alloc: None,
        free: None,
    };
    // SAFETY: fills the struct we own.
    unsafe { PyObject_GetArenaAllocator(&mut previous) };
    if previous.alloc.is_none() || previous.free.is_none() || PREVIOUS.set(previous).is_err() {
        return;
    }
    let mut ours = ArenaAllocator {
        ctx: std::ptr::null_mut(),
        alloc: Some(cached_alloc),
        free: Some(cached_free),
    };
    // SAFETY: CPython copies the struct; our functions live as long as the process.
    unsafe { PyObject_SetArenaAllocator(&mut ours) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keeps_small_blocks_within_its_budget() {
        let mut c = Cache {
            blocks: Vec::new(),
            bytes: 0,
        };
        assert!(c.keep(0x1000, 16384));
        assert!(!c.keep(0x2000, MAX_BLOCK + 1), "too big");
        assert_eq!(c.take(8192), None, "sizes must match");
        assert_eq!(c.take(16384), Some(0x1000));
        assert_eq!(c.bytes, 0);
        let n = MAX_CACHED / 16384;
        assert!((0..n).all(|i| c.keep(i * 16384, 16384)));
        assert!(!c.keep(0x9999_0000, 16384), "full");
        assert_eq!(c.bytes, MAX_CACHED);
    }
}
