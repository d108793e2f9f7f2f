-- Groups (SFTPGo's groups): settings users inherit, and their folders.
CREATE TABLE user_groups (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(255) NOT NULL UNIQUE,
    description TEXT NOT NULL,
    user_settings TEXT NOT NULL,
    created_at BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE groups_folders_mapping (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    group_id BIGINT NOT NULL,
    folder_id BIGINT NOT NULL,
    virtual_path TEXT NOT NULL,
    quota_size BIGINT NOT NULL DEFAULT -1,
    quota_files BIGINT NOT NULL DEFAULT -1,
    UNIQUE (group_id, folder_id),
    FOREIGN KEY (group_id) REFERENCES user_groups (id) ON DELETE CASCADE,
    FOREIGN KEY (folder_id) REFERENCES folders (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- group_type: 1 primary, 2 secondary, 3 membership only.
CREATE TABLE users_groups_mapping (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id BIGINT NOT NULL,
    group_id BIGINT NOT NULL,
    group_type BIGINT NOT NULL,
    UNIQUE (user_id, group_id),
    INDEX users_groups_mapping_group (group_id),
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    FOREIGN KEY (group_id) REFERENCES user_groups (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
