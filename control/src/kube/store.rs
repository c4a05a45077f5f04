//! The cluster's objects as the watchers last reported them: a pure store that turns watcher
//! events into the same [`Manifest`] the lab's manifest source produces, so one reconcile path
//! serves both.
//!
//! Resync safety: a relist (`Init` … `InitApply`* … `InitDone`) is buffered and then *replaces*
//! every object of that kind, so an object deleted while the watch was down (its `DELETED`
//! event lost) disappears at the relist. The store is "ready" once every kind has been listed
//! once; the controller must not reconcile a partial view (pods listed before their subnets
//! would be allocated into the wrong subnet, and objects not yet listed would be released).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher;

use crate::manifest::{LoadedObject, Location, Manifest, Object};

/// The kinds the controller watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespace,
    Pod,
    Node,
    NetworkAttachmentDefinition,
    Subnet,
    Vpc,
    Ip,
    IpPool,
    Vlan,
    ProviderNetwork,
    Service,
    EndpointSlice,
    NetworkPolicy,
    AdminNetworkPolicy,
    BaselineAdminNetworkPolicy,
    SecurityGroup,
}

impl Kind {
    pub const ALL: [Kind; 16] = [
        Kind::Namespace,
        Kind::Pod,
        Kind::Node,
        Kind::NetworkAttachmentDefinition,
        Kind::Subnet,
        Kind::Vpc,
        Kind::Ip,
        Kind::IpPool,
        Kind::Vlan,
        Kind::ProviderNetwork,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::NetworkPolicy,
        Kind::AdminNetworkPolicy,
        Kind::BaselineAdminNetworkPolicy,
        Kind::SecurityGroup,
    ];

    /// The Kubernetes kind name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::Node => "Node",
            Kind::NetworkAttachmentDefinition => "NetworkAttachmentDefinition",
            Kind::Subnet => "Subnet",
            Kind::Vpc => "Vpc",
            Kind::Ip => "IP",
            Kind::IpPool => "IPPool",
            Kind::Vlan => "Vlan",
            Kind::ProviderNetwork => "ProviderNetwork",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::AdminNetworkPolicy => "AdminNetworkPolicy",
            Kind::BaselineAdminNetworkPolicy => "BaselineAdminNetworkPolicy",
            Kind::SecurityGroup => "SecurityGroup",
        }
    }

    /// The kind of an object.
    pub fn of(o: &Object) -> Kind {
        match o {
            Object::Namespace(_) => Kind::Namespace,
            Object::Pod(_) => Kind::Pod,
            Object::Node(_) => Kind::Node,
            Object::NetworkAttachmentDefinition(_) => Kind::NetworkAttachmentDefinition,
            Object::Subnet(_) => Kind::Subnet,
            Object::Vpc(_) => Kind::Vpc,
            Object::Ip(_) => Kind::Ip,
            Object::IpPool(_) => Kind::IpPool,
            Object::Vlan(_) => Kind::Vlan,
            Object::ProviderNetwork(_) => Kind::ProviderNetwork,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::NetworkPolicy(_) => Kind::NetworkPolicy,
            Object::AdminNetworkPolicy(_) => Kind::AdminNetworkPolicy,
            Object::BaselineAdminNetworkPolicy(_) => Kind::BaselineAdminNetworkPolicy,
            Object::SecurityGroup(_) => Kind::SecurityGroup,
        }
    }
}

/// One watcher event of one kind, objects already typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Added or modified.
    Applied(Object),
    Deleted(Object),
    /// A (re)list of `kind` starts.
    Init(Kind),
    /// An object of the running relist.
    InitApplied(Object),
    /// The relist of `kind` is complete: it replaces everything of that kind.
    InitDone(Kind),
    /// The kind is not served by the apiserver (its CRD is not installed: the list answered
    /// 404). It counts as listed and empty until a list succeeds.
    Absent(Kind),
}

impl Change {
    /// A kube-runtime watcher event of `kind`, its object converted with `to_object`.
    pub fn from_event<K>(kind: Kind, event: watcher::Event<K>, to_object: fn(K) -> Object) -> Self {
        match event {
            watcher::Event::Apply(k) => Change::Applied(to_object(k)),
            watcher::Event::Delete(k) => Change::Deleted(to_object(k)),
            watcher::Event::Init => Change::Init(kind),
            watcher::Event::InitApply(k) => Change::InitApplied(to_object(k)),
            watcher::Event::InitDone => Change::InitDone(kind),
        }
    }
}

/// (kind, namespace, name): one object.
pub type Key = (Kind, Option<String>, String);

/// The key of an object.
pub fn key_of(o: &Object) -> Key {
    (
        Kind::of(o),
        o.namespace().map(str::to_string),
        o.name().to_string(),
    )
}

fn resource_version(meta: &ObjectMeta) -> Option<u64> {
    meta.resource_version.as_deref()?.parse().ok()
}

/// True when `incoming` is an older copy of the same object than `held` (same UID, lower
/// resourceVersion). resourceVersions are opaque by contract but integers in every
/// kube-apiserver (etcd revisions); when either does not parse the incoming copy wins.
fn is_stale(held: &ObjectMeta, incoming: &ObjectMeta) -> bool {
    if held.uid.is_none() || held.uid != incoming.uid {
        return false;
    }
    match (resource_version(held), resource_version(incoming)) {
        (Some(h), Some(i)) => i < h,
        _ => false,
    }
}

/// Equal apart from resourceVersion and managedFields: a change nobody acts on.
fn same_content(a: &Object, b: &Object) -> bool {
    let strip = |o: &Object| {
        let mut o = o.clone();
        let m = metadata_mut(&mut o);
        m.resource_version = None;
        m.managed_fields = None;
        o
    };
    strip(a) == strip(b)
}

fn metadata_mut(o: &mut Object) -> &mut ObjectMeta {
    match o {
        Object::Namespace(x) => &mut x.metadata,
        Object::Pod(x) => &mut x.metadata,
        Object::Node(x) => &mut x.metadata,
        Object::NetworkAttachmentDefinition(x) => &mut x.metadata,
        Object::Subnet(x) => &mut x.metadata,
        Object::Vpc(x) => &mut x.metadata,
        Object::Ip(x) => &mut x.metadata,
        Object::IpPool(x) => &mut x.metadata,
        Object::Vlan(x) => &mut x.metadata,
        Object::ProviderNetwork(x) => &mut x.metadata,
        Object::Service(x) => &mut x.metadata,
        Object::EndpointSlice(x) => &mut x.metadata,
        Object::NetworkPolicy(x) => &mut x.metadata,
        Object::AdminNetworkPolicy(x) => &mut x.metadata,
        Object::BaselineAdminNetworkPolicy(x) => &mut x.metadata,
        Object::SecurityGroup(x) => &mut x.metadata,
    }
}

/// The watched objects.
#[derive(Debug, Clone, Default)]
pub struct ClusterStore {
    objects: BTreeMap<Key, Object>,
    /// Relists in progress: their objects so far.
    relisting: BTreeMap<Kind, BTreeMap<Key, Object>>,
    listed: BTreeSet<Kind>,
    /// Bumped by every change that matters (not by resourceVersion-only updates).
    generation: u64,
}

impl ClusterStore {
    pub fn new() -> Self {
        ClusterStore::default()
    }

    /// Applies one change. Returns true when the objects changed in a way a reconcile must see.
    pub fn apply(&mut self, change: Change) -> bool {
        let changed = match change {
            Change::Applied(o) => self.upsert(o),
            Change::Deleted(o) => {
                let key = key_of(&o);
                match self.objects.get(&key) {
                    // A delete of an older incarnation (other UID) leaves the new one alone.
                    Some(held)
                        if held.metadata().uid.is_some()
                            && o.metadata().uid.is_some()
                            && held.metadata().uid != o.metadata().uid =>
                    {
                        false
                    }
                    Some(_) => self.objects.remove(&key).is_some(),
                    None => false,
                }
            }
            Change::Init(kind) => {
                self.relisting.insert(kind, BTreeMap::new());
                false
            }
            Change::InitApplied(o) => {
                let kind = Kind::of(&o);
                self.relisting
                    .entry(kind)
                    .or_default()
                    .insert(key_of(&o), o);
                false
            }
            Change::InitDone(kind) => {
                let fresh = self.relisting.remove(&kind).unwrap_or_default();
                self.replace_kind(kind, fresh)
            }
            Change::Absent(kind) => {
                let first = self.listed.insert(kind);
                let had = self.replace_kind(kind, BTreeMap::new());
                first || had
            }
        };
        if changed {
            self.generation += 1;
        }
        changed
    }

    fn upsert(&mut self, o: Object) -> bool {
        let key = key_of(&o);
        match self.objects.get(&key) {
            Some(held) if is_stale(held.metadata(), o.metadata()) => false,
            Some(held) if same_content(held, &o) => {
                self.objects.insert(key, o);
                false
            }
            _ => {
                self.objects.insert(key, o);
                true
            }
        }
    }

    /// Makes the objects of `kind` exactly `fresh` (keeping a held copy that is newer than the
    /// listed one, e.g. the answer to our own patch).
    fn replace_kind(&mut self, kind: Kind, mut fresh: BTreeMap<Key, Object>) -> bool {
        self.listed.insert(kind);
        let old: Vec<Key> = self
            .objects
            .range((kind, None, String::new())..)
            .take_while(|(k, _)| k.0 == kind)
            .map(|(k, _)| k.clone())
            .collect();
        let mut changed = false;
        for k in old {
            let Some(held) = self.objects.remove(&k) else {
                continue;
            };
            match fresh.remove(&k) {
                None => changed = true,
                Some(listed) if is_stale(held.metadata(), listed.metadata()) => {
                    self.objects.insert(k, held);
                }
                Some(listed) => {
                    changed |= !same_content(&held, &listed);
                    self.objects.insert(k, listed);
                }
            }
        }
        changed |= !fresh.is_empty();
        self.objects.extend(fresh);
        changed
    }

    /// True once every kind in `kinds` has been listed (or found absent).
    pub fn ready(&self, kinds: &[Kind]) -> bool {
        kinds.iter().all(|k| self.listed.contains(k))
    }

    /// Counts changes that matter; a reconcile can remember the generation it saw.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn get(&self, kind: Kind, namespace: Option<&str>, name: &str) -> Option<&Object> {
        self.objects
            .get(&(kind, namespace.map(str::to_string), name.to_string()))
    }

    /// Every object of `kind`.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Object> + '_ {
        self.objects
            .range((kind, None, String::new())..)
            .take_while(move |(k, _)| k.0 == kind)
            .map(|(_, o)| o)
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The objects as a [`Manifest`], in (kind, namespace, name) order: the input of
    /// [`crate::controller::Controller::pass_with`]. Each object's location names it as
    /// `kube:<Kind>/<namespace>/<name>`.
    pub fn to_manifest(&self) -> Manifest {
        let mut m = Manifest::default();
        m.objects = self
            .objects
            .iter()
            .map(|((kind, ns, name), o)| LoadedObject {
                location: Location {
                    file: PathBuf::from(match ns {
                        Some(ns) => format!("kube:{}/{ns}/{name}", kind.name()),
                        None => format!("kube:{}/{name}", kind.name()),
                    }),
                    document: 0,
                    item: None,
                },
                object: o.clone(),
            })
            .collect();
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Namespace, Pod};

    fn pod(ns: &str, name: &str, uid: &str, rv: &str, ann: &[(&str, &str)]) -> Object {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some(ns.into());
        p.metadata.uid = Some(uid.into());
        p.metadata.resource_version = Some(rv.into());
        if !ann.is_empty() {
            p.metadata.annotations = Some(
                ann.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
        }
        Object::Pod(Box::new(p))
    }

    fn ns(name: &str) -> Object {
        let mut n = Namespace::default();
        n.metadata.name = Some(name.into());
        Object::Namespace(Box::new(n))
    }

    #[test]
    fn relist_replaces_and_forgets_lost_deletes() {
        let mut s = ClusterStore::new();
        assert!(!s.ready(&[Kind::Pod]));
        s.apply(Change::Init(Kind::Pod));
        s.apply(Change::InitApplied(pod("a", "p1", "u1", "10", &[])));
        s.apply(Change::InitApplied(pod("a", "p2", "u2", "11", &[])));
        assert!(s.is_empty(), "buffered until InitDone");
        assert!(s.apply(Change::InitDone(Kind::Pod)));
        assert!(s.ready(&[Kind::Pod]));
        assert_eq!(s.of_kind(Kind::Pod).count(), 2);
        // The watch breaks; p2's DELETED is lost; the relist has only p1.
        s.apply(Change::Init(Kind::Pod));
        s.apply(Change::InitApplied(pod("a", "p1", "u1", "10", &[])));
        assert!(s.apply(Change::InitDone(Kind::Pod)));
        let names: Vec<&str> = s.of_kind(Kind::Pod).map(|o| o.name()).collect();
        assert_eq!(names, ["p1"]);
    }

    #[test]
    fn relist_of_one_kind_keeps_others() {
        let mut s = ClusterStore::new();
        s.apply(Change::Applied(ns("a")));
        s.apply(Change::Applied(pod("a", "p1", "u1", "1", &[])));
        s.apply(Change::Init(Kind::Namespace));
        s.apply(Change::InitDone(Kind::Namespace));
        assert_eq!(s.of_kind(Kind::Namespace).count(), 0);
        assert_eq!(s.of_kind(Kind::Pod).count(), 1);
    }

    #[test]
    fn resource_version_only_updates_do_not_count() {
        let mut s = ClusterStore::new();
        assert!(s.apply(Change::Applied(pod("a", "p", "u", "5", &[]))));
        let g = s.generation();
        assert!(!s.apply(Change::Applied(pod("a", "p", "u", "6", &[]))));
        assert_eq!(s.generation(), g);
        assert!(s.apply(Change::Applied(pod("a", "p", "u", "7", &[("k", "v")]))));
        assert_eq!(s.generation(), g + 1);
    }

    #[test]
    fn older_copy_of_same_object_is_ignored() {
        let mut s = ClusterStore::new();
        s.apply(Change::Applied(pod("a", "p", "u", "9", &[("x", "new")])));
        assert!(!s.apply(Change::Applied(pod("a", "p", "u", "8", &[("x", "old")]))));
        let held = s
            .get(Kind::Pod, Some("a"), "p")
            .map(|o| o.metadata().clone());
        assert_eq!(
            held.and_then(|m| m.annotations)
                .and_then(|a| a.get("x").cloned()),
            Some("new".to_string())
        );
        // A relist older than our copy keeps ours too.
        s.apply(Change::Init(Kind::Pod));
        s.apply(Change::InitApplied(pod("a", "p", "u", "7", &[])));
        s.apply(Change::InitDone(Kind::Pod));
        let rv = s
            .get(Kind::Pod, Some("a"), "p")
            .and_then(|o| o.metadata().resource_version.clone());
        assert_eq!(rv.as_deref(), Some("9"));
        // A new incarnation (other UID) always wins, whatever its resourceVersion.
        assert!(s.apply(Change::Applied(pod("a", "p", "u2", "3", &[]))));
    }

    #[test]
    fn delete_of_old_incarnation_keeps_new_one() {
        let mut s = ClusterStore::new();
        s.apply(Change::Applied(pod("a", "p", "new", "20", &[])));
        assert!(!s.apply(Change::Deleted(pod("a", "p", "old", "10", &[]))));
        assert_eq!(s.len(), 1);
        assert!(s.apply(Change::Deleted(pod("a", "p", "new", "21", &[]))));
        assert!(s.is_empty());
    }

    #[test]
    fn absent_kind_counts_as_listed_and_empty() {
        let mut s = ClusterStore::new();
        assert!(s.apply(Change::Absent(Kind::Vlan)));
        assert!(s.ready(&[Kind::Vlan]));
        assert!(!s.apply(Change::Absent(Kind::Vlan)));
    }

    #[test]
    fn manifest_has_every_object_with_its_location() {
        let mut s = ClusterStore::new();
        s.apply(Change::Applied(ns("a")));
        s.apply(Change::Applied(pod("a", "p1", "u1", "1", &[])));
        let m = s.to_manifest();
        assert_eq!(m.pods().count(), 1);
        assert_eq!(m.namespaces().count(), 1);
        let files: Vec<String> = m
            .objects
            .iter()
            .map(|o| o.location.file.display().to_string())
            .collect();
        assert_eq!(files, ["kube:Namespace/a", "kube:Pod/a/p1"]);
    }
}
