//! Opening the files affin-trace writes (`--output`, `--plot`,
//! `--timeline`, `docs --out`), usually as root, in paths such as /tmp that
//! other users can write to.
//!
//! - A symbolic link is never followed (O_NOFOLLOW, checked with lstat): one
//!   planted by another user (`/tmp/affin.json -> /root/victim`) would
//!   redirect root's write. `/dev/stdout`, `/dev/stderr` and `/dev/fd/N` are
//!   the exception: they name this process's own descriptors.
//! - An existing file owned by someone else in a sticky or other-writable
//!   directory is refused (the kernel's protected_regular reasoning).
//! - Regular files and new paths are written to a temporary file in the same
//!   directory and renamed over the path only by [`Output::commit`]: a run
//!   that fails (bad input, a trace error) leaves an existing file as it was,
//!   and a hard link planted to another file is replaced, not written through.
//! - Character devices (`/dev/null`, a terminal) and FIFOs are written in
//!   place, never replaced. A FIFO is opened non-blocking, so one with no
//!   reader is an error at once rather than a hang before tracing.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use thiserror::Error;

/// Why an output cannot be opened. Nothing was written.
#[derive(Debug, Error)]
pub enum OutputError {
    /// A symbolic link.
    #[error(
        "{0} is a symbolic link: affin-trace does not write through links (one planted by another user would redirect the write); give the file's own path"
    )]
    Symlink(PathBuf),
    /// Someone else's file where others can plant files.
    #[error(
        "{path} belongs to uid {owner} in {dir}, a directory others can write to: refusing to replace it; choose a path of your own"
    )]
    NotOwned {
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Its directory.
        dir: PathBuf,
    },
    /// A directory, socket or block device.
    #[error("{path} is a {kind}: give a regular file path (or a character device or FIFO)")]
    Kind {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// A FIFO nobody reads.
    #[error("{0} is a FIFO with no reader: start its reader first")]
    NoReader(PathBuf),
    /// Anything else.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// An output being written. Dropped without [`Output::commit`], a temporary
/// file is removed and the path keeps what it had.
pub struct Output {
    path: PathBuf,
    file: File,
    /// The temporary file renamed over `path` on commit (regular files).
    tmp: Option<PathBuf>,
}

/// Opens `path` for writing as described in the module doc.
pub fn open(path: &Path) -> Result<Output, OutputError> {
    let io_err = |source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    };
    if is_own_descriptor(path) {
        // Magic links to our own descriptors: written in place as given.
        let file = OpenOptions::new().write(true).open(path).map_err(io_err)?;
        return Ok(Output {
            path: path.to_path_buf(),
            file,
            tmp: None,
        });
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let existing = match std::fs::symlink_metadata(path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(e)),
    };
    let euid = nix::unistd::geteuid().as_raw();
    if let Some(m) = &existing {
        let ft = m.file_type();
        if ft.is_symlink() {
            return Err(OutputError::Symlink(path.to_path_buf()));
        }
        if ft.is_char_device() || ft.is_fifo() {
            return open_in_place(path, m);
        }
        if !ft.is_file() {
            let kind = if ft.is_dir() {
                "directory"
            } else if ft.is_socket() {
                "socket"
            } else {
                "block device"
            };
            return Err(OutputError::Kind {
                path: path.to_path_buf(),
                kind,
            });
        }
        if m.uid() != euid {
            let d = std::fs::metadata(&dir).map_err(io_err)?;
            if d.mode() & 0o1000 != 0 || d.mode() & 0o002 != 0 {
                return Err(OutputError::NotOwned {
                    path: path.to_path_buf(),
                    owner: m.uid(),
                    dir,
                });
            }
        }
    }
    // A new file beside the path: O_EXCL never opens something planted.
    let name = path
        .file_name()
        .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
    let mut n = 0u32;
    let (tmp, file) = loop {
        let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 100 => n += 1,
            Err(e) => return Err(io_err(e)),
        }
    };
    if let Some(m) = &existing {
        // The replacement keeps the file's mode and, when we may, its owner.
        let _ = file.set_permissions(std::fs::Permissions::from_mode(m.mode() & 0o7777));
        if m.uid() != euid || m.gid() != nix::unistd::getegid().as_raw() {
            let _ = std::os::unix::fs::fchown(&file, Some(m.uid()), Some(m.gid()));
        }
    }
    Ok(Output {
        path: path.to_path_buf(),
        file,
        tmp: Some(tmp),
    })
}

/// `/dev/stdout`, `/dev/stderr`, `/dev/fd/N`, `/proc/self/fd/N`.
fn is_own_descriptor(path: &Path) -> bool {
    let s = path.to_string_lossy();
    matches!(s.as_ref(), "/dev/stdout" | "/dev/stderr")
        || ["/dev/fd/", "/proc/self/fd/", "/proc/thread-self/fd/"]
            .iter()
            .any(|p| s.strip_prefix(p).is_some_and(|n| n.parse::<u32>().is_ok()))
}

fn open_in_place(path: &Path, seen: &std::fs::Metadata) -> Result<Output, OutputError> {
    let file = match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) && seen.file_type().is_fifo() => {
            return Err(OutputError::NoReader(path.to_path_buf()));
        }
        Err(source) => {
            return Err(OutputError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let now = file.metadata().map_err(|source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // Swapped between the lstat and the open: refuse rather than guess.
    if now.dev() != seen.dev() || now.ino() != seen.ino() {
        return Err(OutputError::Io {
            path: path.to_path_buf(),
            source: io::Error::other("it was replaced while being opened"),
        });
    }
    // Non-blocking only to open: writes then wait for the reader as usual.
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    Ok(Output {
        path: path.to_path_buf(),
        file,
        tmp: None,
    })
}

impl Output {
    /// The path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes and, for a regular file, syncs it and renames it over the
    /// path. Every error means the path was not (fully) written.
    pub fn commit(mut self) -> io::Result<()> {
        self.file.flush()?;
        if let Some(tmp) = self.tmp.take() {
            let done = self
                .file
                .sync_all()
                .and_then(|()| std::fs::rename(&tmp, &self.path));
            if done.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            done?;
        }
        Ok(())
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Some(tmp) = &self.tmp {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        let mut o = open(&p).unwrap();
        o.write_all(b"{}").unwrap();
        assert!(!p.exists());
        o.commit().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_uncommitted_output_leaves_the_old_file_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        std::fs::write(&p, "old").unwrap();
        let mut o = open(&p).unwrap();
        o.write_all(b"half").unwrap();
        drop(o);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_symlink_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let link = dir.path().join("affin.json");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let e = open(&link).err().unwrap();
        assert!(matches!(e, OutputError::Symlink(_)), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }

    #[test]
    fn a_hard_link_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let link = dir.path().join("affin.json");
        std::fs::hard_link(&victim, &link).unwrap();
        let mut o = open(&link).unwrap();
        o.write_all(b"report").unwrap();
        o.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "report");
    }

    #[test]
    fn a_directory_is_refused_and_dev_null_written_in_place() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            open(dir.path()),
            Err(OutputError::Kind {
                kind: "directory",
                ..
            })
        ));
        let mut o = open(Path::new("/dev/null")).unwrap();
        o.write_all(b"x").unwrap();
        o.commit().unwrap();
        assert!(Path::new("/dev/null").exists());
    }

    #[test]
    fn a_fifo_without_reader_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(open(&p), Err(OutputError::NoReader(_))));
    }

    #[test]
    fn a_full_device_fails_on_write_or_commit() {
        let mut o = open(Path::new("/dev/full")).unwrap();
        let r = o.write_all(&[b'x'; 8192]).and_then(|()| o.commit());
        assert!(r.is_err());
    }
}
