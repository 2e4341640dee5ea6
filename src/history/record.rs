//! The stored form of an event, shared by the durable and the Redis history.
//!
//! `[FORMAT][flags][stored_at_ms u64][id_len u32][id][topic_count u16]([len u32][topic])*
//! [frame_len u32][frame]`, integers big-endian; flag bit 0 is `private`. The sequence number is
//! not inside: it is the record's key (redb) or derived from its entry id (Redis). Our own
//! encoding rather than serde's, so that the format is fixed, versioned and cheap to decode.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use thiserror::Error;

use super::StoredEvent;

/// The version of the record encoding.
pub(crate) const FORMAT: u8 = 1;

/// The time records (and remembered keys) are stamped with, in milliseconds since the Unix
/// epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The fields retention needs without decoding the whole record.
pub(crate) struct RecordHeader<'a> {
    pub(crate) stored_at_ms: u64,
    pub(crate) id: &'a str,
}

/// `[FORMAT][flags][stored_at_ms u64][id_len u32][id][topic_count u16]([len u32][topic])*[frame_len u32][frame]`,
/// integers big-endian; flag bit 0 is `private`.
pub(crate) fn encode_record(event: &StoredEvent, stored_at_ms: u64) -> Vec<u8> {
    let topics_len: usize = event.topics.iter().map(|t| t.len() + 4).sum();
    let mut out = Vec::with_capacity(20 + event.id.len() + topics_len + event.frame.len());
    out.push(FORMAT);
    out.push(u8::from(event.private));
    out.extend_from_slice(&stored_at_ms.to_be_bytes());
    // Lengths are bounded by event validation (ids and topics ≤ a few KiB, at most a few
    // hundred topics) and by the publish body limit (frames), far below u32::MAX.
    out.extend_from_slice(&(event.id.len() as u32).to_be_bytes());
    out.extend_from_slice(event.id.as_bytes());
    out.extend_from_slice(&(event.topics.len() as u16).to_be_bytes());
    for topic in &event.topics {
        out.extend_from_slice(&(topic.len() as u32).to_be_bytes());
        out.extend_from_slice(topic.as_bytes());
    }
    out.extend_from_slice(&(event.frame.len() as u32).to_be_bytes());
    out.extend_from_slice(&event.frame);
    out
}

/// Why a record does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RecordError {
    /// A length points past the end of the record.
    #[error("record is truncated")]
    Truncated,
    /// An id or a topic is not UTF-8.
    #[error("record holds invalid UTF-8")]
    InvalidUtf8,
    /// The first byte is not a format this ssehub reads.
    #[error("unknown record format {0}")]
    UnknownFormat(u8),
    /// Bytes follow the frame.
    #[error("record has trailing bytes")]
    TrailingBytes,
}

/// Reads a record; every length is checked, so a damaged record is an error, never a panic.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.bytes.len() < n {
            return Err(RecordError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, RecordError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn str(&mut self) -> Result<&'a str, RecordError> {
        let len = self.u32()? as usize;
        std::str::from_utf8(self.take(len)?).map_err(|_| RecordError::InvalidUtf8)
    }
}

/// The store time and id of a record, without the rest.
pub(crate) fn decode_header(record: &[u8]) -> Result<RecordHeader<'_>, RecordError> {
    let mut reader = Reader { bytes: record };
    let format = reader.u8()?;
    if format != FORMAT {
        return Err(RecordError::UnknownFormat(format));
    }
    let _flags = reader.u8()?;
    let stored_at_ms = reader.u64()?;
    let id = reader.str()?;
    Ok(RecordHeader { stored_at_ms, id })
}

/// The store time and topics of a record, for retention per topic, without copying the frame.
pub(crate) fn decode_topics(record: &[u8]) -> Result<(u64, Vec<String>), RecordError> {
    let header = decode_header(record)?;
    // FORMAT, flags, stored_at_ms, id length, id: then the topics.
    let mut reader = Reader {
        bytes: &record[1 + 1 + 8 + 4 + header.id.len()..],
    };
    let count = reader.u16()?;
    let mut topics = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        topics.push(reader.str()?.to_owned());
    }
    Ok((header.stored_at_ms, topics))
}

/// The event a record holds, with the sequence number its key gives.
pub(crate) fn decode_record(seq: u64, record: &[u8]) -> Result<StoredEvent, RecordError> {
    let mut reader = Reader { bytes: record };
    let format = reader.u8()?;
    if format != FORMAT {
        return Err(RecordError::UnknownFormat(format));
    }
    let private = reader.u8()? & 1 == 1;
    let _stored_at_ms = reader.u64()?;
    let id = reader.str()?.to_owned();
    let count = reader.u16()?;
    let mut topics = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        topics.push(reader.str()?.to_owned());
    }
    let frame_len = reader.u32()? as usize;
    let frame = Bytes::copy_from_slice(reader.take(frame_len)?);
    if !reader.bytes.is_empty() {
        return Err(RecordError::TrailingBytes);
    }
    Ok(StoredEvent {
        seq,
        id,
        topics,
        private,
        frame,
    })
}
