//! `wsgi.errors`: a text stream whose writes go to Siesta's error log.
//!
//! Apps and frameworks write diagnostics here (PEP 3333); the text lands in
//! `--error-logfile` beside Siesta's own messages, as written (gunicorn's
//! `wsgi.errors` adds nothing either: Flask's `app.logger` formats its own
//! lines). Completed lines go out in one write each, so a line is never
//! cut by another; a partial line waits for its newline or `flush()` in
//! the worker's one stream, where another request's text may join it
//! (gunicorn writes each call straight through, so its lines mix too).

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

#[pyclass(frozen, module = "siesta._siesta")]
#[derive(Default)]
pub(crate) struct ErrorStream {
    /// Text written without a trailing newline yet.
    pending: Mutex<String>,
}

impl ErrorStream {
    fn push(&self, s: &str) {
        let mut p = self.pending.lock();
        p.push_str(s);
        if let Some(pos) = p.rfind('\n') {
            let lines: String = p.drain(..=pos).collect();
            crate::log::error::app_text(&lines);
        }
    }
}

/// `s` as UTF-8; a lone surrogate (`os.fsdecode` of a file name that is not
/// UTF-8) as its escape, `\udcff`, as `sys.stderr` writes it: a diagnostic
/// must not fail the request that writes it.
fn text<'a>(s: &'a Bound<'_, PyString>) -> PyResult<std::borrow::Cow<'a, str>> {
    if let Ok(t) = s.to_str() {
        return Ok(t.into());
    }
    // `str.encode`, not the instance's: a subclass may have its own.
    let escaped = s
        .py()
        .get_type::<PyString>()
        .call_method1("encode", (s, "utf-8", "backslashreplace"))?;
    let bytes = escaped.cast::<PyBytes>()?.as_bytes();
    Ok(String::from_utf8_lossy(bytes).into_owned().into())
}

#[pymethods]
impl ErrorStream {
    fn write(&self, s: &Bound<'_, PyString>) -> PyResult<usize> {
        self.push(&text(s)?);
        s.len()
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.push(&text(line?.cast::<PyString>()?)?);
        }
        Ok(())
    }

    fn flush(&self) {
        let mut p = self.pending.lock();
        if !p.is_empty() {
            // Ended, so that the next line of the log starts a line of its own.
            p.push('\n');
            crate::log::error::app_text(&p);
            p.clear();
        }
        crate::log::error::flush();
    }
}
