-- Out-of-band control (docs/bmc.md).
--
-- BMC credentials (kind: BmcSecret), sealed by the server before they reach
-- the store: `sealed` is "v1:" + base64(nonce || ChaCha20-Poly1305
-- ciphertext), keyed with the server's BMC secret key and bound to `name`.
-- The store never sees the password.
CREATE TABLE bmc_secrets (
    name        TEXT PRIMARY KEY,
    sealed      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- The last power state a BMC reported for a hardware, and when.
CREATE TABLE bmc_power (
    hardware_id TEXT PRIMARY KEY REFERENCES hardware (id) ON DELETE CASCADE,
    state       TEXT NOT NULL,
    read_at     BIGINT NOT NULL
);
