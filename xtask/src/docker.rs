//! `cargo xtask docker`: a static binary and a `FROM scratch` image.

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
