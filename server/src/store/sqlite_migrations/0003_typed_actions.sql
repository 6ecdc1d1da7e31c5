-- Typed actions: their definitions, and the JSON output of each attempt.
CREATE TABLE action_definitions (
    name        TEXT PRIMARY KEY,
    doc         TEXT NOT NULL,          -- ActionDefinitionDoc as JSON
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
ALTER TABLE attempts ADD COLUMN output_json TEXT NOT NULL DEFAULT '';
