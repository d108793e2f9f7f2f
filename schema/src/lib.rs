//! The database schema: diesel table definitions and the embedded migrations,
//! one directory per backend (`migrations/sqlite`, `migrations/postgres`,
//! `migrations/mysql`) with the same tables and the same version names.
#![forbid(unsafe_code)]

use diesel_migrations::{EmbeddedMigrations, embed_migrations};

/// Migrations for SQLite, applied in order at start.
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
/// Migrations for PostgreSQL.
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
/// Migrations for MySQL and MariaDB.
pub const MYSQL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/mysql");

diesel::table! {
    users (id) {
        id -> BigInt,
        username -> Text,
        status -> BigInt,
        password -> Nullable<Text>,
        public_keys -> Text,
        home_dir -> Text,
        uid -> BigInt,
        gid -> BigInt,
        max_sessions -> BigInt,
        quota_size -> BigInt,
        quota_files -> BigInt,
        permissions -> Text,
        used_quota_size -> BigInt,
        used_quota_files -> BigInt,
        last_quota_update -> BigInt,
        upload_bandwidth -> BigInt,
        download_bandwidth -> BigInt,
        upload_data_transfer -> BigInt,
        download_data_transfer -> BigInt,
        total_data_transfer -> BigInt,
        used_upload_data_transfer -> BigInt,
        used_download_data_transfer -> BigInt,
        expiration_date -> BigInt,
        last_login -> BigInt,
        first_download -> BigInt,
        first_upload -> BigInt,
        last_password_change -> BigInt,
        filters -> Text,
        filesystem -> Text,
        email -> Text,
        description -> Text,
        additional_info -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    admins (id) {
        id -> BigInt,
        username -> Text,
        status -> BigInt,
        password -> Text,
        permissions -> Text,
        filters -> Text,
        email -> Text,
        description -> Text,
        additional_info -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
        last_login -> BigInt,
    }
}

diesel::table! {
    configs (name) {
        name -> Text,
        value -> Text,
    }
}

diesel::table! {
    folders (id) {
        id -> BigInt,
        name -> Text,
        description -> Text,
        path -> Text,
        used_quota_size -> BigInt,
        used_quota_files -> BigInt,
        last_quota_update -> BigInt,
        filesystem -> Text,
    }
}

diesel::table! {
    users_folders_mapping (id) {
        id -> BigInt,
        user_id -> BigInt,
        folder_id -> BigInt,
        virtual_path -> Text,
        quota_size -> BigInt,
        quota_files -> BigInt,
    }
}

diesel::table! {
    api_keys (id) {
        id -> BigInt,
        key_id -> Text,
        name -> Text,
        api_key -> Text,
        scope -> BigInt,
        created_at -> BigInt,
        updated_at -> BigInt,
        last_use_at -> BigInt,
        expires_at -> BigInt,
        description -> Text,
        admin_id -> Nullable<BigInt>,
        user_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    revoked_tokens (jti) {
        jti -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    user_groups (id) {
        id -> BigInt,
        name -> Text,
        description -> Text,
        user_settings -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    groups_folders_mapping (id) {
        id -> BigInt,
        group_id -> BigInt,
        folder_id -> BigInt,
        virtual_path -> Text,
        quota_size -> BigInt,
        quota_files -> BigInt,
    }
}

diesel::table! {
    users_groups_mapping (id) {
        id -> BigInt,
        user_id -> BigInt,
        group_id -> BigInt,
        group_type -> BigInt,
    }
}

diesel::joinable!(groups_folders_mapping -> user_groups (group_id));
diesel::joinable!(groups_folders_mapping -> folders (folder_id));
diesel::joinable!(users_groups_mapping -> user_groups (group_id));
diesel::joinable!(users_groups_mapping -> users (user_id));
diesel::joinable!(users_folders_mapping -> users (user_id));
diesel::joinable!(users_folders_mapping -> folders (folder_id));
diesel::allow_tables_to_appear_in_same_query!(
    users,
    folders,
    users_folders_mapping,
    api_keys,
    admins,
    user_groups,
    groups_folders_mapping,
    users_groups_mapping,
);
