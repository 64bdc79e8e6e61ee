//! `task_struct` field offsets from the running kernel's BTF.
//!
//! Rust BPF programs have no CO-RE relocations, so the few fields the programs
//! read (pid, tgid, se.sum_exec_runtime, the task's CPU) are located here, at
//! load time, with the `btfparse` crate (Apache-2.0), and handed to the
//! programs as the `.rodata` global `OFFSETS`. Nothing is baked in for one
//! kernel.

use std::path::Path;

use affinity_common::TaskOffsets;
use btfparse::{Offset, Readable, TypeInformation};
use thiserror::Error;

/// Where the kernel publishes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Why offsets could not be resolved.
#[derive(Debug, Error)]
pub enum BtfError {
    /// The BTF file is missing or unreadable.
    #[error(
        "cannot read kernel BTF at {path}: {source} (affin-trace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y)"
    )]
    Read {
        /// The path tried.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The BTF data did not parse.
    #[error("cannot parse kernel BTF: {0}")]
    Parse(String),
    /// A field the programs need is not there.
    #[error("kernel BTF has no {0}: this kernel's task_struct is not supported")]
    Missing(String),
}

struct Bytes(Vec<u8>);

impl Readable for Bytes {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match start
            .checked_add(buffer.len())
            .and_then(|end| self.0.get(start..end))
        {
            Some(src) => {
                buffer.copy_from_slice(src);
                Ok(())
            }
            None => Err(btfparse::Error::new(
                btfparse::ErrorKind::IOError,
                "read past the end of the BTF data",
            )),
        }
    }
}

/// Directory for the offsets cache: tmpfs, root-owned, emptied at boot
/// (a new kernel always means a new boot).
pub const CACHE_DIR: &str = "/run/affin-trace";

/// Parsing the whole vmlinux BTF takes ~300 ms; the four offsets it yields
/// are cached under [`CACHE_DIR`], keyed by the kernel build (release,
/// version string with its build time) and the BTF size, so later starts
/// skip the parse. Any cache problem falls back to parsing.
pub fn task_offsets_cached(path: &Path, cache_dir: &Path) -> Result<TaskOffsets, BtfError> {
    let key = cache_key(path);
    let file = cache_dir.join("btf-offsets");
    if let Some(key) = &key
        && let Some(off) = read_cache(&file, key)
    {
        return Ok(off);
    }
    let off = task_offsets(path)?;
    if let Some(key) = &key {
        write_cache(cache_dir, &file, key, &off);
    }
    Ok(off)
}

fn cache_key(path: &Path) -> Option<String> {
    let u = nix::sys::utsname::uname().ok()?;
    let size = std::fs::metadata(path).ok()?.len();
    Some(format!(
        "{} {} {size}",
        u.release().to_string_lossy(),
        u.version().to_string_lossy()
    ))
}

/// Parses a cache file: the key line, then "pid tgid sum_exec_runtime cpu".
pub fn parse_cache(text: &str, key: &str) -> Option<TaskOffsets> {
    let mut lines = text.lines();
    if lines.next()? != key {
        return None;
    }
    let v: Vec<u32> = lines
        .next()?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    match v[..] {
        [pid, tgid, sum_exec_runtime, cpu] if tgid == pid + 4 => Some(TaskOffsets {
            pid,
            tgid,
            sum_exec_runtime,
            cpu,
        }),
        _ => None,
    }
}

fn read_cache(file: &Path, key: &str) -> Option<TaskOffsets> {
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    // Only a regular file we own that nobody else can write, never
    // through a symlink.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(file)
        .ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o022 != 0
    {
        return None;
    }
    parse_cache(&std::io::read_to_string(f).ok()?, key)
}

fn write_cache(dir: &Path, file: &Path, key: &str, off: &TaskOffsets) {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
    let _ = std::fs::DirBuilder::new().mode(0o700).create(dir);
    match std::fs::symlink_metadata(dir) {
        Ok(m)
            if m.is_dir()
                && m.uid() == nix::unistd::geteuid().as_raw()
                && m.mode() & 0o022 == 0 => {}
        _ => return,
    }
    let tmp = dir.join(format!(".btf-offsets.{}", std::process::id()));
    let text = format!(
        "{key}\n{} {} {} {}\n",
        off.pid, off.tgid, off.sum_exec_runtime, off.cpu
    );
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
    if written.is_err() || std::fs::rename(&tmp, file).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Resolves the offsets from the BTF file at `path`.
pub fn task_offsets(path: &Path) -> Result<TaskOffsets, BtfError> {
    let data = std::fs::read(path).map_err(|source| BtfError::Read {
        path: path.display().to_string(),
        source,
    })?;
    task_offsets_from(&data)
}

/// Resolves the offsets from raw BTF bytes.
pub fn task_offsets_from(data: &[u8]) -> Result<TaskOffsets, BtfError> {
    let info = TypeInformation::new(&Bytes(data.to_vec()))
        .map_err(|e| BtfError::Parse(format!("{e:?}")))?;
    let task = info
        .id_of("task_struct")
        .ok_or_else(|| BtfError::Missing("struct task_struct".into()))?;
    let byte_offset = |path: &str| -> Result<u32, BtfError> {
        match info.offset_of(task, path) {
            Ok((_, Offset::ByteOffset(o))) => Ok(o),
            _ => Err(BtfError::Missing(format!("task_struct.{path}"))),
        }
    };
    let pid = byte_offset("pid")?;
    let tgid = byte_offset("tgid")?;
    if tgid != pid + 4 {
        // The programs read both with one 8-byte load.
        return Err(BtfError::Missing(format!(
            "task_struct.tgid right after pid (pid at {pid}, tgid at {tgid})"
        )));
    }
    let sum_exec_runtime = byte_offset("se.sum_exec_runtime")?;
    // task_cpu(): thread_info.cpu with CONFIG_THREAD_INFO_IN_TASK (x86, arm64),
    // task_struct.cpu on kernels 5.16-5.18 that moved it there.
    let cpu = byte_offset("thread_info.cpu").or_else(|_| byte_offset("cpu"))?;
    Ok(TaskOffsets {
        pid,
        tgid,
        sum_exec_runtime,
        cpu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_a_parse_error_not_a_panic() {
        let err = task_offsets_from(&[0u8; 64]).unwrap_err();
        assert!(
            matches!(err, BtfError::Parse(_) | BtfError::Missing(_)),
            "{err}"
        );
    }

    #[test]
    fn missing_file_names_the_path_and_the_kernel_option() {
        let err = task_offsets(Path::new("/nonexistent/vmlinux")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/vmlinux"), "{msg}");
        assert!(msg.contains("CONFIG_DEBUG_INFO_BTF"), "{msg}");
    }

    #[test]
    fn cache_round_trip_and_rejections() {
        let ok = "6.18 #1 SMP 123\n1264 1268 200 20\n";
        let off = parse_cache(ok, "6.18 #1 SMP 123").unwrap();
        assert_eq!(
            (off.pid, off.tgid, off.sum_exec_runtime, off.cpu),
            (1264, 1268, 200, 20)
        );
        assert_eq!(parse_cache(ok, "6.19 #1 SMP 123"), None, "other kernel");
        assert_eq!(
            parse_cache("k\n1 2 3 4\n", "k"),
            None,
            "tgid must follow pid"
        );
        assert_eq!(parse_cache("k\n1 5\n", "k"), None, "short");
        assert_eq!(parse_cache("k\nx y z w\n", "k"), None, "garbage");
    }

    #[test]
    fn cached_offsets_equal_parsed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let btf = Path::new(VMLINUX_BTF);
        let parsed = task_offsets(btf).unwrap();
        assert_eq!(task_offsets_cached(btf, dir.path()).unwrap(), parsed);
        // Second call is served from the file written by the first.
        assert!(dir.path().join("btf-offsets").exists());
        assert_eq!(task_offsets_cached(btf, dir.path()).unwrap(), parsed);
    }

    #[test]
    fn running_kernel_offsets_are_plausible() {
        // Every machine this project runs on has BTF (see TOOLCHAIN.md); the
        // values are kernel-specific, so only their shape is checked.
        let Ok(off) = task_offsets(Path::new(VMLINUX_BTF)) else {
            panic!("this test machine must have {VMLINUX_BTF}");
        };
        assert_eq!(off.tgid, off.pid + 4);
        assert!(off.sum_exec_runtime > 0 && off.sum_exec_runtime % 8 == 0);
        assert!(off.pid > 0 && off.pid % 4 == 0);
    }
}
