-- The outbox table of `ssehub serve --outbox postgres://… --outbox-table ssehub_outbox`.
--
-- An application inserts one row per update in the same transaction as the change it
-- announces; ssehub publishes each committed row once, in commit order, then deletes it.
--
--   INSERT INTO ssehub_outbox (topics, data) VALUES (ARRAY['/orders/42'], '{"status":"shipped"}');
--
-- Columns the application writes: topics (the first is the canonical topic), data, private,
-- type, retry, and optionally id (the event id, also the publish's Idempotency-Key: unique per
-- update; a UUID is generated when absent). The others are the relay's:
--   seq        the primary key, and the tie-break within one transaction;
--   xid        the inserting transaction (the order key: the relay takes a row only once every
--              transaction older than it has ended, so no earlier row can still appear);
--   failed_at  set, with error, on a row that can never be published (a bad topic, too large):
--              it stays for inspection and is skipped; delete it or fix it and clear failed_at.
-- For another table name, replace every ssehub_outbox below (the trigger notifies the
-- channel named after its table, which the relay listens on).

CREATE TABLE IF NOT EXISTS ssehub_outbox (
    seq        bigserial PRIMARY KEY,
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    id         text NOT NULL DEFAULT gen_random_uuid()::text,
    topics     text[] NOT NULL CHECK (cardinality(topics) > 0),
    data       text NOT NULL DEFAULT '',
    private    boolean NOT NULL DEFAULT false,
    type       text,
    retry      integer CHECK (retry >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    failed_at  timestamptz,
    error      text
);

-- The relay's claim: pending rows by (xid, seq).
CREATE INDEX IF NOT EXISTS ssehub_outbox_pending ON ssehub_outbox (xid, seq) WHERE failed_at IS NULL;

-- Wakes the relay at commit (a rolled-back insert notifies nothing). One notification per
-- statement: the relay claims whole batches, it does not need one per row. The relay also
-- polls (every 500 ms), for the rows a notification cannot announce.
CREATE OR REPLACE FUNCTION ssehub_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_NAME, '');
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER ssehub_outbox_notify
    AFTER INSERT ON ssehub_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION ssehub_outbox_notify();
