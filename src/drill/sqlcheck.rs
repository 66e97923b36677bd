//! `users.sql` and `schema.sql` read for their meaning: UTF-8 text that splits into statements
//! (the same splitter the restore replays with, so a quote left open is found here and not in
//! the middle of a restore), each a kind a dump of accounts, grants, views, routines, triggers
//! and events holds. Pure.

use std::collections::BTreeMap;

use crate::cluster::sqldump::split_statements_at;

/// Why a SQL dump does not read as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlCheckError {
    #[error("not UTF-8 text (byte {0})")]
    NotText(usize),
    #[error("a {quote} quote opened on line {line} is never closed")]
    OpenQuote { quote: char, line: usize },
    #[error("line {line}: not a statement of a users or schema dump: {start:?}")]
    Unknown { line: usize, start: String },
}

/// What a dump holds: statements by kind (`CREATE USER`, `GRANT`, `CREATE VIEW`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SqlSummary {
    pub statements: usize,
    pub kinds: BTreeMap<String, usize>,
}

/// The kinds a `CREATE` may make in these dumps.
const CREATED: &[&str] = &[
    "USER",
    "ROLE",
    "DATABASE",
    "SCHEMA",
    "VIEW",
    "PROCEDURE",
    "FUNCTION",
    "TRIGGER",
    "EVENT",
];

/// The statement's text with MySQL's version comments opened (`/*!50003 CREATE*/` reads as
/// `CREATE`), as the server reads them.
fn open_version_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("/*!") {
        out.push_str(&rest[..i]);
        out.push(' ');
        rest = rest[i + 3..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out.replace("*/", " ")
}

/// The kind of one statement, or `None` if it is none a dump holds.
fn kind(statement: &str) -> Option<String> {
    let s = open_version_comments(statement);
    let words: Vec<String> = s
        .split_whitespace()
        .take(12)
        .map(|w| w.to_ascii_uppercase())
        .collect();
    let first = words.first()?.as_str();
    match first {
        "CREATE" | "DROP" | "ALTER" => {
            // CREATE [OR REPLACE] [ALGORITHM=..] [DEFINER=..] [SQL SECURITY ..] VIEW ...
            let what = words[1..].iter().find(|w| CREATED.contains(&w.as_str()))?;
            Some(format!("{first} {what}"))
        }
        "GRANT" | "REVOKE" | "SET" | "USE" | "FLUSH" => {
            if first == "SET" && words.get(1).map(String::as_str) == Some("DEFAULT") {
                Some("SET DEFAULT ROLE".into())
            } else {
                Some(first.to_string())
            }
        }
        _ => None,
    }
}

/// Checks a dump.
pub fn check(sql: &[u8]) -> Result<SqlSummary, SqlCheckError> {
    let text = std::str::from_utf8(sql).map_err(|e| SqlCheckError::NotText(e.valid_up_to()))?;
    let split = split_statements_at(text);
    if let Some((quote, line)) = split.open_quote {
        return Err(SqlCheckError::OpenQuote { quote, line });
    }
    let mut out = SqlSummary::default();
    for st in &split.statements {
        let Some(k) = kind(&st.text) else {
            return Err(SqlCheckError::Unknown {
                line: st.line,
                start: st.text.chars().take(40).collect(),
            });
        };
        out.statements += 1;
        *out.kinds.entry(k).or_default() += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dumps_hopsdr_writes_are_read_by_kind() {
        let users = "-- accounts\nCREATE ROLE IF NOT EXISTS `r`;\n\
             CREATE USER IF NOT EXISTS 'app'@'%' IDENTIFIED WITH 'mysql_native_password' AS '*15C0';\n\
             ALTER USER 'app'@'%' IDENTIFIED WITH 'mysql_native_password' AS '*15C0';\n\
             GRANT SELECT ON `hopsworks`.* TO 'app'@'%';\nSET DEFAULT ROLE `r` TO 'app'@'%';\n";
        let s = check(users.as_bytes()).unwrap();
        assert_eq!(s.statements, 5);
        assert_eq!(s.kinds["CREATE USER"], 1);
        assert_eq!(s.kinds["SET DEFAULT ROLE"], 1);
        let schema = "CREATE DATABASE IF NOT EXISTS `hopsworks`;\nUSE `hopsworks`;\n\
             DROP VIEW IF EXISTS `v`;\nCREATE ALGORITHM=UNDEFINED DEFINER=`root`@`localhost` SQL SECURITY DEFINER VIEW `v` AS select 1;\n\
             DROP PROCEDURE IF EXISTS `p`;\nSET SESSION sql_mode = 'STRICT_TRANS_TABLES';\nDELIMITER ;;\n\
             CREATE DEFINER=`root`@`localhost` PROCEDURE `p`() BEGIN SELECT 1; END;;\nDELIMITER ;\n\
             /*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER t BEFORE INSERT ON x FOR EACH ROW SET NEW.a = 1 */;\n";
        let s = check(schema.as_bytes()).unwrap();
        assert_eq!(s.statements, 8);
        assert_eq!(s.kinds["CREATE PROCEDURE"], 1);
        assert_eq!(s.kinds["CREATE VIEW"], 1);
        assert_eq!(s.kinds["CREATE TRIGGER"], 1);
        assert_eq!(check(b"").unwrap().statements, 0);
    }

    #[test]
    fn damage_is_named_with_its_line() {
        assert_eq!(
            check(b"GRANT SELECT ON x.* TO 'a'@'%';\n\xff\xfe").unwrap_err(),
            SqlCheckError::NotText(32)
        );
        assert_eq!(
            check(b"CREATE USER 'a'@'%';\nGRANT ALL ON `x.* TO 'a'@'%';\n").unwrap_err(),
            SqlCheckError::OpenQuote {
                quote: '`',
                line: 2
            }
        );
        let e = check(b"GRANT SELECT ON x.* TO 'a'@'%';\n\nSELEC garbage here;\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 3: not a statement of a users or schema dump: \"SELEC garbage here\""
        );
        assert!(matches!(
            check(b"CREATE TABLE t (a int);").unwrap_err(),
            SqlCheckError::Unknown { line: 1, .. }
        ));
    }
}
