//! The `stagehost` command line: run a pipeline, check its configuration, tail a topic.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use stagehost::config::{self, Overrides};
use stagehost::plugin::PluginEngine;

/// A WebAssembly-plugin stage host for Kafka event pipelines.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline until SIGINT or SIGTERM.
    Run {
        /// The pipeline configuration.
        #[arg(long, short, default_value = "pipeline.toml", env = "STAGEHOST_CONFIG")]
        config: PathBuf,
    },
    /// Validate the configuration and load every plugin, without starting anything.
    Check {
        /// The pipeline configuration.
        #[arg(long, short, default_value = "pipeline.toml", env = "STAGEHOST_CONFIG")]
        config: PathBuf,
    },
    /// Print the events of a topic as JSON lines.
    Tail {
        /// Topic to read.
        topic: String,
        /// Kafka bootstrap servers.
        #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Start from the oldest event instead of waiting for new ones.
        #[arg(long)]
        from_beginning: bool,
        /// Stop after this many events.
        #[arg(long)]
        max: Option<usize>,
        /// Stop after this long without an event (e.g. `5s`).
        #[arg(long, value_parser = humantime::parse_duration)]
        idle_timeout: Option<Duration>,
    },
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run { config } => run(&config).await,
            Command::Check { config } => check(&config),
            Command::Tail {
                topic,
                brokers,
                from_beginning,
                max,
                idle_timeout,
            } => {
                stagehost::kafka::tail::tail(stagehost::kafka::tail::TailOptions {
                    brokers,
                    topic,
                    from_beginning,
                    max,
                    idle_timeout,
                })
                .await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(path: &Path) -> anyhow::Result<()> {
    let config = config::load(path, &Overrides::from_env())?;
    stagehost::app::run(config, shutdown_signal()).await
}

fn check(path: &Path) -> anyhow::Result<()> {
    let config = config::load(path, &Overrides::from_env())?;
    let engine = PluginEngine::new(Some(&config.state.dir.join("compiled")))?;
    let plugins = stagehost::app::load_plugins(&engine, &config)?;
    println!("{}: ok", path.display());
    for (stage, (plugin, _)) in &plugins {
        println!(
            "  stage {stage}: {} ({})",
            plugin.path.display(),
            plugin.version
        );
    }
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    interrupt.await.ok();
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    interrupt.await.ok();
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("STAGEHOST_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,cranelift=warn,wasmtime=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("STAGEHOST_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
