//! Files tracer writes as root (SVG diagrams here; recordings in the live tests): private,
//! never through a symlink, never over an existing file without `--force`. No root needed:
//! a replay writes SVGs like a live run.
use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn tracer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(args)
        .output()
        .expect("run tracer")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tracer-files-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/normal.jsonl");

#[test]
fn svg_files_are_private_and_never_replace_a_file_or_follow_a_link() {
    let root = scratch("svg");
    let dir = root.join("diagrams");
    let d = dir.to_str().unwrap();
    let out = tracer(&["replay", FIXTURE, "-q", "--svg", d]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&dir), 0o700, "a directory tracer creates is private");
    let svgs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!svgs.is_empty());
    for s in &svgs {
        assert_eq!(mode(s), 0o600, "{}", s.display());
    }

    // The same replay again: every name exists. Refused, with the way out named, and the
    // file left as it was.
    let first = svgs[0].clone();
    std::fs::write(&first, b"mine").unwrap();
    let out = tracer(&["replay", FIXTURE, "-q", "--svg", d]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("already exists (a file)") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(&first).unwrap(), b"mine", "the refused file");

    // --force replaces the existing regular file with a private diagram.
    std::fs::set_permissions(&first, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = tracer(&["replay", FIXTURE, "-q", "--svg", d, "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&first), 0o600);
    assert!(std::fs::read_to_string(&first).unwrap().contains("<svg "));

    // A symlink planted at a name: not followed, with or without --force.
    let victim = root.join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    for s in &svgs {
        std::fs::remove_file(s).unwrap();
        std::os::unix::fs::symlink(&victim, s).unwrap();
    }
    let out = tracer(&["replay", FIXTURE, "-q", "--svg", d]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("a symbolic link"), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");

    let out = tracer(&["replay", FIXTURE, "-q", "--svg", d, "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"precious",
        "the link's target is untouched"
    );
    for s in &svgs {
        let m = std::fs::symlink_metadata(s).unwrap();
        assert!(m.is_file(), "{} was replaced by a file", s.display());
        assert_eq!(mode(s), 0o600);
        assert!(std::fs::read_to_string(s).unwrap().contains("<svg "));
    }
    let _ = std::fs::remove_dir_all(&root);
}
