//! Files tracer writes: recordings and SVG diagrams. tracer runs as root and they list every
//! connection, process, uid and cgroup on the host, so they are created private (mode 0600,
//! whatever the umask), never through a symlink, and never over an existing file unless the
//! user said `--force` (then the existing entry itself is replaced, not what a link points
//! to).
use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::Path,
};

/// Mode of the files tracer writes.
pub const FILE_MODE: u32 = 0o600;
/// Mode of a directory tracer creates for them (`--svg DIR`).
pub const DIR_MODE: u32 = 0o700;

/// Creates `path` for writing: a new file, mode 0600, not through a symlink. An existing
/// entry at `path` (a file, or a link planted there) is an error naming `--force`, unless
/// `force` is set: then that entry is removed first (a link is removed, its target is left
/// alone) and the new file is still created exclusively, so a link planted again in between
/// makes this fail instead of being followed.
pub fn create_private(path: &Path, force: bool) -> io::Result<File> {
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let what = match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => "a symbolic link",
                Ok(m) if m.is_dir() => "a directory",
                _ => "a file",
            };
            if !force || what == "a directory" {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} already exists ({what}){}",
                        path.display(),
                        if what == "a directory" {
                            ""
                        } else {
                            ": tracer does not write over files or through links; pass --force to replace it, or choose another path"
                        }
                    ),
                ));
            }
            std::fs::remove_file(path)?;
            open()
        }
        r => r,
    }
}

/// Creates the directory `dir` (and its parents) mode 0700 if it is missing; an existing
/// one is used as it is.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{io::Write as _, os::unix::fs::PermissionsExt as _};

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("tracer-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn new_files_are_private_whatever_the_umask() {
        let d = scratch("mode");
        let p = d.join("rec.jsonl");
        // SAFETY: umask only changes this process's file-creation mask.
        let old = unsafe { libc::umask(0) };
        let f = create_private(&p, false);
        // SAFETY: as above, restoring it.
        unsafe { libc::umask(old) };
        drop(f.unwrap());
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_planted_symlink_is_never_followed() {
        let d = scratch("link");
        let target = d.join("victim");
        std::fs::write(&target, b"precious").unwrap();
        let link = d.join("rec.jsonl");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = create_private(&link, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(e.to_string().contains("a symbolic link"), "{e}");
        assert!(e.to_string().contains("--force"), "{e}");
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        // --force replaces the link itself; the target is untouched.
        let mut f = create_private(&link, true).unwrap();
        f.write_all(b"new").unwrap();
        drop(f);
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        assert!(
            !std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&link).unwrap(), b"new");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_existing_file_is_replaced_only_with_force() {
        let d = scratch("exists");
        let p = d.join("rec.jsonl");
        std::fs::write(&p, b"old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = create_private(&p, false).unwrap_err();
        assert!(e.to_string().contains("already exists (a file)"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        drop(create_private(&p, true).unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the replacement is private too");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_created_directory_is_private() {
        let d = scratch("dir");
        let svg = d.join("a/b");
        create_private_dir(&svg).unwrap();
        let mode = std::fs::metadata(&svg).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let _ = std::fs::remove_dir_all(&d);
    }
}
