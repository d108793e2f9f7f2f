-- Groups (SFTPGo's groups): settings users inherit, and their folders.
CREATE TABLE user_groups (
    id BIGSERIAL PRIMARY KEY,
    name VARCHAR(255) NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    user_settings TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE groups_folders_mapping (
    id BIGSERIAL PRIMARY KEY,
    group_id BIGINT NOT NULL REFERENCES user_groups (id) ON DELETE CASCADE,
    folder_id BIGINT NOT NULL REFERENCES folders (id) ON DELETE CASCADE,
    virtual_path TEXT NOT NULL,
    quota_size BIGINT NOT NULL DEFAULT -1,
    quota_files BIGINT NOT NULL DEFAULT -1,
    UNIQUE (group_id, folder_id)
);

-- group_type: 1 primary, 2 secondary, 3 membership only.
CREATE TABLE users_groups_mapping (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    group_id BIGINT NOT NULL REFERENCES user_groups (id) ON DELETE CASCADE,
    group_type BIGINT NOT NULL,
    UNIQUE (user_id, group_id)
);
CREATE INDEX users_groups_mapping_group ON users_groups_mapping (group_id);
