//! Output templates: the fixture files under tests/fixtures/ (real-looking samples of the tools'
//! output for an example cluster). The fake prints a fixture line with its numbers (maximal digit
//! runs) replaced, in order, by its own values; lines without variable numbers are printed as is.

macro_rules! fixture {
    ($name:ident, $path:literal) => {
        pub const $name: &str = include_str!(concat!("../fixtures/", $path));
    };
}

fixture!(SHOW, "ndb_mgm/show.txt");
fixture!(SHOW_NOT_CONNECTED, "ndb_mgm/show_node_not_connected.txt");
fixture!(ALL_STATUS, "ndb_mgm/all_status.txt");
fixture!(
    ALL_STATUS_NOT_CONNECTED,
    "ndb_mgm/all_status_not_connected.txt"
);
fixture!(BACKUP_COMPLETED, "ndb_mgm/start_backup_completed.txt");
fixture!(BACKUP_STARTED, "ndb_mgm/start_backup_started.txt");
fixture!(BACKUP_EXISTS, "ndb_mgm/start_backup_failed_exists.txt");
fixture!(BACKUP_OUT_OF_RANGE, "ndb_mgm/start_backup_out_of_range.txt");
fixture!(BACKUP_NO_CONTACT, "ndb_mgm/start_backup_no_contact.txt");
fixture!(BACKUP_ABORTED, "ndb_mgm/start_backup_aborted.txt");
fixture!(BACKUP_DISK_FULL, "ndb_mgm/start_backup_disk_full.txt");
fixture!(SHOW_WILDCARD, "ndb_mgm/show_wildcard_address.txt");
fixture!(ABORT_OK, "ndb_mgm/abort_ok.txt");
fixture!(ABORT_FAILED, "ndb_mgm/abort_failed.txt");
fixture!(REPORT_IDLE, "ndb_mgm/report_backupstatus_idle.txt");
fixture!(REPORT_RUNNING, "ndb_mgm/report_backupstatus_running.txt");
fixture!(CONNECT_FAILED, "ndb_mgm/connect_failed.txt");
fixture!(CLAMP_WARNING, "ndb_restore/clamp_warning.txt");
fixture!(SAFEMODE_ON, "hdfs/safemode_on.txt");
fixture!(SAFEMODE_OFF, "hdfs/safemode_off.txt");
fixture!(FSCK_HEALTHY, "hdfs/fsck_healthy.txt");
fixture!(FSCK_CORRUPT, "hdfs/fsck_corrupt.txt");
fixture!(FSCK_CONNECTING, "hdfs/fsck_connecting.txt");
fixture!(EPIPE_RUNNING, "epipe/already_running.txt");
fixture!(EPIPE_REINDEX, "epipe/reindex_ok.txt");
fixture!(KAFKA_RESTORE, "kafka/restore.txt");

/// Line `i` of a fixture.
pub fn line(file: &str, i: usize) -> &str {
    file.lines().nth(i).unwrap_or("")
}

/// The first line of a fixture for which `pred` holds.
pub fn find(file: &str, pred: impl Fn(&str) -> bool) -> &str {
    file.lines().find(|l| pred(l)).unwrap_or("")
}

/// `tpl` with its i-th run of digits replaced by `vals[i]`. Panics if the counts differ (a bug in
/// the fake, caught by its tests).
pub fn fill(tpl: &str, vals: &[String]) -> String {
    let mut out = String::new();
    let mut it = vals.iter();
    let mut in_digits = false;
    for c in tpl.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push_str(
                    it.next()
                        .unwrap_or_else(|| panic!("too few values for {tpl:?}")),
                );
                in_digits = true;
            }
        } else {
            in_digits = false;
            out.push(c);
        }
    }
    assert!(it.next().is_none(), "too many values for {tpl:?}");
    out
}

/// `tpl` with its i-th number (a run of digits, with a fraction if a `.` and digits follow:
/// `100.0`) replaced by `vals[i]`: for lines of decimals such as fsck's percentages. Panics if the
/// counts differ.
pub fn fill_numbers(tpl: &str, vals: &[String]) -> String {
    let mut out = String::new();
    let mut it = vals.iter();
    let b = tpl.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let mut j = i;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j + 1 < b.len() && b[j] == b'.' && b[j + 1].is_ascii_digit() {
                j += 1;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
            }
            out.push_str(
                it.next()
                    .unwrap_or_else(|| panic!("too few values for {tpl:?}")),
            );
            i = j;
        } else {
            let c = tpl[i..].chars().next().unwrap_or_default();
            out.push(c);
            i += c.len_utf8();
        }
    }
    assert!(it.next().is_none(), "too many values for {tpl:?}");
    out
}

/// Values for the digit runs of a dotted token ("10.0.0.11", "22.10.3").
pub fn dotted(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

/// Builds the slot values of one line.
#[derive(Default)]
pub struct V(pub Vec<String>);
impl V {
    pub fn n(mut self, x: impl std::fmt::Display) -> V {
        self.0.push(x.to_string());
        self
    }
    pub fn d(mut self, s: &str) -> V {
        self.0.extend(dotted(s));
        self
    }
    pub fn fill(&self, tpl: &str) -> String {
        fill(tpl, &self.0)
    }
}

pub fn v() -> V {
    V::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_numbers_replaces_decimals_whole() {
        let vals: Vec<String> = ["7", "87.5"].map(String::from).to_vec();
        assert_eq!(
            fill_numbers(" Minimally replicated blocks:\t8 (100.0 %)", &vals),
            " Minimally replicated blocks:\t7 (87.5 %)"
        );
        let vals = vec!["4.0E-4".to_string()];
        assert_eq!(fill_numbers("x 3.0 B.", &vals), "x 4.0E-4 B.");
        assert_eq!(
            fill(" Total size:\t24576 B", &["1".into()]),
            " Total size:\t1 B"
        );
    }
}
