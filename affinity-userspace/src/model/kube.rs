//! Kubernetes identities from cgroup paths, without the API server.
//!
//! The kubelet names a pod's cgroup after its QoS class and UID, and the
//! container runtime names the container's cgroup after its id, so the
//! path alone says which pod and container a task belongs to. Both kubelet
//! cgroup drivers are recognised (pkg/kubelet/cm/cgroup_manager_linux.go):
//!
//! - cgroupfs: `/kubepods[/burstable|/besteffort]/pod<uid>/<container>`,
//!   where `<container>` is the bare id (containerd, docker) or
//!   `crio-<id>` (cri-o);
//! - systemd: `/kubepods.slice[/kubepods-<qos>.slice]/kubepods[-<qos>]-pod<uid>.slice/<scope>`,
//!   the UID's dashes escaped as `_` (systemd unit names reserve `-` for
//!   the slice hierarchy), `<scope>` one of `cri-containerd-<id>.scope`,
//!   `crio-<id>.scope`, `docker-<id>.scope`; containerd running under a
//!   systemd service is handed the scope as `<pod slice>:cri-containerd:<id>`
//!   (the OCI bundle's `linux.cgroupsPath`), which is parsed too.
//!
//! The path may be a mount path (`/sys/fs/cgroup/cpu,cpuacct/kubepods/...`
//! on v1, `/sys/fs/cgroup/kubepods.slice/...` on v2, `/sys/fs/cgroup/cpu/...`
//! on a hybrid host) or a hierarchy path (`/kubepods/...`, as
//! `/proc/<pid>/cgroup` prints it); anything before the first `kubepods`
//! component is ignored (kind and nested kubelets add a prefix). Names
//! (namespace, pod, container) are not in the path: they come from the
//! runtime's OCI bundle annotations ([`names_from_annotations`]).

use serde::Serialize;

/// The pod's QoS class, as the kubelet's cgroup tier names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Qos {
    /// No tier: pods directly under `kubepods`.
    Guaranteed,
    Burstable,
    BestEffort,
}

/// Which kubelet cgroup driver named the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    Cgroupfs,
    Systemd,
}

/// The container runtime, when the container's cgroup name says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Containerd,
    Crio,
    Docker,
}

/// A cgroup path's Kubernetes identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KubeIdentity {
    pub qos: Qos,
    pub driver: Driver,
    /// The pod's UID in its dashed form (systemd's `_` escaping undone).
    pub pod_uid: String,
    /// The container's id; `None` for the pod-level cgroup.
    pub container_id: Option<String>,
    /// From the scope name; `None` with the cgroupfs driver's bare ids.
    pub runtime: Option<Runtime>,
}

/// Names of a container as its runtime recorded them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KubeNames {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
    pub pod_uid: Option<String>,
    /// True for a pod sandbox (the pause container), not a workload.
    pub sandbox: bool,
}

/// Parses `path` (see the module doc); `None` when it is not a pod's or a
/// container's cgroup.
pub fn parse(path: &str) -> Option<KubeIdentity> {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let start = comps.iter().position(|c| c.starts_with("kubepods"))?;
    let rest = &comps[start..];
    if rest[0] == "kubepods" {
        parse_cgroupfs(&rest[1..])
    } else if rest[0] == "kubepods.slice" {
        parse_systemd(&rest[1..])
    } else if rest[0].starts_with("kubepods-") && rest[0].contains(':') {
        // An OCI `linux.cgroupsPath` in systemd form ("slice:prefix:name").
        parse_systemd(rest)
    } else {
        None
    }
}

fn qos_of(tier: &str) -> Option<Qos> {
    match tier {
        "burstable" => Some(Qos::Burstable),
        "besteffort" => Some(Qos::BestEffort),
        _ => None,
    }
}

/// A pod UID as the kubelet writes it: 32 hex digits in 8-4-4-4-12 groups.
/// Static pods (mirror pods) have a hash instead; accept 32 bare hex
/// digits too, and any dashed run of hex.
fn valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        && uid.chars().filter(char::is_ascii_hexdigit).count() >= 8
}

/// A container id: hex (containerd, cri-o and docker use 64 digits; short
/// ids are accepted for fixtures and tests).
fn valid_id(id: &str) -> bool {
    id.len() >= 8 && id.chars().all(|c| c.is_ascii_hexdigit())
}

/// `kubepods/[tier/]pod<uid>[/<container>]`, after `kubepods`.
fn parse_cgroupfs(rest: &[&str]) -> Option<KubeIdentity> {
    let (qos, rest) = match rest.first().and_then(|t| qos_of(t)) {
        Some(q) => (q, &rest[1..]),
        None => (Qos::Guaranteed, rest),
    };
    let uid = rest.first()?.strip_prefix("pod")?;
    if !valid_uid(uid) {
        return None;
    }
    let (container_id, runtime) = match rest.get(1) {
        None => (None, None),
        Some(c) => match c.strip_prefix("crio-") {
            Some(id) if valid_id(id) => (Some(id.to_string()), Some(Runtime::Crio)),
            Some(_) => return None,
            None if valid_id(c) => (Some((*c).to_string()), None),
            None => return None,
        },
    };
    if rest.len() > 2 {
        return None;
    }
    Some(KubeIdentity {
        qos,
        driver: Driver::Cgroupfs,
        pod_uid: uid.to_string(),
        container_id,
        runtime,
    })
}

/// `[kubepods-<tier>.slice/]kubepods[-<tier>]-pod<uid>.slice[/<scope>]`,
/// after `kubepods.slice`.
fn parse_systemd(rest: &[&str]) -> Option<KubeIdentity> {
    let mut rest = rest;
    let mut tier_qos = None;
    if let Some(t) = rest.first().and_then(|c| c.strip_prefix("kubepods-"))
        && let Some(tier) = t.strip_suffix(".slice")
        && let Some(q) = qos_of(tier)
    {
        tier_qos = Some(q);
        rest = &rest[1..];
    }
    let first = rest.first()?;
    // containerd under a systemd service: "<pod slice>:cri-containerd:<id>".
    let (pod_slice, inline_scope) = match first.split_once(':') {
        Some((slice, scope)) => (slice, Some(scope)),
        None => (*first, None),
    };
    let name = pod_slice
        .strip_suffix(".slice")?
        .strip_prefix("kubepods-")?;
    let (qos, uid) = match name.split_once("-pod") {
        Some((tier, uid)) => (qos_of(tier)?, uid),
        None => (Qos::Guaranteed, name.strip_prefix("pod")?),
    };
    if tier_qos.is_some_and(|q| q != qos) {
        return None; // a burstable pod slice under the besteffort tier
    }
    let uid = uid.replace('_', "-");
    if !valid_uid(&uid) {
        return None;
    }
    let scope = match (inline_scope, rest.get(1)) {
        (Some(s), None) => Some(scope_inline(s)?),
        (None, Some(s)) => Some(scope_unit(s)?),
        (None, None) => None,
        (Some(_), Some(_)) => return None,
    };
    if rest.len() > 2 {
        return None;
    }
    let (container_id, runtime) = match scope {
        Some((id, rt)) => (Some(id), Some(rt)),
        None => (None, None),
    };
    Some(KubeIdentity {
        qos,
        driver: Driver::Systemd,
        pod_uid: uid,
        container_id,
        runtime,
    })
}

/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`.
/// cri-o's `crio-conmon-<id>.scope` holds its monitor, not the container:
/// not a container's cgroup.
fn scope_unit(s: &str) -> Option<(String, Runtime)> {
    let stem = s.strip_suffix(".scope")?;
    let (id, rt) = if let Some(id) = stem.strip_prefix("cri-containerd-") {
        (id, Runtime::Containerd)
    } else if let Some(id) = stem.strip_prefix("crio-") {
        (id, Runtime::Crio)
    } else if let Some(id) = stem.strip_prefix("docker-") {
        (id, Runtime::Docker)
    } else {
        return None;
    };
    valid_id(id).then(|| (id.to_string(), rt))
}

/// `cri-containerd:<id>` (and the same for `crio`, `docker`).
fn scope_inline(s: &str) -> Option<(String, Runtime)> {
    let (prefix, id) = s.split_once(':')?;
    let rt = match prefix {
        "cri-containerd" => Runtime::Containerd,
        "crio" => Runtime::Crio,
        "docker" => Runtime::Docker,
        _ => return None,
    };
    valid_id(id).then(|| (id.to_string(), rt))
}

/// Annotation keys containerd's CRI plugin writes into the OCI bundle
/// (internal/cri/annotations/annotations.go).
pub mod containerd_keys {
    pub const NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
    pub const POD: &str = "io.kubernetes.cri.sandbox-name";
    pub const POD_UID: &str = "io.kubernetes.cri.sandbox-uid";
    pub const CONTAINER: &str = "io.kubernetes.cri.container-name";
    pub const TYPE: &str = "io.kubernetes.cri.container-type";
}

/// Annotation keys cri-o writes (pkg/annotations, the kubelet's labels).
pub mod crio_keys {
    pub const NAMESPACE: &str = "io.kubernetes.pod.namespace";
    pub const POD: &str = "io.kubernetes.pod.name";
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    pub const CONTAINER: &str = "io.kubernetes.container.name";
    pub const TYPE: &str = "io.kubernetes.cri-o.ContainerType";
}

/// The names in an OCI bundle's `annotations` (either runtime's keys).
pub fn names_from_annotations<'a>(
    annotations: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> KubeNames {
    let mut n = KubeNames::default();
    for (k, v) in annotations {
        let v = Some(v.to_string()).filter(|v| !v.is_empty());
        match k {
            containerd_keys::NAMESPACE | crio_keys::NAMESPACE => n.namespace = v,
            containerd_keys::POD | crio_keys::POD => n.pod = v,
            containerd_keys::POD_UID | crio_keys::POD_UID => n.pod_uid = v,
            containerd_keys::CONTAINER | crio_keys::CONTAINER => n.container = v,
            containerd_keys::TYPE | crio_keys::TYPE => {
                n.sandbox = v.as_deref() == Some("sandbox");
            }
            _ => {}
        }
    }
    n
}

/// Whether a container id (or a prefix of one, as `--container` takes it)
/// names `id`.
pub fn id_matches(id: &str, given: &str) -> bool {
    !given.is_empty() && id.starts_with(&given.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "7f3c2a10-5b6d-4e8f-9a0b-1c2d3e4f5a6b";
    const UID_SD: &str = "7f3c2a10_5b6d_4e8f_9a0b_1c2d3e4f5a6b";
    const ID: &str = "9a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

    fn id(qos: Qos, driver: Driver, container: bool, runtime: Option<Runtime>) -> KubeIdentity {
        KubeIdentity {
            qos,
            driver,
            pod_uid: UID.into(),
            container_id: container.then(|| ID.into()),
            runtime,
        }
    }

    #[test]
    fn cgroupfs_driver_every_tier_pod_and_container() {
        use Driver::Cgroupfs as C;
        for (path, qos) in [
            (format!("/kubepods/pod{UID}/{ID}"), Qos::Guaranteed),
            (format!("/kubepods/burstable/pod{UID}/{ID}"), Qos::Burstable),
            (
                format!("/kubepods/besteffort/pod{UID}/{ID}"),
                Qos::BestEffort,
            ),
        ] {
            assert_eq!(parse(&path), Some(id(qos, C, true, None)), "{path}");
            let pod = path.rsplit_once('/').unwrap().0;
            assert_eq!(parse(pod), Some(id(qos, C, false, None)), "{pod}");
        }
        assert_eq!(
            parse(&format!("/kubepods/burstable/pod{UID}/crio-{ID}")),
            Some(id(Qos::Burstable, C, true, Some(Runtime::Crio)))
        );
    }

    #[test]
    fn systemd_driver_every_tier_and_runtime_with_the_uid_unescaped() {
        use Driver::Systemd as S;
        let tiers = [
            (
                format!("/kubepods.slice/kubepods-pod{UID_SD}.slice"),
                Qos::Guaranteed,
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SD}.slice"
                ),
                Qos::Burstable,
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SD}.slice"
                ),
                Qos::BestEffort,
            ),
        ];
        for (pod, qos) in &tiers {
            assert_eq!(parse(pod), Some(id(*qos, S, false, None)), "{pod}");
            for (scope, rt) in [
                (format!("cri-containerd-{ID}.scope"), Runtime::Containerd),
                (format!("crio-{ID}.scope"), Runtime::Crio),
                (format!("docker-{ID}.scope"), Runtime::Docker),
            ] {
                let p = format!("{pod}/{scope}");
                assert_eq!(parse(&p), Some(id(*qos, S, true, Some(rt))), "{p}");
            }
        }
    }

    #[test]
    fn mount_paths_on_v1_v2_and_hybrid_and_a_nested_prefix() {
        let tail = format!("kubepods/burstable/pod{UID}/{ID}");
        for prefix in [
            "/sys/fs/cgroup/cpu,cpuacct/",      // v1, combined controllers
            "/sys/fs/cgroup/cpu/",              // hybrid: cpu on v1
            "/sys/fs/cgroup/",                  // v2
            "/sys/fs/cgroup/kubelet/",          // kind's nested kubelet
            "/host/sys/fs/cgroup/cpu,cpuacct/", // the agent's own mount
        ] {
            let p = format!("{prefix}{tail}");
            assert_eq!(
                parse(&p),
                Some(id(Qos::Burstable, Driver::Cgroupfs, true, None)),
                "{p}"
            );
        }
        let sd = format!(
            "/sys/fs/cgroup/kubelet.slice/kubelet-kubepods.slice/kubepods.slice/\
             kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SD}.slice/cri-containerd-{ID}.scope"
        );
        // "kubelet-kubepods.slice" starts with "kubepods"? No: it starts
        // with "kubelet"; the first kubepods component is kubepods.slice.
        assert_eq!(
            parse(&sd),
            Some(id(
                Qos::BestEffort,
                Driver::Systemd,
                true,
                Some(Runtime::Containerd)
            ))
        );
    }

    #[test]
    fn containerd_under_a_systemd_service_writes_slice_colon_scope() {
        let p = format!(
            "/system.slice/containerd.service/kubepods-burstable-pod{UID_SD}.slice:cri-containerd:{ID}"
        );
        let want = Some(id(
            Qos::Burstable,
            Driver::Systemd,
            true,
            Some(Runtime::Containerd),
        ));
        assert_eq!(parse(&p), want, "{p}");
        let p = format!("kubepods-burstable-pod{UID_SD}.slice:cri-containerd:{ID}");
        assert_eq!(parse(&p), want, "{p}");
        let p = format!("/kubepods.slice/kubepods-burstable-pod{UID_SD}.slice:cri-containerd:{ID}");
        assert_eq!(
            parse(&p),
            Some(id(
                Qos::Burstable,
                Driver::Systemd,
                true,
                Some(Runtime::Containerd)
            ))
        );
    }

    #[test]
    fn tiers_themselves_and_other_cgroups_are_not_identities() {
        for p in [
            "/",
            "/kubepods",
            "/kubepods/burstable",
            "/kubepods.slice",
            "/kubepods.slice/kubepods-burstable.slice",
            "/system.slice/sshd.service",
            "/user.slice/user-0.slice/session-1.scope",
            "/kubepods/burstable/notapod",
            "/kubepods/burstable/podXYZ/abc",
            &format!("/kubepods/burstable/pod{UID}/not-hex"),
            &format!("/kubepods/burstable/pod{UID}/{ID}/deeper"),
            &format!("/kubepods.slice/kubepods-pod{UID_SD}.slice/crio-conmon-{ID}.scope"),
            &format!("/kubepods.slice/kubepods-pod{UID_SD}.slice/session-3.scope"),
            &format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-burstable-pod{UID_SD}.slice"
            ),
        ] {
            assert_eq!(parse(p), None, "{p}");
        }
    }

    #[test]
    fn annotations_of_both_runtimes_give_the_names() {
        let containerd = [
            (containerd_keys::NAMESPACE, "shop"),
            (containerd_keys::POD, "encoder-7d9f"),
            (containerd_keys::POD_UID, UID),
            (containerd_keys::CONTAINER, "ffmpeg"),
            (containerd_keys::TYPE, "container"),
            ("org.opencontainers.image.ref.name", "x"),
        ];
        let n = names_from_annotations(containerd);
        assert_eq!(n.namespace.as_deref(), Some("shop"));
        assert_eq!(n.pod.as_deref(), Some("encoder-7d9f"));
        assert_eq!(n.pod_uid.as_deref(), Some(UID));
        assert_eq!(n.container.as_deref(), Some("ffmpeg"));
        assert!(!n.sandbox);
        let crio = [
            (crio_keys::NAMESPACE, "shop"),
            (crio_keys::POD, "encoder-7d9f"),
            (crio_keys::CONTAINER, "ffmpeg"),
        ];
        let n = names_from_annotations(crio);
        assert_eq!(n.container.as_deref(), Some("ffmpeg"));
        assert_eq!(n.pod_uid, None);
        let sandbox = names_from_annotations([(containerd_keys::TYPE, "sandbox")]);
        assert!(sandbox.sandbox);
    }

    #[test]
    fn container_id_prefixes_match() {
        assert!(id_matches(ID, "9a1b2c"));
        assert!(id_matches(ID, "9A1B2C"));
        assert!(!id_matches(ID, "9a1c"));
        assert!(!id_matches(ID, ""));
    }
}
