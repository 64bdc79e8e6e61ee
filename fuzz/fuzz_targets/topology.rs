//! `Topology::read(root)` on a fuzzed sysfs tree (affinity_fuzz::Tree, paths
//! relative to sys/devices/system/): cpu/{online,possible,present,isolated},
//! cpuN/topology/*, cpuN/cache/index*/*, cpuN/cpufreq/cpuinfo_max_freq,
//! cpuN/cpu_capacity, node/online, nodeN/{cpulist,distance}. Then every
//! query the recommender and the report use, the text rendering and JSON.
#![no_main]

use affinity::model::topology::{Topology, render_text};
use affinity_fuzz::Tree;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tree = Tree::new(data, "sys/devices/system");
    let t = match Topology::read(&tree.root()) {
        Ok(t) => t,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let online = t.online();
    assert!(!online.is_empty(), "read succeeded without CPUs");
    for &id in &online {
        let cpu = t.cpu(id).expect("online CPU is known");
        assert!((cpu.core as usize) < t.cores().len(), "core index");
        assert!((cpu.llc as usize) < t.llc_groups().len(), "llc index");
        if let Some(l2) = cpu.l2 {
            assert!((l2 as usize) < t.l2_groups().len(), "l2 index");
        }
        let _ = t.performance(id);
    }
    for a in t.nodes() {
        for b in t.nodes() {
            let _ = t.distance(a.id, b.id);
        }
    }
    let _ = (
        t.packages(),
        t.smt_width(),
        t.efficiency_cpus(),
        t.is_hybrid(),
    );
    let _ = (t.possible(), t.present(), t.isolated(), t.notes());
    let _ = render_text(&t);
    serde_json::to_string(&t).expect("topology serializes");
});
