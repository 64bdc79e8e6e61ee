//! Container names from the runtime's OCI bundles, where the node has them.
//!
//! A CRI runtime writes each container's OCI runtime spec to
//! `<state dir>/<container id>/config.json` (cri-o: `.../userdata/config.json`)
//! with the kubelet's names in `annotations` (runtime-spec config.md,
//! "Annotations"). Reading them needs no API server and no runtime socket:
//! a read-only mount of the state directory is enough.
//!
//! Reads `<dir>/<id>/config.json` and `<dir>/<id>/userdata/config.json` for
//! each bundle directory, [`DEFAULT_BUNDLE_DIRS`] unless told otherwise;
//! produces [`KubeNames`] (see [`crate::model::kube`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::host::root::Root;
use crate::model::kube::{KubeNames, names_from_annotations};

/// Where containerd (CRI namespace `k8s.io`), cri-o and docker keep their
/// bundles, relative to the root.
pub const DEFAULT_BUNDLE_DIRS: [&str; 3] = [
    "run/containerd/io.containerd.runtime.v2.task/k8s.io",
    "run/containers/storage/overlay-containers",
    "run/docker/containerd/daemon/io.containerd.runtime.v2.task/moby",
];

/// Largest config.json read: specs are a few KiB; a bigger file is not one.
const MAX_SPEC_BYTES: u64 = 4 << 20;

/// Where to look for bundles.
#[derive(Clone, Debug)]
pub struct Bundles {
    dirs: Vec<PathBuf>,
}

impl Bundles {
    /// The runtimes' default state directories under `root`.
    pub fn defaults(root: &Root) -> Self {
        Self {
            dirs: DEFAULT_BUNDLE_DIRS.iter().map(|d| root.join(d)).collect(),
        }
    }

    /// These directories instead (`serve --bundle-dir`).
    pub fn at(dirs: Vec<PathBuf>) -> Self {
        Self { dirs }
    }

    /// The names recorded for container `id`; `None` when no bundle of it
    /// is found or its spec has no annotations.
    pub fn names(&self, id: &str) -> Option<KubeNames> {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return None; // not an id: never a path outside the state dirs
        }
        self.dirs.iter().find_map(|d| {
            [
                d.join(id).join("config.json"),
                d.join(id).join("userdata/config.json"),
            ]
            .iter()
            .find_map(|p| read_names(p))
        })
    }
}

/// The annotations of one OCI spec file.
pub fn read_names(path: &Path) -> Option<KubeNames> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    f.take(MAX_SPEC_BYTES).read_to_string(&mut text).ok()?;
    parse_spec(&text)
}

/// `annotations` of an OCI runtime spec (config.json).
pub fn parse_spec(text: &str) -> Option<KubeNames> {
    #[derive(serde::Deserialize)]
    struct Spec {
        #[serde(default)]
        annotations: BTreeMap<String, String>,
    }
    let spec: Spec = serde_json::from_str(text).ok()?;
    if spec.annotations.is_empty() {
        return None;
    }
    Some(names_from_annotations(
        spec.annotations
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::put;

    #[test]
    fn containerd_and_crio_bundles_are_found_by_id() {
        let d = tempfile::tempdir().unwrap();
        put(
            d.path(),
            "run/containerd/io.containerd.runtime.v2.task/k8s.io/aaaa1111/config.json",
            r#"{"ociVersion":"1.1.0","annotations":{
                "io.kubernetes.cri.sandbox-namespace":"shop",
                "io.kubernetes.cri.sandbox-name":"encoder-0",
                "io.kubernetes.cri.container-name":"ffmpeg",
                "io.kubernetes.cri.container-type":"container"}}"#,
        );
        put(
            d.path(),
            "run/containers/storage/overlay-containers/bbbb2222/userdata/config.json",
            r#"{"annotations":{"io.kubernetes.pod.namespace":"web",
                "io.kubernetes.pod.name":"nginx-1","io.kubernetes.container.name":"nginx"}}"#,
        );
        let b = Bundles::defaults(&Root::new(d.path()));
        let n = b.names("aaaa1111").expect("containerd bundle");
        assert_eq!(n.namespace.as_deref(), Some("shop"));
        assert_eq!(n.pod.as_deref(), Some("encoder-0"));
        assert_eq!(n.container.as_deref(), Some("ffmpeg"));
        let n = b.names("bbbb2222").expect("cri-o bundle");
        assert_eq!(n.pod.as_deref(), Some("nginx-1"));
        assert_eq!(n.container.as_deref(), Some("nginx"));
        assert_eq!(b.names("cccc3333"), None);
        assert_eq!(b.names("../k8s.io"), None, "ids are not paths");
    }

    #[test]
    fn specs_without_annotations_or_not_json_give_nothing() {
        assert_eq!(parse_spec(r#"{"ociVersion":"1.1.0"}"#), None);
        assert_eq!(parse_spec("not json"), None);
        assert_eq!(read_names(Path::new("/nonexistent/config.json")), None);
    }
}
