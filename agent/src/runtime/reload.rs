//! Reloading the configuration (SIGHUP, `POST /-/reload`): read it again
//! from the same file and env file as at start, refuse it whole when it is
//! invalid, else apply it component by component.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::components::Agent;
use crate::config::Config;

/// Reads the configuration again, the way the agent read it at start
/// (same file, same env file, same command-line overrides).
pub type LoadConfig = Arc<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// One reload request and where its outcome goes.
type Request = oneshot::Sender<Result<(), String>>;

/// Asks the running agent to reload; cheap to clone.
#[derive(Clone)]
pub struct ReloadHandle(mpsc::Sender<Request>);

impl ReloadHandle {
    /// Reloads and waits for the outcome: Err with the reason when the new
    /// configuration was refused (the old one keeps running).
    pub async fn reload(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.0.send(tx).await.map_err(|_| "the agent is shutting down".to_string())?;
        rx.await.map_err(|_| "the agent is shutting down".to_string())?
    }
}

/// What [`super::run`] needs to serve reloads.
pub struct Reload {
    pub(super) load: Option<LoadConfig>,
    pub(super) handle: ReloadHandle,
    pub(super) requests: mpsc::Receiver<Request>,
}

impl Reload {
    /// Reloads that read the configuration with `load`; None refuses every
    /// reload (an agent started from a library call without a file).
    pub fn new(load: Option<LoadConfig>) -> Reload {
        // Requests queue up behind a running reload; a few are plenty.
        let (tx, requests) = mpsc::channel(4);
        Reload { load, handle: ReloadHandle(tx), requests }
    }

    /// A handle for SIGHUP and the HTTP route.
    pub fn handle(&self) -> ReloadHandle {
        self.handle.clone()
    }
}

/// One reload: the outcome is logged and recorded in the registry (status
/// page, `vantage_config_last_reload_successful`).
pub(super) async fn reload(
    agent: &mut Agent,
    load: Option<&(dyn Fn() -> Result<Config, String> + Send + Sync)>,
) -> Result<(), String> {
    let now = crate::sample::now_ms();
    let outcome = match load {
        None => {
            Err("reloading is not available: the agent was not started from a configuration it can read again".into())
        }
        Some(load) => match load().and_then(|c| agent.check(&c).map(|()| c)) {
            Err(e) => Err(e),
            Ok(config) => apply(agent, config).await,
        },
    };
    match &outcome {
        Ok(()) => agent.registry().record_reload(now, None),
        Err(e) => {
            tracing::error!(error = %e, "configuration reload failed; the previous configuration keeps running");
            agent.registry().record_reload(now, Some(e.clone()));
        }
    }
    outcome
}

async fn apply(agent: &mut Agent, config: Config) -> Result<(), String> {
    let old_listen = agent.config.as_ref().map(|c| c.agent.listen_addr.clone()).unwrap_or_default();
    if config.agent.listen_addr != old_listen {
        tracing::warn!(
            listening = %old_listen,
            configured = %config.agent.listen_addr,
            "agent.listen_addr changed: the HTTP server stays where it is until the agent restarts"
        );
    }
    let config = Arc::new(config);
    agent.registry().set_config(serde_json::to_value(&*config).unwrap_or_default());
    let changes = agent.apply(config.clone()).await?;
    tracing::info!(
        config = %config.origin,
        stopped = ?changes.stopped,
        started = ?changes.started,
        unchanged = changes.kept.len(),
        "configuration reloaded"
    );
    Ok(())
}
