-- The audit trail: operator writes and refused credentials (who, what, on
-- which object, the outcome). Never holds a secret. Kept bounded by the
-- server (--event-retention, --event-max-rows).
--
-- AUTOINCREMENT: a cursor is never reused, even once pruning emptied the
-- table, so `kiln events -f` resuming after cursor N never skips a new event.
CREATE TABLE events (
    cursor  INTEGER PRIMARY KEY AUTOINCREMENT,
    time    INTEGER NOT NULL,
    kind    TEXT NOT NULL,              -- write | security
    actor   TEXT NOT NULL,              -- operator, agent ID, action ..., ...
    peer    TEXT NOT NULL DEFAULT '',   -- the caller's address, when known
    action  TEXT NOT NULL,
    object  TEXT NOT NULL DEFAULT '',
    outcome TEXT NOT NULL,              -- ok | refused
    reason  TEXT NOT NULL DEFAULT '',
    count   INTEGER NOT NULL DEFAULT 1  -- identical refusals this row stands for
);
-- Retention by age, and `--since`.
CREATE INDEX events_time ON events(time);
