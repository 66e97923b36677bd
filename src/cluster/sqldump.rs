//! Pure text work for the MySQL dumps: quoting identifiers and accounts, turning `SHOW CREATE
//! USER` into statements that replay on a server where the account may already exist, and
//! splitting a dump (with mysqldump-style `DELIMITER` lines) back into statements.

/// Quotes an identifier with backticks.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Quotes a string literal with single quotes.
pub fn quote_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// An account as `'user'@'host'`.
pub fn account(user: &str, host: &str) -> String {
    format!("{}@{}", quote_str(user), quote_str(host))
}

/// `CREATE USER x ...` → `CREATE USER IF NOT EXISTS x ...`; `None` if the text is not a
/// CREATE USER statement.
pub fn create_user_if_not_exists(show_create: &str) -> Option<String> {
    let s = show_create.trim();
    let rest = strip_prefix_ci(s, "CREATE USER ")?;
    if strip_prefix_ci(rest, "IF NOT EXISTS ").is_some() {
        return Some(s.to_string());
    }
    Some(format!("CREATE USER IF NOT EXISTS {rest}"))
}

/// `CREATE USER x ...` → `ALTER USER x ...` (sets the password and options of an account that
/// already existed). MySQL prints `DEFAULT ROLE` only in CREATE USER; it is dropped here.
pub fn alter_user_from_create(show_create: &str) -> Option<String> {
    let s = show_create.trim();
    let rest = strip_prefix_ci(s, "CREATE USER ")?;
    let rest = strip_prefix_ci(rest, "IF NOT EXISTS ").unwrap_or(rest);
    Some(format!("ALTER USER {rest}"))
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix) {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

/// Splits a dump into statements. Understands `DELIMITER x` lines (as the mysql client does),
/// `--` and `#` comment lines, and quotes (a delimiter inside a string or identifier does not
/// end a statement). Empty statements are dropped.
pub fn split_statements(sql: &str) -> Vec<String> {
    split_statements_at(sql)
        .statements
        .into_iter()
        .map(|s| s.text)
        .collect()
}

/// A statement of a dump and the line (from 1) it begins on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub line: usize,
    pub text: String,
}

/// A dump split by [`split_statements_at`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub statements: Vec<Statement>,
    /// A quote still open at the end of the text: the quote character and the line it opened
    /// on (the last statement then runs to the end of the text).
    pub open_quote: Option<(char, usize)>,
}

/// [`split_statements`] with the line each statement begins on and any quote left open.
pub fn split_statements_at(sql: &str) -> Split {
    let mut out = Vec::new();
    let mut delim = ";".to_string();
    let mut cur = String::new();
    let mut start = 0usize;
    let mut quote: Option<(char, usize)> = None;
    for (n, line) in sql.split_inclusive('\n').enumerate() {
        let n = n + 1;
        if quote.is_none() && cur.trim().is_empty() {
            let t = line.trim();
            if let Some(d) = strip_prefix_ci(t, "DELIMITER ") {
                delim = d.trim().to_string();
                continue;
            }
            if t.starts_with("-- ") || t == "--" || t.starts_with('#') || t.is_empty() {
                continue;
            }
        }
        let chars: Vec<char> = line.chars().collect();
        let d: Vec<char> = delim.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if cur.trim().is_empty() && !c.is_whitespace() {
                start = n;
            }
            match quote {
                Some((q, _)) => {
                    cur.push(c);
                    if c == '\\' && q != '`' && i + 1 < chars.len() {
                        cur.push(chars[i + 1]);
                        i += 1;
                    } else if c == q {
                        quote = None;
                    }
                }
                None => {
                    if chars[i..].starts_with(&d) {
                        let stmt = cur.trim().to_string();
                        if !stmt.is_empty() {
                            out.push(Statement {
                                line: start,
                                text: stmt,
                            });
                        }
                        cur.clear();
                        i += d.len();
                        continue;
                    }
                    if c == '\'' || c == '"' || c == '`' {
                        quote = Some((c, n));
                    }
                    cur.push(c);
                }
            }
            i += 1;
        }
    }
    let stmt = cur.trim().to_string();
    if !stmt.is_empty() {
        out.push(Statement {
            line: start,
            text: stmt,
        });
    }
    Split {
        statements: out,
        open_quote: quote,
    }
}

/// Makes a users dump written by another tool (mysqlpump) replayable where accounts exist:
/// every `CREATE USER` becomes `CREATE USER IF NOT EXISTS` followed by `ALTER USER` with the
/// same authentication; other statements are kept.
pub fn replayable_users_sql(dump: &str) -> String {
    let mut out = String::new();
    for st in split_statements(dump) {
        match (create_user_if_not_exists(&st), alter_user_from_create(&st)) {
            (Some(c), Some(a)) => {
                out.push_str(&c);
                out.push_str(";\n");
                out.push_str(&a);
                out.push_str(";\n");
            }
            _ => {
                out.push_str(&st);
                out.push_str(";\n");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a`b"), "`a``b`");
        assert_eq!(quote_str("it's\\"), "'it''s\\\\'");
        assert_eq!(account("app", "%"), "'app'@'%'");
    }

    #[test]
    fn create_user_rewrites() {
        let mariadb = "CREATE USER `app`@`%` IDENTIFIED BY PASSWORD '*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19'";
        assert_eq!(
            create_user_if_not_exists(mariadb).unwrap(),
            "CREATE USER IF NOT EXISTS `app`@`%` IDENTIFIED BY PASSWORD '*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19'"
        );
        assert_eq!(
            alter_user_from_create(mariadb).unwrap(),
            "ALTER USER `app`@`%` IDENTIFIED BY PASSWORD '*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19'"
        );
        let mysql = "CREATE USER `hopsworks`@`%` IDENTIFIED WITH 'caching_sha2_password' AS 0x2441 REQUIRE NONE PASSWORD EXPIRE DEFAULT ACCOUNT UNLOCK";
        assert!(create_user_if_not_exists(mysql)
            .unwrap()
            .starts_with("CREATE USER IF NOT EXISTS `hopsworks`@`%` IDENTIFIED WITH"));
        assert_eq!(create_user_if_not_exists("GRANT ALL ON *.* TO x"), None);
    }

    #[test]
    fn mysqlpump_output_becomes_replayable() {
        let dump = "-- Dump created by MySQL pump utility, version: 8.0.34\n\
            CREATE USER 'app'@'%' IDENTIFIED WITH 'mysql_native_password' AS '*15C0' REQUIRE NONE;\n\
            GRANT SELECT ON `hopsworks`.* TO 'app'@'%';\n";
        assert_eq!(
            replayable_users_sql(dump),
            "CREATE USER IF NOT EXISTS 'app'@'%' IDENTIFIED WITH 'mysql_native_password' AS '*15C0' REQUIRE NONE;\n\
             ALTER USER 'app'@'%' IDENTIFIED WITH 'mysql_native_password' AS '*15C0' REQUIRE NONE;\n\
             GRANT SELECT ON `hopsworks`.* TO 'app'@'%';\n"
        );
    }

    #[test]
    fn splitting_with_delimiters_quotes_and_comments() {
        let sql = "-- users\nCREATE USER IF NOT EXISTS 'a;b'@'%';\nGRANT SELECT ON `x;y`.* TO 'a;b'@'%';\n\
                   DELIMITER ;;\nCREATE PROCEDURE p() BEGIN SELECT 1; SELECT 'x;;y'; END;;\nDELIMITER ;\n\
                   # done\nSELECT \"it\\\"s;\";\n";
        let st = split_statements(sql);
        assert_eq!(
            st,
            vec![
                "CREATE USER IF NOT EXISTS 'a;b'@'%'",
                "GRANT SELECT ON `x;y`.* TO 'a;b'@'%'",
                "CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 'x;;y'; END",
                "SELECT \"it\\\"s;\"",
            ]
        );
        let at = split_statements_at(sql);
        let lines: Vec<usize> = at.statements.iter().map(|s| s.line).collect();
        assert_eq!(lines, [2, 3, 5, 8]);
        assert_eq!(at.open_quote, None);
        let open = split_statements_at("SELECT 1;\nGRANT ALL ON `x.* TO 'a'@'%';\n");
        assert_eq!(open.open_quote, Some(('`', 2)));
        assert_eq!(open.statements.len(), 2);
    }
}
