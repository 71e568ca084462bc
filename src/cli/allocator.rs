//! The `abathur` binary's allocator: the system's, except that running out of memory ends the
//! command with a plain `error:` line and exit code 1, as every other failure does, rather
//! than Rust's default message and an abort (exit 134, and a stack trace when
//! `RUST_BACKTRACE` is set).
//!
//! Stable Rust offers no hook for a failed allocation, so the check sits in the allocator.
//! It treats every failed allocation as fatal, `try_reserve` included; nothing in abathur
//! recovers from one. The process ends with `_exit`: a transaction it had open is never
//! committed, so SQLite rolls it back (an import stores all of its file or none of it).

use std::alloc::{GlobalAlloc, Layout, System};

/// The system allocator, reporting exhaustion in plain words.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allocator;

// SAFETY: every call is forwarded unchanged to `System`, which upholds `GlobalAlloc`'s
// contract; a null result ends the process instead of being returned.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees on `layout` are passed on as they are.
        checked(unsafe { System.alloc(layout) }, layout.size())
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        checked(unsafe { System.alloc_zeroed(layout) }, layout.size())
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` was allocated by `System` (through this allocator) with `layout`.
        checked(unsafe { System.realloc(ptr, layout, new_size) }, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `realloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn checked(ptr: *mut u8, size: usize) -> *mut u8 {
    #[cfg(unix)]
    if ptr.is_null() {
        out_of_memory(size);
    }
    #[cfg(not(unix))]
    let _ = size;
    ptr
}

/// Says that memory ran out and ends the process. Allocates nothing: the message is put
/// together on the stack and written with one system call.
#[cfg(unix)]
fn out_of_memory(size: usize) -> ! {
    let mut message = [0u8; 128];
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        for &b in bytes {
            if len < message.len() {
                message[len] = b;
                len += 1;
            }
        }
    };
    put(b"error: out of memory: could not allocate ");
    let mut digits = [0u8; 20];
    let mut n = size;
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    put(&digits[at..]);
    put(b" bytes more\n");
    // SAFETY: write reads `len` initialised bytes of `message`; _exit ends the process without
    // running anything that could allocate.
    unsafe {
        libc::write(2, message.as_ptr().cast(), len);
        libc::_exit(1);
    }
}
