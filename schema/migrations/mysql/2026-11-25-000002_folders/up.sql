-- Virtual folders (SFTPGo's BaseVirtualFolder) and their mappings into users.
CREATE TABLE folders (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(255) NOT NULL UNIQUE,
    description TEXT NOT NULL,
    path TEXT NOT NULL,
    used_quota_size BIGINT NOT NULL DEFAULT 0,
    used_quota_files BIGINT NOT NULL DEFAULT 0,
    last_quota_update BIGINT NOT NULL DEFAULT 0,
    filesystem TEXT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE users_folders_mapping (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id BIGINT NOT NULL,
    folder_id BIGINT NOT NULL,
    virtual_path TEXT NOT NULL,
    quota_size BIGINT NOT NULL DEFAULT -1,
    quota_files BIGINT NOT NULL DEFAULT -1,
    UNIQUE (user_id, folder_id),
    INDEX users_folders_mapping_folder (folder_id),
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    FOREIGN KEY (folder_id) REFERENCES folders (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
