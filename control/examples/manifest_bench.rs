//! Times the lab's manifest path at scale: parse N pods (with fixed addresses) plus their
//! subnets, then validate the whole set. Prints one line of numbers.
//!
//! `cargo run --release -p ferrovn-control --example manifest_bench -- [pods]` (default 10000).

use std::fmt::Write;
use std::time::Instant;

use anyhow::Context;
use ferrovn_control::manifest::{load_str, validate};

fn main() -> anyhow::Result<()> {
    let pods: u32 = match std::env::args().nth(1) {
        Some(n) => n.parse().context("pod count")?,
        None => 10_000,
    };
    let namespaces = 50u32;
    let mut text = String::new();
    for ns in 0..namespaces {
        write!(
            text,
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns{ns}}}\n---\n\
             apiVersion: kubeovn.io/v1\nkind: Subnet\nmetadata: {{name: sn{ns}}}\n\
             spec: {{cidrBlock: 10.{ns}.0.0/16, namespaces: [ns{ns}], excludeIps: [10.{ns}.0.1..10.{ns}.0.9]}}\n---\n"
        )?;
    }
    for p in 0..pods {
        let ns = p % namespaces;
        let host = p / namespaces + 10;
        write!(
            text,
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pod{p}\n  namespace: ns{ns}\n  annotations:\n    \
             ovn.kubernetes.io/ip_address: 10.{ns}.{}.{}\n    ovn.kubernetes.io/ingress_rate: \"100\"\n\
             spec: {{containers: [{{name: app, image: nginx}}]}}\n---\n",
            host / 256,
            host % 256
        )?;
    }
    let t0 = Instant::now();
    let manifest = load_str(&text, "generated.yaml").context("generated manifest loads")?;
    let load = t0.elapsed();
    let t1 = Instant::now();
    let errors = validate(&manifest);
    let check = t1.elapsed();
    anyhow::ensure!(
        errors.is_empty(),
        "unexpected errors: {:?}",
        &errors[..errors.len().min(3)]
    );
    println!(
        "manifest-bench pods={pods} bytes={} load_ms={} validate_ms={} pods_per_s={:.0}",
        text.len(),
        load.as_millis(),
        check.as_millis(),
        f64::from(pods) / (load + check).as_secs_f64()
    );
    Ok(())
}
