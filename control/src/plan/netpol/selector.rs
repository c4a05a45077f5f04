//! Kubernetes label selectors (`matchLabels` + `matchExpressions`), validated once and then
//! matched many times, with a canonical text form so equal selectors share one address set.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// One requirement; `matchLabels` entries become `In` with one value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Requirement {
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A validated selector. The empty selector selects everything.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Selector {
    reqs: BTreeSet<Requirement>,
}

/// Why a selector is invalid; `field` is the path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SelectorError {
    pub field: String,
    pub reason: String,
}

impl Selector {
    /// Validates `sel`; `field` names it in errors (`spec.podSelector`).
    pub fn parse(sel: &LabelSelector, field: &str) -> Result<Self, SelectorError> {
        let mut reqs = BTreeSet::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            reqs.insert(Requirement::In(k.clone(), BTreeSet::from([v.clone()])));
        }
        for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
            let err = |reason: &str| SelectorError {
                field: format!("{field}.matchExpressions[{i}]"),
                reason: reason.to_string(),
            };
            let values: BTreeSet<String> = e.values.iter().flatten().cloned().collect();
            let key = e.key.clone();
            let req = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(err("operator In/NotIn needs at least one value"));
                }
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(err("operator Exists/DoesNotExist takes no values"));
                }
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                other => {
                    return Err(err(&format!(
                        "unknown operator {other:?} (In, NotIn, Exists, DoesNotExist)"
                    )));
                }
            };
            reqs.insert(req);
        }
        Ok(Selector { reqs })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.reqs.iter().all(|r| match r {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }

    /// Canonical text (sorted requirements, sorted values), as `kubectl` would write it.
    pub fn canonical(&self) -> String {
        let set = |vs: &BTreeSet<String>| vs.iter().cloned().collect::<Vec<_>>().join(",");
        self.reqs
            .iter()
            .map(|r| match r {
                Requirement::In(k, vs) => format!("{k} in ({})", set(vs)),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", set(vs)),
                Requirement::Exists(k) => k.clone(),
                Requirement::DoesNotExist(k) => format!("!{k}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}
