//! `wsgi.file_wrapper`: files sent by Rust from their descriptor, off the GIL.
//!
//! When the app returns `environ['wsgi.file_wrapper'](f, blksize)` and `f`
//! is one of Python's own file objects (`open()`'s: `io.FileIO`,
//! `io.BufferedReader`, `io.BufferedRandom`, `io.TextIOWrapper`, not a
//! subclass) on a regular file, the descriptor is duplicated and Rust reads
//! and sends it (`exchange::file_body`) while Python does other work.
//! Anything else (a `BytesIO`, a pipe, a `gzip.GzipFile` or any object whose
//! `read()` is not the file's bytes, though its `fileno()` is a file) is
//! iterated like any iterable with `f.read(blksize)`, as PEP 3333 has it.
//! `close()` closes the file-like, exactly once.

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::os::fd::BorrowedFd;

#[pyclass(frozen, module = "siesta._siesta")]
pub(crate) struct FileWrapper {
    filelike: Py<PyAny>,
    blksize: usize,
}

impl FileWrapper {
    pub(crate) fn blksize(&self) -> usize {
        self.blksize
    }

    /// A duplicate of the file's descriptor, positioned where Python's file
    /// object stands, when it is a regular file; `None` otherwise.
    pub(crate) fn file_handle(&self, py: Python<'_>) -> PyResult<Option<std::fs::File>> {
        let f = self.filelike.bind(py);
        if !plain_file(f) {
            return Ok(None);
        }
        let Ok(fileno) = f.call_method0(pyo3::intern!(py, "fileno")) else {
            return Ok(None);
        };
        let Ok(fd) = fileno.extract::<i32>() else {
            return Ok(None);
        };
        // Where Python's file object stands (its own buffer read ahead of the
        // descriptor's offset). One that cannot say (a text file iterated with
        // next(): "telling position disabled") is iterated with read().
        let Some(pos) = f
            .call_method0(pyo3::intern!(py, "tell"))
            .ok()
            .and_then(|p| p.extract::<u64>().ok())
        else {
            return Ok(None);
        };
        if fd < 0 {
            return Ok(None);
        }
        // SAFETY: `fd` is open for the lifetime of the Python file object,
        // which we hold; it is only borrowed here to duplicate it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let Ok(owned) = borrowed.try_clone_to_owned() else {
            return Ok(None);
        };
        let file = std::fs::File::from(owned);
        match file.metadata() {
            // A size of 0 may be a file whose size the kernel does not know
            // (/proc, /sys: their content is made as it is read): iterated,
            // as PEP 3333 has file_wrapper, read() gives it all.
            Ok(m) if m.is_file() && m.len() > 0 => {}
            _ => return Ok(None),
        }
        use std::io::Seek;
        if (&file).seek(std::io::SeekFrom::Start(pos)).is_err() {
            return Ok(None);
        }
        Ok(Some(file))
    }
}

/// Whether `f` is one of `open()`'s own file objects, whose `read()` gives
/// the bytes of its descriptor's file: its type is `_io`'s, not a subclass,
/// down to the `FileIO` under it (a `BufferedReader` over a gzip reader,
/// or a text wrapper over a `GzipFile`, has the file's descriptor too).
fn plain_file(f: &Bound<'_, PyAny>) -> bool {
    use pyo3::types::PyTypeMethods;
    let ty = f.get_type();
    let (Ok(module), Ok(name)) = (ty.module(), ty.name()) else {
        return false;
    };
    if module.to_str().ok() != Some("_io") {
        return false;
    }
    let under = |attr: &str| f.getattr(attr).is_ok_and(|inner| plain_file(&inner));
    match name.to_str() {
        Ok("FileIO") => true,
        Ok("BufferedReader" | "BufferedRandom") => under("raw"),
        Ok("TextIOWrapper") => under("buffer"),
        _ => false,
    }
}

/// `blksize` when none (or a size below 1) is given.
const DEFAULT_BLKSIZE: usize = 8192;

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize=DEFAULT_BLKSIZE as i64))]
    fn new(filelike: Py<PyAny>, blksize: i64) -> Self {
        // read(-1) reads it all: the same bytes, in blocks of the default.
        let blksize = usize::try_from(blksize)
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or(DEFAULT_BLKSIZE);
        FileWrapper { filelike, blksize }
    }

    /// The block size given (gunicorn's and wsgiref's attribute).
    #[getter(blksize)]
    fn blksize_attr(&self) -> usize {
        self.blksize
    }

    #[getter]
    fn filelike(&self, py: Python<'_>) -> Py<PyAny> {
        self.filelike.clone_ref(py)
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let data = self
            .filelike
            .bind(py)
            .call_method1(pyo3::intern!(py, "read"), (self.blksize,))?;
        let empty = match data.cast::<PyBytes>() {
            Ok(b) => b.as_bytes().is_empty(),
            Err(_) => data.is_truthy().map(|t| !t)?,
        };
        if empty {
            return Err(PyStopIteration::new_err(()));
        }
        Ok(data)
    }

    /// PEP 3333's sample wrapper (and gunicorn's) can be indexed, as the old
    /// iteration protocol did: each index gives the next block, any key.
    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        _key: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.__next__(py).map_err(|e| {
            if e.is_instance_of::<PyStopIteration>(py) {
                pyo3::exceptions::PyIndexError::new_err(())
            } else {
                e
            }
        })
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.filelike.bind(py);
        if let Ok(close) = f.getattr(pyo3::intern!(py, "close")) {
            close.call0()?;
        }
        Ok(())
    }
}
