-- Refresh tokens, stored as SHA-256 hashes. Each login starts a family; each refresh uses one
-- token up and issues the next in the same family. Using a used token again revokes the family.
CREATE TABLE refresh_tokens (
    token_hash   TEXT PRIMARY KEY,
    family_id    TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    issued_ms    BIGINT NOT NULL,
    expires_ms   BIGINT NOT NULL,
    used_ms      BIGINT,
    revoked_ms   BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
