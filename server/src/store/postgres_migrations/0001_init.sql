-- kiln store on PostgreSQL, version 1: the same tables as the SQLite store
-- at its version 4. Times are milliseconds since the Unix epoch (BIGINT);
-- documents are JSON text, read and written whole by the server.

CREATE TABLE hardware (
    id          TEXT PRIMARY KEY,
    agent_id    TEXT NOT NULL UNIQUE,
    doc         TEXT NOT NULL,          -- HardwareDoc as JSON
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    -- sha256 (hex) of the machine's agent token, never the token; NULL: no
    -- valid token (revoked).
    token_hash  TEXT
);
-- Finds whose token a caller presented (a valid token claiming another
-- agent id is PERMISSION_DENIED, not UNAUTHENTICATED).
CREATE INDEX hardware_token_hash ON hardware (token_hash);

CREATE TABLE templates (
    name        TEXT PRIMARY KEY,
    data        TEXT NOT NULL,          -- the template source as applied
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE action_definitions (
    name        TEXT PRIMARY KEY,
    doc         TEXT NOT NULL,          -- ActionDefinitionDoc as JSON
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE workflows (
    id                      TEXT PRIMARY KEY,
    template                TEXT NOT NULL,
    hardware                TEXT NOT NULL,
    hardware_map            TEXT NOT NULL,  -- JSON object
    state                   TEXT NOT NULL,
    reason                  TEXT NOT NULL DEFAULT '',
    global_timeout_seconds  BIGINT,
    created_at              BIGINT NOT NULL,
    started_at              BIGINT,
    finished_at             BIGINT,
    -- Workflow data: a JSON document actions read and update through the
    -- action API (compare-and-swap on the version).
    data_json               TEXT NOT NULL DEFAULT '{}',
    data_version            BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX workflows_state ON workflows(state);

-- The frozen plan: one row per action, written once at creation.
CREATE TABLE actions (
    workflow_id TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    agent_id    TEXT NOT NULL,
    spec        TEXT NOT NULL,          -- PlannedAction as JSON
    PRIMARY KEY (workflow_id, idx)
);
CREATE INDEX actions_agent ON actions(agent_id);

CREATE TABLE attempts (
    id          TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    action_idx  INTEGER NOT NULL,
    number      INTEGER NOT NULL,
    agent_id    TEXT NOT NULL,
    state       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    pulling_at  BIGINT,
    running_at  BIGINT,
    finished_at BIGINT,
    exit_code   BIGINT,
    reason      TEXT NOT NULL DEFAULT '',
    message     TEXT NOT NULL DEFAULT '',
    output_json TEXT NOT NULL DEFAULT '',
    -- Open attempts are lost unless their agent renews this (heartbeats);
    -- NULL once the attempt ended.
    lease_expires_at BIGINT,
    -- A second attempt with the same number is a double dispatch: refused
    -- here even if the locking above it were wrong.
    UNIQUE (workflow_id, action_idx, number)
);
-- The lease sweeper looks at open attempts only.
CREATE INDEX attempts_open_lease ON attempts (lease_expires_at)
    WHERE state IN ('PENDING', 'PULLING', 'RUNNING');

CREATE TABLE logs (
    cursor      BIGSERIAL PRIMARY KEY,
    workflow_id TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    action_idx  INTEGER NOT NULL,
    attempt_id  TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    stream      INTEGER NOT NULL,
    time        BIGINT NOT NULL,
    text        TEXT NOT NULL,
    UNIQUE (attempt_id, seq)
);
CREATE INDEX logs_workflow ON logs(workflow_id, cursor);

-- Files actions leave in /out; the content lives in DATA_DIR/artifacts.
CREATE TABLE artifacts (
    workflow_id TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    action_idx  INTEGER NOT NULL,
    attempt_id  TEXT NOT NULL,
    path        TEXT NOT NULL,
    size        BIGINT NOT NULL,
    sha256      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (attempt_id, path)
);
CREATE INDEX artifacts_workflow ON artifacts(workflow_id);

-- Secrets every replica must share (the action token key), created by the
-- first server that needs one.
CREATE TABLE secrets (
    name        TEXT PRIMARY KEY,
    value       BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);
