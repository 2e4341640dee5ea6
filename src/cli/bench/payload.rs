//! The payload of each bench event: its sequence number and send time (microseconds since the
//! epoch) as a small JSON object, padded to `--payload-bytes`, and the reader that finds them
//! again in a delivered event without allocating.

use std::time::{SystemTime, UNIX_EPOCH};

/// The payload of event `seq` sent at `sent_us`: `{"seq":…,"sent_us":…,"pad":"xx…"}`, padded
/// to `bytes` (longer when `bytes` is below the unpadded size).
pub(super) fn payload(seq: u64, sent_us: u64, bytes: usize) -> String {
    use std::fmt::Write;
    let mut text = String::with_capacity(bytes.max(64));
    // Writing to a String cannot fail.
    let _ = write!(text, "{{\"seq\":{seq},\"sent_us\":{sent_us},\"pad\":\"");
    let padding = bytes.saturating_sub(text.len() + 2);
    text.extend(std::iter::repeat_n('x', padding));
    text.push_str("\"}");
    text
}

/// The sequence number and send time of a bench payload, without allocating; `None` for other
/// data. The payload is usually the whole data (ssehub, Nchan), which is read from its start;
/// a server that wraps it in an envelope is searched.
pub(super) fn read_payload(data: &str) -> Option<(u64, u64)> {
    const SEQ: &str = "\"seq\":";
    const SENT: &str = ",\"sent_us\":";
    let from_seq = match data
        .strip_prefix('{')
        .and_then(|rest| rest.strip_prefix(SEQ))
    {
        Some(rest) => rest,
        None => &data[data.find(SEQ)? + SEQ.len()..],
    };
    let (seq, rest) = leading_number(from_seq)?;
    let (sent_us, _) = leading_number(rest.strip_prefix(SENT)?)?;
    Some((seq, sent_us))
}

/// The decimal number at the start of `text`, and what follows it; `None` without a digit or
/// for a number over `u64::MAX`. One pass over the digits: it runs twice per delivered event.
pub(super) fn leading_number(text: &str) -> Option<(u64, &str)> {
    let bytes = text.as_bytes();
    let mut value: u64 = 0;
    let mut end = 0;
    while let Some(digit) = bytes.get(end).filter(|b| b.is_ascii_digit()) {
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
        end += 1;
    }
    // `end` follows ASCII digits only, so it is a character boundary.
    (end > 0).then(|| (value, &text[end..]))
}

pub(super) fn unix_micros() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_padded_and_reads_back() {
        let text = payload(42, 1_700_000_000_123_456, 100);
        assert_eq!(text.len(), 100);
        assert_eq!(read_payload(&text), Some((42, 1_700_000_000_123_456)));
        // Too small a size gives the unpadded payload.
        let text = payload(7, 1, 10);
        assert_eq!(read_payload(&text), Some((7, 1)));
        assert_eq!(read_payload("hello"), None);
        let wrapped = format!("{{\"message\":{}}}", payload(3, 9, 60));
        assert_eq!(read_payload(&wrapped), Some((3, 9)));
        assert_eq!(read_payload("{\"seq\":x,\"sent_us\":1}"), None);
    }

    #[test]
    fn leading_numbers_are_read_up_to_the_first_other_character() {
        assert_eq!(leading_number("42,rest"), Some((42, ",rest")));
        assert_eq!(leading_number("0"), Some((0, "")));
        assert_eq!(
            leading_number("18446744073709551615x"),
            Some((u64::MAX, "x"))
        );
        assert_eq!(leading_number("18446744073709551616"), None);
        assert_eq!(leading_number(",1"), None);
        assert_eq!(leading_number(""), None);
        assert_eq!(leading_number("7é"), Some((7, "é")));
    }
}
