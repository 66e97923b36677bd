//! Failpoints for tests: named places in long jobs where a test can make the daemon pause, so a
//! crash or a signal can be delivered at a known point instead of by sleeping and hoping.
//!
//! Compiled in only with the `testbed` cargo feature (never in packages). `HOPSDR_FAILPOINTS` is a
//! comma-separated list of `name=pause` or `name=wait`; on reaching such a failpoint the daemon
//! creates `$HOPSDR_FAILPOINT_DIR/<name>.reached` and waits until its job is cancelled (`pause`),
//! or until the test creates `<name>.continue` there (`wait`: a fault is arranged meanwhile, then
//! the job goes on into it).

use tokio_util::sync::CancellationToken;

/// Passes through, or pauses here until `cancel` fires when the failpoint `name` is set to pause.
#[cfg(feature = "testbed")]
pub fn hit(name: &str, cancel: &CancellationToken) {
    let mode = match value(name).as_deref() {
        Some("pause") => "pause",
        Some("wait") => "wait",
        _ => return,
    };
    let dir = std::env::var_os("HOPSDR_FAILPOINT_DIR").map(std::path::PathBuf::from);
    if let Some(dir) = &dir {
        let _ = std::fs::write(dir.join(format!("{name}.reached")), b"");
    }
    tracing::warn!(failpoint = name, mode, "failpoint reached: pausing");
    let go_on = dir.map(|d| d.join(format!("{name}.continue")));
    while !cancel.is_cancelled() {
        if mode == "wait" && go_on.as_ref().is_some_and(|p| p.exists()) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The value of failpoint `name` (`name=value` in `HOPSDR_FAILPOINTS`), if set.
#[cfg(feature = "testbed")]
pub fn value(name: &str) -> Option<String> {
    let set = std::env::var("HOPSDR_FAILPOINTS").ok()?;
    set.split(',').find_map(|fp| {
        let (k, v) = fp.trim().split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

/// Like [`value`], but only the first time in the test's failpoint directory (a
/// `<name>.fired` marker records it): a fault that happens once.
#[cfg(feature = "testbed")]
pub fn once(name: &str) -> Option<String> {
    let v = value(name)?;
    let dir = std::env::var_os("HOPSDR_FAILPOINT_DIR")?;
    let marker = std::path::Path::new(&dir).join(format!("{name}.fired"));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(marker)
        .ok()
        .map(|_| v)
}

/// Failpoints are compiled out without the `testbed` feature.
#[cfg(not(feature = "testbed"))]
#[inline(always)]
pub fn value(_name: &str) -> Option<String> {
    None
}

/// Failpoints are compiled out without the `testbed` feature.
#[cfg(not(feature = "testbed"))]
#[inline(always)]
pub fn once(_name: &str) -> Option<String> {
    None
}

/// Failpoints are compiled out without the `testbed` feature.
#[cfg(not(feature = "testbed"))]
#[inline(always)]
pub fn hit(_name: &str, _cancel: &CancellationToken) {}
