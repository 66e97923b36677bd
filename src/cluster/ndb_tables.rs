//! The NDB dictionary as `ndb_show_tables -p` prints it: one object per line,
//! `<id>\t'<type>'\t'<state>'\t'<logging>'\t'<database>'\t'<schema>'\t'<name>'`. A restore's
//! preflight uses it to tell an empty target (only the system and `mysql` schema tables every
//! cluster has) from one that already holds user data.

/// One object of the dictionary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NdbObject {
    pub id: u32,
    pub kind: String,
    pub database: String,
    pub name: String,
}

/// Parses `ndb_show_tables -p` output. A line that does not parse is an error (naming it):
/// a listing hopsdr cannot read never passes for an empty one.
pub fn parse_parsable(text: &str) -> Result<Vec<NdbObject>, String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let parsed = (f.len() == 7)
            .then(|| {
                Some(NdbObject {
                    id: f[0].parse().ok()?,
                    kind: unquote(f[1])?.to_string(),
                    database: unquote(f[4])?.to_string(),
                    name: unquote(f[6])?.to_string(),
                })
            })
            .flatten();
        out.push(parsed.ok_or_else(|| format!("unreadable ndb_show_tables line {line:?}"))?);
    }
    Ok(out)
}

fn unquote(s: &str) -> Option<&str> {
    s.strip_prefix('\'')?.strip_suffix('\'')
}

/// Databases every RonDB cluster has: not user data.
const SYSTEM_DATABASES: &[&str] = &["mysql", "sys", "ndbinfo"];

/// The user tables (`database.name`) outside the system databases; blob part tables
/// (`NDB$BLOB_*`) belong to a listed table and are left out.
pub fn user_tables(objects: &[NdbObject]) -> Vec<String> {
    objects
        .iter()
        .filter(|o| o.kind == "UserTable")
        .filter(|o| !SYSTEM_DATABASES.contains(&o.database.as_str()))
        .filter(|o| !o.name.starts_with("NDB$BLOB"))
        .map(|o| format!("{}.{}", o.database, o.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_tables_leave_out_the_system_schemas_and_blob_parts() {
        let text = "1\t'SystemTable'\t'Online'\t'Yes'\t'sys'\t'def'\t'SYSTAB_0'\n\
                    3\t'UserTable'\t'Online'\t'Yes'\t'mysql'\t'def'\t'ndb_schema'\n\
                    12\t'UserTable'\t'Online'\t'Yes'\t'hops'\t'def'\t'hdfs_inodes'\n\
                    13\t'UserTable'\t'Online'\t'Yes'\t'hops'\t'def'\t'NDB$BLOB_12_3'\n";
        let objs = parse_parsable(text).unwrap();
        assert_eq!(objs.len(), 4);
        assert_eq!(user_tables(&objs), ["hops.hdfs_inodes"]);
        assert!(user_tables(&objs[..2]).is_empty());
        assert!(parse_parsable("").unwrap().is_empty());
    }

    #[test]
    fn unreadable_lines_are_errors() {
        assert!(parse_parsable("Unable to connect to management server.\n").is_err());
        assert!(parse_parsable("x\t'UserTable'\t'Online'\t'Yes'\t'a'\t'def'\t'b'\n").is_err());
        assert!(parse_parsable("1\tUserTable\t'Online'\t'Yes'\t'a'\t'def'\t'b'\n").is_err());
    }
}
