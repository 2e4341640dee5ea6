//! [`OutboxTable`]: the outbox table's validated name and every SQL statement the relay sends
//! to it (the DDL an application runs is `deploy/postgres/outbox.sql`).
//!
//! The name comes from a setting, so it is checked (plain identifiers, optionally
//! `schema.table`) and always quoted; the values of a statement are parameters.

use sha2::{Digest, Sha256};

use super::OutboxError;

/// The longest identifier PostgreSQL keeps whole (NAMEDATALEN - 1).
const MAX_IDENTIFIER_BYTES: usize = 63;

/// An outbox table: its name, quoted for SQL, and the statements on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxTable {
    /// As given (`ssehub_outbox`, `app.outbox`): for logs and the advisory-lock key.
    name: String,
    /// `"schema"."table"` or `"table"`.
    quoted: String,
    /// The table's own name (no schema): the `NOTIFY` channel its trigger uses
    /// (`TG_TABLE_NAME`).
    channel: String,
}

impl OutboxTable {
    /// Checks `name`: one or two (`schema.table`) identifiers of ASCII letters, digits and `_`,
    /// not starting with a digit, each at most 63 bytes.
    ///
    /// # Errors
    /// [`OutboxError::TableName`] for anything else.
    pub fn new(name: &str) -> Result<Self, OutboxError> {
        let parts: Vec<&str> = name.split('.').collect();
        let valid = |part: &str| {
            !part.is_empty()
                && part.len() <= MAX_IDENTIFIER_BYTES
                && !part.as_bytes()[0].is_ascii_digit()
                && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        if parts.len() > 2 || !parts.iter().all(|part| valid(part)) {
            return Err(OutboxError::TableName(name.to_owned()));
        }
        let quoted = parts
            .iter()
            .map(|part| format!("\"{part}\""))
            .collect::<Vec<_>>()
            .join(".");
        let channel = parts.last().map_or("", |part| part).to_owned();
        Ok(Self {
            name: name.to_owned(),
            quoted,
            channel,
        })
    }

    /// The name as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `LISTEN` on the channel the table's trigger notifies.
    pub fn listen_sql(&self) -> String {
        format!("LISTEN \"{}\"", self.channel)
    }

    /// The channel the table's trigger notifies (its own name).
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The session advisory-lock key of the table's leader: the first 8 bytes of SHA-256 of
    /// `ssehub_outbox:` and the name, so two tables have two leaders.
    pub fn lock_key(&self) -> i64 {
        let digest = Sha256::digest(format!("ssehub_outbox:{}", self.name).as_bytes());
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(bytes)
    }

    /// Claims up to `$1` pending rows in commit order (see [`super::claim`]): only rows of
    /// transactions older than every transaction still running, so no earlier row can still
    /// appear; locked rows are skipped, not waited for.
    pub fn claim_sql(&self) -> String {
        format!(
            "SELECT seq, id, topics, data, private, type, retry FROM {table} \
             WHERE failed_at IS NULL AND xid < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY xid, seq LIMIT $1 FOR UPDATE SKIP LOCKED",
            table = self.quoted
        )
    }

    /// Deletes the published rows `$1` (an array of `seq`).
    pub fn delete_sql(&self) -> String {
        format!("DELETE FROM {} WHERE seq = ANY($1)", self.quoted)
    }

    /// Marks row `$1` as one that can never be published, with the reason `$2`.
    pub fn fail_sql(&self) -> String {
        format!(
            "UPDATE {} SET failed_at = now(), error = $2 WHERE seq = $1",
            self.quoted
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_schema_names_are_quoted() {
        let table = OutboxTable::new("ssehub_outbox").expect("valid");
        assert!(table.claim_sql().contains("FROM \"ssehub_outbox\" WHERE"));
        assert_eq!(table.channel(), "ssehub_outbox");
        let table = OutboxTable::new("app.Outbox_2").expect("valid");
        assert!(table.delete_sql().contains("\"app\".\"Outbox_2\""));
        assert_eq!(table.listen_sql(), "LISTEN \"Outbox_2\"");
    }

    #[test]
    fn names_that_could_inject_sql_are_refused() {
        for name in [
            "",
            "a.b.c",
            "1table",
            "t; DROP TABLE x",
            "t\"",
            "a..b",
            "ä",
            &"x".repeat(64),
        ] {
            assert!(OutboxTable::new(name).is_err(), "{name:?} accepted");
        }
    }

    #[test]
    fn each_table_has_its_own_lock_key() {
        let a = OutboxTable::new("a").expect("valid").lock_key();
        let b = OutboxTable::new("b").expect("valid").lock_key();
        assert_ne!(a, b);
        assert_eq!(a, OutboxTable::new("a").expect("valid").lock_key());
    }
}
