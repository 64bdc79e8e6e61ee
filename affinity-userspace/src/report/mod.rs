//! What the user reads, pure: the report as JSON and text ([`document`]),
//! the SVG plot ([`plot`]), the timeline trace ([`timeline`] as Chrome JSON, [`perfetto`] as
//! Perfetto protobuf, streamed; its exact wait distributions in
//! [`latency`]) and the live
//! view ([`watch`], whose terminal handling is the one exception). Values
//! in, bytes out; the CLI decides where they go.

pub mod applied;
pub mod document;
pub mod escape;
pub mod heldback;
pub mod latency;
pub mod perfetto;
pub mod plot;
pub mod series;
pub mod timeline;
pub mod watch;

pub use document::*;
