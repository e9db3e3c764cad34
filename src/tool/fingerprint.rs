//! `STARTGATE_MIGRATE_FINGERPRINT`: one hash of the migrate command and the content of the
//! paths it names (e.g. `prisma/migrations`), so that an unchanged project skips the command
//! (DESIGN.md "Existing migration tools").
//!
//! Rules:
//! - the hash covers the command text, and for each path in the order given: its name, and
//!   for a file its bytes, for a directory every file below it (sorted by relative path, names
//!   and bytes); renaming, adding, removing or editing a file changes it;
//! - symbolic links to files are followed; links to directories are hashed by their target
//!   text, never followed (no loops);
//! - a path that does not exist, or cannot be read, is an error naming it: a fingerprint that
//!   silently skipped a file would skip a migration;
//! - the value is `sha256:` and 64 hex digits, stored in the command table on success.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::migrate::source::hex;

/// The fingerprint of `command` and `paths`.
pub fn fingerprint(command: &str, paths: &[PathBuf]) -> Result<String, String> {
    let mut hasher = Sha256::new();
    field(&mut hasher, b"startgate fingerprint 1");
    field(&mut hasher, command.as_bytes());
    for path in paths {
        field(&mut hasher, path.as_os_str().as_encoded_bytes());
        let meta = std::fs::metadata(path).map_err(|e| {
            format!(
                "STARTGATE_MIGRATE_FINGERPRINT: cannot read {}: {e}",
                path.display()
            )
        })?;
        if meta.is_dir() {
            walk(&mut hasher, path, Path::new(""))?;
        } else {
            file(&mut hasher, path)?;
        }
    }
    Ok(format!("sha256:{}", hex(&hasher.finalize())))
}

/// A length-prefixed field, so that no two different inputs hash the same bytes.
fn field(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

fn file(hasher: &mut Sha256, path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| {
        format!(
            "STARTGATE_MIGRATE_FINGERPRINT: cannot read {}: {e}",
            path.display()
        )
    })?;
    field(hasher, &bytes);
    Ok(())
}

fn walk(hasher: &mut Sha256, root: &Path, relative: &Path) -> Result<(), String> {
    let dir = root.join(relative);
    let unreadable = |e: std::io::Error| {
        format!(
            "STARTGATE_MIGRATE_FINGERPRINT: cannot read {}: {e}",
            dir.display()
        )
    };
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map_err(unreadable)?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(unreadable)?;
    names.sort();
    for name in names {
        let relative = relative.join(&name);
        let path = root.join(&relative);
        let link = std::fs::symlink_metadata(&path).map_err(unreadable)?;
        field(hasher, relative.as_os_str().as_encoded_bytes());
        if link.is_dir() {
            field(hasher, b"dir");
            walk(hasher, root, &relative)?;
        } else if link.file_type().is_symlink() && path.is_dir() {
            let target = std::fs::read_link(&path).map_err(unreadable)?;
            field(hasher, b"link");
            field(hasher, target.as_os_str().as_encoded_bytes());
        } else {
            field(hasher, b"file");
            file(hasher, &path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("dir");
        }
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn changes_with_the_command_and_every_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("prisma/migrations");
        write(
            &root.join("20250101_init/migration.sql"),
            "CREATE TABLE a ();",
        );
        write(
            &root.join("migration_lock.toml"),
            "provider = \"postgresql\"",
        );
        let paths = vec![root.clone()];
        let first = fingerprint("prisma migrate deploy", &paths).expect("hash");
        assert!(first.starts_with("sha256:") && first.len() == 71, "{first}");
        // Same input, same hash.
        assert_eq!(
            fingerprint("prisma migrate deploy", &paths),
            Ok(first.clone())
        );
        // Another command.
        assert_ne!(
            fingerprint("prisma migrate deploy --x", &paths),
            Ok(first.clone())
        );
        // An edited file.
        write(
            &root.join("20250101_init/migration.sql"),
            "CREATE TABLE b ();",
        );
        let edited = fingerprint("prisma migrate deploy", &paths).expect("hash");
        assert_ne!(edited, first);
        // A new, empty file.
        write(&root.join("20250102_more/migration.sql"), "");
        let added = fingerprint("prisma migrate deploy", &paths).expect("hash");
        assert_ne!(added, edited);
        // A renamed file.
        std::fs::rename(
            root.join("20250102_more/migration.sql"),
            root.join("20250102_more/other.sql"),
        )
        .expect("rename");
        assert_ne!(fingerprint("prisma migrate deploy", &paths), Ok(added));
    }

    #[test]
    fn a_missing_path_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        let error = fingerprint("x", std::slice::from_ref(&missing)).expect_err("missing");
        assert!(error.contains(&missing.display().to_string()), "{error}");
        assert!(
            error.starts_with("STARTGATE_MIGRATE_FINGERPRINT"),
            "{error}"
        );
    }

    #[test]
    fn single_files_and_directory_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(&dir.path().join("schema.rb"), "version 1");
        write(&dir.path().join("db/x.sql"), "x");
        std::os::unix::fs::symlink(dir.path().join("db"), dir.path().join("db/loop"))
            .expect("symlink");
        let paths = vec![dir.path().join("schema.rb"), dir.path().join("db")];
        let before = fingerprint("bin/rails db:migrate", &paths).expect("no loop");
        write(&dir.path().join("schema.rb"), "version 2");
        assert_ne!(fingerprint("bin/rails db:migrate", &paths), Ok(before));
    }
}
