-- Workflow data: a JSON document actions read and update through the
-- action API (compare-and-swap on the version).
ALTER TABLE workflows ADD COLUMN data_json TEXT NOT NULL DEFAULT '{}';
ALTER TABLE workflows ADD COLUMN data_version INTEGER NOT NULL DEFAULT 0;
