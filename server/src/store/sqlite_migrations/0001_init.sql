-- kiln store, version 1. Times are milliseconds since the Unix epoch.

CREATE TABLE hardware (
    id          TEXT PRIMARY KEY,
    agent_id    TEXT NOT NULL UNIQUE,
    doc         TEXT NOT NULL,          -- HardwareDoc as JSON
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE templates (
    name        TEXT PRIMARY KEY,
    data        TEXT NOT NULL,          -- the template source as applied
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE workflows (
    id                      TEXT PRIMARY KEY,
    template                TEXT NOT NULL,
    hardware                TEXT NOT NULL,
    hardware_map            TEXT NOT NULL,  -- JSON object
    state                   TEXT NOT NULL,
    reason                  TEXT NOT NULL DEFAULT '',
    global_timeout_seconds  INTEGER,
    created_at              INTEGER NOT NULL,
    started_at              INTEGER,
    finished_at             INTEGER
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
    created_at  INTEGER NOT NULL,
    pulling_at  INTEGER,
    running_at  INTEGER,
    finished_at INTEGER,
    exit_code   INTEGER,
    reason      TEXT NOT NULL DEFAULT '',
    message     TEXT NOT NULL DEFAULT '',
    UNIQUE (workflow_id, action_idx, number)
);

CREATE TABLE logs (
    cursor      INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    action_idx  INTEGER NOT NULL,
    attempt_id  TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    stream      INTEGER NOT NULL,
    time        INTEGER NOT NULL,
    text        TEXT NOT NULL,
    UNIQUE (attempt_id, seq)
);
CREATE INDEX logs_workflow ON logs(workflow_id, cursor);
