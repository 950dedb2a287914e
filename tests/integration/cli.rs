//! Human-facing CLI output: help names every command and the exit codes;
//! common mistakes get a message that says what to do.

use strata_tests::*;

#[test]
fn help_lists_commands_and_exit_codes() {
    let env = Env::new();
    let help = env.ok(&["--help"]);
    for word in [
        "init",
        "ingest",
        "snapshots",
        "ls",
        "cat",
        "diff",
        "restore",
        "verify",
        "inspect",
        "key",
        "Exit codes:",
        "3  damage",
    ] {
        assert!(help.contains(word), "help lacks {word:?}:\n{help}");
    }
}

#[test]
fn missing_vault_and_missing_points_say_what_to_do() {
    let env = Env::new();
    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no vault at") && err.contains("strata init"),
        "{err}"
    );

    env.init();
    let out = env.run(&["ls"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no points yet"));

    let again = env.run(&["init"]);
    assert_eq!(again.status.code(), Some(6), "init over an existing vault");

    let bad_time = env.run(&["ls", "--at", "yesterday-ish"]);
    assert_eq!(bad_time.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_time.stderr).contains("RFC 3339"));

    let no_password = env
        .cmd(&["snapshots"])
        .env_remove("STRATA_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(no_password.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_password.stderr).contains("STRATA_PASSWORD"));
}

#[test]
fn password_file_is_read() {
    let env = Env::new();
    env.init();
    let pw = env.path("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let out = env
        .cmd(&["--password-file", pw.to_str().unwrap(), "snapshots"])
        .env_remove("STRATA_PASSWORD")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_reader_that_stops_early_ends_ls_quietly() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    for i in 0..3000 {
        write_file(
            &src,
            &format!("k/{i:05}-a-reasonably-long-name-to-fill-the-pipe"),
            b"x",
            0o644,
        );
    }
    env.ok(&["ingest", src.to_str().unwrap()]);
    let mut child = env
        .cmd(&["ls", "--long"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    // The pipe is closed now (the reader was dropped), as `head -1` does.
    let out = child.wait_with_output().unwrap();
    assert!(first.contains("k/00000"), "{first}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
