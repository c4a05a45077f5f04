//! Where the agent writes pod annotations (vhost-user info, SR-IOV PCI addresses, offload
//! truth): [`FileAnnotations`] in the lab, [`crate::kube_api::KubePodAnnotator`] in a cluster.
//! Every attachment kind and the offload check share this one sink.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Mutex;

use crate::alloc::{Annotations, PodRef};

#[derive(Debug, thiserror::Error)]
pub enum AnnotateError {
    #[error("writing {what} {path}: {reason}")]
    Write {
        what: &'static str,
        path: String,
        reason: String,
    },
    /// The Kubernetes API refused or failed a pod annotation patch (cluster mode).
    #[error("{op} the annotations of pod {pod}: {reason}")]
    PodAnnotations {
        op: &'static str,
        /// `namespace/name`
        pod: String,
        reason: String,
    },
}

/// Where pod annotations are written.
pub trait PodAnnotator: Send + Sync {
    /// Merges `set` into the pod's annotations and removes `remove`.
    fn annotate(
        &self,
        pod: &PodRef,
        set: &Annotations,
        remove: &[String],
    ) -> impl Future<Output = Result<(), AnnotateError>> + Send;
}

/// The future of [`DynPodAnnotator::annotate_boxed`].
pub type AnnotateFuture<'a> = Pin<Box<dyn Future<Output = Result<(), AnnotateError>> + Send + 'a>>;

/// [`PodAnnotator`] as a trait object, so one [`VhostConfig`] field holds the file sink or the
/// Kubernetes one. Every `PodAnnotator` is one; `dyn DynPodAnnotator` is a `PodAnnotator`
/// again, so callers just `annotate(..).await`.
pub trait DynPodAnnotator: Send + Sync + std::fmt::Debug {
    fn annotate_boxed<'a>(
        &'a self,
        pod: &'a PodRef,
        set: &'a Annotations,
        remove: &'a [String],
    ) -> AnnotateFuture<'a>;
}

impl<T: PodAnnotator + std::fmt::Debug> DynPodAnnotator for T {
    fn annotate_boxed<'a>(
        &'a self,
        pod: &'a PodRef,
        set: &'a Annotations,
        remove: &'a [String],
    ) -> AnnotateFuture<'a> {
        Box::pin(self.annotate(pod, set, remove))
    }
}

impl PodAnnotator for dyn DynPodAnnotator {
    async fn annotate(
        &self,
        pod: &PodRef,
        set: &Annotations,
        remove: &[String],
    ) -> Result<(), AnnotateError> {
        self.annotate_boxed(pod, set, remove).await
    }
}

/// Lab annotations: `<dir>/<namespace>/<pod>.json`, a flat JSON map merged under a lock and
/// replaced atomically (what a downward-API `annotations` file would show).
#[derive(Debug)]
pub struct FileAnnotations {
    dir: PathBuf,
    lock: Mutex<()>,
}

impl FileAnnotations {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileAnnotations {
            dir: dir.into(),
            lock: Mutex::new(()),
        }
    }
    pub fn path_for(&self, pod: &PodRef) -> PathBuf {
        self.dir
            .join(&pod.namespace)
            .join(format!("{}.json", pod.name))
    }
    /// The annotations written so far for `pod` (empty if none).
    pub fn read(&self, pod: &PodRef) -> Annotations {
        std::fs::read(self.path_for(pod))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }
    fn update(
        &self,
        pod: &PodRef,
        set: &Annotations,
        remove: &[String],
    ) -> Result<(), AnnotateError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.path_for(pod);
        let err = |reason: String| AnnotateError::Write {
            what: "pod annotations",
            path: path.display().to_string(),
            reason,
        };
        let mut current = self.read(pod);
        for k in remove {
            current.remove(k);
        }
        current.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| err(e.to_string()))?;
        }
        let body = serde_json::to_vec_pretty(&current).map_err(|e| err(e.to_string()))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, body).map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, &path).map_err(|e| err(e.to_string()))
    }
}

impl PodAnnotator for FileAnnotations {
    async fn annotate(
        &self,
        pod: &PodRef,
        set: &Annotations,
        remove: &[String],
    ) -> Result<(), AnnotateError> {
        self.update(pod, set, remove)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn file_annotations_merge() {
        let d = tempfile::tempdir().expect("tmp");
        let fa = FileAnnotations::new(d.path());
        let pod = PodRef {
            namespace: "default".into(),
            name: "p".into(),
        };
        fa.update(&pod, &BTreeMap::from([("a".into(), "1".into())]), &[])
            .expect("w");
        fa.update(&pod, &BTreeMap::from([("b".into(), "2".into())]), &[])
            .expect("w");
        fa.update(&pod, &BTreeMap::new(), &["a".to_string()])
            .expect("w");
        assert_eq!(fa.read(&pod), BTreeMap::from([("b".into(), "2".into())]));
    }
}
