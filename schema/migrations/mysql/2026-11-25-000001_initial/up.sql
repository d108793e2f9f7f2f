CREATE TABLE users (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    username VARCHAR(255) NOT NULL UNIQUE,
    status BIGINT NOT NULL DEFAULT 1,
    password TEXT,
    public_keys TEXT NOT NULL,
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
    filters TEXT NOT NULL,
    filesystem TEXT NOT NULL,
    email VARCHAR(255) NOT NULL DEFAULT '',
    description TEXT NOT NULL,
    additional_info TEXT NOT NULL,
    created_at BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE admins (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    username VARCHAR(255) NOT NULL UNIQUE,
    status BIGINT NOT NULL DEFAULT 1,
    password TEXT NOT NULL,
    permissions TEXT NOT NULL,
    filters TEXT NOT NULL,
    email VARCHAR(255) NOT NULL DEFAULT '',
    description TEXT NOT NULL,
    additional_info TEXT NOT NULL,
    created_at BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL DEFAULT 0,
    last_login BIGINT NOT NULL DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Fleet-wide settings the control plane generates once: host keys, the JWT
-- signing key. Every control-plane replica reads the same values.
CREATE TABLE configs (
    name VARCHAR(255) NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
