-- Files actions leave in /out, uploaded after the action exits. The content
-- lives in DATA_DIR/artifacts/<attempt id>/<path>; this is the index.
CREATE TABLE artifacts (
    workflow_id TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    action_idx  INTEGER NOT NULL,
    attempt_id  TEXT NOT NULL,
    path        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (attempt_id, path)
);
CREATE INDEX artifacts_workflow ON artifacts(workflow_id);
