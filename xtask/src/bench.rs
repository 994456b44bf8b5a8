//! `cargo xtask bench`: the benchmarks behind BENCHMARKS.md.

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
