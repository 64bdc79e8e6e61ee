//! `--watch`: a live terminal view of a running window, redrawn after each
//! interval's map read.
//!
//! - [`state`]: plain figures per interval from each [`Snapshot`] (pure);
//! - [`view`]: draws them with ratatui (pure; tested on `TestBackend`);
//! - [`term`]: the terminal (raw mode, alternate screen, keys), the
//!   session's [`crate::collect::session::Observer`]; the only file here
//!   that touches the system.
//!
//! [`Snapshot`]: crate::model::snapshot::Snapshot

pub mod state;
pub mod term;
pub mod view;

pub use self::{
    state::{KeyAction, SortKey, TaskNow, WatchState},
    term::{Watch, WatchError, check_stdout},
    view::{draw_to, render},
};
