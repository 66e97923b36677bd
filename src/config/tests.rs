//! Tests of the whole config module: the shipped example, the bad-config fixtures under
//! `tests/fixtures/config/bad/` (each `NAME.toml` with its exact output in `NAME.expected`),
//! and the cases that need real files (secret modes, credentials).

use super::*;

#[test]
fn empty_config_gives_defaults() {
    let settings = parse("", "hopsdr.toml", &SecretEnv::default()).unwrap();
    assert_eq!(
        settings.daemon.socket,
        PathBuf::from("/run/hopsdr/hopsdr.sock")
    );
}
