CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    username VARCHAR(255) NOT NULL UNIQUE,
    status BIGINT NOT NULL DEFAULT 1,
    password TEXT,
    public_keys TEXT NOT NULL DEFAULT '[]',
    home_dir TEXT NOT NULL,
    uid BIGINT NOT NULL DEFAULT 0,
    gid BIGINT NOT NULL DEFAULT 0,
    max_sessions BIGINT NOT NULL DEFAULT 0,
    quota_size BIGINT NOT NULL DEFAULT 0,
    quota_files BIGINT NOT NULL DEFAULT 0,
    permissions TEXT NOT NULL,
    used_quota_size BIGINT NOT NULL DEFAULT 0,
    used_quota_files BIGINT NOT NULL DEFAULT 0,
    last_quota_update BIGINT NOT NULL DEFAULT 0,
    upload_bandwidth BIGINT NOT NULL DEFAULT 0,
    download_bandwidth BIGINT NOT NULL DEFAULT 0,
    upload_data_transfer BIGINT NOT NULL DEFAULT 0,
    download_data_transfer BIGINT NOT NULL DEFAULT 0,
    total_data_transfer BIGINT NOT NULL DEFAULT 0,
    used_upload_data_transfer BIGINT NOT NULL DEFAULT 0,
    used_download_data_transfer BIGINT NOT NULL DEFAULT 0,
    expiration_date BIGINT NOT NULL DEFAULT 0,
    last_login BIGINT NOT NULL DEFAULT 0,
    first_download BIGINT NOT NULL DEFAULT 0,
    first_upload BIGINT NOT NULL DEFAULT 0,
    last_password_change BIGINT NOT NULL DEFAULT 0,
    filters TEXT NOT NULL DEFAULT '{}',
    filesystem TEXT NOT NULL DEFAULT '{"provider":0}',
    email VARCHAR(255) NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    additional_info TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE admins (
    id BIGSERIAL PRIMARY KEY,
    username VARCHAR(255) NOT NULL UNIQUE,
    status BIGINT NOT NULL DEFAULT 1,
    password TEXT NOT NULL,
    permissions TEXT NOT NULL DEFAULT '["*"]',
    filters TEXT NOT NULL DEFAULT '{}',
    email VARCHAR(255) NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    additional_info TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL DEFAULT 0,
    last_login BIGINT NOT NULL DEFAULT 0
);

-- Fleet-wide settings the control plane generates once: host keys, the JWT
-- signing key. Every control-plane replica reads the same values.
CREATE TABLE configs (
    name VARCHAR(255) NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);
