//! Files the command line writes: private (0600 from creation), flushed, and put in
//! place by a rename, so that a crash, a full disk or a concurrent reader never sees
//! half of one.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use tempfile::NamedTempFile;

use crate::failure::Failure;

fn write_error(path: &Path) -> impl Fn(std::io::Error) -> Failure + '_ {
    move |source| Failure::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// A new file of mode 0600 under a random name in `dir`, holding `bytes` flushed to
/// disk; removed when dropped unless [`put`] gives it its name.
pub fn private_file(dir: &Path, bytes: &[u8]) -> Result<NamedTempFile, Failure> {
    let mut file = tempfile::Builder::new()
        .prefix(".p8hsm-")
        .tempfile_in(dir)
        .map_err(|e| write_error(dir)(without_path(e)))?;
    file.write_all(bytes)
        .and_then(|()| file.as_file().sync_all())
        .map_err(write_error(dir))?;
    Ok(file)
}

/// tempfile's error without the random name it tried, which names nothing the user has
/// (tempfile writes it after the system's error, " at path …").
fn without_path(e: std::io::Error) -> std::io::Error {
    let text = e.to_string();
    match text.split_once(" at path ") {
        Some((system, _)) => std::io::Error::new(e.kind(), system.to_owned()),
        None => e,
    }
}

/// Renames `file` to `path` (replacing what is there), then makes the rename durable
/// (best effort).
pub fn put(file: NamedTempFile, path: &Path) -> Result<(), Failure> {
    file.persist(path).map_err(|e| write_error(path)(e.error))?;
    if let Some(dir) = path.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Writes `bytes` to `path` through a private file in the same directory, renamed over
/// `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    put(private_file(dir, bytes)?, path)
}

/// [`write_atomically`], the new file taking the owner, group and mode of the one it
/// replaces (a new file stays 0600, this user's).
pub fn replace_keeping_owner(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let me = rustix::process::geteuid().as_raw();
    // One look at what is there, before anything is written: a file planted after it is
    // replaced by this user's, never taken for the one to keep the owner of.
    let old = std::fs::symlink_metadata(path).ok().filter(|m| m.is_file());
    if let Some(old) = old.as_ref().filter(|old| old.uid() != me) {
        // A file another user made where others may create files could have been made
        // to receive the token: its owner is not kept, and it is not replaced.
        let open_to_others = std::fs::metadata(dir).map_or(true, |parent| {
            parent.mode() & 0o022 != 0 || (parent.uid() != 0 && parent.uid() != me)
        });
        if open_to_others {
            return Err(Failure::Usage(format!(
                "{} belongs to uid {}, and others may create files in {}: whoever made it \
                 would receive the token; remove it, or keep the token in a directory only \
                 you or root can write to",
                path.display(),
                old.uid(),
                dir.display()
            )));
        }
    }
    let file = private_file(dir, bytes)?;
    if let Some(old) = old {
        let kept = || -> std::io::Result<()> {
            let new = file.as_file().metadata()?;
            if (old.uid(), old.gid()) != (new.uid(), new.gid()) {
                let uid = rustix::fs::Uid::from_raw(old.uid());
                let gid = rustix::fs::Gid::from_raw(old.gid());
                rustix::fs::fchown(file.as_file(), Some(uid), Some(gid))?;
            }
            file.as_file()
                .set_permissions(std::fs::Permissions::from_mode(old.mode() & 0o777))
        };
        kept().map_err(write_error(path))?;
    }
    put(file, path)
}

/// Refuses a path whose existing ancestors another user could rename or replace (as
/// ssh does for its files): each must be root's or this user's, and none writable by
/// group or others without the sticky bit (`/tmp` is sticky: only the owner of an
/// entry may rename it).
pub fn safe_ancestors(path: &Path) -> Result<(), Failure> {
    let uid = rustix::process::geteuid().as_raw();
    for dir in path.ancestors().skip(1) {
        if dir.as_os_str().is_empty() {
            continue;
        }
        let Ok(meta) = std::fs::metadata(dir) else {
            continue; // not there yet: made here, privately
        };
        let mode = meta.permissions().mode();
        let owner_ok = meta.uid() == 0 || meta.uid() == uid;
        let sticky = mode & 0o1000 != 0;
        if !owner_ok || (mode & 0o022 != 0 && !sticky) {
            return Err(Failure::Usage(format!(
                "{} is inside {}, which {}: whoever can could rename or replace what p8hsm \
                 keeps there; choose another --dir",
                path.display(),
                dir.display(),
                if owner_ok {
                    "others may write to without the sticky bit"
                } else {
                    "belongs to another user"
                }
            )));
        }
    }
    Ok(())
}

/// Refuses a directory that is not this user's or that others may write to: whoever
/// could would rename, replace or link what p8hsm keeps there.
pub fn own_directory(dir: &Path) -> Result<(), Failure> {
    let meta = std::fs::metadata(dir).map_err(|source| Failure::File {
        path: dir.to_path_buf(),
        source,
    })?;
    let uid = rustix::process::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o022 != 0 {
        return Err(Failure::Usage(format!(
            "{} is not a directory of yours that only you may write to: p8hsm keeps PINs \
             only in such a directory (chmod go-w it, or give another --dir)",
            dir.display()
        )));
    }
    Ok(())
}
