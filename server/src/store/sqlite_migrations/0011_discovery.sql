-- Discovery (server --discovery): a machine whose MAC no Hardware has that
-- network-boots gets a hardware row of its own (so that its enrolment
-- credential, agent token and inventory hang off it exactly as for known
-- hardware), marked here as discovered until an operator adopts it.
-- The MAC is the key: two boots of one machine at once, on one replica or
-- two, create one record (the loser's insert conflicts and reads the
-- winner's). Deleting the hardware (adoption) deletes the mark.
CREATE TABLE discovered_hardware (
    mac           TEXT PRIMARY KEY,      -- lower case, colon separated
    hardware_id   TEXT NOT NULL UNIQUE REFERENCES hardware(id) ON DELETE CASCADE,
    discovered_at INTEGER NOT NULL
);
