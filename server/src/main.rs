//! The `ross` command: parse the command line, load settings, start logging, serve.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ross_config::Settings;

/// On-the-fly image resizing server.
#[derive(Parser)]
#[command(name = "ross", version, about)]
struct Cli {
    /// TOML settings file (default: $ROSS_CONFIG, else built-in defaults).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// Print the effective settings, or every configuration error, and exit.
    CheckConfig,
    /// Print the nginx site for the effective settings: hits served by nginx with ross's
    /// headers, the rest passed to ross (deploy/README.md).
    NginxConfig {
        /// nginx's `listen`: a port, or an address and port.
        #[arg(long, default_value = "80")]
        listen: String,
        /// nginx's `server_name`.
        #[arg(long, default_value = "_")]
        server_name: String,
        /// The access log nginx writes (hit locations name it again).
        #[arg(long, default_value = "/var/log/nginx/access.log", value_name = "PATH")]
        access_log: String,
    },
    /// Tools for plugin authors.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// A render worker, started by the server with its socket as standard input (not for
    /// people).
    #[command(hide = true)]
    Worker {
        /// The server's process id.
        #[arg(long)]
        server: u32,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Create a new mode plugin crate that builds, passes its tests and is served as it is.
    New {
        /// The mode's name (the URL word): lower-case letters, digits, '_' or '-'.
        name: String,
        /// Folder to create (default: ./NAME).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Take ross's plugin crates from this folder (one holding plugin-api/ and
        /// plugin-kit/, such as a ross source tree) instead of a registry by version.
        #[arg(long, value_name = "SDK")]
        path: Option<PathBuf>,
    },
    /// Load plugin files as the server would (ABI and version checks, a test render of each
    /// mode) and say what it would serve, or why it would refuse them.
    Check {
        /// Plugin files (*.so).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Memory kept after load, measured as idle RSS after 5,000 renders (`scripts/bench`): glibc's
/// malloc with its default arenas (one per thread of the blocking pool, up to 8 per core)
/// kept 365 MiB; mimalloc 972 MiB; jemalloc 186 MiB (148 with background purging); glibc with
/// two arenas 85 MiB, at the same speed. So: glibc, two arenas, set before any thread starts.
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets an allocator tunable; called first thing in main, before any
    // other thread exists or allocates.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    ross::worker::this_executable_is_ross();
    let cli = Cli::parse();
    let command = match cli.command.unwrap_or(Command::Serve) {
        // A worker reads no settings (the file may hold secrets): the server tells it all.
        Command::Worker { server } => return ross::worker::process::main(server),
        // Plugin tools read no settings: they work outside any deployment.
        Command::Plugin(command) => return plugin_command(command),
        command => command,
    };
    let settings = match Settings::from_process(cli.config.as_deref()) {
        Ok(s) => s,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::CheckConfig => {
            for (key, value) in settings.effective() {
                println!("{key} = {value}");
            }
            // What `serve` refuses before loading anything, refused here the same way.
            if let ross_config::SourceSettings::Local { root, timeout } = &settings.source {
                if let Err(e) = ross::source::LocalSource::new(root, *timeout) {
                    eprintln!("source.root: {e}");
                    return ExitCode::from(2);
                }
            }
            check_plugins(&settings)
        }
        Command::NginxConfig {
            listen,
            server_name,
            access_log,
        } => {
            let site = ross::nginx_config::Site {
                listen,
                server_name,
                access_log,
            };
            let cache_dir = match std::path::absolute(&settings.cache.dir) {
                Ok(dir) => dir,
                Err(e) => {
                    eprintln!("cache.dir {}: {e}", settings.cache.dir.display());
                    return ExitCode::from(2);
                }
            };
            match ross::nginx_config::site(&settings, &site, &cache_dir) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Plugin(_) | Command::Worker { .. } => {
            unreachable!("handled before settings are read")
        }
        Command::Serve => {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info".into());
            // Lines are written by a thread of their own, as many per write as are queued:
            // written in place, one write each under the stderr lock, they cost cache hits
            // 14% of their rate. At most 128,000 lines wait; beyond that new ones are dropped
            // (and counted in a warning) rather than slowing requests. Dropping the guard at
            // the end writes what is queued.
            let (writer, _log_writer) =
                tracing_appender::non_blocking(std::io::BufWriter::new(std::io::stderr()));
            let logs = tracing_subscriber::fmt()
                .with_writer(writer)
                .with_env_filter(filter);
            if settings.log.json {
                logs.json().init();
            } else {
                logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .init();
            }
            ross::telemetry::log_panics();
            if let Err(e) = ross::telemetry::install(settings.statsd.as_ref()) {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
            // Kept to the end: dropping it flushes the events still queued.
            let _sentry = ross::telemetry::init_sentry(settings.sentry.as_ref());
            match serve(settings) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn plugin_command(command: PluginCommand) -> ExitCode {
    match command {
        PluginCommand::New { name, dir, path } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let sdk = path.map_or(ross::scaffold::Sdk::Registry, ross::scaffold::Sdk::Path);
            match ross::scaffold::new_plugin(&name, &dir, &sdk) {
                Ok(files) => {
                    for f in files {
                        println!("created {}", f.display());
                    }
                    println!(
                        "next: cd {} && cargo test && cargo build --release",
                        dir.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        PluginCommand::Check { files } => {
            let copies =
                std::env::temp_dir().join(format!("ross-plugin-check-{}", std::process::id()));
            let checker = match PluginChecker::new(&copies, &Settings::default()) {
                Ok(checker) => checker,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let registry = &checker.registry;
            let mut ok = true;
            for file in files {
                match registry.load_file(&file) {
                    Ok(_) => {
                        for mode in registry.modes().iter().filter(|m| m.file == file) {
                            println!(
                                "{}: mode {} {} loads: {}",
                                file.display(),
                                mode.name,
                                mode.version,
                                mode.description
                            );
                        }
                    }
                    Err(e) => {
                        println!("{e}");
                        ok = false;
                    }
                }
            }
            let _ = std::fs::remove_dir_all(&copies);
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// A registry with its own runtime, checking plugins in sandboxed workers as the server does,
/// outside any server.
struct PluginChecker {
    registry: ross::plugins::ModeRegistry,
    _runtime: tokio::runtime::Runtime,
}

impl PluginChecker {
    fn new(copies: &std::path::Path, settings: &Settings) -> anyhow::Result<PluginChecker> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let spawner = ross::worker::Spawner::new()?;
        let registry = ross::plugins::ModeRegistry::new(
            copies,
            spawner,
            ross::state::worker_settings(settings),
            runtime.handle().clone(),
            std::sync::Arc::new(ross::telemetry::Metrics::new()),
        );
        Ok(PluginChecker {
            registry,
            _runtime: runtime,
        })
    }
}

/// `check-config`'s look at `plugins.dir`: every plugin loaded in a worker as at start-up;
/// an error when none loads.
fn check_plugins(settings: &Settings) -> ExitCode {
    if let Err(e) = ross::state::check_plugins_dir(&settings.plugins.dir) {
        eprintln!("plugins.dir: {e}");
        return ExitCode::from(2);
    }
    let copies = std::env::temp_dir().join(format!("ross-check-config-{}", std::process::id()));
    let checker = match PluginChecker::new(&copies, settings) {
        Ok(checker) => checker,
        Err(e) => {
            eprintln!("plugins.dir: cannot check the plugins: {e}");
            return ExitCode::from(2);
        }
    };
    let files = ross::plugins::plugin_files(&settings.plugins.dir).unwrap_or_default();
    for file in &files {
        if let Err(e) = checker.registry.load_file(file) {
            eprintln!("plugins.dir: {e}");
        }
    }
    let modes: Vec<String> = checker
        .registry
        .modes()
        .iter()
        .map(|m| format!("{} {}", m.name, m.version))
        .collect();
    let _ = std::fs::remove_dir_all(&copies);
    if modes.is_empty() {
        eprintln!(
            "plugins.dir: no mode loads from {} ({} plugin files refused)",
            settings.plugins.dir.display(),
            files.len()
        );
        return ExitCode::from(2);
    }
    println!("# modes: {}", modes.join(", "));
    ExitCode::SUCCESS
}

fn serve(settings: Settings) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let addr = settings.server.listen;
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("server.listen: cannot listen on {addr}"))?;
        let state = ross::AppState::new(settings).await?;
        let names: Vec<String> = state.modes.modes().iter().map(|m| m.name.clone()).collect();
        tracing::info!(modes = %names.join(", "), "ready");
        // Say at once whether the source answers, without holding up start-up on it.
        let probe = state.clone();
        tokio::spawn(async move {
            let source = probe.pipeline.source();
            match source.check().await {
                Ok(()) => tracing::info!(source = %source.describe(), "source answers"),
                Err(e) => tracing::warn!(error = %e, "source does not answer; /ready is 503"),
            }
        });
        ross::run(listener, state, shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
