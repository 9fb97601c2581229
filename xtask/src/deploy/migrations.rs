//! The migrations a deploy carries, as a key: the fingerprint of the app's
//! migration files and the database they were applied to. The ledger
//! records the key; a deploy whose key matches the last one applied skips
//! its migration task.

use std::path::Path;

use anyhow::{Context, Result};

use crate::support::fs::hex;

/// The app's migrations, embedded in its binary by `sqlx::migrate!`.
pub const MIGRATIONS_DIR: &str = "app/migrations";

/// The SHA-256 of the migration files (the `*.sql` files of
/// `MIGRATIONS_DIR` under `root`, names and contents): what sqlx embeds.
pub fn migrations_fingerprint(root: &Path) -> Result<String> {
    let directory = root.join(MIGRATIONS_DIR);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&directory).with_context(|| format!("reading {}", directory.display()))? {
        let path = entry.with_context(|| format!("reading {}", directory.display()))?.path();
        if path.is_file() && path.extension().is_some_and(|extension| extension == "sql") {
            files.push(path);
        }
    }
    files.sort();
    let mut hasher = openssl::sha::Sha256::new();
    for file in files {
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        hasher.update(file.file_name().unwrap_or_default().as_encoded_bytes());
        hasher.update(b"\0");
        hasher.update(&bytes);
        hasher.update(b"\0");
    }
    Ok(hex(&hasher.finish()))
}

/// "These migrations against this database": the fingerprint and the
/// database instance's identity. The identity matters: an environment
/// destroyed and applied again has a new, empty database with the same
/// name, and its ledger would otherwise claim the migrations were applied.
pub fn migrations_key(fingerprint: &str, database_id: &str) -> String {
    let mut hasher = openssl::sha::Sha256::new();
    hasher.update(database_id.as_bytes());
    hasher.update(b"\0");
    hasher.update(fingerprint.as_bytes());
    hex(&hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migrations_key_changes_with_a_migration_or_the_database() {
        let root = std::env::temp_dir().join(format!("xtask-migrations-key-{}", std::process::id()));
        let directory = root.join(MIGRATIONS_DIR);
        std::fs::create_dir_all(directory.join("notes")).unwrap();
        std::fs::write(directory.join("0001_create.sql"), "create table a (id int);").unwrap();
        let first = migrations_fingerprint(&root).unwrap();
        assert_eq!(first, migrations_fingerprint(&root).unwrap(), "the fingerprint is deterministic");
        std::fs::write(directory.join(".DS_Store"), "not a migration").unwrap();
        assert_eq!(first, migrations_fingerprint(&root).unwrap(), "only *.sql files count");
        assert_ne!(
            migrations_key(&first, "db-1"),
            migrations_key(&first, "db-2"),
            "a new database needs its migrations"
        );
        std::fs::write(directory.join("0002_add.sql"), "alter table a add b int;").unwrap();
        let second = migrations_fingerprint(&root).unwrap();
        assert_ne!(first, second, "a new migration file");
        std::fs::write(directory.join("0002_add.sql"), "alter table a add c int;").unwrap();
        assert_ne!(second, migrations_fingerprint(&root).unwrap(), "an edited migration file");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
