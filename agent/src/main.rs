//! The `vantage` command: parse the CLI, load the config, start tracing and
//! hand over to the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use vantage::config::{Config, ConfigError};

/// Exit code for a configuration that cannot be used (sysexits' EX_CONFIG).
const EXIT_BAD_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(name = "vantage", version, about = "Low-overhead host agent: node, eBPF, Docker, app and log collection")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log level or filter (overrides RUST_LOG), e.g. "info" or "vantage=debug".
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (the embedded config/local.toml without --config).
    Run {
        #[arg(long, env = "VANTAGE_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long)]
        env_file: Option<PathBuf>,
        /// HTTP listen address, overriding the config's agent.listen_addr.
        #[arg(long)]
        listen: Option<String>,
        /// Exporter-toolkit web configuration (TLS, basic auth, headers),
        /// overriding the config's agent.web_config_file.
        #[arg(long = "web.config.file", env = "VANTAGE_WEB_CONFIG")]
        web_config_file: Option<PathBuf>,
    },
    /// Validate a configuration and print what would run.
    Check {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        env_file: Option<PathBuf>,
        /// Exporter-toolkit web configuration (TLS, basic auth, headers),
        /// overriding the config's agent.web_config_file.
        #[arg(long = "web.config.file", env = "VANTAGE_WEB_CONFIG")]
        web_config_file: Option<PathBuf>,
    },
    /// Collect every metric source once and print Prometheus text on stdout.
    Collect {
        /// Collect once and exit (the only mode).
        #[arg(long, required = true)]
        once: bool,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        env_file: Option<PathBuf>,
    },
    /// Exit 0 when the agent listening on LISTEN_ADDR is ready (the
    /// container healthcheck: a FROM scratch image has no curl).
    Probe {
        #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:12345")]
        listen: String,
        /// Print a short status (sources, targets, sinks, programs) instead.
        #[arg(long)]
        status: bool,
        /// The agent's web configuration: with TLS in it, the probe speaks
        /// TLS (and presents the agent's certificate when client
        /// certificates are required).
        #[arg(long = "web.config.file", env = "VANTAGE_WEB_CONFIG")]
        web_config_file: Option<PathBuf>,
    },
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    vantage::memory::tune();
    let cli = Cli::parse();
    init_tracing(cli.log_format, cli.log_level.as_deref());
    match cli.command {
        Command::Version => {
            println!("vantage {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Probe { listen, status, web_config_file } => {
            let web = match web_config_file.as_deref().map(vantage::web::WebConfig::load).transpose() {
                Ok(w) => w.unwrap_or_default(),
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(1);
                }
            };
            probe(&listen, status, web.tls.as_ref())
        }
        Command::Check { config, env_file, web_config_file } => {
            match Config::load(Some(&config), env_file.as_deref()) {
                Ok(mut config) => {
                    if web_config_file.is_some() {
                        config.agent.web_config_file = web_config_file;
                    }
                    if let Err(e) = check_web_config(&config) {
                        eprintln!("{e}");
                        return ExitCode::from(1);
                    }
                    for line in config.summary() {
                        println!("{line}");
                    }
                    println!("configuration is valid");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Collect { once: _, config, env_file } => {
            let config = match load(config, env_file) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let text = runtime().block_on(vantage::collect_once(config));
            print!("{text}");
            ExitCode::SUCCESS
        }
        Command::Run { config: path, env_file, listen, web_config_file } => {
            let mut config = match load(path.clone(), env_file.clone()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if let Some(listen) = &listen {
                config.agent.listen_addr = listen.clone();
            }
            if web_config_file.is_some() {
                config.agent.web_config_file = web_config_file.clone();
            }
            if let Err(e) = check_web_config(&config) {
                eprintln!("{e}");
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
            vantage::failure_log::set_repeat(config.agent.log_repeat_interval);
            // A reload reads the same file and env file, with the same --listen
            // and web configuration file.
            let web_config_file = config.agent.web_config_file.clone();
            let load: vantage::runtime::reload::LoadConfig = Arc::new(move || {
                let mut c = Config::load(path.as_deref(), env_file.as_deref()).map_err(|e| e.to_string())?;
                if let Some(listen) = &listen {
                    c.agent.listen_addr = listen.clone();
                }
                if web_config_file.is_some() {
                    c.agent.web_config_file = web_config_file.clone();
                }
                Ok(c)
            });
            match runtime().block_on(run(config, load)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// The web configuration file named by the config, if any, read and
/// checked (certificates and keys included).
fn check_web_config(config: &Config) -> Result<(), vantage::web::WebConfigError> {
    match &config.agent.web_config_file {
        Some(path) => vantage::web::WebConfig::load(path).map(|_| ()),
        None => Ok(()),
    }
}

/// `vantage probe`: readiness, or with `status` the short summary.
fn probe(listen: &str, status: bool, tls: Option<&vantage::web::TlsSettings>) -> ExitCode {
    if status {
        return match vantage::http::status_text(listen, tls, std::time::Duration::from_secs(5)) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("no status: {e}");
                ExitCode::from(1)
            }
        };
    }
    match vantage::http::probe(listen, tls, std::time::Duration::from_secs(3)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("not ready: {e}");
            ExitCode::from(1)
        }
    }
}

fn load(config: Option<PathBuf>, env_file: Option<PathBuf>) -> Result<Config, ExitCode> {
    Config::load(config.as_deref(), env_file.as_deref()).map_err(|e: ConfigError| {
        eprintln!("{e}");
        ExitCode::from(EXIT_BAD_CONFIG)
    })
}

async fn run(config: Config, load: vantage::runtime::reload::LoadConfig) -> Result<(), vantage::RunError> {
    let addr = config.agent.listen_addr.clone();
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| vantage::RunError::Listen { addr: addr.clone(), source })?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let reload = vantage::Reload::new(Some(load));
    tokio::spawn(reload_on_hangup(reload.handle()));
    vantage::run(config, listener, shutdown, reload).await
}

/// SIGHUP reloads the configuration, as it does for Prometheus; the outcome
/// is logged by the reload itself.
async fn reload_on_hangup(handle: vantage::ReloadHandle) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler");
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the configuration");
        let _ = handle.reload().await;
    }
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    shutdown.cancel();
}

fn runtime() -> tokio::runtime::Runtime {
    // Two workers: the agent's work is small and bursty; more threads would
    // only cost memory on large hosts.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn init_tracing(format: LogFormat, level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    // Colour only for a person at a terminal: a pipe, file, journald or
    // `docker logs` gets plain text.
    use std::io::IsTerminal as _;
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
