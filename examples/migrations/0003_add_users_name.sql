-- startgate:lock-timeout 2s
ALTER TABLE users ADD COLUMN name TEXT;
CREATE INDEX users_created_at_idx ON users (created_at);
