//! Shell patterns as SFTPGo uses them (Go's `path.Match`): `*` and `?` never
//! match `/`, `[...]` classes (negated with `^` or `!`), `\` escapes.

use globset::{GlobBuilder, GlobMatcher};

/// A compiled pattern; compares equal by its source text.
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    matcher: GlobMatcher,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Pattern {}

impl Pattern {
    pub fn new(text: &str) -> Result<Self, String> {
        let glob = GlobBuilder::new(text)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| format!("invalid pattern {text:?}: {}", e.kind()))?;
        Ok(Self {
            text: text.to_string(),
            matcher: glob.compile_matcher(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn is_match(&self, s: &str) -> bool {
        self.matcher.is_match(s)
    }
}

/// True when `s` holds pattern syntax (and so is not a literal path).
pub fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_path_match_semantics() {
        let m = |p: &str, s: &str| Pattern::new(p).unwrap().is_match(s);
        assert!(m("*.jpg", "a.jpg"));
        assert!(!m("*.jpg", "a.png"));
        assert!(m("/dir/*", "/dir/sub"));
        assert!(!m("/dir/*", "/dir/sub/deeper"));
        assert!(m("file?.txt", "file1.txt"));
        assert!(!m("file?.txt", "file12.txt"));
        assert!(m("[a-c]*", "beta"));
        assert!(!m("[^a-c]*", "beta"));
        assert!(m("[!a-c]*", "delta"));
        assert!(Pattern::new("[a-").is_err());
    }
}
