//! The kernel's CPU list syntax ("0-3,8-11", "0-15:2/4"), as found in sysfs
//! (`online`, `shared_cpu_list`, `cpulist`), `/proc/<pid>/status`
//! (`Cpus_allowed_list`), cgroup cpuset files and `taskset -c`: [`parse`]
//! turns it into sorted CPU numbers, [`format`] turns numbers back into the
//! compact form.
//!
//! Grammar: Documentation/admin-guide/kernel-parameters.rst ("cpu lists") and
//! `bitmap_parselist()` in lib/bitmap-str.c.

use thiserror::Error;

/// Highest CPU number accepted. The kernel's NR_CPUS tops out at 8192; the
/// margin keeps a typo such as "0-4000000000" from allocating gigabytes.
pub const MAX_CPU: u32 = 65_535;

/// Why a CPU list did not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CpuListError {
    /// An item is not a number, a range or a strided range.
    #[error(
        "bad CPU list {list:?}: {item:?} is not a CPU number or range; \
         write e.g. \"0-3,8,10-11\""
    )]
    BadItem { list: String, item: String },
    /// A range runs backwards.
    #[error("bad CPU list {list:?}: range {item:?} runs backwards; write the lower CPU first")]
    Backwards { list: String, item: String },
    /// A number is above [`MAX_CPU`].
    #[error("bad CPU list {list:?}: CPU {cpu} is above the supported maximum {MAX_CPU}")]
    TooLarge { list: String, cpu: u32 },
    /// A stride such as ":0/4" selects nothing or is malformed.
    #[error(
        "bad CPU list {list:?}: stride in {item:?} must be \"used/group\" with 0 < used <= group"
    )]
    BadStride { list: String, item: String },
}

/// Parses a kernel CPU list ("0-3,8-11", "0-7:2/4"; empty or blank: no CPUs).
/// The result is sorted and free of duplicates.
pub fn parse(s: &str) -> Result<Vec<u32>, CpuListError> {
    let mut out = Vec::new();
    for item in s.trim().split(',').map(str::trim).filter(|i| !i.is_empty()) {
        parse_item(s, item, &mut out)?;
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// One comma-separated item: "N", "A-B" or "A-B:used/group".
fn parse_item(list: &str, item: &str, out: &mut Vec<u32>) -> Result<(), CpuListError> {
    let bad = || CpuListError::BadItem {
        list: list.trim().to_string(),
        item: item.to_string(),
    };
    let (range, stride) = match item.split_once(':') {
        Some((r, s)) => (r, Some(s)),
        None => (item, None),
    };
    let (a, b) = match range.split_once('-') {
        Some((a, b)) => (number(a).ok_or_else(bad)?, number(b).ok_or_else(bad)?),
        None => {
            let n = number(range).ok_or_else(bad)?;
            (n, n)
        }
    };
    for cpu in [a, b] {
        if cpu > MAX_CPU {
            return Err(CpuListError::TooLarge {
                list: list.trim().to_string(),
                cpu,
            });
        }
    }
    if a > b {
        return Err(CpuListError::Backwards {
            list: list.trim().to_string(),
            item: item.to_string(),
        });
    }
    let (used, group) = match stride {
        Some(s) => parse_stride(list, item, s)?,
        None => (1, 1),
    };
    // "A-B:used/group": from each group of `group` CPUs starting at A, the
    // first `used` ones.
    out.extend((a..=b).filter(|c| (c - a) % group < used));
    Ok(())
}

fn parse_stride(list: &str, item: &str, s: &str) -> Result<(u32, u32), CpuListError> {
    let bad = || CpuListError::BadStride {
        list: list.trim().to_string(),
        item: item.to_string(),
    };
    let (used, group) = s.split_once('/').ok_or_else(bad)?;
    let used: u32 = used.trim().parse().map_err(|_| bad())?;
    let group: u32 = group.trim().parse().map_err(|_| bad())?;
    if used == 0 || used > group {
        return Err(bad());
    }
    Ok((used, group))
}

fn number(s: &str) -> Option<u32> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Digits only, so a parse failure means overflow: report it as too large.
    Some(s.parse().unwrap_or(u32::MAX))
}

/// Formats CPU numbers as a compact kernel list: sorted, duplicates dropped,
/// runs of consecutive CPUs as ranges ("0-3,8-11"; empty input: "").
pub fn format(cpus: &[u32]) -> String {
    let mut v = cpus.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            v[i].to_string()
        } else {
            format!("{}-{}", v[i], v[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_numbers_and_ranges() {
        assert_eq!(parse("0-3,8-11").unwrap(), vec![0, 1, 2, 3, 8, 9, 10, 11]);
        assert_eq!(parse("5").unwrap(), vec![5]);
        assert_eq!(parse("0,2,4\n").unwrap(), vec![0, 2, 4]);
    }

    #[test]
    fn empty_and_blank_lists_are_empty() {
        assert_eq!(parse("").unwrap(), Vec::<u32>::new());
        assert_eq!(parse("\n").unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn result_is_sorted_and_deduplicated() {
        assert_eq!(parse("8,0-2,1").unwrap(), vec![0, 1, 2, 8]);
    }

    #[test]
    fn strided_ranges_follow_the_kernel() {
        // kernel-parameters.rst: "0-1023:2/256" = 0,1,256,257,512,513,768,769.
        assert_eq!(parse("0-9:2/5").unwrap(), vec![0, 1, 5, 6]);
        assert_eq!(parse("0-7:1/2").unwrap(), vec![0, 2, 4, 6]);
    }

    #[test]
    fn rejects_garbage_with_a_helpful_message() {
        let e = parse("0-3,x").unwrap_err();
        assert!(matches!(e, CpuListError::BadItem { .. }));
        assert!(e.to_string().contains("\"x\""), "{e}");
        assert!(matches!(parse("3-1"), Err(CpuListError::Backwards { .. })));
        assert!(matches!(parse("-1"), Err(CpuListError::BadItem { .. })));
        assert!(matches!(parse("0-"), Err(CpuListError::BadItem { .. })));
        assert!(matches!(
            parse("0-7:0/2"),
            Err(CpuListError::BadStride { .. })
        ));
        assert!(matches!(
            parse("0-7:3/2"),
            Err(CpuListError::BadStride { .. })
        ));
    }

    #[test]
    fn rejects_huge_numbers_instead_of_allocating() {
        assert!(matches!(
            parse("0-4000000000"),
            Err(CpuListError::TooLarge { .. })
        ));
        assert!(matches!(
            parse("99999999999"),
            Err(CpuListError::TooLarge { .. })
        ));
    }

    #[test]
    fn formats_compact_ranges() {
        assert_eq!(format(&[0, 1, 2, 3, 8, 9, 10, 11]), "0-3,8-11");
        assert_eq!(format(&[0, 2]), "0,2");
        assert_eq!(format(&[3, 1, 2, 2]), "1-3");
        assert_eq!(format(&[7]), "7");
        assert_eq!(format(&[]), "");
    }

    #[test]
    fn format_and_parse_round_trip() {
        let cpus = vec![0, 1, 4, 5, 6, 9, 64, 65, 127];
        assert_eq!(parse(&format(&cpus)).unwrap(), cpus);
    }
}
