//! Where Siesta listens: bind specs parsed and sockets opened, before any app is loaded.
//!
//! `bind.rs` turns `-b` values into `BindSpec`s (pure) and opens them as
//! `Listener`s with the deployer's backlog; `listeners.rs` is the set the
//! master opens and its workers inherit. systemd socket activation
//! (`LISTEN_FDS`) becomes `fd://N` binds in the CLI. Accepting connections
//! is `server/`'s job.

pub(crate) mod bind;
pub(crate) mod listeners;
