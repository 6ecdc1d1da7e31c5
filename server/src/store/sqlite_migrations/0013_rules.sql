-- Rules (kind: Rule, docs/rules.md): what to do with a discovered machine
-- whose inventory matches. priority and max_count are columns of their own
-- because adoption reads them under the transaction that counts matches.
CREATE TABLE rules (
    name       TEXT PRIMARY KEY,
    priority   INTEGER NOT NULL,
    max_count  INTEGER,                -- NULL: no limit
    doc        TEXT NOT NULL,          -- the RuleDoc as JSON
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
-- One row per machine a rule adopted, written in the adoption's
-- transaction. The MAC is the key: a machine is matched once, whatever the
-- number of reports, restarts and replicas. The rows of a rule count
-- against its max_count; deleting the rule forgets them.
CREATE TABLE rule_matches (
    mac         TEXT PRIMARY KEY,       -- the discovered MAC
    rule        TEXT NOT NULL REFERENCES rules(name) ON DELETE CASCADE,
    hardware_id TEXT NOT NULL,          -- the name it was adopted as
    matched_at  INTEGER NOT NULL
);
CREATE INDEX rule_matches_rule ON rule_matches(rule);
