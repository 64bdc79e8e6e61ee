//! What the programs need from the running kernel's BTF, resolved once per
//! kernel build and cached.
//!
//! - `task_struct` field offsets: Rust BPF programs have no CO-RE
//!   relocations, so the few fields the programs read (pid, tgid,
//!   se.sum_exec_runtime, the task's CPU, comm) are located here, at load
//!   time, with the `btfparse` crate (Apache-2.0), and handed to the
//!   programs as the `.rodata` global `OFFSETS`. Nothing is baked in for one
//!   kernel.
//! - The BTF type ids of the `btf_trace_<tracepoint>` typedefs: all a tp_btf
//!   program needs to attach (the kernel finds the tracepoint from the
//!   typedef's name). [`tracepoint_type_ids`] finds them with a walk over
//!   the raw type records, without parsing the whole BTF, so that
//!   `crate::kernel::probe` does not have to parse it at every start.

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

/// Everything the programs need from the kernel's BTF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelBtf {
    /// `task_struct` field offsets.
    pub offsets: TaskOffsets,
    /// BTF type ids of `btf_trace_<tp>` for [`crate::kernel::probe::TRACEPOINTS`], in
    /// that order (0: not found, so tp_btf cannot attach to it).
    pub tracepoint_ids: [u32; crate::kernel::probe::TRACEPOINTS.len()],
}

struct Bytes<'a>(&'a [u8]);

impl Readable for Bytes<'_> {
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

/// Parsing the whole vmlinux BTF takes ~300 ms; the few numbers it yields
/// are cached under [`CACHE_DIR`], keyed by the kernel build (release,
/// version string with its build time) and the BTF size, so later starts
/// skip the parse. Any cache problem falls back to parsing.
pub fn task_offsets_cached(path: &Path, cache_dir: &Path) -> Result<TaskOffsets, BtfError> {
    kernel_btf_cached(path, cache_dir).map(|k| k.offsets)
}

/// [`KernelBtf`], from the cache when it holds this kernel's, else resolved
/// (and cached).
pub fn kernel_btf_cached(path: &Path, cache_dir: &Path) -> Result<KernelBtf, BtfError> {
    let key = cache_key(path);
    let file = cache_dir.join("btf-offsets");
    if let Some(key) = &key
        && let Some(k) = read_cache(&file, key)
    {
        return Ok(k);
    }
    let data = read_btf(path)?;
    let k = KernelBtf {
        offsets: task_offsets_from(&data)?,
        tracepoint_ids: tracepoint_type_ids(&data, &crate::kernel::probe::TRACEPOINTS)?,
    };
    drop(data);
    if let Some(key) = &key {
        write_cache(cache_dir, &file, key, &k);
    }
    Ok(k)
}

/// The cache's format: its key line starts with this, so that a file
/// written by an older version (other fields) is not misread.
const CACHE_FORMAT: &str = "v4";

fn cache_key(path: &Path) -> Option<String> {
    let u = nix::sys::utsname::uname().ok()?;
    let size = std::fs::metadata(path).ok()?.len();
    Some(format!(
        "{CACHE_FORMAT} {} {} {size}",
        u.release().to_string_lossy(),
        u.version().to_string_lossy()
    ))
}

/// Parses a cache file: the key line, then "pid tgid sum_exec_runtime cpu
/// comm run_delay cgroups css_cpu css_cgroup cgroup_kn kn_id", then the
/// tracepoint type ids.
pub fn parse_cache(text: &str, key: &str) -> Option<KernelBtf> {
    let mut lines = text.lines();
    if lines.next()? != key {
        return None;
    }
    let mut numbers = || -> Option<Vec<u32>> {
        lines
            .next()?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()
    };
    let off = numbers()?;
    let ids = numbers()?;
    let offsets = match off[..] {
        [
            pid,
            tgid,
            sum_exec_runtime,
            cpu,
            comm,
            run_delay,
            cgroups,
            css_cpu,
            css_cgroup,
            cgroup_kn,
            kn_id,
        ] if tgid == pid + 4 => TaskOffsets {
            pid,
            tgid,
            sum_exec_runtime,
            cpu,
            comm,
            run_delay,
            cgroups,
            css_cpu,
            css_cgroup,
            cgroup_kn,
            kn_id,
            _pad: 0,
        },
        _ => return None,
    };
    Some(KernelBtf {
        offsets,
        tracepoint_ids: ids.try_into().ok()?,
    })
}

fn read_cache(file: &Path, key: &str) -> Option<KernelBtf> {
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

fn write_cache(dir: &Path, file: &Path, key: &str, k: &KernelBtf) {
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
    let off = &k.offsets;
    let ids: Vec<String> = k.tracepoint_ids.iter().map(u32::to_string).collect();
    let text = format!(
        "{key}\n{} {} {} {} {} {} {} {} {} {} {}\n{}\n",
        off.pid,
        off.tgid,
        off.sum_exec_runtime,
        off.cpu,
        off.comm,
        off.run_delay,
        off.cgroups,
        off.css_cpu,
        off.css_cgroup,
        off.cgroup_kn,
        off.kn_id,
        ids.join(" ")
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

fn read_btf(path: &Path) -> Result<Vec<u8>, BtfError> {
    std::fs::read(path).map_err(|source| BtfError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Resolves the offsets from the BTF file at `path`.
pub fn task_offsets(path: &Path) -> Result<TaskOffsets, BtfError> {
    task_offsets_from(&read_btf(path)?)
}

/// Resolves the offsets from raw BTF bytes.
pub fn task_offsets_from(data: &[u8]) -> Result<TaskOffsets, BtfError> {
    let info = TypeInformation::new(&Bytes(data)).map_err(|e| BtfError::Parse(format!("{e:?}")))?;
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
    let comm = byte_offset("comm")?;
    // Optional: without CONFIG_SCHED_INFO the programs read a clock instead.
    let run_delay = byte_offset("sched_info.run_delay").unwrap_or(0);
    // Optional: without them neighbours are reported without a cgroup.
    let cg = cgroup_offsets(&info, byte_offset("cgroups").ok()).unwrap_or_default();
    Ok(TaskOffsets {
        pid,
        tgid,
        sum_exec_runtime,
        cpu,
        comm,
        run_delay,
        cgroups: cg[0],
        css_cpu: cg[1],
        css_cgroup: cg[2],
        cgroup_kn: cg[3],
        kn_id: cg[4],
        _pad: 0,
    })
}

/// The offsets of `task->cgroups->subsys[cpu_cgrp_id]->cgroup->kn->id`:
/// `[task.cgroups, css_set.subsys + 8 * cpu_cgrp_id, css.cgroup, cgroup.kn,
/// kernfs_node.id]`. The cpu controller's, not the default hierarchy's
/// (`css_set.dfl_cgrp`): on a hybrid host the cpu controller is on a v1
/// hierarchy and the unified one holds no controllers. `None` without
/// CONFIG_CGROUP_SCHED or any of the fields.
fn cgroup_offsets(info: &TypeInformation, cgroups: Option<u32>) -> Option<[u32; 5]> {
    let cgroups = cgroups?;
    let field = |ty: &str, path: &str| -> Option<u32> {
        match info.offset_of(info.id_of(ty)?, path) {
            Ok((_, Offset::ByteOffset(o))) => Some(o),
            _ => None,
        }
    };
    let subsys = field("css_set", "subsys")?;
    let cpu_id = match info.from_id(info.id_of("cgroup_subsys_id")?)? {
        btfparse::TypeVariant::Enum(e) => e
            .named_value_list()
            .iter()
            .find(|v| v.name == "cpu_cgrp_id")
            .map(|v| match v.value {
                btfparse::Integer32Value::Signed(x) => x as u32,
                btfparse::Integer32Value::Unsigned(x) => x,
            })?,
        _ => return None,
    };
    Some([
        cgroups,
        subsys + 8 * cpu_id,
        field("cgroup_subsys_state", "cgroup")?,
        field("cgroup", "kn")?,
        field("kernfs_node", "id")?,
    ])
}

/// BTF kinds (include/uapi/linux/btf.h) whose records this walk must size.
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;
const KIND_MAX: u32 = 19;

/// The little-endian u32 at byte `at` of raw BTF, if it is there.
pub(crate) fn raw_u32(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The type section (its byte range in `data`) and the string section of
/// raw BTF, from its header: magic u16, version u8, flags u8, hdr_len,
/// type_off, type_len, str_off, str_len (u32s, offsets relative to the
/// header end).
pub(crate) fn raw_sections(data: &[u8]) -> Result<(std::ops::Range<usize>, &[u8]), BtfError> {
    let bad = |what: &str| BtfError::Parse(format!("raw BTF: {what}"));
    if data.get(..2) != Some(&0xeb9f_u16.to_le_bytes()[..]) {
        return Err(bad("no little-endian BTF magic"));
    }
    let field = |i: usize| {
        raw_u32(data, 4 + 4 * i)
            .map(|v| v as usize)
            .ok_or_else(|| bad("short header"))
    };
    let hdr_len = field(0)?;
    let (type_off, type_len, str_off, str_len) = (field(1)?, field(2)?, field(3)?, field(4)?);
    let types = hdr_len
        .checked_add(type_off)
        .and_then(|s| Some(s..s.checked_add(type_len)?))
        .filter(|r| r.end <= data.len())
        .ok_or_else(|| bad("type section out of bounds"))?;
    let strings = hdr_len
        .checked_add(str_off)
        .and_then(|s| data.get(s..s.checked_add(str_len)?))
        .ok_or_else(|| bad("string section out of bounds"))?;
    Ok((types, strings))
}

/// The type ids of the typedefs `btf_trace_<tp>` for each of `tracepoints`
/// (0 where there is none), found by walking the raw type records: each is
/// a 12-byte `struct btf_type` followed by kind-specific data whose size
/// follows from the kind and `vlen` (Documentation/bpf/btf.rst, "Type
/// encoding"). This reads no more than it must: no type is built, only
/// typedef names are compared.
pub fn tracepoint_type_ids<const N: usize>(
    data: &[u8],
    tracepoints: &[&str; N],
) -> Result<[u32; N], BtfError> {
    let bad = |what: &str| BtfError::Parse(format!("raw BTF: {what}"));
    let u32_at = |at: usize| raw_u32(data, at);
    let (types, strings) = raw_sections(data)?;
    let wanted: Vec<String> = tracepoints
        .iter()
        .map(|t| format!("btf_trace_{t}"))
        .collect();
    let mut ids = [0u32; N];
    let mut at = types.start;
    let mut id = 1u32;
    while at < types.end {
        let (name_off, info) = match (u32_at(at), u32_at(at + 4)) {
            (Some(n), Some(i)) => (n as usize, i),
            _ => return Err(bad("truncated type record")),
        };
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let extra = match kind {
            KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
            KIND_ARRAY => 12,
            KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
            KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
            k if k <= KIND_MAX => 0,
            k => return Err(bad(&format!("unknown kind {k} at type {id}"))),
        };
        if kind == KIND_TYPEDEF
            && let Some(name) = strings.get(name_off..)
            && name.starts_with(b"btf_trace_")
        {
            let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
            if let Some(i) = wanted.iter().position(|w| w.as_bytes() == &name[..end]) {
                ids[i] = id;
            }
        }
        at += 12 + extra;
        id += 1;
    }
    if at != types.end {
        return Err(bad("the last type record overruns the section"));
    }
    Ok(ids)
}

/// A little-endian BTF blob: the 24-byte header (magic, version 1, no
/// flags), then `types` (raw type records) and `strings` (the string
/// section, starting with its empty string).
pub fn raw_blob(types: &[u8], strings: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(24 + types.len() + strings.len());
    b.extend_from_slice(&[0x9f, 0xeb, 1, 0]);
    for v in [
        24,
        0,
        types.len() as u32,
        types.len() as u32,
        strings.len() as u32,
    ] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(types);
    b.extend_from_slice(strings);
    b
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
        let ok = "v4 6.18 #1 SMP 123\n1264 1268 200 20 3000 1100 2900 8 120 72 80\n\
                  10306 10310 10302 10304 10316 10326 11999\n";
        let k = parse_cache(ok, "v4 6.18 #1 SMP 123").unwrap();
        let off = k.offsets;
        assert_eq!(
            (
                off.pid,
                off.tgid,
                off.sum_exec_runtime,
                off.cpu,
                off.comm,
                off.run_delay
            ),
            (1264, 1268, 200, 20, 3000, 1100)
        );
        assert_eq!(
            (
                off.cgroups,
                off.css_cpu,
                off.css_cgroup,
                off.cgroup_kn,
                off.kn_id
            ),
            (2900, 8, 120, 72, 80)
        );
        assert_eq!(
            k.tracepoint_ids,
            [10306, 10310, 10302, 10304, 10316, 10326, 11999]
        );
        assert_eq!(parse_cache(ok, "v4 6.19 #1 SMP 123"), None, "other kernel");
        assert_eq!(
            parse_cache("k\n1 2 3 4 5 6 7 8 9 10 11\n1 2 3 4 5 6 7\n", "k"),
            None,
            "tgid must follow pid"
        );
        assert_eq!(parse_cache("k\n1 5\n", "k"), None, "short");
        assert_eq!(parse_cache("k\nx y z w\n", "k"), None, "garbage");
        assert_eq!(
            parse_cache("k\n1264 1268 200 20 3000 0 0 0 0 0 0\n1 2 3\n", "k"),
            None,
            "too few ids"
        );
    }

    #[test]
    fn cached_values_equal_parsed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let btf = Path::new(VMLINUX_BTF);
        let parsed = task_offsets(btf).unwrap();
        assert_eq!(task_offsets_cached(btf, dir.path()).unwrap(), parsed);
        // Second call is served from the file written by the first.
        assert!(dir.path().join("btf-offsets").exists());
        let k = kernel_btf_cached(btf, dir.path()).unwrap();
        assert_eq!(k.offsets, parsed);
        let data = std::fs::read(btf).unwrap();
        assert_eq!(
            k.tracepoint_ids,
            tracepoint_type_ids(&data, &crate::kernel::probe::TRACEPOINTS).unwrap()
        );
    }

    #[test]
    fn raw_walk_finds_the_ids_a_full_parse_finds() {
        // aya's full parse of the running kernel's BTF is the reference.
        let data = std::fs::read(VMLINUX_BTF).unwrap();
        let ids = tracepoint_type_ids(&data, &crate::kernel::probe::TRACEPOINTS).unwrap();
        let full = aya::Btf::parse(&data, aya::Endianness::Little).unwrap();
        for (tp, id) in crate::kernel::probe::TRACEPOINTS.iter().zip(ids) {
            let want = full
                .id_by_type_name_kind(&format!("btf_trace_{tp}"), aya_obj::btf::BtfKind::Typedef)
                .unwrap();
            assert_eq!(id, want, "{tp}");
        }
    }

    use super::raw_blob as blob;

    fn record(name_off: u32, kind: u32, vlen: u32, size_or_type: u32) -> Vec<u8> {
        let mut r = name_off.to_le_bytes().to_vec();
        r.extend_from_slice(&((kind << 24) | vlen).to_le_bytes());
        r.extend_from_slice(&size_or_type.to_le_bytes());
        r
    }

    #[test]
    fn raw_walk_sizes_records_by_kind() {
        let strings = b"\0btf_trace_a\0s\0btf_trace_b\0";
        let mut t = Vec::new();
        t.extend(record(0, KIND_INT, 0, 4)); // id 1
        t.extend([0u8; 4]);
        t.extend(record(13, KIND_STRUCT, 2, 8)); // id 2 "s": two members
        t.extend([0u8; 24]);
        t.extend(record(1, KIND_TYPEDEF, 0, 1)); // id 3: btf_trace_a
        t.extend(record(0, KIND_FUNC_PROTO, 1, 0)); // id 4: one param
        t.extend([0u8; 8]);
        t.extend(record(15, KIND_TYPEDEF, 0, 4)); // id 5: btf_trace_b
        t.extend(record(15, KIND_STRUCT, 0, 0)); // id 6: same name, not a typedef
        let data = blob(&t, strings);
        assert_eq!(
            tracepoint_type_ids(&data, &["b", "a", "c"]).unwrap(),
            [5, 3, 0]
        );
        // A record cut short, an unknown kind, no magic: errors, not panics.
        assert!(tracepoint_type_ids(&blob(&t[..t.len() - 4], strings), &["a"]).is_err());
        let mut odd = t.clone();
        odd.extend(record(0, 31, 0, 0));
        assert!(tracepoint_type_ids(&blob(&odd, strings), &["a"]).is_err());
        assert!(tracepoint_type_ids(&[0u8; 64], &["a"]).is_err());
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
        assert!(off.comm > 0);
        // CONFIG_SCHED_INFO is on here (TASK_DELAY_ACCT); 0 would mean "none".
        assert!(off.run_delay > 0 && off.run_delay % 8 == 0);
        // CONFIG_CGROUP_SCHED is on here: the cpu controller's chain.
        assert!(off.cgroups > 0 && off.css_cpu > 0 && off.cgroup_kn > 0);
        assert!(off.css_cpu % 8 == 0 && off.kn_id % 8 == 0);
    }
}
