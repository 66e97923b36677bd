//! Secrets named by the config: a file (mode 0600 or stricter) or a systemd credential
//! (`LoadCredential=`), never an inline string. Owns [`Secret`], [`SecretEnv`] (where
//! credentials are found), the checks run at validation and [`Secret::read`].

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where a [`Secret`] comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// A file holding the secret; must not be accessible by group or others.
    File(PathBuf),
    /// The name of a systemd credential, read from `$CREDENTIALS_DIRECTORY/<name>`.
    Credential(String),
}

/// The process environment that secrets depend on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretEnv {
    /// `$CREDENTIALS_DIRECTORY`, set by systemd when the unit has `LoadCredential=`.
    pub credentials_directory: Option<PathBuf>,
}

impl SecretEnv {
    /// Reads `$CREDENTIALS_DIRECTORY` (an empty value counts as unset).
    pub fn from_process() -> SecretEnv {
        SecretEnv {
            credentials_directory: std::env::var_os("CREDENTIALS_DIRECTORY")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }
    }
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// A credential was asked for but the process has no `$CREDENTIALS_DIRECTORY`.
    #[error("failed to read credential {name:?}: $CREDENTIALS_DIRECTORY is not set: add LoadCredential={name}:/path/to/file to the systemd unit")]
    NoCredentialsDirectory { name: String },
    /// The file could not be read.
    #[error("failed to read secret file {path:?}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Secret {
    /// The secret's value, with one trailing newline (`\n` or `\r\n`) removed.
    pub fn read(&self, env: &SecretEnv) -> Result<String, SecretError> {
        let path = self.path(env)?;
        let mut value =
            std::fs::read_to_string(&path).map_err(|source| SecretError::Read { path, source })?;
        if value.ends_with('\n') {
            value.pop();
            if value.ends_with('\r') {
                value.pop();
            }
        }
        Ok(value)
    }

    /// The file the secret is read from.
    pub fn path(&self, env: &SecretEnv) -> Result<PathBuf, SecretError> {
        match self {
            Secret::File(path) => Ok(path.clone()),
            Secret::Credential(name) => match &env.credentials_directory {
                Some(dir) => Ok(dir.join(name)),
                None => Err(SecretError::NoCredentialsDirectory { name: name.clone() }),
            },
        }
    }
}

/// Checks a secret file at validation: it exists, is a regular file, and is neither readable
/// nor writable by group or others. Returns what to tell the user.
pub(crate) fn check_file(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!(
                "secret file {:?} does not exist: create it with mode 0600 (chmod 600 {shown})",
                path
            ))
        }
        Err(e) => return Err(format!("failed to inspect secret file {path:?}: {e}")),
    };
    if !meta.is_file() {
        return Err(format!("secret file {path:?} is not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o7777;
    let what = if mode & 0o044 != 0 {
        "readable"
    } else if mode & 0o022 != 0 {
        "writable"
    } else {
        return Ok(());
    };
    Err(format!(
        "secret file {path:?} is {what} by group or others (mode {mode:04o}): run chmod 600 {shown}"
    ))
}

/// Checks a credential at validation: `$CREDENTIALS_DIRECTORY` is set and holds `name`.
pub(crate) fn check_credential(name: &str, env: &SecretEnv) -> Result<(), String> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(format!(
            "invalid credential name {name:?}: use the name given in LoadCredential=NAME:/path"
        ));
    }
    let Some(dir) = &env.credentials_directory else {
        return Err(format!(
            "credential {name:?} needs $CREDENTIALS_DIRECTORY, which is not set: run hopsdrd as a systemd service with LoadCredential={name}:/path/to/file"
        ));
    };
    let path = dir.join(name);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(format!("credential {name:?} ({path:?}) is not a regular file")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(format!(
            "credential {name:?} not found in $CREDENTIALS_DIRECTORY ({}): add LoadCredential={name}:/path/to/file to the systemd unit",
            dir.display()
        )),
        Err(e) => Err(format!("failed to inspect credential {name:?} ({path:?}): {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(dir: &Path, name: &str, content: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn file_modes() {
        let dir = tempfile::tempdir().unwrap();
        let ok = write(dir.path(), "ok", "s3cret\n", 0o600);
        assert_eq!(check_file(&ok), Ok(()));
        let ro = write(dir.path(), "ro", "s3cret\n", 0o400);
        assert_eq!(check_file(&ro), Ok(()));

        let open = write(dir.path(), "open", "s3cret\n", 0o644);
        assert_eq!(
            check_file(&open),
            Err(format!(
                "secret file {open:?} is readable by group or others (mode 0644): run chmod 600 {}",
                open.display()
            ))
        );
        let gw = write(dir.path(), "gw", "s3cret\n", 0o620);
        assert!(check_file(&gw)
            .unwrap_err()
            .contains("is writable by group or others (mode 0620)"));

        let missing = dir.path().join("missing");
        assert!(check_file(&missing).unwrap_err().contains("does not exist"));
        assert!(check_file(dir.path())
            .unwrap_err()
            .contains("not a regular file"));
    }

    #[test]
    fn credentials() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "mysql-password", "pw\r\n", 0o400);
        let unset = SecretEnv::default();
        let set = SecretEnv {
            credentials_directory: Some(dir.path().to_path_buf()),
        };
        assert!(check_credential("mysql-password", &unset)
            .unwrap_err()
            .contains("LoadCredential=mysql-password:"));
        assert_eq!(check_credential("mysql-password", &set), Ok(()));
        assert!(check_credential("other", &set)
            .unwrap_err()
            .contains("not found in $CREDENTIALS_DIRECTORY"));
        assert!(check_credential("../x", &set).is_err());

        let secret = Secret::Credential("mysql-password".into());
        assert_eq!(secret.read(&set).unwrap(), "pw");
        assert!(matches!(
            secret.read(&unset),
            Err(SecretError::NoCredentialsDirectory { .. })
        ));
    }

    #[test]
    fn read_trims_one_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "pw", "a b\n\n", 0o600);
        let env = SecretEnv::default();
        assert_eq!(Secret::File(path).read(&env).unwrap(), "a b\n");
        let path = write(dir.path(), "pw2", "plain", 0o600);
        assert_eq!(Secret::File(path).read(&env).unwrap(), "plain");
        let missing = Secret::File(dir.path().join("nope"));
        assert!(matches!(missing.read(&env), Err(SecretError::Read { .. })));
    }
}
