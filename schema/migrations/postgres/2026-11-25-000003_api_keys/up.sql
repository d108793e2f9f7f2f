-- API keys (SFTPGo's api_keys): the key itself is stored hashed.
CREATE TABLE api_keys (
    id BIGSERIAL PRIMARY KEY,
    key_id VARCHAR(64) NOT NULL UNIQUE,
    name VARCHAR(255) NOT NULL,
    api_key TEXT NOT NULL,
    scope BIGINT NOT NULL,
    created_at BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL DEFAULT 0,
    last_use_at BIGINT NOT NULL DEFAULT 0,
    expires_at BIGINT NOT NULL DEFAULT 0,
    description TEXT NOT NULL DEFAULT '',
    admin_id BIGINT REFERENCES admins (id) ON DELETE CASCADE,
    user_id BIGINT REFERENCES users (id) ON DELETE CASCADE
);

-- Token ids revoked by logout, until the token would have expired anyway.
-- Shared by every control-plane replica.
CREATE TABLE revoked_tokens (
    jti VARCHAR(64) NOT NULL PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
