//! Mapping object keys to paths under a restore root.
//!
//! A key maps to a relative path by splitting on `/`. Keys that cannot be
//! a path without escaping the root or changing meaning — an empty
//! component (leading `/`, `//`), `.` or `..`, a NUL byte, a component
//! longer than 255 bytes — are reported as unrepresentable and not
//! written; they remain restorable to a bucket and with `cat`. A key ending
//! in `/` is a directory marker.
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::path::PathBuf;

/// What a key maps to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyPath {
    /// A file at this relative path.
    File(PathBuf),
    /// A directory marker (key ending in `/`).
    Dir(PathBuf),
}

/// Maps `key` to a relative path, or says why it cannot be one.
pub fn key_to_path(key: &str) -> Result<KeyPath, String> {
    if key.is_empty() {
        return Err("empty key".into());
    }
    let (body, is_dir) = match key.strip_suffix('/') {
        Some(b) => (b, true),
        None => (key, false),
    };
    let mut path = PathBuf::new();
    for comp in body.split('/') {
        let why = if comp.is_empty() {
            Some("empty path component (leading or doubled '/')")
        } else if comp == "." || comp == ".." {
            Some("'.' or '..' component")
        } else if comp.contains('\0') {
            Some("NUL byte")
        } else if comp.len() > 255 {
            Some("component longer than 255 bytes")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(format!("key {key:?} cannot be a path: {why}"));
        }
        path.push(comp);
    }
    Ok(if is_dir {
        KeyPath::Dir(path)
    } else {
        KeyPath::File(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hostile_keys_are_refused() {
        for k in [
            "",
            "/etc/passwd",
            "a/../../x",
            "..",
            "./a",
            "a//b",
            "a/\0",
            &"x".repeat(300),
        ] {
            assert!(key_to_path(k).is_err(), "{k:?}");
        }
        assert_eq!(
            key_to_path("a/b").unwrap(),
            KeyPath::File(PathBuf::from("a/b"))
        );
        assert_eq!(
            key_to_path("a/b/").unwrap(),
            KeyPath::Dir(PathBuf::from("a/b"))
        );
        assert_eq!(
            key_to_path("ünï cødé/ x ").unwrap(),
            KeyPath::File(PathBuf::from("ünï cødé/ x "))
        );
    }

    proptest! {
        #[test]
        fn mapped_paths_never_leave_the_root(key in "[a-z./\\\\]{0,20}") {
            if let Ok(KeyPath::File(p) | KeyPath::Dir(p)) = key_to_path(&key) {
                prop_assert!(p.is_relative());
                prop_assert!(p.components().all(|c| matches!(c, std::path::Component::Normal(_))));
            }
        }
    }
}
