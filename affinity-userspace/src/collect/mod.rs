//! One trace window, start to finish: the session sequences the roles
//! ([`session`]): the targets checked and resolved ([`targets`]), load and
//! attach, one event loop for the window ([`window`], on the sources in
//! [`wake`]), the per-interval map reads that the collector turns into a
//! whole [`crate::model::Trace`] ([`collector`]), and the cgroup quota
//! watched alongside ([`quota`]). A live view plugs in as an
//! [`observer::Observer`].

pub mod bandwidth;
pub mod collector;
pub mod observer;
pub mod quota;
pub mod session;
pub mod targets;
pub mod wake;
pub mod window;
