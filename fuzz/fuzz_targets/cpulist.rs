//! `cpulist::parse` on any text (sysfs `online`, `shared_cpu_list`, node
//! `cpulist`, cgroup cpuset files, `Cpus_allowed_list`, `--cpus`), and
//! `cpulist::format` on what it returns: sorted, unique, within MAX_CPU,
//! and formatting then parsing gives the same CPUs back.
#![no_main]

use affinity::model::cpulist;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match cpulist::parse(text) {
        Ok(cpus) => {
            assert!(cpus.windows(2).all(|w| w[0] < w[1]), "not sorted/unique");
            assert!(cpus.iter().all(|&c| c <= cpulist::MAX_CPU));
            let again = cpulist::parse(&cpulist::format(&cpus)).expect("format output parses");
            assert_eq!(again, cpus, "format/parse round trip");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
