//! Thread mode (`-k thread`): a pool of Python threads takes requests from one queue.
//!
//! Each thread loops in `run`: it waits for a job with the GIL released,
//! runs the app (`wsgi::call_app`), and takes the next job without sleeping
//! when one is already queued, so under load a thread goes from request to
//! request with no wake-up in between. Only one idle thread is woken per job,
//! so idle threads do not fight over the GIL. The threads themselves are
//! started by Python (`python/siesta/_run.py`) so `threading` knows them.

use crate::exec::{Job, Worker};
use crossbeam_channel::{Receiver, Sender};
use pyo3::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The request queue between the I/O runtime and the Python threads.
pub(crate) struct Queue {
    tx: Sender<Option<Job>>,
    rx: Receiver<Option<Job>>,
    closed: AtomicBool,
    /// How many threads to send the stop marker to.
    threads: usize,
}

impl Queue {
    pub(crate) fn new(threads: usize) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        Queue {
            tx,
            rx,
            closed: AtomicBool::new(false),
            threads,
        }
    }

    pub(crate) fn push(&self, job: Job) -> Result<(), Job> {
        if self.closed.load(Ordering::Acquire) {
            return Err(job);
        }
        // The queue holds its own receiver, so sending cannot fail.
        let _ = self.tx.send(Some(job));
        Ok(())
    }

    pub(crate) fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            for _ in 0..self.threads {
                let _ = self.tx.send(None);
            }
        }
    }

    /// One Python thread's life: take jobs until the queue closes.
    pub(crate) fn run(&self, py: Python<'_>, worker: &Arc<Worker>, app: &Bound<'_, PyAny>) {
        loop {
            let job = match self.rx.try_recv() {
                Ok(job) => job,
                Err(_) => py.detach(|| self.rx.recv().ok().flatten()),
            };
            let Some(job) = job else { return };
            crate::wsgi::call_app(py, worker, app, job);
        }
    }
}
