-- Agent credentials: the sha256 (hex) of the machine's agent token. The
-- token itself is never stored; NULL means no valid token (revoked, or
-- hardware registered before tokens existed: rotate to issue one).
ALTER TABLE hardware ADD COLUMN token_hash TEXT;
-- Finds whose token a caller presented (a valid token claiming another
-- agent id is PERMISSION_DENIED, not UNAUTHENTICATED).
CREATE INDEX hardware_token_hash ON hardware(token_hash);
