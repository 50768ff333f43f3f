//! `wsgi.errors`: a text stream whose writes go to Siesta's error log.
//!
//! Apps and frameworks write diagnostics here (PEP 3333); each completed
//! line becomes one error-log line at ERROR level, so it lands in
//! `--error-logfile` beside Siesta's own messages. Partial lines are kept
//! until a newline or `flush()`.

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
        while let Some(pos) = p.find('\n') {
            let line: String = p.drain(..=pos).collect();
            crate::log::error::app_text(line.trim_end_matches('\n'));
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
            crate::log::error::app_text(&p);
            p.clear();
        }
        crate::log::error::flush();
    }
}
