-- The table whose absence takes admin endpoints down with
-- `relation "feature_flags" does not exist` when a migration never ran.
CREATE TABLE feature_flags (
    name TEXT PRIMARY KEY,
    enabled BOOLEAN NOT NULL DEFAULT FALSE
);

INSERT INTO feature_flags (name, enabled) VALUES ('new_checkout', TRUE);
