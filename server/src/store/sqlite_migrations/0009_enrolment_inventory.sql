-- Enrolment credentials: one-time secrets in the iPXE script of a machine
-- that boots the hook image, exchanged by its agent for the machine's agent
-- token (server/src/app/enrol.rs). Only their sha256 is stored. A row stays
-- after use (used_at) so that a replay is told apart from garbage; rows
-- expired for a day are pruned when new ones are issued.
CREATE TABLE enrolments (
    credential_hash TEXT PRIMARY KEY,   -- sha256 (hex) of the credential
    hardware_id     TEXT NOT NULL REFERENCES hardware(id) ON DELETE CASCADE,
    agent_id        TEXT NOT NULL,      -- the agent id it is bound to
    mac             TEXT NOT NULL,      -- the MAC the boot script was asked for
    workflow        TEXT NOT NULL DEFAULT '',  -- the workflow that boot is for
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    used_at         INTEGER             -- NULL: not used yet
);
-- A new boot supersedes the unused credentials of the same hardware.
CREATE INDEX enrolments_hardware ON enrolments(hardware_id);
CREATE INDEX enrolments_expires ON enrolments(expires_at);

-- In-band inventory: what a machine's agent found on it (system, CPUs,
-- memory, disks, NICs, TPM), as the JSON document the agent reported, per
-- hardware. Replaced whole by each report that differs (digest).
CREATE TABLE hardware_inventory (
    hardware_id  TEXT PRIMARY KEY REFERENCES hardware(id) ON DELETE CASCADE,
    agent_id     TEXT NOT NULL,         -- the agent that reported it
    inventory    TEXT NOT NULL,         -- JSON (kiln_inventory::Inventory)
    digest       TEXT NOT NULL,         -- sha256 (hex) of `inventory`
    reported_at  INTEGER NOT NULL,      -- when it last changed
    seen_at      INTEGER NOT NULL       -- when it was last reported
);
