//! Virtual paths: what clients see. Every client path is cleaned into an
//! absolute path that cannot climb above `/`, before anything else looks at it.

/// Cleans a client-supplied path into an absolute virtual path.
///
/// Relative paths are taken relative to `cwd` (itself a clean virtual path);
/// `.` and empty components vanish, `..` never climbs above `/`.
pub fn clean(cwd: &str, path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    let joined_first = if path.starts_with('/') {
        None
    } else {
        Some(cwd)
    };
    for piece in joined_first.into_iter().chain(std::iter::once(path)) {
        for comp in piece.split('/') {
            match comp {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                c => parts.push(c),
            }
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for p in &parts {
        out.push('/');
        out.push_str(p);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// The parent of a clean virtual path (`/` is its own parent).
pub fn parent(vpath: &str) -> &str {
    match vpath.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &vpath[..i],
    }
}

/// The last component of a clean virtual path (empty for `/`).
pub fn base_name(vpath: &str) -> &str {
    match vpath.rfind('/') {
        Some(i) => &vpath[i + 1..],
        None => vpath,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(cwd: &str, input: &str, expected: &str) {
        assert_eq!(clean(cwd, input), expected, "clean({cwd:?}, {input:?})");
    }

    #[test]
    fn cleaning() {
        check("/", "", "/");
        check("/", ".", "/");
        check("/", "/", "/");
        check("/", "a/b", "/a/b");
        check("/", "/a//b/", "/a/b");
        check("/", "../../etc/passwd", "/etc/passwd");
        check("/", "/a/../../..", "/");
        check("/x/y", "../z", "/x/z");
        check("/x", "./f", "/x/f");
        check("/x", "/abs", "/abs");
    }

    #[test]
    fn parents_and_names() {
        assert_eq!(parent("/"), "/");
        assert_eq!(parent("/a"), "/");
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(base_name("/a/b"), "b");
        assert_eq!(base_name("/"), "");
    }
}
