//! Response body items as `Bytes`: the app's `bytes` handed on without a copy.
//!
//! PEP 3333 body items must be `bytes`. A large one (at least `SHARE_FROM`
//! bytes) of the exact type `bytes` is shared, not copied: the `Bytes`
//! given to hyper keeps a reference to the Python object and points into
//! its buffer, which CPython never changes once the object exists (and
//! cannot free while the reference is held). Smaller items, and instances
//! of `bytes` subclasses, are copied, which costs less than the shared
//! object's bookkeeping for a few bytes and trusts nothing a subclass might
//! do. This module does not check framing or lengths; `start_response`
//! clips to the declared length and queues the result.

use super::response_error;
use crate::error::ResponseError;
use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Items at least this long are shared with the app instead of copied.
pub(crate) const SHARE_FROM: usize = 4 * 1024;

/// A body item as `Bytes`: shared when large and exactly `bytes`, copied
/// otherwise; a `TypeError` for anything that is not `bytes`.
pub(crate) fn chunk_bytes(item: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    match item.cast::<PyBytes>() {
        Ok(b) => Ok(share_or_copy(b)),
        Err(_) => Err(response_error(ResponseError::NotBytes(super::type_name(
            item,
        )))),
    }
}

fn share_or_copy(b: &Bound<'_, PyBytes>) -> Bytes {
    let data = b.as_bytes();
    if data.len() < SHARE_FROM || !b.is_exact_instance_of::<PyBytes>() {
        return Bytes::copy_from_slice(data);
    }
    Bytes::from_owner(Shared {
        ptr: data.as_ptr(),
        len: data.len(),
        _obj: b.clone().unbind(),
    })
}

/// A `bytes` object kept alive for as long as hyper holds its contents.
///
/// Dropped on the I/O side, usually without the GIL: PyO3 then queues the
/// reference and releases it the next time a thread attaches to Python
/// (every call from Python into Siesta and every end of a GIL release does),
/// so at most the response's queue and hyper's write buffer wait there.
struct Shared {
    ptr: *const u8,
    len: usize,
    /// Holds the object whose buffer `ptr` points into.
    _obj: Py<PyBytes>,
}

// SAFETY: `ptr..ptr+len` is the buffer of an exact `bytes` object held by
// `_obj`: it stays allocated while the reference is held, and CPython never
// writes to a `bytes` object's buffer once others can see the object (it
// only resizes one it owns alone, and we own a reference). Reading it from
// any thread without the GIL is therefore a read of immutable memory.
// `Py<T>` itself is `Send`, and dropping it without the GIL is sound (PyO3
// defers the decref, see above).
unsafe impl Send for Shared {}

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see `Send` above: valid, immutable, alive while `self` is.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyo3::types::PyByteArray;

    fn with_py<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> R {
        Python::initialize();
        Python::attach(f)
    }

    #[test]
    fn large_bytes_are_shared_small_ones_copied() {
        with_py(|py| {
            let big = PyBytes::new(py, &vec![7u8; SHARE_FROM]);
            let shared = chunk_bytes(big.as_any()).unwrap_or_default();
            assert_eq!(shared.as_ptr(), big.as_bytes().as_ptr(), "no copy");
            assert_eq!(&shared[..], big.as_bytes());
            let small = PyBytes::new(py, b"hello");
            let copied = chunk_bytes(small.as_any()).unwrap_or_default();
            assert_ne!(copied.as_ptr(), small.as_bytes().as_ptr());
            assert_eq!(&copied[..], b"hello");
        })
    }

    #[test]
    fn shared_bytes_outlive_the_apps_reference() {
        let chunk = with_py(|py| {
            let data: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
            chunk_bytes(PyBytes::new(py, &data).as_any()).unwrap_or_default()
        });
        // The app's reference is gone; ours keeps the buffer, and dropping
        // it here, detached from Python, only queues the decref.
        let sliced = chunk.slice(1000..1010);
        assert_eq!(chunk.len(), 64 * 1024);
        assert_eq!(chunk[251], 0);
        assert_eq!(&sliced[..], &[247, 248, 249, 250, 0, 1, 2, 3, 4, 5]);
        std::thread::spawn(move || drop((chunk, sliced)))
            .join()
            .unwrap_or_default();
        with_py(|_| ());
    }

    #[test]
    fn only_bytes_are_body_items() {
        with_py(|py| {
            let ba = PyByteArray::new(py, &[1u8; SHARE_FROM]);
            assert!(chunk_bytes(ba.as_any()).is_err());
            let mv = py
                .eval(c"memoryview(b'x' * 8192)", None, None)
                .map(|m| chunk_bytes(&m).is_err());
            assert_eq!(mv.ok(), Some(true));
            let sub = py
                .eval(c"type('B', (bytes,), {})(b'x' * 8192)", None, None)
                .and_then(|b| Ok((chunk_bytes(&b)?, b.cast_into::<PyBytes>()?)));
            let (copied, sub) = sub
                .map_err(|e| e.to_string())
                .unwrap_or_else(|e| panic!("{e}"));
            assert_ne!(
                copied.as_ptr(),
                sub.as_bytes().as_ptr(),
                "subclasses are copied"
            );
            assert_eq!(&copied[..], sub.as_bytes());
        })
    }
}
