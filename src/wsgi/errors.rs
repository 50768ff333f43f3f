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

#[pyclass(frozen, module = "siesta._siesta")]
#[derive(Default)]
pub(crate) struct ErrorStream {
    /// Text written without a trailing newline yet.
    pending: Mutex<String>,
}

#[pymethods]
impl ErrorStream {
    fn write(&self, s: &str) -> usize {
        let mut p = self.pending.lock();
        p.push_str(s);
        if let Some(pos) = p.rfind('\n') {
            let lines: String = p.drain(..=pos).collect();
            crate::log::error::app_text(&lines);
        }
        s.chars().count()
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.write(line?.extract::<&str>()?);
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
