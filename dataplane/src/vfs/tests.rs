//! The confined walk against planted links, mounts and special files.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    home: PathBuf,
    outside: PathBuf,
    fs: UserFs,
}

fn vf(name: &str, vp: &str, path: &Path, quota: i64) -> ferry_proto::edge::v1::VirtualFolder {
    ferry_proto::edge::v1::VirtualFolder {
        name: name.into(),
        virtual_path: vp.into(),
        mapped_path: path.display().to_string(),
        quota_size: quota,
        quota_files: quota,
        storage: None,
    }
}

fn fixture(folders: &[(&str, &str, i64)]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"outside").unwrap();
    let folders: Vec<_> = folders
        .iter()
        .map(|(name, vp, q)| vf(name, vp, &dir.path().join(name), *q))
        .collect();
    let fs = UserFs::open_blocking(&home, None, &folders, FsSettings::default()).unwrap();
    let home = home.canonicalize().unwrap();
    Fixture {
        _dir: dir,
        home,
        outside,
        fs,
    }
}

fn walk(fs: &UserFs, vp: &str) -> Result<Entry, FsError> {
    fs.walk(vp, Follow::All)
}

#[test]
fn links_pointing_outside_do_not_resolve() {
    let f = fixture(&[]);
    symlink(&f.outside, f.home.join("abs")).unwrap();
    symlink("../outside", f.home.join("rel")).unwrap();
    std::fs::create_dir_all(f.home.join("a/b/c/d/e")).unwrap();
    for vp in ["/abs", "/abs/secret", "/abs/new", "/rel/secret", "/rel/new"] {
        assert_eq!(walk(&f.fs, vp).unwrap_err(), FsError::Outside, "{vp}");
    }
    // The link itself can be looked at, not followed.
    let link = f.fs.walk("/abs", Follow::NotLast).unwrap();
    assert!(link.meta().unwrap().is_symlink());
    // A relative link that stayed inside where it was made escapes once
    // moved up: the walk follows it from where it is now.
    symlink("../../../../../outside", f.home.join("a/b/c/d/e/l")).unwrap();
    assert_eq!(
        walk(&f.fs, "/a/b/c/d/e/l").unwrap().vpath(),
        "/outside",
        "inside the home while five levels deep"
    );
    std::fs::rename(f.home.join("a/b/c/d/e/l"), f.home.join("a/l")).unwrap();
    assert_eq!(walk(&f.fs, "/a/l/secret").unwrap_err(), FsError::Outside);
    // A link resolved through another link.
    symlink("..", f.home.join("a/x")).unwrap();
    symlink("x/../..", f.home.join("a/y")).unwrap();
    assert_eq!(
        walk(&f.fs, "/a/y/outside/secret").unwrap_err(),
        FsError::Outside
    );
    assert_eq!(walk(&f.fs, "/a/x").unwrap().vpath(), "/");
}

#[test]
fn links_inside_resolve_to_their_virtual_place() {
    let f = fixture(&[]);
    std::fs::create_dir_all(f.home.join("d/sub")).unwrap();
    std::fs::write(f.home.join("d/sub/f"), b"x").unwrap();
    symlink("sub", f.home.join("d/rel")).unwrap();
    // Stored as the real path (Ferry's and SFTPGo's own links).
    symlink(f.home.join("d/sub"), f.home.join("abs")).unwrap();
    let e = walk(&f.fs, "/d/rel/f").unwrap();
    assert_eq!(e.vpath(), "/d/sub/f");
    assert!(e.meta().unwrap().is_file());
    assert_eq!(walk(&f.fs, "/abs/f").unwrap().vpath(), "/d/sub/f");
    // A dangling link inside is a missing file, not a refusal.
    symlink("nothing", f.home.join("dangling")).unwrap();
    let e = walk(&f.fs, "/dangling").unwrap();
    assert_eq!(e.vpath(), "/nothing");
    assert!(e.meta().is_none());
    // Loops end.
    symlink("loop2", f.home.join("loop1")).unwrap();
    symlink("loop1", f.home.join("loop2")).unwrap();
    assert_eq!(walk(&f.fs, "/loop1").unwrap_err(), FsError::Loop);
    // A file in the middle of a path.
    assert_eq!(
        walk(&f.fs, "/d/sub/f/x").unwrap_err(),
        FsError::NotADirectory
    );
}

#[tokio::test]
async fn new_links_store_the_targets_place_and_read_back_virtual() {
    let f = fixture(&[]);
    std::fs::create_dir_all(f.home.join("a/b")).unwrap();
    let link = f.fs.resolve("/a/b/l", Follow::NotLast).await.unwrap();
    link.symlink(&f.fs, "/etc").await.unwrap();
    assert_eq!(
        std::fs::read_link(f.home.join("a/b/l")).unwrap(),
        f.home.join("etc"),
        "the target is stored under the home, whatever the client wrote"
    );
    let link = f.fs.resolve("/a/b/l", Follow::NotLast).await.unwrap();
    assert_eq!(link.readlink(&f.fs).await.unwrap(), "/etc");
    // Moving it changes nothing about where it points.
    std::fs::rename(f.home.join("a/b/l"), f.home.join("l")).unwrap();
    let e = f.fs.resolve("/l", Follow::All).await.unwrap();
    assert_eq!(e.vpath(), "/etc");
    assert!(!e.exists());
    // readlink of something that is not a link.
    let d = f.fs.resolve("/a", Follow::NotLast).await.unwrap();
    assert_eq!(d.readlink(&f.fs).await.unwrap_err(), FsError::NotALink);
    // A planted link to outside reads as a refusal.
    symlink(&f.outside, f.home.join("out")).unwrap();
    let e = f.fs.resolve("/out", Follow::NotLast).await.unwrap();
    assert_eq!(e.readlink(&f.fs).await.unwrap_err(), FsError::Outside);
}

#[tokio::test]
async fn temporary_upload_names_are_refused_and_still_counted() {
    let f = fixture(&[]);
    for vp in ["/.ferry-upload.1.x", "/d/.ferry-upload.abc"] {
        assert_eq!(
            f.fs.resolve(vp, Follow::All).await.unwrap_err(),
            FsError::Reserved,
            "{vp}"
        );
    }
    // A link to such a name is refused too.
    std::fs::write(f.home.join(".ferry-upload.9.big"), vec![0u8; 5000]).unwrap();
    symlink(".ferry-upload.9.big", f.home.join("l")).unwrap();
    assert_eq!(
        f.fs.resolve("/l", Follow::All).await.unwrap_err(),
        FsError::Reserved
    );
    // Not registered as an upload in progress: counted.
    let root = f.fs.resolve("/", Follow::All).await.unwrap();
    assert_eq!(root.usage().await.unwrap(), (5000, 1));
    assert_eq!(
        scan_usage(vec![f.home.display().to_string()], vec![], vec![])
            .await
            .unwrap(),
        (5000, 1)
    );
    // Unless another edge reports it as the temporary file of an upload in
    // progress there.
    assert_eq!(
        scan_usage(
            vec![f.home.display().to_string()],
            vec![],
            vec![".ferry-upload.9.big".into()]
        )
        .await
        .unwrap(),
        (0, 0)
    );
}

#[tokio::test]
async fn special_files_are_never_opened() {
    let f = fixture(&[]);
    let fifo = f.home.join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let e = f.fs.resolve("/fifo", Follow::All).await.unwrap();
    // Would block forever on a FIFO without a writer if opened blocking.
    assert_eq!(e.open_read().await.unwrap_err(), FsError::NotRegular);
    assert_eq!(
        e.set_attrs(
            SetAttrs {
                size: Some(0),
                ..SetAttrs::default()
            },
            None
        )
        .await
        .unwrap_err(),
        FsError::NotRegular
    );
    let d = f.fs.resolve("/", Follow::All).await.unwrap();
    assert_eq!(d.open_read().await.unwrap_err(), FsError::IsADirectory);
}

#[test]
fn mounts_resolve_by_longest_prefix_and_stay_confined() {
    let f = fixture(&[("a", "/m", -1), ("b", "/m/inner", 0)]);
    let base = f.home.parent().unwrap().to_path_buf();
    // Mount points appear in their parent root; mapped directories exist.
    assert!(f.home.join("m").is_dir() && base.join("a/inner").is_dir());
    assert!(base.join("b").is_dir());
    std::fs::write(base.join("b/y"), b"y").unwrap();
    let e = walk(&f.fs, "/m/inner/y").unwrap();
    assert_eq!((e.vpath(), e.mount_name()), ("/m/inner/y", Some("b")));
    assert_eq!(e.domain().folder(), "b");
    assert_eq!(
        walk(&f.fs, "/m/x").unwrap().domain(),
        crate::quota::QuotaDomain::User
    );
    assert_eq!(walk(&f.fs, "/mx").unwrap().mount_name(), None);
    assert!(f.fs.holds_mount("/m") && f.fs.holds_mount("/") && f.fs.holds_mount("/m/inner"));
    assert!(!f.fs.holds_mount("/m/x") && !f.fs.holds_mount("/mx"));
    // `..` above a folder's root continues in the virtual tree, never in
    // the real directory above the mapped path.
    symlink("../..", base.join("b/up")).unwrap();
    assert_eq!(walk(&f.fs, "/m/inner/up").unwrap().vpath(), "/");
    symlink("../../../outside", base.join("b/out")).unwrap();
    assert_eq!(
        walk(&f.fs, "/m/inner/out/secret").unwrap_err(),
        FsError::Outside
    );
    // A link in the home into a folder reaches the folder, not the mount
    // point directory underneath it.
    symlink("m/inner", f.home.join("to-b")).unwrap();
    let e = walk(&f.fs, "/to-b/y").unwrap();
    assert_eq!((e.vpath(), e.mount_name()), ("/m/inner/y", Some("b")));
}

#[test]
fn mount_points_are_not_created_through_planted_links() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    symlink(&outside, home.join("p")).unwrap();
    let folder = dir.path().join("f");
    let fs = UserFs::open_blocking(
        &home,
        None,
        &[vf("f", "/p/q/m", &folder, -1)],
        FsSettings::default(),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing created through the link"
    );
    // The folder is still reached by its path.
    std::fs::write(folder.join("z"), b"z").unwrap();
    assert_eq!(
        fs.walk("/p/q/m/z", Follow::All).unwrap().mount_name(),
        Some("f")
    );
}
