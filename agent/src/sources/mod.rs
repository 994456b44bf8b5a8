//! Metric sources. Each runs as its own task on its own interval and sends
//! a [`Batch`] per collection into the metrics channel.
//!
//! - `node`: procfs/sysfs under node_exporter's names
//! - `ebpf`: kernel maps filled by the programs in agent-ebpf
//! - `docker`: container discovery and cAdvisor-style container metrics
//! - `scrape`: Prometheus-format endpoints of applications

pub mod docker;
pub mod ebpf;
pub mod node;
pub mod scrape;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sample::{now_ms, Batch, Family};

/// A source collected synchronously on an interval (file and map reads).
pub trait Collector: Send + 'static {
    /// Name of the source, as shown in status and self-metrics.
    fn name(&self) -> &str;

    /// Its own collection interval from its configuration section; `None`
    /// runs it on the agent's `scrape_interval`.
    fn interval(&self) -> Option<Duration> {
        None
    }

    /// One collection at `now_ms`. An error means nothing useful came out;
    /// partial failures are reported inside the families instead.
    fn collect(&mut self, now_ms: i64) -> Result<Vec<Family>, String>;

    /// Parts that failed in the last collection while the rest worked
    /// (node's collectors): (part, error), for the status page.
    fn failing_parts(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// Runs `collector` on its interval (the agent's when it has none of its
/// own) until `ctx.shutdown`, sending each collection (with stale markers
/// for series that went away) to `ctx.metrics`. Stopped by a reload, it leaves its staleness state in
/// `ctx.handover` for the collector that replaces it (or for the stale
/// markers of a source that is gone).
pub async fn run_collector(collector: Box<dyn Collector>, ctx: crate::Context) {
    let interval = collector.interval().unwrap_or(ctx.config.agent.scrape_interval);
    let (out, registry, shutdown) = (ctx.metrics.clone(), ctx.registry.clone(), ctx.shutdown.clone());
    let name: Arc<str> = collector.name().into();
    let mut collector = Some(collector);
    let mut stale: crate::stale::StaleTracker = ctx.handover.take(&name).map(|(_, s)| s).unwrap_or_default();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        let mut c = collector.take().expect("collector is returned after each collection");
        let at = now_ms();
        let started = Instant::now();
        // File reads can block (a slow /proc, a hung mount): keep them off
        // the async workers.
        let joined = tokio::task::spawn_blocking(move || {
            let result = c.collect(at);
            (c, result)
        })
        .await;
        let Ok((c, result)) = joined else {
            tracing::error!(source = %name, "collector panicked; the source stops");
            registry.record_collection(&name, at, 0.0, 0, Some("collector panicked".into()));
            return;
        };
        registry.record_failing_parts(&name, at, c.failing_parts());
        collector = Some(c);
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(mut families) => {
                stale.mark(&mut families, at);
                let batch = Batch { source: name.clone(), families };
                registry.record_collection(&name, at, seconds, batch.len(), None);
                if out.send(batch).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(source = %name, error = %e, "collection failed");
                registry.record_collection(&name, at, seconds, 0, Some(e));
            }
        }
    }
    if !ctx.agent_shutdown.is_cancelled() {
        registry.remove_source(&name);
        ctx.handover.put(&name, name.clone(), stale);
    }
}
