//! The watchers against the fake kube-apiserver: initial list then watch from its
//! resourceVersion, events into the store, a dropped watch resumed from where it was, and a
//! `410 Expired` (compacted history) answered by a relist that also drops objects whose
//! DELETED event was never seen.

// A test crate: its helpers outside #[test] fns assert by unwrapping too (clippy.toml allows it
// only inside #[test] fns and #[cfg(test)] modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use ferrovn_control::kube::{ClusterStore, Kind, watch_all};
use ferrovn_testkit::fake_kube::{FakeApi, Recorded, fixture};
use futures::{Stream, StreamExt};
use serde_json::{Value, json};

const PODS: &str = "/api/v1/pods";

fn pod(name: &str, uid: &str) -> Value {
    let mut p = fixture("pod-web-0.json");
    p["metadata"]["name"] = json!(name);
    p["metadata"]["uid"] = json!(uid);
    p["spec"]["hostname"] = json!(name);
    p
}

async fn drive<S>(stream: &mut S, store: &mut ClusterStore, until: impl Fn(&ClusterStore) -> bool)
where
    S: Stream<Item = ferrovn_control::kube::Change> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(30), async {
        while !until(store) {
            let change = stream.next().await.expect("watch streams do not end");
            store.apply(change);
        }
    })
    .await
    .expect("condition reached within 30 s");
}

fn pod_names(store: &ClusterStore) -> Vec<String> {
    store
        .of_kind(Kind::Pod)
        .map(|o| o.name().to_string())
        .collect()
}

fn pod_requests(fake: &FakeApi) -> Vec<Recorded> {
    fake.requests()
        .into_iter()
        .filter(|r| r.path == PODS)
        .collect()
}

#[tokio::test]
async fn list_then_watch_then_relist_after_410_drops_unseen_deletes() {
    let fake = FakeApi::new();
    fake.apply(fixture("namespace-default.json"));
    fake.apply(pod("web-0", "8a3f0c5e-1b2d-4e6f-9a7b-3c4d5e6f7a80"));
    fake.apply(pod("web-1", "8a3f0c5e-1b2d-4e6f-9a7b-3c4d5e6f7a81"));
    let client = fake.client();
    let kinds = [Kind::Namespace, Kind::Pod];
    let mut stream = Box::pin(watch_all(&client, &kinds));
    let mut store = ClusterStore::new();

    drive(&mut stream, &mut store, |s| s.ready(&kinds)).await;
    assert_eq!(pod_names(&store), ["web-0", "web-1"]);
    let listed_at = fake.resource_version();
    let first = pod_requests(&fake);
    assert!(!first[0].is_watch(), "a list first: {first:?}");
    assert_eq!(first[0].param("limit").as_deref(), Some("500"));

    // Later events arrive through the watch that starts at the list's resourceVersion.
    fake.apply(pod("web-2", "8a3f0c5e-1b2d-4e6f-9a7b-3c4d5e6f7a82"));
    drive(&mut stream, &mut store, |s| pod_names(s).len() == 3).await;
    let watch = pod_requests(&fake)
        .into_iter()
        .find(Recorded::is_watch)
        .expect("a watch request");
    assert_eq!(watch.param("resourceVersion"), Some(listed_at.to_string()));

    // The connection drops; web-1 is deleted meanwhile and the history is compacted, so the
    // resumed watch gets 410 Expired and its DELETED event is lost for good.
    let rv_before = fake.resource_version();
    assert_eq!(fake.open_watches(), 2);
    fake.break_watches();
    fake.delete("Pod", "default", "web-1");
    fake.compact();
    drive(&mut stream, &mut store, |s| {
        !pod_names(s).contains(&"web-1".to_string())
    })
    .await;
    assert_eq!(pod_names(&store), ["web-0", "web-2"]);

    let reqs = pod_requests(&fake);
    let expired = reqs
        .iter()
        .position(|r| r.is_watch() && r.param("resourceVersion") == Some(rv_before.to_string()))
        .expect("the watch resumed at the last seen resourceVersion");
    let relist = reqs[expired..]
        .iter()
        .find(|r| !r.is_watch())
        .expect("a relist after 410");
    assert_eq!(relist.status, 200);
    assert_eq!(
        reqs.iter().filter(|r| !r.is_watch()).count(),
        2,
        "exactly one relist: {reqs:?}"
    );
}

#[tokio::test]
async fn missing_crd_counts_as_empty_and_ready() {
    // An apiserver without Multus: the NAD list answers 404. The controller must still start.
    let fake = FakeApi::new();
    fake.unserve("network-attachment-definitions");
    let client = fake.client();
    let kinds = [Kind::NetworkAttachmentDefinition];
    let mut stream = Box::pin(watch_all(&client, &kinds));
    let mut store = ClusterStore::new();
    drive(&mut stream, &mut store, |s| s.ready(&kinds)).await;
    assert_eq!(store.of_kind(Kind::NetworkAttachmentDefinition).count(), 0);
    let r = &fake.requests()[0];
    assert_eq!(
        (r.path.as_str(), r.status),
        (
            "/apis/k8s.cni.cncf.io/v1/network-attachment-definitions",
            404
        )
    );
}
