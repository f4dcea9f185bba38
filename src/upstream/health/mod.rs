//! Is a peer fit to receive a request?
//!
//! | module      | fed by                              | decides                                   |
//! |-------------|-------------------------------------|-------------------------------------------|
//! | [`passive`] | outcomes of real requests ([`PeerGuard`] reports) | nginx's `max_fails` / `fail_timeout`, and the failure penalty on a peer's effective weight |
//! | [`slow_start`] | recoveries found by [`passive`] and [`active`], peers added by a reload | NGINX Plus's `slow_start`: the weight's climb back |
//! | [`active`] | the probes of NGINX Plus's `health_check` (run by `crate::checks`) | whether a check holds the peer out; whether a response passes a `match` |
//!
//! Health state is per peer and lives in [`PeerState`], so it is shared by every snapshot that
//! has the peer and survives a reload. The state machines here are pure: they take `now` and
//! never read a clock, so tests drive them with synthetic instants.
//!
//! [`PeerGuard`]: super::PeerGuard
//! [`PeerState`]: super::PeerState

pub mod active;
pub mod passive;
pub mod slow_start;

pub use passive::{FailPolicy, PassiveHealth};
