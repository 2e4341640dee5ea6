//! The client side of the wire format: an incremental `text/event-stream` parser following WHATWG
//! HTML §9.2.6 "Interpreting an event stream" (with the line grammar of §9.2.5).
//!
//! [`Parser::push`] takes the body in whatever chunks the network delivers (a chunk may end
//! mid-line, between the CR and LF of a CRLF, or inside a UTF-8 code point) and returns the events
//! those bytes completed. It is used by the `ssehub subscribe` CLI client, the benchmark and the
//! tests; the encoder it mirrors is in [`super::encode()`].
//!
//! Lines are split on raw bytes (CR and LF never occur inside a multi-byte UTF-8 sequence), and
//! only then decoded, lossily, as UTF-8, which gives the same result as decoding the whole stream
//! first. Lines that complete inside one chunk are interpreted in place, without copying.

use std::borrow::Cow;

/// The UTF-8 encoding of U+FEFF BYTE ORDER MARK.
const BOM: &[u8; 3] = b"\xEF\xBB\xBF";

/// The default for [`Parser::with_max_line_bytes`]: 16 MiB.
const DEFAULT_MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// The line buffer's allocation is reused up to this size, and dropped after a longer line.
const KEPT_LINE_CAPACITY: usize = 64 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEvent {
    /// The last event ID buffer at dispatch time (WHATWG: it persists across events until an `id`
    /// field changes it).
    pub id: String,
    /// The event type; "message" when no `event` field was given.
    pub event_type: String,
    /// The data buffer with its final LF removed.
    pub data: String,
    /// The `retry` value (ms) if a valid `retry` field appeared since the previous dispatch.
    pub retry: Option<u64>,
}

/// One dispatched event, borrowed from the parser: what [`Parser::push_each`] hands to its
/// callback. Valid until the callback returns; the parser reuses its buffers for the next event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// The last event ID buffer at dispatch time.
    pub id: &'a str,
    /// The event type; "message" when no `event` field was given.
    pub event_type: &'a str,
    /// The data buffer with its final LF removed.
    pub data: &'a str,
    /// The `retry` value (ms) if a valid `retry` field appeared since the previous dispatch.
    pub retry: Option<u64>,
}

impl EventRef<'_> {
    /// An owned copy.
    pub fn to_owned_event(&self) -> ParsedEvent {
        ParsedEvent {
            id: self.id.to_owned(),
            event_type: self.event_type.to_owned(),
            data: self.data.to_owned(),
            retry: self.retry,
        }
    }
}

/// Why [`Parser::push`] gave up on a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A line longer than the configured maximum (protects a client from a server that never
    /// sends a newline). The parser refuses all further input; reconnect instead, sending
    /// [`Parser::last_event_id`] as `Last-Event-ID`.
    #[error("event stream line longer than {max_bytes} bytes")]
    LineTooLong {
        /// The configured maximum, in bytes, not counting the line terminator.
        max_bytes: usize,
    },
}

/// An incremental, WHATWG-conformant `text/event-stream` parser; one per connection.
#[derive(Debug)]
pub struct Parser {
    max_line_bytes: usize,
    /// The start of a line whose end has not arrived yet (and, before the first byte that rules
    /// out a BOM, the BOM bytes matched so far).
    partial: Vec<u8>,
    /// Still looking for the BOM at the very start of the stream.
    at_stream_start: bool,
    /// The previous chunk ended in a CR: an LF opening the next non-empty chunk completes that
    /// CRLF rather than ending an (empty) line of its own.
    after_cr: bool,
    /// Set once a [`ParseError`] was returned; every later push fails the same way.
    failed: bool,
    data: String,
    event_type: String,
    last_event_id: String,
    /// A valid `retry` seen since the previous dispatch, reported with the next event.
    pending_retry: Option<u64>,
    reconnection_time_ms: Option<u64>,
    comments_seen: u64,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    /// A parser for a new stream, refusing lines longer than 16 MiB.
    pub fn new() -> Self {
        Self::with_max_line_bytes(DEFAULT_MAX_LINE_BYTES)
    }

    /// A parser for a new stream, refusing lines longer than `max` bytes (terminator excluded).
    pub fn with_max_line_bytes(max: usize) -> Self {
        Self {
            max_line_bytes: max,
            partial: Vec::new(),
            at_stream_start: true,
            after_cr: false,
            failed: false,
            data: String::new(),
            event_type: String::new(),
            last_event_id: String::new(),
            pending_retry: None,
            reconnection_time_ms: None,
            comments_seen: 0,
        }
    }

    /// Feeds a chunk (any split: mid-line, mid-CRLF, mid-UTF-8 code point) and returns the events
    /// it completed.
    ///
    /// There is no end-of-stream call: WHATWG §9.2.6 discards an event that is still incomplete
    /// when the stream ends, so whatever follows the last blank line is simply never reported.
    ///
    /// # Errors
    /// [`ParseError::LineTooLong`] once a line exceeds the configured maximum, whether or not its
    /// end has arrived. Events completed earlier in the same chunk are lost with it, and every
    /// later call returns the same error.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<ParsedEvent>, ParseError> {
        let mut events = Vec::new();
        self.push_each(chunk, |event| events.push(event.to_owned_event()))?;
        Ok(events)
    }

    /// [`Self::push`] without allocating: each event the chunk completes is handed to `on_event`
    /// as it is dispatched, borrowed from the parser's buffers (which keep their allocations
    /// from one event to the next). Returns how many events it handed over. For a reader of many
    /// streams (the benchmark reads 10,000), this is three allocations less per event.
    ///
    /// # Errors
    /// As [`Self::push`]; the events of the chunk dispatched before the error were handed over.
    pub fn push_each(
        &mut self,
        chunk: &[u8],
        mut on_event: impl FnMut(EventRef<'_>),
    ) -> Result<usize, ParseError> {
        if self.failed {
            return Err(self.too_long());
        }
        let mut count = 0;
        let events: &mut dyn FnMut(EventRef<'_>) = &mut |event| {
            count += 1;
            on_event(event);
        };
        let mut rest = self.skip_bom(chunk);
        // §9.2.5: CRLF is one line terminator even when a chunk boundary falls between the two.
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        // §9.2.5: a line ends at CRLF, at a lone LF or at a lone CR.
        while let Some(end) = memchr::memchr2(b'\r', b'\n', rest) {
            if self.partial.len() + end > self.max_line_bytes {
                return Err(self.fail());
            }
            if self.partial.is_empty() {
                self.process_line(&rest[..end], events);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&rest[..end]);
                self.process_line(&line, events);
                if line.capacity() <= KEPT_LINE_CAPACITY {
                    line.clear();
                    self.partial = line;
                }
            }
            let terminator = rest[end];
            rest = &rest[end + 1..];
            if terminator == b'\r' {
                // The CR already ended the line (so a CR-terminated stream dispatches without
                // waiting for more input); an LF right after it belongs to the same terminator.
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        // The start of a BOM split across chunks also waits in `partial`, but is not line content.
        let line_so_far = if self.at_stream_start {
            0
        } else {
            self.partial.len()
        };
        if line_so_far + rest.len() > self.max_line_bytes {
            return Err(self.fail());
        }
        self.partial.extend_from_slice(rest);
        Ok(count)
    }

    /// The last event ID buffer, to send as `Last-Event-ID` when reconnecting.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The stream's reconnection time in milliseconds: the last valid `retry` field seen.
    pub fn reconnection_time_ms(&self) -> Option<u64> {
        self.reconnection_time_ms
    }

    /// How many comment lines (those starting with `:`, such as heartbeats) the stream has had.
    pub fn comments_seen(&self) -> u64 {
        self.comments_seen
    }

    /// Skips one BOM at the very start of the stream, even when it is split across chunks (§9.2.5:
    /// `stream = [ bom ] *event`; §9.2.6 decodes with "UTF-8 decode", which strips it). The BOM
    /// bytes matched so far wait in `partial`; a byte that rules the BOM out turns them back into
    /// ordinary line content.
    fn skip_bom<'a>(&mut self, mut chunk: &'a [u8]) -> &'a [u8] {
        while self.at_stream_start {
            let Some((&byte, tail)) = chunk.split_first() else {
                break;
            };
            if byte != BOM[self.partial.len()] {
                self.at_stream_start = false;
                break;
            }
            self.partial.push(byte);
            chunk = tail;
            if self.partial.len() == BOM.len() {
                self.partial.clear();
                self.at_stream_start = false;
            }
        }
        chunk
    }

    /// Interprets one complete line, terminator excluded (§9.2.6).
    fn process_line(&mut self, line: &[u8], events: &mut dyn FnMut(EventRef<'_>)) {
        // "If the line is empty (a blank line): Dispatch the event."
        if line.is_empty() {
            self.dispatch(events);
            return;
        }
        // "If the line starts with a U+003A COLON character (:): Ignore the line."
        if line[0] == b':' {
            self.comments_seen += 1;
            return;
        }
        // "If the line contains a U+003A COLON character: ... field name [is] the characters
        // before the first colon ... field value [is] the characters after the first colon. If
        // value starts with a U+0020 SPACE character, remove it." Otherwise the whole line is the
        // field name and the value is empty.
        let (name, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        // Names are compared as raw bytes: lossy decoding cannot turn anything else into one of
        // these ASCII names, and no NUL arises from decoding or disappears in it.
        match name {
            // "Set the event type buffer to field value."
            b"event" => set(&mut self.event_type, &decode(value)),
            // "Append the field value to the data buffer, then append a single U+000A LINE FEED
            // (LF) character to the data buffer."
            b"data" => {
                self.data.push_str(&decode(value));
                self.data.push('\n');
            }
            // "If the field value does not contain U+0000 NULL, then set the last event ID buffer
            // to the field value. Otherwise, ignore the field." (An empty value resets it.)
            b"id" if memchr::memchr(0, value).is_none() => {
                set(&mut self.last_event_id, &decode(value));
            }
            // "If the field value consists of only ASCII digits, then interpret the field value
            // as an integer in base ten, and set the event stream's reconnection time to that
            // integer. Otherwise, ignore the field."
            b"retry" => {
                if let Some(ms) = parse_retry(value) {
                    self.reconnection_time_ms = Some(ms);
                    self.pending_retry = Some(ms);
                }
            }
            // "Otherwise: The field is ignored."
            _ => {}
        }
    }

    /// §9.2.6 "dispatch the event": the data and event type buffers (and our per-event retry) are
    /// reset every time; the last event ID buffer is not.
    fn dispatch(&mut self, events: &mut dyn FnMut(EventRef<'_>)) {
        let retry = self.pending_retry.take();
        // "If the data buffer is an empty string, set the data buffer and the event type buffer
        // to the empty string and return."
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        // "If the data buffer's last character is a U+000A LINE FEED (LF) character, then remove
        // the last character from the data buffer."
        if self.data.ends_with('\n') {
            self.data.pop();
        }
        // "Initialize event's type attribute to "message" ... If the event type buffer has a
        // value other than the empty string, change the type ... to equal [it]."
        let event_type = if self.event_type.is_empty() {
            "message"
        } else {
            &self.event_type
        };
        events(EventRef {
            id: &self.last_event_id,
            event_type,
            data: &self.data,
            retry,
        });
        self.data.clear();
        self.event_type.clear();
        if self.data.capacity() > KEPT_LINE_CAPACITY {
            // A large event: do not keep its buffer for the small ones after it.
            self.data = String::new();
        }
    }

    fn too_long(&self) -> ParseError {
        ParseError::LineTooLong {
            max_bytes: self.max_line_bytes,
        }
    }

    fn fail(&mut self) -> ParseError {
        self.failed = true;
        self.partial = Vec::new();
        self.too_long()
    }
}

/// §9.2.6: the stream is UTF-8 decoded, invalid sequences becoming U+FFFD; borrowed when valid.
fn decode(bytes: &[u8]) -> Cow<'_, str> {
    // Valid text (nearly always) takes the standard library's fast validation; the lossy
    // decoder, several times slower per byte, only runs on a line that needs it.
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// A `retry` value: only ASCII digits, read in base ten. An empty value, or one too large for
/// `u64`, is no usable integer and is ignored like any other invalid one.
fn parse_retry(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |ms, &byte| {
        if !byte.is_ascii_digit() {
            return None;
        }
        ms.checked_mul(10)?.checked_add(u64::from(byte - b'0'))
    })
}

/// Replaces `buffer`'s contents, keeping its allocation.
fn set(buffer: &mut String, value: &str) {
    buffer.clear();
    buffer.push_str(value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::wire::encode::{encode, encode_comment, HEARTBEAT};
    use proptest::prelude::*;

    fn ev(id: &str, event_type: &str, data: &str, retry: Option<u64>) -> ParsedEvent {
        ParsedEvent {
            id: id.into(),
            event_type: event_type.into(),
            data: data.into(),
            retry,
        }
    }

    fn msg(data: &str) -> ParsedEvent {
        ev("", "message", data, None)
    }

    /// Feeds `chunks` one after the other and collects every event.
    fn feed(parser: &mut Parser, chunks: &[&[u8]]) -> Vec<ParsedEvent> {
        let mut events = Vec::new();
        for chunk in chunks {
            events.extend(parser.push(chunk).unwrap());
        }
        events
    }

    fn parse(bytes: &[u8]) -> Vec<ParsedEvent> {
        Parser::new().push(bytes).unwrap()
    }

    fn parse_bytewise(bytes: &[u8]) -> Vec<ParsedEvent> {
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        feed(&mut Parser::new(), &chunks)
    }

    // ---- BOM ----

    #[test]
    fn leading_bom_is_skipped_even_split_across_chunks() {
        let stream = b"\xEF\xBB\xBFdata: x\n\n";
        assert_eq!(parse(stream), vec![msg("x")]);
        assert_eq!(parse_bytewise(stream), vec![msg("x")]);
        let mut parser = Parser::new();
        let events = feed(
            &mut parser,
            &[b"", b"\xEF", b"", b"\xBB\xBFdata", b": x\n\n"],
        );
        assert_eq!(events, vec![msg("x")]);
    }

    #[test]
    fn only_one_bom_and_only_at_the_very_start_is_skipped() {
        // The second BOM becomes part of the field name "\u{FEFF}data", which is ignored.
        assert_eq!(parse(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\n"), vec![]);
        assert_eq!(parse(b"\n\xEF\xBB\xBFdata: x\n\n"), vec![]);
        assert_eq!(
            parse("data: \u{FEFF}x\n\n".as_bytes()),
            vec![msg("\u{FEFF}x")]
        );
    }

    #[test]
    fn bom_split_across_chunks_does_not_count_against_the_line_limit() {
        // Found by the `sse_parser` fuzz target: with a limit below 3 bytes, the first byte of a
        // split BOM was taken for an over-long line.
        let mut parser = Parser::with_max_line_bytes(0);
        let events = feed(&mut parser, &[b"\xEF", b"\xBB", b"\xBF", b"\r\n"]);
        assert_eq!(events, vec![]);
        let mut parser = Parser::with_max_line_bytes(1);
        assert_eq!(feed(&mut parser, &[b"\xEF\xBB", b"\xBFd\n\n"]), vec![]);
        assert!(Parser::with_max_line_bytes(1).push(b"\xEF\xBB\n").is_err());
    }

    #[test]
    fn partial_bom_followed_by_other_bytes_is_line_content() {
        // "\xEF\xBB" is invalid UTF-8: one U+FFFD in the field name, so the line is ignored,
        // but nothing after it is swallowed.
        assert_eq!(parse(b"\xEF\xBB\ndata: x\n\n"), vec![msg("x")]);
        assert_eq!(parse_bytewise(b"\xEF\xBB\ndata: x\n\n"), vec![msg("x")]);
        assert_eq!(parse_bytewise(b"\xEF\xBB\xBF"), vec![]);
    }

    // ---- line terminators ----

    #[test]
    fn lf_cr_and_crlf_all_end_lines() {
        for stream in [
            &b"data: a\ndata: b\n\n"[..],
            b"data: a\rdata: b\r\r",
            b"data: a\r\ndata: b\r\n\r\n",
            b"data: a\rdata: b\r\n\n",
        ] {
            assert_eq!(parse(stream), vec![msg("a\nb")], "{stream:?}");
            assert_eq!(parse_bytewise(stream), vec![msg("a\nb")], "{stream:?}");
        }
    }

    #[test]
    fn cr_at_chunk_end_then_lf_is_one_terminator() {
        // Were the LF an empty line of its own, "a" would be dispatched alone.
        let mut parser = Parser::new();
        assert_eq!(parser.push(b"data: a\r").unwrap(), vec![]);
        assert_eq!(parser.push(b"").unwrap(), vec![]);
        assert_eq!(parser.push(b"\ndata: b\r").unwrap(), vec![]);
        assert_eq!(parser.push(b"\n\r").unwrap(), vec![msg("a\nb")]);
        assert_eq!(parser.push(b"\n").unwrap(), vec![]);
        assert_eq!(parser.push(b"data: c\n\n").unwrap(), vec![msg("c")]);
    }

    #[test]
    fn cr_dispatches_without_waiting_for_the_next_chunk() {
        let mut parser = Parser::new();
        assert_eq!(parser.push(b"data: a\r\r").unwrap(), vec![msg("a")]);
        // A CR followed by another CR is two terminators.
        assert_eq!(parser.push(b"data: b\r").unwrap(), vec![]);
        assert_eq!(parser.push(b"\r").unwrap(), vec![msg("b")]);
    }

    // ---- UTF-8 ----

    #[test]
    fn code_points_split_across_chunks_are_decoded() {
        let stream = "id: 키\nevent: 😀\ndata: 한국어 😀 text\n\n".as_bytes();
        assert_eq!(
            parse_bytewise(stream),
            vec![ev("키", "😀", "한국어 😀 text", None)]
        );
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        assert_eq!(
            parse(b"data: a\xFFb\xF0\x9F\n\n"),
            vec![msg("a\u{FFFD}b\u{FFFD}")]
        );
        assert_eq!(parse_bytewise(b"data: \xE2\x82\n\n"), vec![msg("\u{FFFD}")]);
    }

    // ---- dispatch ----

    #[test]
    fn empty_data_field_dispatches_an_empty_event() {
        assert_eq!(parse(b"data:\n\n"), vec![msg("")]);
        assert_eq!(parse(b"data\n\n"), vec![msg("")]);
        assert_eq!(parse(b"data: \n\n"), vec![msg("")]);
    }

    #[test]
    fn blank_line_without_data_dispatches_nothing_and_resets_the_type() {
        assert_eq!(parse(b"\n\n\nevent: e\n\ndata: x\n\n"), vec![msg("x")]);
    }

    #[test]
    fn data_lines_are_joined_with_lf_and_only_the_final_lf_is_removed() {
        assert_eq!(parse(b"data: a\ndata: b\n\n"), vec![msg("a\nb")]);
        assert_eq!(parse(b"data: a\ndata:\n\n"), vec![msg("a\n")]);
        assert_eq!(parse(b"data\ndata\n\n"), vec![msg("\n")]);
    }

    #[test]
    fn incomplete_event_at_end_of_stream_is_discarded() {
        let mut parser = Parser::new();
        assert_eq!(parser.push(b"data: x\nid: 7\ndata: y").unwrap(), vec![]);
        // The id field was complete, so it took effect even though the event never dispatches.
        assert_eq!(parser.last_event_id(), "7");
    }

    #[test]
    fn event_field_sets_the_type_for_one_event() {
        assert_eq!(
            parse(b"event: add\ndata: 1\n\ndata: 2\n\nevent:\ndata: 3\n\n"),
            vec![ev("", "add", "1", None), msg("2"), msg("3")]
        );
    }

    // ---- fields ----

    #[test]
    fn id_persists_until_changed_and_empty_id_resets_it() {
        let mut parser = Parser::new();
        let events = feed(
            &mut parser,
            &[b"id: 1\ndata: a\n\ndata: b\n\nid: 2\n\ndata: c\n\nid\ndata: d\n\nid: 3\nid:\ndata: e\n\n"],
        );
        assert_eq!(
            events,
            vec![
                ev("1", "message", "a", None),
                ev("1", "message", "b", None),
                ev("2", "message", "c", None),
                ev("", "message", "d", None),
                ev("", "message", "e", None),
            ]
        );
        assert_eq!(parser.last_event_id(), "");
        parser.push(b"id:  spaced: [\"x\"]/y \n").unwrap();
        assert_eq!(parser.last_event_id(), " spaced: [\"x\"]/y ");
    }

    #[test]
    fn id_containing_nul_is_ignored() {
        let mut parser = Parser::new();
        let events = feed(&mut parser, &[b"id: 1\n\nid: a\0b\ndata: x\n\n"]);
        assert_eq!(events, vec![ev("1", "message", "x", None)]);
        assert_eq!(parser.last_event_id(), "1");
        // NUL elsewhere is ordinary content.
        assert_eq!(
            parse(b"event: \0\ndata: \0\n\n"),
            vec![ev("", "\0", "\0", None)]
        );
    }

    #[test]
    fn retry_with_only_ascii_digits_sets_the_reconnection_time() {
        let mut parser = Parser::new();
        let events = feed(&mut parser, &[b"retry: 2500\ndata: a\n\ndata: b\n\n"]);
        assert_eq!(events, vec![ev("", "message", "a", Some(2500)), msg("b")]);
        assert_eq!(parser.reconnection_time_ms(), Some(2500));
        assert_eq!(
            parse(b"retry:007\ndata\n\n"),
            vec![ev("", "message", "", Some(7))]
        );
        let max = format!("retry: {}\ndata\n\n", u64::MAX);
        assert_eq!(parse(max.as_bytes())[0].retry, Some(u64::MAX));
    }

    #[test]
    fn retry_with_anything_but_digits_is_ignored() {
        for value in [
            "1a",
            "+5",
            "-1",
            " 5",
            "5 ",
            "1.5",
            "",
            "٣",
            "99999999999999999999999",
        ] {
            let mut parser = Parser::new();
            let stream = format!("retry: 10\n\nretry: {value}\ndata: x\n\n");
            assert_eq!(
                parser.push(stream.as_bytes()).unwrap(),
                vec![msg("x")],
                "{value:?}"
            );
            assert_eq!(parser.reconnection_time_ms(), Some(10), "{value:?}");
        }
        assert_eq!(Parser::new().reconnection_time_ms(), None);
    }

    #[test]
    fn comments_are_counted_and_ignored() {
        let mut parser = Parser::new();
        assert_eq!(parser.push(&HEARTBEAT).unwrap(), vec![]);
        assert_eq!(parser.push(&encode_comment("a\nb")).unwrap(), vec![]);
        let events = parser
            .push(b"data: x\n: inside an event\ndata: y\n\n")
            .unwrap();
        assert_eq!(events, vec![msg("x\ny")]);
        assert_eq!(parser.comments_seen(), 4);
        // A colon anywhere else does not make a comment.
        assert_eq!(parser.push(b" :x\n").unwrap(), vec![]);
        assert_eq!(parser.comments_seen(), 4);
    }

    #[test]
    fn field_without_colon_has_an_empty_value() {
        assert_eq!(parse(b"data: x\nevent\n\n"), vec![msg("x")]);
        assert_eq!(parse(b"id: 1\nid\ndata\n\n"), vec![msg("")]);
    }

    #[test]
    fn exactly_one_leading_space_is_removed_and_later_colons_are_kept() {
        assert_eq!(parse(b"data:x\n\n"), vec![msg("x")]);
        assert_eq!(parse(b"data:  x\n\n"), vec![msg(" x")]);
        assert_eq!(parse(b"data:\tx\n\n"), vec![msg("\tx")]);
        assert_eq!(parse(b"data: a: b:c\n\n"), vec![msg("a: b:c")]);
    }

    #[test]
    fn unknown_and_differently_cased_fields_are_ignored() {
        assert_eq!(parse(b"Data: x\nfoo: y\ndata : z\n\n"), vec![]);
        assert_eq!(parse(b"foo: y\ndata: z\n\n"), vec![msg("z")]);
    }

    // ---- limits and API ----

    #[test]
    fn line_too_long_is_an_error_and_stays_one() {
        let err = ParseError::LineTooLong { max_bytes: 8 };
        // Exactly the maximum is fine, terminator not counted.
        assert_eq!(
            Parser::with_max_line_bytes(8)
                .push(b"data: 12\r\n\n")
                .unwrap(),
            vec![msg("12")]
        );
        assert_eq!(
            Parser::with_max_line_bytes(8).push(b"data: 123\n\n"),
            Err(err.clone())
        );
        // A line that never ends is caught before its end arrives, also when built from chunks.
        let mut parser = Parser::with_max_line_bytes(8);
        assert_eq!(parser.push(b"data").unwrap(), vec![]);
        assert_eq!(parser.push(b": 12").unwrap(), vec![]);
        assert_eq!(parser.push(b"3"), Err(err.clone()));
        assert_eq!(parser.push(b"\n\ndata: x\n\n"), Err(err.clone()));
        assert_eq!(err.to_string(), "event stream line longer than 8 bytes");
    }

    #[test]
    fn long_lines_spanning_many_chunks_are_reassembled() {
        let big = "한".repeat(40_000); // 120 kB, past the reused line buffer's capacity
        let stream = format!("data: {big}\ndata: x\n\ndata: {big}\n\n");
        let chunks: Vec<&[u8]> = stream.as_bytes().chunks(1000).collect();
        let expected = vec![msg(&format!("{big}\nx")), msg(&big)];
        assert_eq!(feed(&mut Parser::new(), &chunks), expected);
    }

    #[test]
    fn default_is_new() {
        let parser = Parser::default();
        assert_eq!(parser.max_line_bytes, 16 * 1024 * 1024);
        assert_eq!(parser.last_event_id(), "");
        assert_eq!(parser.comments_seen(), 0);
    }

    // ---- properties ----

    /// What the parser must give back for `data`: every CRLF and lone CR turned into LF.
    fn normalize_newlines(data: &str) -> String {
        data.replace("\r\n", "\n").replace('\r', "\n")
    }

    fn event(id: String, event_type: Option<String>, data: String, retry: Option<u64>) -> Event {
        Event {
            id,
            topics: vec!["https://example.com/t".into()],
            data,
            event_type,
            retry,
            private: false,
        }
    }

    fn expected(e: &Event) -> ParsedEvent {
        ParsedEvent {
            id: e.id.clone(),
            event_type: match e.event_type.as_deref() {
                None | Some("") => "message".into(),
                Some(t) => t.into(),
            },
            data: normalize_newlines(&e.data),
            retry: e.retry,
        }
    }

    /// Payloads: anything, and strings made mostly of line breaks, blanks and field look-alikes.
    fn data_strategy() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "\r", "\n", "\r\n", "\n\n", "\r\r", "", " ", "  x", "a", "한글", "😀", ":", "data: x",
            "id: 9", "\u{FEFF}", "\0",
        ]);
        prop_oneof![
            any::<String>(),
            prop::collection::vec(piece, 0..12).prop_map(|p| p.concat()),
            "[ \r\na-z:]{0,20}",
        ]
    }

    /// Single-line values: printable ASCII (`"`, `[`, `:`, `/`, spaces...), Korean, emoji, and
    /// arbitrary characters other than CR, LF and NUL.
    fn line_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ -~가-힣😀-🙏]{0,24}",
            " [ -~]{0,8}",
            any::<String>().prop_map(|s| s.replace(['\r', '\n', '\0'], "")),
        ]
    }

    fn event_strategy() -> impl Strategy<Value = Event> {
        (
            line_strategy(),
            prop::option::of(line_strategy()),
            data_strategy(),
            prop::option::of(any::<u64>()),
        )
            .prop_map(|(id, event_type, data, retry)| event(id, event_type, data, retry))
    }

    /// Cuts `bytes` at the given points (in any order, duplicates allowed: empty chunks).
    fn split_at_points<'a>(bytes: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::with_capacity(points.len() + 1);
        let mut start = 0;
        for point in points {
            chunks.push(&bytes[start..point]);
            start = point;
        }
        chunks.push(&bytes[start..]);
        chunks
    }

    /// The events and final state after feeding `chunks` to a fresh parser.
    fn run(chunks: &[&[u8]]) -> (Vec<ParsedEvent>, String, Option<u64>, u64) {
        let mut parser = Parser::new();
        let events = feed(&mut parser, chunks);
        let id = parser.last_event_id().to_owned();
        (
            events,
            id,
            parser.reconnection_time_ms(),
            parser.comments_seen(),
        )
    }

    /// Encoded events interleaved with heartbeats and comments, behind an optional BOM.
    fn encoded_stream() -> impl Strategy<Value = (Vec<Event>, Vec<u8>)> {
        let frame = prop_oneof![
            4 => event_strategy().prop_map(Some),
            1 => Just(None),
        ];
        (any::<bool>(), prop::collection::vec(frame, 1..6)).prop_map(|(bom, frames)| {
            let mut bytes = if bom { BOM.to_vec() } else { Vec::new() };
            let mut events = Vec::new();
            for frame in frames {
                match frame {
                    Some(e) => {
                        bytes.extend_from_slice(&encode(&e));
                        events.push(e);
                    }
                    None => {
                        bytes.extend_from_slice(&HEARTBEAT);
                        bytes.extend_from_slice(&encode_comment("keep\r\nalive"));
                    }
                }
            }
            (events, bytes)
        })
    }

    // A logical stream for the terminator and differential properties: lines without CR or LF,
    // joined later with LF, CR or CRLF.

    fn field_value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[ -~]{0,10}",
            "[ :a\0\u{FEFF}한😀\t]{0,8}",
            any::<String>().prop_map(|s| s.replace(['\r', '\n'], "")),
        ]
    }

    fn retry_value() -> impl Strategy<Value = String> {
        // No leading '+': see `eventsource_stream_deviations`.
        prop_oneof![
            "[0-9]{1,6}",
            "[0-9]{19,22}",
            "[0-9a -]{0,4}",
            Just(String::new()),
        ]
    }

    fn line() -> impl Strategy<Value = String> {
        let separator = prop::sample::select(vec![":", ": ", ":  ", ""]);
        let name =
            prop::sample::select(vec!["data", "event", "id", "retry", "foo", "data ", "Data"]);
        prop_oneof![
            4 => ("data", separator.clone(), field_value()).prop_map(|(n, s, v)| format!("{n}{s}{v}")),
            3 => (name, separator.clone(), field_value()).prop_map(|(n, s, v)| {
                // Without a separator the value would become part of the name.
                if s.is_empty() { n.to_owned() } else { format!("{n}{s}{v}") }
            }),
            1 => (separator, retry_value()).prop_map(|(s, v)| format!("retry{}{v}", if s.is_empty() { ":" } else { s })),
            1 => field_value().prop_map(|v| format!(":{v}")),
            3 => Just(String::new()),
            1 => field_value().prop_filter("not a comment", |v| !v.starts_with(':')),
        ]
    }

    fn lines() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(line(), 0..24)
    }

    fn terminator() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["\n", "\r", "\r\n"])
    }

    /// Joins `lines`, the i-th ending with `terms[i % len]`. An empty line ended by LF or CRLF
    /// right after a CR would merge with that CR into one CRLF, so it gets a CR instead.
    fn join(lines: &[String], terms: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut previous = "";
        for (i, line) in lines.iter().enumerate() {
            let mut term = terms[i % terms.len()];
            if previous == "\r" && line.is_empty() && term.starts_with('\n') {
                term = "\r";
            }
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(term.as_bytes());
            previous = term;
        }
        out
    }

    /// Runs the independent `eventsource-stream` crate over the same chunks, mapping its events
    /// onto ours (it reports the default type as "message" already, `retry` as a `Duration`).
    fn reference(chunks: &[&[u8]]) -> Vec<ParsedEvent> {
        use eventsource_stream::Eventsource;
        use futures_util::StreamExt;
        let items: Vec<_> = chunks
            .iter()
            .map(|c| Ok::<_, std::convert::Infallible>(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let results = runtime.block_on(
            futures_util::stream::iter(items)
                .eventsource()
                .collect::<Vec<_>>(),
        );
        results
            .into_iter()
            .map(|r| {
                let e = r.unwrap();
                ParsedEvent {
                    id: e.id,
                    event_type: e.event,
                    data: e.data,
                    retry: e.retry.map(|d| u64::try_from(d.as_millis()).unwrap()),
                }
            })
            .collect()
    }

    proptest! {
        #[test]
        fn encoded_event_round_trips(e in event_strategy()) {
            let mut parser = Parser::new();
            let events = parser.push(&encode(&e)).unwrap();
            prop_assert_eq!(events, vec![expected(&e)]);
            prop_assert_eq!(parser.last_event_id(), e.id.as_str());
            prop_assert_eq!(parser.reconnection_time_ms(), e.retry);
        }

        #[test]
        fn any_split_parses_like_the_whole_stream(
            (events, bytes) in encoded_stream(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
        ) {
            let whole = run(&[&bytes]);
            prop_assert_eq!(&whole.0, &events.iter().map(expected).collect::<Vec<_>>());
            prop_assert_eq!(&run(&split_at_points(&bytes, &cuts)), &whole);
            let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
            prop_assert_eq!(&run(&bytewise), &whole);
        }

        #[test]
        fn push_each_hands_over_each_event_of_any_split_in_order_and_counts_them(
            (events, bytes) in encoded_stream(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
        ) {
            let mut parser = Parser::new();
            let mut handed = Vec::new();
            let mut counted = 0;
            for chunk in split_at_points(&bytes, &cuts) {
                counted += parser
                    .push_each(chunk, |event| handed.push(event.to_owned_event()))
                    .unwrap();
            }
            prop_assert_eq!(counted, handed.len());
            prop_assert_eq!(handed, events.iter().map(expected).collect::<Vec<_>>());
        }

        #[test]
        fn any_split_of_a_raw_stream_parses_alike(
            lines in lines(),
            terms in prop::collection::vec(terminator(), 1..8),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
        ) {
            let bytes = join(&lines, &terms);
            let whole = run(&[&bytes]);
            prop_assert_eq!(&run(&split_at_points(&bytes, &cuts)), &whole);
        }

        #[test]
        fn cr_lf_and_crlf_terminators_are_equivalent(
            lines in lines(),
            mixed in prop::collection::vec(terminator(), 1..8),
        ) {
            let lf = run(&[&join(&lines, &["\n"])]);
            prop_assert_eq!(&run(&[&join(&lines, &["\r"])]), &lf);
            prop_assert_eq!(&run(&[&join(&lines, &["\r\n"])]), &lf);
            prop_assert_eq!(&run(&[&join(&lines, &mixed)]), &lf);
        }

        #[test]
        fn agrees_with_eventsource_stream(
            lines in lines(),
            mut terms in prop::collection::vec(terminator(), 1..8),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            // eventsource-stream waits for the byte after a CR before ending the line, so a
            // stream whose very last terminator is a lone CR loses its last line there.
            if lines.len() % terms.len() == 0 {
                if let Some(last) = terms.last_mut() {
                    if *last == "\r" {
                        *last = "\r\n";
                    }
                }
            }
            let mut bytes = join(&lines, &terms);
            if bytes.last() == Some(&b'\r') {
                bytes.push(b'\n');
            }
            // It panics on a leading BOM; a blank line first (which dispatches nothing) keeps a
            // BOM-like first value off the very start.
            if bytes.starts_with(BOM) {
                bytes.insert(0, b'\n');
            }
            let chunks = split_at_points(&bytes, &cuts);
            prop_assert_eq!(run(&chunks).0, reference(&chunks));
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(
            bytes in prop::collection::vec(any::<u8>(), 0..512),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
            max in prop_oneof![Just(usize::MAX), 0usize..64],
        ) {
            let mut parser = Parser::with_max_line_bytes(max);
            let mut failed = false;
            for chunk in split_at_points(&bytes, &cuts) {
                match parser.push(chunk) {
                    Ok(events) => prop_assert!(!failed && events.iter().all(|e| !e.event_type.is_empty())),
                    Err(e) => {
                        prop_assert_eq!(e, ParseError::LineTooLong { max_bytes: max });
                        failed = true;
                    }
                }
            }
            let _ = (parser.last_event_id(), parser.reconnection_time_ms(), parser.comments_seen());
        }
    }

    /// Where `eventsource-stream` 0.2.3 departs from WHATWG, so the differential test steers
    /// clear; here we pin down our (conformant) behaviour on those inputs.
    #[test]
    fn eventsource_stream_deviations() {
        // 1. It accepts `retry: +5` (it uses `u64::from_str`); WHATWG allows ASCII digits only.
        assert_eq!(parse(b"retry: +5\ndata: x\n\n"), vec![msg("x")]);
        // 2. It holds a final lone CR until more bytes come, losing the last event at EOF.
        assert_eq!(parse(b"data: x\r\r"), vec![msg("x")]);
        // 3. It slices a leading BOM as if it were one byte wide, and panics.
        assert_eq!(parse(b"\xEF\xBB\xBFdata: x\n\n"), vec![msg("x")]);
        // 4. Invalid UTF-8 stalls it (the bytes stay buffered; an error at EOF); WHATWG decodes
        //    lossily.
        assert_eq!(parse(b"data: \xFF\n\n"), vec![msg("\u{FFFD}")]);
    }
}
