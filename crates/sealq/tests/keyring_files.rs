//! Keyring TOML and loading: parsing, errors, file modes, `SEALQ_KEYRING`
//! and `SEALQ_KEYRING_TOML` precedence (split from `envelope_vectors.rs`).

use std::ffi::OsString;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sealq::{Error, Keyring};

const SECRET_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const SECRET_T: &str = "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=";

fn keyring_err(toml: &str) -> String {
    match Keyring::from_toml(toml) {
        Ok(_) => panic!("expected an error for:\n{toml}"),
        Err(Error::Keyring(msg)) => {
            assert!(!msg.contains(SECRET_A) && !msg.contains(SECRET_T), "{msg}");
            assert!(!msg.contains("AAECAwQF"), "secret prefix echoed: {msg}");
            msg
        }
        Err(other) => panic!("expected Error::Keyring, got {other:?}"),
    }
}

#[test]
fn keyring_toml_ok_with_comments_and_created() {
    let kr = Keyring::from_toml(&format!(
        "# sealq keyring — keep secret\nprimary = \"k-20261123-ab12\"\n\
         subject_tag_key = \"{SECRET_T}\"   # comment\n\
         [keys.k-20261123-ab12]\nsecret = \"{SECRET_A}\"\ncreated = \"2026-11-23T18:00:00Z\"\n\
         [keys.old-key]\nsecret = \"{SECRET_T}\"\ncreated = 2025-01-01T00:00:00Z\n"
    ))
    .unwrap();
    assert_eq!(kr.primary_key_id(), "k-20261123-ab12");
    assert_eq!(
        kr.key_ids().collect::<Vec<_>>(),
        ["k-20261123-ab12", "old-key"]
    );
}

#[test]
fn keyring_toml_errors() {
    let head = format!("subject_tag_key = \"{SECRET_T}\"\n");
    let key = format!("[keys.a]\nsecret = \"{SECRET_A}\"\n");

    let m = keyring_err(&format!("{head}{key}"));
    assert!(m.contains("`primary` is missing"), "{m}");

    let m = keyring_err(&format!("primary = \"b\"\n{head}{key}"));
    assert!(m.contains("\"b\" is not among the keys (a)"), "{m}");

    let m = keyring_err(&format!("primary = \"a\"\n{head}"));
    assert!(m.contains("no keys"), "{m}");

    let m = keyring_err(&format!("primary = \"a\"\n{key}"));
    assert!(m.contains("`subject_tag_key` is missing"), "{m}");

    let short = BASE64.encode([1u8; 16]);
    let m = keyring_err(&format!(
        "primary = \"a\"\n{head}[keys.a]\nsecret = \"{short}\"\n"
    ));
    assert!(
        m.contains("key `a`") && m.contains("32 bytes, got 16"),
        "{m}"
    );

    let m = keyring_err(&format!(
        "primary = \"a\"\n{head}[keys.a]\nsecret = \"{}!!\"\n",
        &SECRET_A[..40]
    ));
    assert!(
        m.contains("key `a`") && m.contains("not valid base64"),
        "{m}"
    );

    let m = keyring_err(&format!(
        "primary = \"a\"\nsubject_tag_key = \"{SECRET_A}xx\"\n{key}"
    ));
    assert!(m.contains("`subject_tag_key`"), "{m}");

    let m = keyring_err(&format!(
        "primary = \"a b\"\n{head}[keys.\"a b\"]\nsecret = \"{SECRET_A}\"\n"
    ));
    assert!(m.contains("invalid key id \"a b\""), "{m}");

    let m = keyring_err(&format!("primary = \"a\"\n{head}[keys.a]\n"));
    assert!(m.contains("key `a`: `secret` is missing"), "{m}");

    let m = keyring_err(&format!("primery = \"a\"\n{head}{key}"));
    assert!(m.contains("primery"), "{m}");

    let m = keyring_err(&format!(
        "primary = \"a\"\n{head}{key}created = \"yesterday\"\n"
    ));
    assert!(m.contains("`created`"), "{m}");

    // A syntax error on a secret's line gives the line, not the secret.
    let m = keyring_err(&format!(
        "primary = \"a\"\n{head}[keys.a]\nsecret = \"{SECRET_A}\n"
    ));
    assert!(m.contains("line 4"), "{m}");

    // A value of the wrong type is not echoed either.
    let m = keyring_err(&format!("primary = \"a\"\n{head}keys = \"{SECRET_A}\"\n"));
    assert!(m.contains("TOML error"), "{m}");
}

// ---------------------------------------------------------------------------
// loading
// ---------------------------------------------------------------------------

fn env_of<'a>(vars: &'a [(&'a str, OsString)]) -> impl Fn(&str) -> Option<OsString> + 'a {
    move |name| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }
}

/// Write a keyring file as `Keyring::from_file` requires: mode 0600.
fn write_keyring_file(path: &std::path::Path, bytes: &[u8]) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .expect("write keyring file");
}

#[test]
fn from_file_and_env_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let file_kr = Keyring::generate();
    let path = dir.path().join("keyring.toml");
    write_keyring_file(&path, file_kr.to_toml_secret().as_bytes());

    let loaded = Keyring::from_file(&path).unwrap();
    assert_eq!(loaded.primary_key_id(), file_kr.primary_key_id());

    let mut env_kr = Keyring::generate();
    env_kr.rotate(); // make the ids differ from file_kr's with certainty
    let env_toml = OsString::from(env_kr.to_toml_secret().as_str());

    // SEALQ_KEYRING wins over SEALQ_KEYRING_TOML.
    let vars = [
        ("SEALQ_KEYRING", path.clone().into_os_string()),
        ("SEALQ_KEYRING_TOML", env_toml.clone()),
    ];
    let kr = Keyring::from_env_with(env_of(&vars)).unwrap();
    assert_eq!(kr.primary_key_id(), file_kr.primary_key_id());

    // Empty SEALQ_KEYRING counts as unset.
    let vars = [
        ("SEALQ_KEYRING", OsString::new()),
        ("SEALQ_KEYRING_TOML", env_toml.clone()),
    ];
    let kr = Keyring::from_env_with(env_of(&vars)).unwrap();
    assert_eq!(kr.primary_key_id(), env_kr.primary_key_id());

    // Neither: fail closed.
    assert!(matches!(
        Keyring::from_env_with(env_of(&[])),
        Err(Error::NoKeyring)
    ));

    // Errors name the path / the variable.
    let missing = dir.path().join("nope.toml");
    let vars = [("SEALQ_KEYRING", missing.clone().into_os_string())];
    let Err(Error::Keyring(m)) = Keyring::from_env_with(env_of(&vars)) else {
        panic!("expected a keyring error");
    };
    assert!(m.contains(&missing.display().to_string()), "{m}");

    let bad = dir.path().join("bad.toml");
    write_keyring_file(&bad, b"primary = \"a\"\n");
    let Err(Error::Keyring(m)) = Keyring::from_file(&bad) else {
        panic!("expected a keyring error");
    };
    assert!(m.contains(&bad.display().to_string()), "{m}");

    let vars = [("SEALQ_KEYRING_TOML", OsString::from("primary = 1"))];
    let Err(Error::Keyring(m)) = Keyring::from_env_with(env_of(&vars)) else {
        panic!("expected a keyring error");
    };
    assert!(m.starts_with("SEALQ_KEYRING_TOML: "), "{m}");
}

#[test]
fn from_file_refuses_a_keyring_others_can_read_or_write() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring.toml");
    write_keyring_file(&path, Keyring::generate().to_toml_secret().as_bytes());
    for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o660] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let Err(Error::Keyring(m)) = Keyring::from_file(&path) else {
            panic!("mode {mode:o} accepted");
        };
        assert!(m.contains(&format!("chmod 600 {}", path.display())), "{m}");
        assert!(m.contains(&format!("{mode:04o}")), "{m}");
    }
    for mode in [0o600, 0o400] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        Keyring::from_file(&path).unwrap_or_else(|e| panic!("mode {mode:o}: {e}"));
    }
}

/// Child half of `from_env_reads_the_process_environment`: does nothing
/// unless started by it with `SEALQ_TEST_EXPECT_PRIMARY` set.
#[test]
fn from_env_child() {
    if let Some(expected) = std::env::var_os("SEALQ_TEST_EXPECT_PRIMARY") {
        match Keyring::from_env() {
            Ok(kr) => assert_eq!(kr.primary_key_id(), expected.to_str().unwrap()),
            Err(Error::NoKeyring) => assert_eq!(expected, "none"),
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn from_env_reads_the_process_environment() {
    // Setting variables in this process needs `unsafe`; run this test binary
    // again with the environment set instead.
    let dir = tempfile::tempdir().unwrap();
    let file_kr = Keyring::generate();
    let path = dir.path().join("keyring.toml");
    write_keyring_file(&path, file_kr.to_toml_secret().as_bytes());
    let mut env_kr = Keyring::generate();
    env_kr.rotate();
    let toml = env_kr.to_toml_secret();

    let run = |path: Option<&std::path::Path>, toml: Option<&str>, expect: &str| {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "from_env_child", "--test-threads=1"])
            .env_remove("SEALQ_KEYRING")
            .env_remove("SEALQ_KEYRING_TOML")
            .env("SEALQ_TEST_EXPECT_PRIMARY", expect);
        if let Some(p) = path {
            cmd.env("SEALQ_KEYRING", p);
        }
        if let Some(t) = toml {
            cmd.env("SEALQ_KEYRING_TOML", t);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "child failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    };
    run(Some(&path), Some(&toml), file_kr.primary_key_id());
    run(None, Some(&toml), env_kr.primary_key_id());
    run(None, None, "none");
}

// ---------------------------------------------------------------------------
// version 2: the producer's policy is sealed (security review finding 3)
// ---------------------------------------------------------------------------
