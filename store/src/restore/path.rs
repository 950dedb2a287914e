//! Mapping object keys to paths under a restore root (and a mount), by a
//! documented, reversible escaping, so that every key has a path and no
//! path leaves the root.
//!
//! A key is split on `/`; each component becomes a file name:
//!
//! | component | name |
//! | --- | --- |
//! | empty (leading `/`, `//`) | `%` |
//! | `.` / `..` | `%2E` / `%2E%2E` |
//! | contains `%` or NUL | each `%` → `%25`, each NUL → `%00` |
//! | longer than 255 bytes once escaped | cut into pieces of at most 253 bytes (never inside a character or an escape); every piece but the last ends in `%+` and is a directory level |
//!
//! A key ending in `/` is a directory marker. An object whose key is also a
//! prefix of other keys (`a` beside `a/b`) is written inside that directory
//! as `%=` (`a/%=`). Since a literal `%` is always escaped, `%`, `%=` and
//! `%+` never arise from a key otherwise, and [`path_to_key`] inverts the
//! mapping exactly.
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::path::{Component, Path, PathBuf};

/// What a key maps to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyPath {
    /// A file at this relative path.
    File(PathBuf),
    /// A directory marker (key ending in `/`).
    Dir(PathBuf),
}

/// The name of an object that is also a directory (`a` beside `a/b`).
pub const SELF_NAME: &str = "%=";
const CONTINUED: &str = "%+";
const MAX_NAME: usize = 255;
const PIECE: usize = MAX_NAME - CONTINUED.len();

/// Escapes one key component into one or more file names (more than one
/// only when it is longer than a name may be).
pub fn escape_component(c: &str) -> Vec<String> {
    let escaped = match c {
        "" => return vec!["%".into()],
        "." => return vec!["%2E".into()],
        ".." => return vec!["%2E%2E".into()],
        _ => c.replace('%', "%25").replace('\0', "%00"),
    };
    if escaped.len() <= MAX_NAME {
        return vec![escaped];
    }
    let mut pieces = Vec::new();
    let mut rest = escaped.as_str();
    while rest.len() > MAX_NAME {
        let mut cut = PIECE;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        // Never inside "%XX": back up to before a '%' in the last 2 bytes.
        if let Some(p) = rest
            .get(cut.saturating_sub(2)..cut)
            .and_then(|t| t.find('%'))
        {
            cut = cut - 2 + p;
        }
        let (head, tail) = rest.split_at(cut);
        pieces.push(format!("{head}{CONTINUED}"));
        rest = tail;
    }
    pieces.push(rest.to_string());
    pieces
}

/// Undoes [`escape_component`] for one name (pieces already joined).
fn unescape(name: &str) -> Option<String> {
    if name == "%" {
        return Some(String::new());
    }
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = name.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Maps `key` to a relative path. `is_prefix`: other keys start with
/// `key/`, so the object is written as `key/%=`.
pub fn key_to_path(key: &str, is_prefix: bool) -> Result<KeyPath, String> {
    if key.is_empty() {
        return Err("empty key".into());
    }
    let (body, is_dir) = match key.strip_suffix('/') {
        Some(b) => (b, true),
        None => (key, false),
    };
    let mut path = PathBuf::new();
    for comp in body.split('/') {
        for name in escape_component(comp) {
            path.push(name);
        }
    }
    Ok(if is_dir {
        KeyPath::Dir(path)
    } else {
        if is_prefix {
            path.push(SELF_NAME);
        }
        KeyPath::File(path)
    })
}

/// The key a restored file's relative path came from.
pub fn path_to_key(path: &Path) -> Option<String> {
    let mut names: Vec<&str> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => names.push(n.to_str()?),
            _ => return None,
        }
    }
    if names.last() == Some(&SELF_NAME) {
        names.pop();
    }
    let mut comps = Vec::new();
    let mut pending = String::new();
    for n in names {
        match n.strip_suffix(CONTINUED) {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(n);
                comps.push(unescape(&std::mem::take(&mut pending))?);
            }
        }
    }
    if !pending.is_empty() {
        return None;
    }
    Some(comps.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(p: &str) -> KeyPath {
        KeyPath::File(PathBuf::from(p))
    }

    #[test]
    fn hostile_keys_get_escaped_paths_inside_the_root() {
        for (key, want) in [
            ("/etc/passwd", "%/etc/passwd"),
            ("a/../../x", "a/%2E%2E/%2E%2E/x"),
            ("..", "%2E%2E"),
            ("./a", "%2E/a"),
            ("a//b", "a/%/b"),
            ("a/\0", "a/%00"),
            ("100%", "100%25"),
            ("%=", "%25="),
            ("a/b", "a/b"),
            ("ünï cødé/ x ", "ünï cødé/ x "),
        ] {
            assert_eq!(key_to_path(key, false).unwrap(), file(want), "{key:?}");
            assert_eq!(path_to_key(Path::new(want)).as_deref(), Some(key));
        }
        assert_eq!(
            key_to_path("a/b/", false).unwrap(),
            KeyPath::Dir(PathBuf::from("a/b"))
        );
        assert_eq!(key_to_path("a", true).unwrap(), file("a/%="));
        assert_eq!(path_to_key(Path::new("a/%=")).as_deref(), Some("a"));
        assert!(key_to_path("", false).is_err());
    }

    #[test]
    fn long_components_become_directory_levels() {
        let key = format!("d/{}é{}", "x".repeat(300), "%".repeat(200));
        let KeyPath::File(p) = key_to_path(&key, false).unwrap() else {
            panic!()
        };
        assert!(p.components().count() > 3);
        for c in p.components() {
            assert!(c.as_os_str().len() <= 255);
        }
        assert_eq!(path_to_key(&p).as_deref(), Some(key.as_str()));
    }

    proptest! {
        #[test]
        fn every_key_maps_inside_the_root_and_back(
            key in "[a-z./%\\\\\u{0}é]{1,40}|[a-z/]{0,3}[x%]{250,600}",
            prefix in any::<bool>(),
        ) {
            let p = match key_to_path(&key, prefix).unwrap() {
                KeyPath::File(p) | KeyPath::Dir(p) => p,
            };
            prop_assert!(p.is_relative());
            prop_assert!(p.components().all(|c| matches!(c, Component::Normal(n) if n.len() <= 255)));
            if !key.ends_with('/') {
                prop_assert_eq!(path_to_key(&p), Some(key));
            }
        }
    }
}
