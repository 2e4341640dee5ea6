//! The encoder: one validated event to one `text/event-stream` frame.
//!
//! Field order is `id`, `event`, `retry`, then one `data:` line per line of the payload, then the
//! blank line that dispatches the event. WHATWG HTML §9.2.5: a line ends at CRLF, at a lone LF or
//! at a lone CR, so each of the three inside `data` starts a new `data:` line, and the client joins
//! them back with LF. Every field is written as `name: value`: the parser drops exactly one space
//! after the colon, so a value that itself starts with a space survives.

use bytes::{BufMut, Bytes, BytesMut};

use crate::event::Event;

/// The heartbeat comment written when a stream is idle; clients ignore comment lines.
pub const HEARTBEAT: Bytes = Bytes::from_static(b":\n\n");

/// Encodes `event` as one SSE frame.
///
/// The caller must have validated the event ([`Event::validate`]): `id` and `event_type` contain
/// no CR or LF. Should one slip through, the line break is replaced by a space rather than letting
/// it split the frame, so a bad event can never inject fields into a stream.
pub fn encode(event: &Event) -> Bytes {
    let type_len = event.event_type.as_ref().map_or(0, |t| t.len() + 8);
    let mut buf = BytesMut::with_capacity(event.id.len() + type_len + event.data.len() + 32);
    put_single_line_field(&mut buf, b"id: ", &event.id);
    if let Some(event_type) = &event.event_type {
        put_single_line_field(&mut buf, b"event: ", event_type);
    }
    if let Some(retry) = event.retry {
        buf.put_slice(b"retry: ");
        buf.put_slice(retry.to_string().as_bytes());
        buf.put_u8(b'\n');
    }
    put_data(&mut buf, &event.data);
    buf.put_u8(b'\n');
    buf.freeze()
}

/// The id of a frame made by [`encode`] (its first line), for telemetry.
pub fn frame_id(frame: &[u8]) -> Option<&str> {
    let rest = frame.strip_prefix(b"id: ")?;
    let end = rest.iter().position(|&byte| byte == b'\n')?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// Encodes a comment frame (`: text`), each line of `text` as its own comment line.
pub fn encode_comment(text: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(text.len() + 8);
    put_comment(&mut buf, text);
    buf.put_u8(b'\n');
    buf.freeze()
}

/// Each line of `text` as a comment line.
fn put_comment(buf: &mut BytesMut, text: &str) {
    for line in lines(text) {
        buf.put_slice(b": ");
        buf.put_slice(line.as_bytes());
        buf.put_u8(b'\n');
    }
}

/// Encodes a frame that only sets the client's reconnection delay: a comment saying why (each
/// line of `reason` a comment line), then `retry: <ms>`. It dispatches no event (WHATWG HTML
/// §9.2.6: no `data` field), so a page's handlers see nothing; the browser only waits `ms`
/// before it reconnects once the stream ends.
pub fn encode_retry(reason: &str, ms: u64) -> Bytes {
    let mut buf = BytesMut::with_capacity(reason.len() + 32);
    put_comment(&mut buf, reason);
    buf.put_slice(b"retry: ");
    buf.put_slice(ms.to_string().as_bytes());
    buf.put_slice(b"\n\n");
    buf.freeze()
}

/// Encodes an id-only frame: it sets the client's last event id to `id` and dispatches no
/// event (WHATWG HTML §9.2.6: the id is taken before the empty data buffer ends the dispatch).
/// `id` must be a validated event id (no CR, LF or NUL).
pub fn encode_id_only(id: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(id.len() + 6);
    put_single_line_field(&mut buf, b"id: ", id);
    buf.put_u8(b'\n');
    buf.freeze()
}

/// The event type reserved for what the hub itself tells a stream ([`encode_hub_signal`]);
/// publishers cannot use it, and `EventSource.onmessage` never sees it.
pub const HUB_EVENT_TYPE: &str = "mercure";

/// Encodes an event of the reserved [`HUB_EVENT_TYPE`] with `json` as its data and no id, so
/// that it leaves the client's last event id as it was.
pub fn encode_hub_signal(json: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(json.len() + 32);
    buf.put_slice(b"event: ");
    buf.put_slice(HUB_EVENT_TYPE.as_bytes());
    buf.put_u8(b'\n');
    put_data(&mut buf, json);
    buf.put_u8(b'\n');
    buf.freeze()
}

fn put_single_line_field(buf: &mut BytesMut, name: &[u8], value: &str) {
    buf.put_slice(name);
    let bytes = value.as_bytes();
    if memchr::memchr2(b'\r', b'\n', bytes).is_none() {
        buf.put_slice(bytes);
    } else {
        buf.extend(
            bytes
                .iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
    }
    buf.put_u8(b'\n');
}

fn put_data(buf: &mut BytesMut, data: &str) {
    for line in lines(data) {
        buf.put_slice(b"data: ");
        buf.put_slice(line.as_bytes());
        buf.put_u8(b'\n');
    }
}

/// Splits on CRLF, lone CR and lone LF (WHATWG HTML §9.2.5). An empty string is one empty line,
/// and a trailing line break yields a final empty line, so the parser gives back exactly `text`
/// with every line break turned into LF.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match memchr::memchr2(b'\r', b'\n', current.as_bytes()) {
            None => {
                rest = None;
                Some(current)
            }
            Some(at) => {
                let skip = if current.as_bytes()[at] == b'\r'
                    && current.as_bytes().get(at + 1) == Some(&b'\n')
                {
                    2
                } else {
                    1
                };
                rest = Some(&current[at + skip..]);
                Some(&current[..at])
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: &str) -> Event {
        Event {
            id: "1".into(),
            topics: vec!["t".into()],
            data: data.into(),
            event_type: None,
            retry: None,
            private: false,
        }
    }

    #[test]
    fn a_retry_frame_sets_the_delay_and_dispatches_nothing() {
        let frame = encode_retry("too many open streams\nretry in 7 s", 7342);
        assert_eq!(
            &frame[..],
            b": too many open streams\n: retry in 7 s\nretry: 7342\n\n"
        );
        let mut parser = crate::wire::Parser::new();
        assert_eq!(parser.push(&frame).expect("parses"), vec![]);
        assert_eq!(parser.reconnection_time_ms(), Some(7342));
    }

    #[test]
    fn an_id_only_frame_sets_the_last_event_id_and_dispatches_nothing() {
        let frame = encode_id_only("urn:uuid:1");
        assert_eq!(&frame[..], b"id: urn:uuid:1\n\n");
        let mut parser = crate::wire::Parser::new();
        assert_eq!(parser.push(&frame).expect("parses"), vec![]);
        assert_eq!(parser.last_event_id(), "urn:uuid:1");
    }

    #[test]
    fn a_hub_signal_is_a_mercure_event_without_an_id() {
        let mut parser = crate::wire::Parser::new();
        parser.push(&encode_id_only("before")).expect("parses");
        let events = parser
            .push(&encode_hub_signal(r#"{"type":"replayGap"}"#))
            .expect("parses");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, "mercure");
        assert_eq!(events[0].data, r#"{"type":"replayGap"}"#);
        assert_eq!(parser.last_event_id(), "before", "the last id is kept");
    }

    #[test]
    fn writes_all_fields_in_order() {
        let mut e = event("hello");
        e.event_type = Some("greeting".into());
        e.retry = Some(2500);
        assert_eq!(
            &encode(&e)[..],
            b"id: 1\nevent: greeting\nretry: 2500\ndata: hello\n\n"
        );
    }

    #[test]
    fn every_line_break_starts_a_data_line() {
        assert_eq!(
            &encode(&event("a\r\nb\rc\nd"))[..],
            b"id: 1\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
    }

    #[test]
    fn empty_data_and_trailing_break_keep_empty_lines() {
        assert_eq!(&encode(&event(""))[..], b"id: 1\ndata: \n\n");
        assert_eq!(&encode(&event("a\n"))[..], b"id: 1\ndata: a\ndata: \n\n");
        assert_eq!(
            &encode(&event("\n\n"))[..],
            b"id: 1\ndata: \ndata: \ndata: \n\n"
        );
    }

    #[test]
    fn leading_space_in_data_is_kept_after_the_separator_space() {
        assert_eq!(&encode(&event("  x"))[..], b"id: 1\ndata:   x\n\n");
    }

    #[test]
    fn unvalidated_line_break_in_id_cannot_inject_a_field() {
        let mut e = event("d");
        e.id = "1\ndata: injected".into();
        assert_eq!(&encode(&e)[..], b"id: 1 data: injected\ndata: d\n\n");
    }

    #[test]
    fn comment_lines_are_prefixed() {
        assert_eq!(&encode_comment("a\nb")[..], b": a\n: b\n\n");
    }
}
