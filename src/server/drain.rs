//! The last accepts of a stopping worker: what is already queued is served, not reset.
//!
//! When a worker stops (TERM, a HUP reload retiring it),
//! connections the kernel has already completed on its listening socket
//! wait in the accept queue; closing the socket would reset them after a
//! proxy had sent its request, which it cannot safely retry for a POST.
//! So the accept loop ends by taking every queued connection, without
//! waiting for more, and serving it like any other. On a stop the master
//! has already closed its copy of the socket and removed a unix socket's
//! file (`supervisor/`), so behind a proxy nothing new arrives meanwhile.
//! A worker that leaves on its own (`--max-requests`, a hook's retire)
//! takes nothing: the master keeps the socket, and what waits is the other
//! workers' or the replacement's (taking it would serve past the count).
//! Accepting while running is `accept.rs`'s.

use super::{
    accept::{self, Listening},
    AcceptCtx,
};
use std::io;
use tokio::sync::watch;

impl Listening {
    /// At a stop: takes what is queued if the stop says so (`Some(true)`),
    /// then closes the socket. The leave's own stop (`--max-requests`, a
    /// hook's retire) takes nothing: the master, and the other workers,
    /// still listen, and the replacement serves what waits.
    pub(super) fn end(self, ctx: &AcceptCtx, stop: &watch::Receiver<Option<bool>>) {
        let drain = stop.borrow().unwrap_or(true);
        if drain {
            self.drain(ctx);
        }
    }

    /// Accepts, without waiting, until the queue is empty (or the
    /// `--max-connections` slots are), then closes the socket.
    fn drain(self, ctx: &AcceptCtx) {
        let drained = match self {
            Listening::Tcp(l) => l.into_std().and_then(|l| {
                while let Ok(slot) = ctx.slots.clone().try_acquire_owned() {
                    let (s, peer) = match l.accept() {
                        Ok(accepted) => accepted,
                        Err(e) => return queue_empty(e),
                    };
                    s.set_nonblocking(true)?;
                    let s = tokio::net::TcpStream::from_std(s)?;
                    let _ = s.set_nodelay(true);
                    ctx.serve(s, Some(accept::canonical(peer)), slot);
                }
                Ok(())
            }),
            Listening::Unix(l) => l.into_std().and_then(|l| {
                while let Ok(slot) = ctx.slots.clone().try_acquire_owned() {
                    let (s, _) = match l.accept() {
                        Ok(accepted) => accepted,
                        Err(e) => return queue_empty(e),
                    };
                    s.set_nonblocking(true)?;
                    ctx.serve(tokio::net::UnixStream::from_std(s)?, None, slot);
                }
                Ok(())
            }),
        };
        if let Err(e) = drained {
            crate::log::error::error(&format!("Accepting the queued connections failed: {e}"));
        }
    }
}

/// `WouldBlock` is the end of the queue, not an error.
fn queue_empty(e: io::Error) -> io::Result<()> {
    match e.kind() {
        io::ErrorKind::WouldBlock => Ok(()),
        _ => Err(e),
    }
}
