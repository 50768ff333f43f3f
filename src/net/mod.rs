//! Where Siesta listens: bind specs parsed and sockets opened, before any app is loaded.
//!
//! `bind.rs` turns `-b` values into `BindSpec`s (pure) and opens them as
//! `Listener`s with the deployer's backlog. Accepting connections is
//! `server/`'s job; systemd socket activation (`LISTEN_FDS`) arrives with
//! the supervisor.

pub(crate) mod bind;
