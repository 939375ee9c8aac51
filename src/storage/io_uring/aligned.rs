//! Block-aligned heap memory for direct I/O writes: the kernel transfers `O_DIRECT` data straight
//! from the caller's pages, so the source must start on a block boundary.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::ptr::NonNull;

use super::config::DIRECT_IO_ALIGNMENT_BYTES;

/// An owned copy of some bytes, starting on a [`DIRECT_IO_ALIGNMENT_BYTES`] boundary.
pub(crate) struct AlignedBuffer {
    memory: NonNull<u8>,
    layout: Layout,
    len: usize,
}

impl AlignedBuffer {
    /// Copies `data` (not empty) into new aligned memory.
    pub(crate) fn copy_of(data: &[u8]) -> AlignedBuffer {
        assert!(
            !data.is_empty(),
            "an aligned buffer holds at least one byte"
        );
        let size = data
            .len()
            .next_multiple_of(DIRECT_IO_ALIGNMENT_BYTES as usize);
        let layout = Layout::from_size_align(size, DIRECT_IO_ALIGNMENT_BYTES as usize)
            .expect("a write's length rounded up to a block is a valid layout");
        // SAFETY: the layout has a non-zero size (data is not empty).
        let raw = unsafe { alloc(layout) };
        let Some(memory) = NonNull::new(raw) else {
            handle_alloc_error(layout);
        };
        // SAFETY: `memory` points to `size >= data.len()` freshly allocated bytes that nothing
        // else references, and `data` cannot overlap them.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), memory.as_ptr(), data.len()) };
        AlignedBuffer {
            memory,
            layout,
            len: data.len(),
        }
    }

    /// The start of the copy, for the kernel to read from.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.memory.as_ptr()
    }

    /// Length of the copied data in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for AlignedBuffer {
    fn drop(&mut self) {
        // SAFETY: `memory` was allocated with exactly `layout` and is freed only here, once.
        unsafe { dealloc(self.memory.as_ptr(), self.layout) };
    }
}

// SAFETY: the buffer owns its memory exclusively (no aliasing handle exists), so moving it to
// another thread or sharing `&AlignedBuffer` (which only exposes the pointer) is as safe as for
// a `Vec<u8>`.
unsafe impl Send for AlignedBuffer {}
// SAFETY: see above.
unsafe impl Sync for AlignedBuffer {}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the copy starts on a block boundary and holds the bytes it was made from.
    #[test]
    fn copies_are_aligned_and_exact() {
        for length in [1usize, 511, 4096, 4097, 70_000] {
            let data: Vec<u8> = (0..length).map(|byte| byte as u8).collect();
            let buffer = AlignedBuffer::copy_of(&data);
            assert_eq!(
                buffer.as_ptr() as usize % DIRECT_IO_ALIGNMENT_BYTES as usize,
                0
            );
            assert_eq!(buffer.len(), length);
            // SAFETY: the buffer holds `length` initialised bytes and lives for this borrow.
            let copied = unsafe { std::slice::from_raw_parts(buffer.as_ptr(), length) };
            assert_eq!(copied, &data[..]);
        }
    }
}
