//! Pure: removing named objects from multi-document YAML text (`delete -f`).

use std::collections::BTreeSet;

use serde_norway::Value;

/// (kind, namespace, name); the namespace `default` and an absent one are the same.
pub type ObjectKey = (String, String, String);

fn norm_ns(ns: &str) -> &str {
    if ns == "default" { "" } else { ns }
}

fn key_of(v: &Value) -> Option<ObjectKey> {
    let kind = v.get("kind")?.as_str()?.to_string();
    let meta = v.get("metadata")?;
    let name = meta.get("name")?.as_str()?.to_string();
    let ns = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
    Some((kind, norm_ns(ns).to_string(), name))
}

fn matches(keys: &BTreeSet<ObjectKey>, k: &ObjectKey) -> bool {
    keys.iter()
        .any(|(kind, ns, name)| kind == &k.0 && norm_ns(ns) == k.1 && name == &k.2)
}

/// Removes every object whose key is in `keys` (also inside `kind: List`), keeping the other
/// documents as they were written. Returns the new text and how many objects went.
pub fn remove_objects(text: &str, keys: &BTreeSet<ObjectKey>) -> (String, usize) {
    let mut docs: Vec<String> = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else if let Some(d) = docs.last_mut() {
            d.push_str(line);
            d.push('\n');
        }
    }
    let mut removed = 0;
    let mut kept: Vec<String> = Vec::new();
    for d in docs {
        let Ok(v) = serde_norway::from_str::<Value>(&d) else {
            kept.push(d);
            continue;
        };
        if v.get("kind").and_then(Value::as_str) == Some("List") {
            let mut list = v.clone();
            if let Some(Value::Sequence(items)) = list.get_mut("items") {
                let n = items.len();
                items.retain(|i| !key_of(i).is_some_and(|k| matches(keys, &k)));
                let gone = n - items.len();
                if gone > 0 {
                    removed += gone;
                    if !items.is_empty() {
                        kept.push(serde_norway::to_string(&list).unwrap_or(d));
                    }
                    continue;
                }
            }
            kept.push(d);
            continue;
        }
        match key_of(&v) {
            Some(k) if matches(keys, &k) => removed += 1,
            _ => kept.push(d),
        }
    }
    let kept: Vec<String> = kept.into_iter().filter(|d| !d.trim().is_empty()).collect();
    (kept.join("---\n"), removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str, ns: &str, n: &str) -> ObjectKey {
        (k.into(), ns.into(), n.into())
    }

    #[test]
    fn removes_named_documents_and_keeps_the_rest_verbatim() {
        let text = "# c\napiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: b\n  namespace: x\n";
        let keys = BTreeSet::from([key("Pod", "default", "a")]);
        let (out, n) = remove_objects(text, &keys);
        assert_eq!(n, 1);
        assert_eq!(
            out,
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: b\n  namespace: x\n"
        );
    }

    #[test]
    fn namespace_must_match() {
        let text = "kind: Pod\nmetadata:\n  name: b\n  namespace: x\n";
        let keys = BTreeSet::from([key("Pod", "y", "b")]);
        assert_eq!(remove_objects(text, &keys).1, 0);
    }

    #[test]
    fn list_items() {
        let text = "kind: List\nitems:\n- kind: Namespace\n  metadata: {name: a}\n- kind: Namespace\n  metadata: {name: b}\n";
        let keys = BTreeSet::from([key("Namespace", "", "a")]);
        let (out, n) = remove_objects(text, &keys);
        assert_eq!(n, 1);
        assert!(out.contains("name: b") && !out.contains("name: a"), "{out}");
        let keys = BTreeSet::from([key("Namespace", "", "a"), key("Namespace", "", "b")]);
        let (out, n) = remove_objects(text, &keys);
        assert_eq!(n, 2);
        assert!(out.trim().is_empty());
    }
}
