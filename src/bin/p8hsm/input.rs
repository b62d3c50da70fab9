//! Reading what the user hands p8hsm (shared by the front ends): files (regular files only, so a FIFO cannot block
//! a command forever) and standard input, into buffers wiped on drop, read with no
//! buffer of std's in between (std's stdin keeps an 8 KiB copy of what passed).

use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use zeroize::Zeroizing;

use crate::failure::Failure;

/// Reads `path` — or standard input for `-` — into a buffer wiped on drop: at most
/// `limit + 1` bytes, so the caller can tell an oversized input.
pub fn read(path: &Path, limit: usize) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let failed = |source: io::Error| Failure::File {
        path: path.to_path_buf(),
        source,
    };
    if path == Path::new("-") {
        read_fd(rustix::stdio::stdin(), limit).map_err(failed)
    } else {
        let file = open_regular(path).map_err(failed)?;
        read_fd(&file, limit).map_err(failed)
    }
}

/// Opens a regular file for reading. Opening does not block (a FIFO would wait for a
/// writer), and the opened file — not the path, which could change in between — must
/// be a regular file.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY).bits() as i32)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

/// Reads at most `limit + 1` bytes from `fd` into a buffer wiped on drop, with plain
/// read(2) calls into that buffer.
pub fn read_fd(fd: impl rustix::fd::AsFd, limit: usize) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut bytes = Zeroizing::new(vec![0u8; limit + 1]);
    let mut filled = 0;
    while filled < bytes.len() {
        match rustix::io::read(&fd, &mut bytes[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    // Shrinking keeps the allocation; the bytes beyond `filled` are zeros.
    bytes.truncate(filled);
    Ok(bytes)
}

/// Reads a whole regular file as text (e.g. a PEM public key), at most `limit` bytes.
pub fn read_text(path: &Path, limit: usize) -> Result<String, Failure> {
    let bytes = read(path, limit)?;
    if bytes.len() > limit {
        return Err(Failure::File {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidData, "the file is too large"),
        });
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| Failure::File {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, "the file is not UTF-8"),
    })
}
