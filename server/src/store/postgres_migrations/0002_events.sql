-- The audit trail: operator writes and refused credentials (who, what, on
-- which object, the outcome). Never holds a secret. Kept bounded by the
-- servers (--event-retention, --event-max-rows).
--
-- Cursors come from a sequence; inserts take an advisory lock (see
-- postgres.rs) so they become visible in cursor order.
CREATE TABLE events (
    cursor  BIGSERIAL PRIMARY KEY,
    time    BIGINT NOT NULL,
    kind    TEXT NOT NULL,              -- write | security
    actor   TEXT NOT NULL,              -- operator, agent ID, action ..., ...
    peer    TEXT NOT NULL DEFAULT '',   -- the caller's address, when known
    action  TEXT NOT NULL,
    object  TEXT NOT NULL DEFAULT '',
    outcome TEXT NOT NULL,              -- ok | refused
    reason  TEXT NOT NULL DEFAULT '',
    count   BIGINT NOT NULL DEFAULT 1   -- identical refusals this row stands for
);
-- Retention by age, and `--since`.
CREATE INDEX events_time ON events(time);
