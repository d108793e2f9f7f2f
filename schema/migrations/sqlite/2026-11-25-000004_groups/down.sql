DROP TABLE users_groups_mapping;
DROP TABLE groups_folders_mapping;
DROP TABLE user_groups;
