-- Virtual folders (SFTPGo's BaseVirtualFolder) and their mappings into users.
CREATE TABLE folders (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    path TEXT NOT NULL,
    used_quota_size BIGINT NOT NULL DEFAULT 0,
    used_quota_files BIGINT NOT NULL DEFAULT 0,
    last_quota_update BIGINT NOT NULL DEFAULT 0,
    filesystem TEXT NOT NULL DEFAULT '{"provider":0}'
);

CREATE TABLE users_folders_mapping (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    folder_id BIGINT NOT NULL REFERENCES folders (id) ON DELETE CASCADE,
    virtual_path TEXT NOT NULL,
    quota_size BIGINT NOT NULL DEFAULT -1,
    quota_files BIGINT NOT NULL DEFAULT -1,
    UNIQUE (user_id, folder_id)
);
CREATE INDEX users_folders_mapping_folder ON users_folders_mapping (folder_id);
