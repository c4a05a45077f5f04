//! Baseline: the host's loopback (127.0.0.1 in a private namespace, so no port or address
//! clashes with anything else on the machine; the same kernel code path as the host's `lo`).

use super::Ctx;
use super::kpath::{KPath, measure};
use ferrovn_testkit::netns::Netns;

pub fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.progress.step("loopback: namespace");
    let ns = Netns::create(&format!("fvp-{}-lo", ctx.tag)).map_err(|e| anyhow::anyhow!("{e}"))?;
    measure(
        ctx,
        &KPath {
            path: "loopback",
            placement: "host",
            client: &ns,
            server: &ns,
            dst: "127.0.0.1",
            mtu: 65536,
            baseline: None,
            is_baseline: true,
            note: "",
        },
    );
    Ok(())
}
