//! `hopsdrd --check-config` on every bad-config fixture (exact messages, exit 2) and on the
//! shipped example (exit 0, silent).

use std::path::Path;
use std::process::Command;

use crate::harness::HOPSDRD;

#[test]
fn bad_config_fixtures_are_refused_with_exact_messages() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/bad");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 15,
        "only {} bad-config fixtures",
        names.len()
    );
    for fixture in names {
        let expected = std::fs::read_to_string(fixture.with_extension("expected")).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        std::fs::copy(&fixture, tmp.path().join("hopsdr.toml")).unwrap();
        let out = Command::new(HOPSDRD)
            .current_dir(tmp.path())
            .args(["--check-config", "--config", "hopsdr.toml"])
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", fixture.display());
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim_end(),
            expected.trim_end(),
            "fixture {}",
            fixture.display()
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn valid_config_is_silent_and_exits_0() {
    let env = crate::harness::Env::new();
    env.write_config();
    let out = Command::new(HOPSDRD)
        .arg("--check-config")
        .arg("--config")
        .arg(env.config_path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
}

#[test]
fn missing_config_file_names_the_path() {
    let out = Command::new(HOPSDRD)
        .args(["--check-config", "--config", "/nonexistent/hopsdr.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/hopsdr.toml"), "{err}");
}
