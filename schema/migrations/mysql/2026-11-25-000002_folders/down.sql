DROP TABLE users_folders_mapping;
DROP TABLE folders;
