-- Attempt leases: an open attempt is lost unless its agent renews the lease
-- (heartbeats). NULL for finished attempts. The partial index keeps the
-- sweeper's scan to the open attempts.
ALTER TABLE attempts ADD COLUMN lease_expires_at INTEGER;
CREATE INDEX attempts_open_lease ON attempts(lease_expires_at)
    WHERE state IN ('PENDING', 'PULLING', 'RUNNING');
