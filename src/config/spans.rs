//! Where things are in the config text: key paths (`schedule[0].cron`) and the map from a key path
//! to the 1-based line of its key, built from toml's spanned document (`toml::de::DeTable`).
//!
//! Error messages name a key path and a line; this module is the only place that knows about
//! byte offsets.

use std::fmt;
use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A key path such as `backup.files.paths[1].path`. The empty path is the document itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(pub(crate) Vec<Seg>);

impl KeyPath {
    pub(crate) fn root() -> KeyPath {
        KeyPath(Vec::new())
    }

    /// This path with `key` appended.
    pub(crate) fn key(&self, key: &str) -> KeyPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_string()));
        KeyPath(segs)
    }

    /// This path with `[index]` appended.
    pub(crate) fn index(&self, index: usize) -> KeyPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        KeyPath(segs)
    }

    /// The path without its last step (the root stays the root).
    pub(crate) fn parent(&self) -> KeyPath {
        let mut segs = self.0.clone();
        segs.pop();
        KeyPath(segs)
    }

    /// Whether `self` is `other` or lies inside it.
    pub(crate) fn starts_with(&self, other: &KeyPath) -> bool {
        self.0.starts_with(&other.0)
    }

    /// The table keys of this path, array indices left out (`schedule[1].name` -> `schedule.name`),
    /// used to look up which keys a table allows.
    pub(crate) fn shape(&self) -> String {
        let keys: Vec<&str> = self
            .0
            .iter()
            .filter_map(|seg| match seg {
                Seg::Key(k) => Some(k.as_str()),
                Seg::Index(_) => None,
            })
            .collect();
        keys.join(".")
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for seg in &self.0 {
            match seg {
                Seg::Key(k) if first => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        Ok(())
    }
}

/// Converts a path reported by `serde_ignored` into a [`KeyPath`].
pub(crate) fn from_ignored(path: &serde_ignored::Path<'_>) -> KeyPath {
    fn walk(path: &serde_ignored::Path<'_>, out: &mut Vec<Seg>) {
        match path {
            serde_ignored::Path::Root => {}
            serde_ignored::Path::Seq { parent, index } => {
                walk(parent, out);
                out.push(Seg::Index(*index));
            }
            serde_ignored::Path::Map { parent, key } => {
                walk(parent, out);
                out.push(Seg::Key(key.clone()));
            }
            serde_ignored::Path::Some { parent }
            | serde_ignored::Path::NewtypeStruct { parent }
            | serde_ignored::Path::NewtypeVariant { parent } => walk(parent, out),
        }
    }
    let mut segs = Vec::new();
    walk(path, &mut segs);
    KeyPath(segs)
}

struct Entry {
    path: KeyPath,
    /// The span of the key (`None` for array elements).
    key: Option<Range<usize>>,
    /// The span of the value; for `[table]` and `[[array]]` headers, the header.
    value: Range<usize>,
}

/// Every key path of a document with its spans, and the text's line starts.
pub(crate) struct SpanIndex {
    entries: Vec<Entry>,
    line_starts: Vec<usize>,
}

impl SpanIndex {
    pub(crate) fn new(text: &str, doc: &DeTable<'_>) -> SpanIndex {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let mut index = SpanIndex {
            entries: Vec::new(),
            line_starts,
        };
        index.walk_table(&KeyPath::root(), doc);
        index
    }

    fn walk_table(&mut self, path: &KeyPath, table: &DeTable<'_>) {
        for (key, value) in table.iter() {
            let child = path.key(key.get_ref());
            self.entries.push(Entry {
                path: child.clone(),
                key: Some(key.span()),
                value: value.span(),
            });
            self.walk_value(&child, value);
        }
    }

    fn walk_value(&mut self, path: &KeyPath, value: &Spanned<DeValue<'_>>) {
        match value.get_ref() {
            DeValue::Table(table) => self.walk_table(path, table),
            DeValue::Array(array) => {
                for (i, item) in array.iter().enumerate() {
                    let child = path.index(i);
                    self.entries.push(Entry {
                        path: child.clone(),
                        key: None,
                        value: item.span(),
                    });
                    self.walk_value(&child, item);
                }
            }
            _ => {}
        }
    }

    /// The 1-based line of a byte offset.
    pub(crate) fn line_of_offset(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset)
    }

    /// The line of `path`'s key (or of the array element's start); for a path that is not in
    /// the document, the line of its nearest ancestor that is; `None` if there is none.
    pub(crate) fn line(&self, path: &KeyPath) -> Option<usize> {
        let mut path = path.clone();
        while !path.0.is_empty() {
            if let Some(entry) = self.entries.iter().find(|e| e.path == path) {
                let start = entry.key.as_ref().unwrap_or(&entry.value).start;
                return Some(self.line_of_offset(start));
            }
            path = path.parent();
        }
        None
    }

    /// The deepest key path whose value (or else key) covers `span`: where a deserialization
    /// error reported at `span` belongs.
    pub(crate) fn path_at(&self, span: &Range<usize>) -> Option<KeyPath> {
        let covers = |r: &Range<usize>| r.start <= span.start && span.end <= r.end.max(r.start + 1);
        let best = |pick: &dyn Fn(&Entry) -> Option<Range<usize>>| {
            self.entries
                .iter()
                .filter_map(|e| pick(e).filter(|r| covers(r)).map(|r| (e, r.len())))
                .min_by_key(|(e, len)| (*len, usize::MAX - e.path.0.len()))
                .map(|(e, _)| e.path.clone())
        };
        best(&|e: &Entry| Some(e.value.clone())).or_else(|| best(&|e: &Entry| e.key.clone()))
    }
}

/// Takes the value at `path` out of the document so that deserialization can go on past an
/// error in it: a table key is removed, an array element becomes an empty table. Returns
/// whether something was taken out.
pub(crate) fn take_out(doc: &mut DeTable<'_>, path: &KeyPath) -> bool {
    fn in_value(value: &mut DeValue<'_>, segs: &[Seg]) -> bool {
        match (value, segs.first()) {
            (DeValue::Table(table), Some(_)) => in_table(table, segs),
            (DeValue::Array(array), Some(Seg::Index(i))) => {
                let Some(item) = array.get_mut(*i) else {
                    return false;
                };
                if segs.len() == 1 {
                    let span = item.span();
                    *item = Spanned::new(span, DeValue::Table(DeTable::new()));
                    true
                } else {
                    in_value(item.get_mut(), &segs[1..])
                }
            }
            _ => false,
        }
    }
    fn in_table(table: &mut DeTable<'_>, segs: &[Seg]) -> bool {
        let Some(Seg::Key(key)) = segs.first() else {
            return false;
        };
        if segs.len() == 1 {
            return table.remove(key.as_str()).is_some();
        }
        match table.get_mut(key.as_str()) {
            Some(value) => in_value(value.get_mut(), &segs[1..]),
            None => false,
        }
    }
    in_table(doc, &path.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_display_like_toml_keys() {
        let p = KeyPath::root().key("backup").key("files").key("paths");
        assert_eq!(
            p.index(1).key("path").to_string(),
            "backup.files.paths[1].path"
        );
        assert_eq!(p.index(1).key("path").shape(), "backup.files.paths.path");
        assert_eq!(KeyPath::root().to_string(), "");
    }

    #[test]
    fn lines_of_keys_and_missing_keys() {
        let text =
            "[daemon]\nsocket = \"/x\"\n\n[[schedule]]\nname = \"a\"\n[[schedule]]\nname = \"b\"\n";
        let doc = DeTable::parse(text).unwrap().into_inner();
        let index = SpanIndex::new(text, &doc);
        let root = KeyPath::root();
        assert_eq!(index.line(&root.key("daemon").key("socket")), Some(2));
        assert_eq!(
            index.line(&root.key("schedule").index(1).key("name")),
            Some(7)
        );
        // Missing: the line of the nearest ancestor.
        assert_eq!(
            index.line(&root.key("schedule").index(1).key("cron")),
            Some(6)
        );
        assert_eq!(index.line(&root.key("mysql").key("user")), None);
    }
}
