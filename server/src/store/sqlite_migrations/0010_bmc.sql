-- Out-of-band control (docs/bmc.md).
--
-- BMC credentials (kind: BmcSecret), sealed by the server before they reach
-- the store: `sealed` is "v1:" + base64(nonce || ChaCha20-Poly1305
-- ciphertext), keyed with the server's BMC secret key and bound to `name`.
-- The store never sees the password.
CREATE TABLE bmc_secrets (
    name        TEXT PRIMARY KEY,
    sealed      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- The last power state a BMC reported for a hardware, and when.
CREATE TABLE bmc_power (
    hardware_id TEXT PRIMARY KEY REFERENCES hardware (id) ON DELETE CASCADE,
    state       TEXT NOT NULL,
    read_at     INTEGER NOT NULL
);

-- BMC operations as durable jobs (app/background/bmc_jobs.rs). `key` makes
-- a submission idempotent; a server claims a job by setting `lease_owner`
-- and `lease_until`, and only the lease holder may finish it; a job whose
-- lease ran out (its server died) is claimed again.
CREATE TABLE bmc_jobs (
    id              TEXT PRIMARY KEY,
    key             TEXT NOT NULL UNIQUE,
    hardware_id     TEXT NOT NULL,
    operation       TEXT NOT NULL,          -- "power on", "boot pxe once uefi", ...
    state           TEXT NOT NULL,          -- pending | running | succeeded | failed
    attempts        INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT NOT NULL,
    lease_until     INTEGER NOT NULL,
    deadline        INTEGER NOT NULL,
    result          TEXT NOT NULL,
    error           TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX bmc_jobs_due ON bmc_jobs (state, next_attempt_at);
