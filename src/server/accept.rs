//! Accept loops: one per listener, backing off on `EMFILE`, and pausing
//! while a gevent hub is held.
//!
//! Each loop takes a `--max-connections` slot, then a connection, and hands
//! it to `AcceptCtx::serve` (`mod.rs`). Errors such as `EMFILE` are retried
//! after a growing pause; a listening socket that is gone ends the worker.
//! In gevent mode the loop stops accepting while the hub is held
//! (`exec::gevent`), and in both modes once the worker is leaving (the
//! request reaching `--max-requests` started, or a hook's retire), so that
//! the other workers, or the replacement, take the connections. On a
//! signal's stop it takes what is queued (`drain.rs`) and ends; on the
//! leave's own stop it ends without, as the master still listens.

use super::AcceptCtx;
use crate::net::bind::Listener;
use std::time::Duration;
use tokio::sync::{watch, OwnedSemaphorePermit};

/// A listener registered with the runtime.
pub(super) enum Listening {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Listening {
    fn register(l: Listener) -> std::io::Result<Listening> {
        Ok(match l {
            Listener::Tcp(l) => {
                l.set_nonblocking(true)?;
                Listening::Tcp(tokio::net::TcpListener::from_std(l)?)
            }
            Listener::Unix(l, _) => {
                l.set_nonblocking(true)?;
                Listening::Unix(tokio::net::UnixListener::from_std(l)?)
            }
        })
    }

    /// Accepts one connection and hands it to hyper.
    async fn accept(&self, ctx: &AcceptCtx, slot: OwnedSemaphorePermit) -> std::io::Result<()> {
        match self {
            Listening::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                ctx.serve(s, Some(canonical(peer)), slot);
            }
            Listening::Unix(l) => {
                let (s, _) = l.accept().await?;
                ctx.serve(s, None, slot);
            }
        }
        Ok(())
    }
}

/// True while this worker must not accept, so that the other workers take
/// the connections: the gevent hub loop is held (`exec::gevent`), or the
/// worker is leaving (`Recorder::paused`).
pub(super) struct Gate(pub(super) Option<watch::Receiver<bool>>);

impl Gate {
    /// Resolves once the gate closes; never without one to watch.
    async fn held(&mut self) {
        if let Some(h) = &mut self.0 {
            if h.wait_for(|held| *held).await.is_ok() {
                return;
            }
        }
        self.0 = None; // its watcher ended (with the hub)
        std::future::pending::<()>().await
    }

    /// Resolves once the gate opens (at once if it is not closed).
    async fn free(&mut self) {
        if let Some(h) = &mut self.0 {
            if h.wait_for(|held| !*held).await.is_err() {
                self.0 = None;
            }
        }
    }
}

/// An IPv4 client of a dual-stack socket is named as IPv4 (`127.0.0.1`,
/// not `::ffff:127.0.0.1`), in the environ, the log and
/// `--forwarded-allow-ips`, whether the accept loop or the stop's drain
/// took its connection.
pub(super) fn canonical(peer: std::net::SocketAddr) -> std::net::SocketAddr {
    std::net::SocketAddr::new(peer.ip().to_canonical(), peer.port())
}

/// `stop` turns `Some(drain)` at a stop: whether to take what is queued
/// first (a signal's stop) or not (the leave's own: `Stop::Leave`).
pub(super) async fn accept_loop(
    listener: Listener,
    ctx: AcceptCtx,
    mut stop: watch::Receiver<Option<bool>>,
    mut hub: Gate,
    mut leaving: Gate,
) {
    let listening = match Listening::register(listener) {
        Ok(l) => l,
        Err(e) => return crate::log::error::error(&format!("Cannot listen: {e}")),
    };
    let mut backoff = Backoff::default();
    loop {
        tokio::select! {
            _ = stop.changed() => return listening.end(&ctx, &stop),
            () = async { hub.free().await; leaving.free().await } => {}
        }
        let accepted = async {
            let slot = ctx.slots.clone().acquire_owned().await.ok()?;
            Some(listening.accept(&ctx, slot).await)
        };
        // In this order: a stop, then a closed gate, win over a connection
        // ready at the same poll (on a starved CPU the loop may run only
        // after both came).
        tokio::select! {
            biased;
            _ = stop.changed() => return listening.end(&ctx, &stop),
            // Accepting stops while a gate is closed (the accept waiting is
            // dropped, which takes no connection).
            () = hub.held() => {}
            () = leaving.held() => {}
            r = accepted => match r {
                Some(Ok(())) => backoff.reset(),
                Some(Err(e)) if broken(&e) => {
                    // No retry can help: the worker ends (gracefully, its
                    // requests finished) and its replacement gets the
                    // master's socket.
                    crate::log::error::error(&format!(
                        "Listening socket failed: {e}; the worker exits to be replaced"
                    ));
                    ctx.end.listener_failed();
                    return;
                }
                Some(Err(e)) => backoff.wait(&e).await,
                None => return,
            },
        }
    }
}

/// Whether an accept error means the listening socket itself is gone
/// (closed or replaced under the worker, say by the app): retrying spins on
/// it for good. `EMFILE`, `ENOBUFS` and the like pass.
fn broken(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADF | libc::ENOTSOCK | libc::EINVAL | libc::EOPNOTSUPP | libc::EFAULT)
    )
}

/// Accept errors such as `EMFILE` are retried after a growing pause
/// instead of spinning or giving up, and logged once per period with the
/// count since (`log::spaced`): a worker at its descriptor limit under
/// traffic fails, accepts one, and fails again many times a second.
#[derive(Default)]
struct Backoff {
    step: u32,
    lines: crate::log::spaced::Spaced,
}

impl Backoff {
    fn reset(&mut self) {
        self.step = 0;
    }

    async fn wait(&mut self, e: &std::io::Error) {
        crate::metrics::track::accept_failed();
        self.lines.error(&format!("Accept failed: {e}; retrying"));
        self.step = (self.step + 1).min(7);
        tokio::time::sleep(Duration::from_millis(5 << self.step)).await;
    }
}
