//! `ferry_proto::vpath::clean`, the first thing every client path goes
//! through: the result is absolute, has no `.`, `..` or empty component,
//! cleaning it again changes nothing, and `parent`/`base_name` put it back
//! together. The input is `cwd` and `path` separated by the first NUL.
#![no_main]

use ferry_proto::vpath::{base_name, clean, parent};
use libfuzzer_sys::fuzz_target;

fn check_clean(v: &str, from: (&str, &str)) {
    assert!(v.starts_with('/'), "not absolute: {v:?} from {from:?}");
    if v != "/" {
        assert!(!v.ends_with('/'), "trailing slash: {v:?} from {from:?}");
        for comp in v[1..].split('/') {
            assert!(
                !comp.is_empty() && comp != "." && comp != "..",
                "component {comp:?} in {v:?} from {from:?}"
            );
        }
    }
    assert!(!v.contains("//"), "double slash: {v:?} from {from:?}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (raw_cwd, path) = text.split_once('\0').unwrap_or(("/", text));
    // `clean` expects a clean cwd (callers pass one); make it so.
    let cwd = clean("/", raw_cwd);
    check_clean(&cwd, ("/", raw_cwd));

    let v = clean(&cwd, path);
    check_clean(&v, (&cwd, path));
    assert_eq!(clean("/", &v), v, "not idempotent: {path:?} in {cwd:?}");
    assert_eq!(clean(&cwd, &v), v, "absolute result moved by cwd");
    if path.starts_with('/') {
        assert_eq!(v, clean("/", path), "absolute path depends on cwd");
    } else {
        assert_eq!(
            v,
            clean("/", &format!("{cwd}/{path}")),
            "relative is not cwd/path"
        );
    }

    let (p, b) = (parent(&v), base_name(&v));
    check_clean(p, (&cwd, path));
    if v == "/" {
        assert_eq!((p, b), ("/", ""));
    } else {
        assert!(!b.is_empty() && !b.contains('/'));
        assert_eq!(clean(p, b), v, "parent/base_name do not rebuild {v:?}");
    }
});
