-- One machine's BMC jobs run one at a time, oldest first (docs/bmc.md): a
-- claim looks for an older unfinished job, or a running one, of the same
-- hardware. This index keeps that look a seek.
CREATE INDEX bmc_jobs_open_by_hardware ON bmc_jobs (hardware_id, created_at, id)
    WHERE state IN ('pending', 'running');
