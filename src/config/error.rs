//! Config errors: one [`ConfigError`] per problem found (file, line, key path, what to do), and
//! [`ConfigErrors`], all of them for one file, displayed one per line in line order.

use std::fmt;

/// One problem in a config file. Display: `{file}:{line}: {key}: {message}`, without `:{line}`
/// when the line is unknown and without `{key}: ` when the problem is not about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file as the user named it.
    pub file: String,
    /// 1-based line of the key (or of the nearest enclosing table when the key is missing).
    pub line: Option<usize>,
    /// Key path such as `schedule[0].cron`; empty for problems with the file as a whole.
    pub key: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one config file (never empty when returned as an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// Orders the errors by line (errors without a line first); errors on the same line keep
    /// the order in which they were found.
    pub fn sort(&mut self) {
        self.0.sort_by_key(|e| e.line);
    }
}

impl fmt::Display for ConfigErrors {
    /// One error per line, in line order, no trailing newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sorted: Vec<&ConfigError> = self.0.iter().collect();
        sorted.sort_by_key(|e| e.line);
        for (i, error) in sorted.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: Option<usize>, key: &str, message: &str) -> ConfigError {
        ConfigError {
            file: "hopsdr.toml".into(),
            line,
            key: key.into(),
            message: message.into(),
        }
    }

    #[test]
    fn display_leaves_out_unknown_parts() {
        assert_eq!(
            err(Some(3), "daemon.socket", "bad").to_string(),
            "hopsdr.toml:3: daemon.socket: bad"
        );
        assert_eq!(err(None, "", "bad").to_string(), "hopsdr.toml: bad");
        assert_eq!(err(Some(1), "", "bad").to_string(), "hopsdr.toml:1: bad");
    }

    #[test]
    fn display_sorts_by_line() {
        let errors = ConfigErrors(vec![
            err(Some(9), "b", "second"),
            err(Some(2), "a", "first"),
            err(Some(9), "c", "third"),
        ]);
        assert_eq!(
            errors.to_string(),
            "hopsdr.toml:2: a: first\nhopsdr.toml:9: b: second\nhopsdr.toml:9: c: third"
        );
    }
}
