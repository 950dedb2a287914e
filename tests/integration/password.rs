//! Wrong password and foreign key files: a clear error, nothing written.

use strata_tests::*;

#[test]
fn wrong_password_is_refused_and_writes_nothing() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write_file(&src, "x", b"x", 0o644);
    env.ok(&["ingest", src.to_str().unwrap()]);
    let before = list_files(&env.vault());
    let out = env
        .cmd(&["ingest", src.to_str().unwrap()])
        .env("STRATA_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong password"), "{err}");
    assert_eq!(
        before,
        list_files(&env.vault()),
        "a refused open wrote to the vault"
    );
}

#[test]
fn keys_can_be_added_listed_and_removed() {
    let env = Env::new();
    env.init();
    let added = env
        .cmd(&["--json", "key", "add"])
        .env("STRATA_NEW_PASSWORD", "second")
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let keys = env.json(&["key", "list"]);
    assert_eq!(keys.as_array().unwrap().len(), 2);
    // The new password opens the vault.
    let ok = env
        .cmd(&["snapshots"])
        .env("STRATA_PASSWORD", "second")
        .output()
        .unwrap();
    assert!(ok.status.success());
    // The key in use cannot be removed; the other one can.
    let current = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == true)
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let other = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == false)
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(env.run(&["key", "remove", &current]).status.code(), Some(2));
    env.ok(&["key", "remove", &other]);
    let gone = env
        .cmd(&["snapshots"])
        .env("STRATA_PASSWORD", "second")
        .output()
        .unwrap();
    assert_eq!(gone.status.code(), Some(4));
}

#[test]
fn key_file_from_another_vault_is_named() {
    let a = Env::new();
    a.init();
    let b = Env::new();
    b.init();
    // Copy b's key file into a: it opens with the same password but cannot
    // decrypt a's config.
    let a_keys = a.vault().join("keys");
    for k in std::fs::read_dir(a_keys.clone()).unwrap() {
        std::fs::remove_file(k.unwrap().path()).unwrap();
    }
    for k in std::fs::read_dir(b.vault().join("keys")).unwrap() {
        let k = k.unwrap();
        std::fs::copy(k.path(), a_keys.join(k.file_name())).unwrap();
    }
    let out = a.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another vault"));
}

#[test]
fn a_planted_key_file_with_absurd_costs_is_skipped_not_fatal() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write_file(&src, "a", b"x", 0o644);
    env.ok(&["ingest", src.to_str().unwrap()]);
    let keys = env.vault().join("keys");
    let honest = std::fs::read(keys.join(&list_files(&keys)[0])).unwrap();
    // Someone with write access plants key files demanding 4 GiB x 64
    // passes of argon2, or more than any reader accepts.
    for (name, m_cost, t_cost) in [
        ("planted-huge", 4_194_304u32, 64u32),
        ("planted-over", u32::MAX, 1),
    ] {
        let mut planted = honest.clone();
        planted[40..44].copy_from_slice(&m_cost.to_le_bytes());
        planted[44..48].copy_from_slice(&t_cost.to_le_bytes());
        std::fs::write(keys.join(name), planted).unwrap();
    }
    let t = std::time::Instant::now();
    env.ok(&["ls"]);
    // The honest key is tried first; the planted ones are never derived,
    // not even for a wrong password: they exceed the reader's budget.
    assert!(t.elapsed() < std::time::Duration::from_secs(60));
    let out = env
        .cmd(&["ls"])
        .env("STRATA_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
