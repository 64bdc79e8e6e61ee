//! Reads what sizes the target's threads: its executable, arguments, the
//! thread-pool variables of its environment, the libraries it maps, the Go
//! version in its build info and its same-executable children, into
//! [`RuntimeFacts`] for `analyze::fix`.

use std::path::Path;

use crate::model::runtime::{RuntimeFacts, THREAD_ENV};

/// The executable `pid` runs now (None once it is gone).
pub fn exe(pid: u32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// The facts of `pid`, or `None` while it is not yet the program (a gated
/// command still runs affin-trace's own image) or is gone.
pub fn read(pid: u32) -> Option<RuntimeFacts> {
    let proc_dir = Path::new("/proc").join(pid.to_string());
    let exe = exe(pid)?;
    if std::fs::read_link("/proc/self/exe").ok().as_ref() == Some(&exe) {
        return None;
    }
    let nul = |b: Vec<u8>| -> Vec<String> {
        b.split(|&c| c == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    };
    let args = nul(std::fs::read(proc_dir.join("cmdline")).unwrap_or_default());
    let env = nul(std::fs::read(proc_dir.join("environ")).unwrap_or_default())
        .into_iter()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            THREAD_ENV
                .contains(&k)
                .then(|| (k.to_string(), v.to_string()))
        })
        .collect();
    let maps = std::fs::read_to_string(proc_dir.join("maps")).unwrap_or_default();
    let go_version = go_version(&exe);
    let exe_name = exe
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_string()
        })
        .unwrap_or_default();
    let children =
        std::fs::read_to_string(proc_dir.join("task").join(pid.to_string()).join("children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter(|c| std::fs::read_link(format!("/proc/{c}/exe")).ok().as_ref() == Some(&exe))
            .count() as u32;
    let thread_names = crate::host::procs::threads(&crate::host::Root::default(), pid)
        .into_iter()
        .map(|t| crate::host::procs::comm_str(&t.comm))
        .collect();
    Some(RuntimeFacts {
        exe: exe_name,
        args,
        env,
        libs: libs(&maps),
        go_version,
        same_exe_children: children,
        thread_names,
        allowed_cpus: crate::host::topology::allowed_cpus(&crate::host::Root::default(), pid)
            .ok()
            .map(|a| a.cpus.len() as u32)
            .filter(|&n| n > 0),
    })
}

/// Basenames of the shared objects in a /proc/<pid>/maps text, sorted.
pub fn libs(maps: &str) -> Vec<String> {
    let mut v: Vec<String> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.starts_with('/') && p.contains(".so"))
        .filter_map(|p| Path::new(p).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The Go version in an executable's build info, if it is a Go program.
fn go_version(exe: &Path) -> Option<String> {
    use std::io::Read as _;
    // The build info sits in the data segment, well within the first
    // 64 MiB of any Go binary; reading no further bounds the cost.
    let mut buf = Vec::new();
    std::fs::File::open(exe)
        .ok()?
        .take(64 << 20)
        .read_to_end(&mut buf)
        .ok()?;
    parse_go_buildinfo(&buf)
}

/// Go 1.18+ build info (src/debug/buildinfo/buildinfo.go): the 14-byte
/// magic "\xff Go buildinf:", pointer size, flags; with flag 2 the version
/// follows inline as a uvarint-prefixed string at offset 32.
pub fn parse_go_buildinfo(data: &[u8]) -> Option<String> {
    const MAGIC: &[u8] = b"\xff Go buildinf:";
    let at = data.windows(MAGIC.len()).position(|w| w == MAGIC)?;
    let hdr = data.get(at..at + 32)?;
    if hdr[15] & 2 == 0 {
        // Pre-1.18 layout (pointers to the string): too old to follow quotas.
        return Some("go1.17-or-older".into());
    }
    let mut i = at + 32;
    let (mut len, mut shift) = (0usize, 0u32);
    loop {
        let b = *data.get(i)?;
        i += 1;
        len |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
    }
    let v = std::str::from_utf8(data.get(i..i + len)?).ok()?;
    v.starts_with("go").then(|| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildinfo_version_is_read_inline() {
        let mut b = vec![0u8; 7];
        b.extend_from_slice(b"\xff Go buildinf:");
        b.push(8);
        b.push(2);
        b.resize(7 + 32, 0);
        b.push(8);
        b.extend_from_slice(b"go1.19.8");
        assert_eq!(parse_go_buildinfo(&b).as_deref(), Some("go1.19.8"));
        assert_eq!(parse_go_buildinfo(b"not go"), None);
    }

    #[test]
    fn libs_are_basenames_of_mapped_shared_objects() {
        let maps = "7f0-7f1 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libx264.so.164\n\
                    7f1-7f2 r-xp 0 08:01 2 /usr/lib/x86_64-linux-gnu/libgomp.so.1.0.0\n\
                    7f2-7f3 rw-p 0 00:00 0 [heap]\n\
                    7f3-7f4 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libx264.so.164\n";
        assert_eq!(libs(maps), vec!["libgomp.so.1.0.0", "libx264.so.164"]);
    }
}
