//! Pods and containers on this node, found by name (`--pod NAMESPACE/NAME`)
//! or by id (`--container ID`, a prefix accepted), without the API server.
//!
//! Reads the cpu controller's hierarchy (every directory whose path is a
//! container's kubepods cgroup, [`crate::model::kube::parse`]) and the
//! runtime's OCI bundles for the names ([`crate::host::oci::Bundles`]);
//! produces the containers' cgroup directories, whose `cgroup.procs` are
//! the targets.

use std::path::{Path, PathBuf};

use crate::host::oci::Bundles;
use crate::host::procs::TargetError;
use crate::host::quotas::{MAX_DEPTH, MAX_DIRS, hierarchy_path};
use crate::model::kube::{KubeIdentity, KubeNames, id_matches, parse};

/// One container's cgroup.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerCgroup {
    pub dir: PathBuf,
    /// Its path in the hierarchy.
    pub cgroup: String,
    pub identity: KubeIdentity,
    pub names: Option<KubeNames>,
}

/// Every container cgroup under `mount` (the cpu hierarchy's top).
pub fn containers(mount: &Path, bundles: &Bundles) -> Vec<ContainerCgroup> {
    let mut out = Vec::new();
    let mut stack = vec![(mount.to_path_buf(), 0usize)];
    let mut visited = 0;
    while let Some((dir, depth)) = stack.pop() {
        visited += 1;
        if visited > MAX_DIRS {
            break;
        }
        let cgroup = hierarchy_path(mount, &dir);
        if let Some(identity) = parse(&cgroup).filter(|i| i.container_id.is_some()) {
            let names = identity
                .container_id
                .as_deref()
                .and_then(|id| bundles.names(id));
            out.push(ContainerCgroup {
                dir: dir.clone(),
                cgroup,
                identity,
                names,
            });
            continue; // nothing below a container's cgroup is another one
        }
        if depth >= MAX_DEPTH {
            continue;
        }
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    out.sort_by(|a, b| a.cgroup.cmp(&b.cgroup));
    out
}

/// The cgroup directories of `pods` (`NAMESPACE/NAME`; a pod's sandbox is
/// left out) and `ids` (each prefix must name exactly one container).
pub fn select(
    all: &[ContainerCgroup],
    pods: &[String],
    ids: &[String],
) -> Result<Vec<PathBuf>, TargetError> {
    let mut dirs = Vec::new();
    for pod in pods {
        let (ns, name) = pod.split_once('/').unwrap_or(("default", pod.as_str()));
        let found: Vec<&ContainerCgroup> = all
            .iter()
            .filter(|c| {
                c.names.as_ref().is_some_and(|n| {
                    !n.sandbox
                        && n.namespace.as_deref() == Some(ns)
                        && n.pod.as_deref() == Some(name)
                })
            })
            .collect();
        if found.is_empty() {
            return Err(TargetError::NoSuchPod(format!("{ns}/{name}")));
        }
        dirs.extend(found.iter().map(|c| c.dir.clone()));
    }
    for id in ids {
        let found: Vec<&ContainerCgroup> = all
            .iter()
            .filter(|c| {
                c.identity
                    .container_id
                    .as_deref()
                    .is_some_and(|cid| id_matches(cid, id))
            })
            .collect();
        match found.len() {
            0 => return Err(TargetError::NoSuchContainer(id.clone())),
            1 => dirs.push(found[0].dir.clone()),
            n => {
                return Err(TargetError::AmbiguousContainer {
                    given: id.clone(),
                    n,
                });
            }
        }
    }
    dirs.sort();
    dirs.dedup();
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::put;

    const A: &str = "aaaa1111bbbb2222cccc3333dddd4444eeee5555ffff6666aaaa7777bbbb8888";
    const B: &str = "aaaa9999bbbb2222cccc3333dddd4444eeee5555ffff6666aaaa7777bbbb8888";
    const S: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

    fn tree() -> (tempfile::TempDir, Vec<ContainerCgroup>) {
        let d = tempfile::tempdir().unwrap();
        let cpu = d.path().join("sys/fs/cgroup/cpu");
        put(
            &cpu,
            &format!("kubepods/burstable/pod12345678-aaaa-bbbb-cccc-1234567890ab/{A}/cgroup.procs"),
            "",
        );
        put(
            &cpu,
            &format!("kubepods/burstable/pod12345678-aaaa-bbbb-cccc-1234567890ab/{S}/cgroup.procs"),
            "",
        );
        put(
            &cpu,
            &format!(
                "kubepods.slice/kubepods-pod87654321_aaaa_bbbb_cccc_1234567890ab.slice/\
                 cri-containerd-{B}.scope/cgroup.procs"
            ),
            "",
        );
        put(&cpu, "system.slice/sshd.service/cgroup.procs", "");
        let k8s = d
            .path()
            .join("run/containerd/io.containerd.runtime.v2.task/k8s.io");
        let spec = |ns: &str, pod: &str, c: &str, ty: &str| {
            format!(
                r#"{{"annotations":{{"io.kubernetes.cri.sandbox-namespace":"{ns}",
                "io.kubernetes.cri.sandbox-name":"{pod}","io.kubernetes.cri.container-name":"{c}",
                "io.kubernetes.cri.container-type":"{ty}"}}}}"#
            )
        };
        put(
            &k8s,
            &format!("{A}/config.json"),
            &spec("shop", "encoder-0", "ffmpeg", "container"),
        );
        put(
            &k8s,
            &format!("{S}/config.json"),
            &spec("shop", "encoder-0", "", "sandbox"),
        );
        put(
            &k8s,
            &format!("{B}/config.json"),
            &spec("web", "nginx-1", "nginx", "container"),
        );
        let all = containers(&cpu, &Bundles::defaults(&crate::host::Root::new(d.path())));
        (d, all)
    }

    #[test]
    fn pods_by_name_and_containers_by_id_prefix() {
        let (_d, all) = tree();
        assert_eq!(all.len(), 3, "{all:#?}");
        let dirs = select(&all, &["shop/encoder-0".into()], &[]).unwrap();
        assert_eq!(dirs.len(), 1, "the sandbox is not a workload: {dirs:?}");
        assert!(dirs[0].ends_with(A));
        let dirs = select(&all, &[], &["aaaa99".into()]).unwrap();
        assert!(dirs[0].to_string_lossy().contains(B));
        assert!(matches!(
            select(&all, &[], &["aaaa".into()]),
            Err(TargetError::AmbiguousContainer { n: 2, .. })
        ));
        assert!(matches!(
            select(&all, &["shop/nope".into()], &[]),
            Err(TargetError::NoSuchPod(p)) if p == "shop/nope"
        ));
        assert!(matches!(
            select(&all, &[], &["ffff".into()]),
            Err(TargetError::NoSuchContainer(_))
        ));
        let e = select(&all, &["nope".into()], &[]).unwrap_err().to_string();
        assert!(
            e.contains("default/nope") && e.contains("--container"),
            "{e}"
        );
    }
}
