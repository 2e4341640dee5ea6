//! The SSE wire format (WHATWG HTML §9.2 "Server-sent events").
//!
//! [`encode()`] turns a validated [`crate::event::Event`] into one `Bytes` frame, once per event;
//! the hub shares that buffer with every subscriber. [`parse`] is the client side: an incremental,
//! WHATWG-conformant parser used by `ssehub subscribe`, the benchmark and the tests.
//!
//! Both are written by hand rather than taken from a crate: axum's `Sse` formats each event per
//! response (and panics on CR/LF in ids), and the encoder is the hot path of every fan-out.

pub mod encode;
pub mod parse;

pub use encode::{
    encode, encode_comment, encode_hub_signal, encode_id_only, encode_retry, frame_id, HEARTBEAT,
    HUB_EVENT_TYPE,
};
pub use parse::{EventRef, ParsedEvent, Parser};
