//! The `stagehost` command line: run a pipeline, check its configuration, tail a topic,
//! trace one key through the pipeline, swap plugins of a running host, list and replay dead
//! letters.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use stagehost::admin::client::{AdminClient, AdminTarget, render_list};
use stagehost::app::RunOptions;
use stagehost::config::{self, Overrides};
use stagehost::dlq;

mod signals;
use signals::StopSignals;

// glibc's allocator showed up as a fifth of the host's CPU in a whole-pipeline profile
// (small JSON, header and record allocations on every tokio worker); mimalloc serves them
// from thread-local pages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        /// Development mode: hot-swap a stage's plugin whenever its file changes.
        #[arg(long)]
        watch: bool,
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
        /// Kafka bootstrap servers; default 127.0.0.1:9092, or the `--config` file's.
        #[arg(long, env = "KAFKA_BROKERS")]
        brokers: Option<String>,
        /// A pipeline configuration whose `[kafka]` settings (security, SASL, TLS, …) reach
        /// the brokers.
        #[arg(long, short, env = "STAGEHOST_CONFIG")]
        config: Option<PathBuf>,
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
    /// Every event one key (an order id) produced on every topic of the pipeline, in time
    /// order with the hop between consecutive events, and its dead letters.
    Trace(TraceArgs),
    /// Inspect and hot-swap the plugins of a running host (through its admin API).
    Plugin {
        #[command(flatten)]
        admin: AdminAddress,
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Prints the console's address with the admin token (open it in a browser), after
    /// checking that the host answers with that token.
    Console {
        #[command(flatten)]
        admin: AdminAddress,
    },
    /// Records held because they cannot be dead-lettered, and what to do with them (through
    /// the admin API of the host that holds them).
    Stuck {
        #[command(flatten)]
        admin: AdminAddress,
        #[command(subcommand)]
        command: StuckCommand,
    },
    /// Load through an HTTP ingress: requests from a body template, open loop at a fixed rate
    /// (or closed loop with `--clients`), latency to each request's last record on a done
    /// topic (HDR histogram), and the generator's own CPU time.
    Load {
        #[command(flatten)]
        options: stagehost::load::LoadOptions,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List dead letters and replay them to their source topic.
    Dlq {
        #[command(flatten)]
        file: ConfigFile,
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// A stateful stage's keyed state, offline (stop the host first).
    State {
        #[command(flatten)]
        file: ConfigFile,
        #[command(subcommand)]
        command: StateCommand,
    },
}

/// What `stagehost trace` looks up, and where.
#[derive(clap::Args)]
struct TraceArgs {
    /// The key: a record key, or the value of a route's `id_field` in an event's body (an
    /// order id in the shipped pipeline).
    key: String,
    /// The pipeline configuration (brokers, topics, stages).
    #[arg(long, short, default_value = "pipeline.toml", env = "STAGEHOST_CONFIG")]
    config: PathBuf,
    /// Kafka bootstrap servers; default: the configuration's `kafka.brokers`.
    #[arg(long)]
    brokers: Option<String>,
    /// Print the trace as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum StateCommand {
    /// Write a stage's keyed state from the local store back into its changelog topic, after
    /// the topic was deleted: says what it will do, and does it with `--yes`.
    Republish {
        /// The stage.
        #[arg(long)]
        stage: String,
        /// Do it (without: only say what would be done).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Every stage's live version, swap counts and history.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check a new component and make it a stage's live version, between two events.
    Swap {
        /// The stage.
        stage: String,
        /// The new component (`.wasm`).
        file: PathBuf,
    },
    /// Return a stage to the version that was live before the current one.
    Rollback {
        /// The stage.
        stage: String,
    },
}

/// The pipeline configuration of commands with subcommands of their own (`dlq`, `state`).
#[derive(clap::Args)]
struct ConfigFile {
    /// The pipeline configuration (brokers, topics, stages, `state.dir`).
    #[arg(
        long,
        short,
        global = true,
        default_value = "pipeline.toml",
        env = "STAGEHOST_CONFIG"
    )]
    config: PathBuf,
}

/// Where a running host's admin API listens and the token it takes (commands that talk to it).
#[derive(clap::Args)]
struct AdminAddress {
    /// The host's admin API address; default: `admin.listen` of `--config`, else 127.0.0.1:9091.
    #[arg(long = "admin", global = true, env = "STAGEHOST_ADMIN")]
    address: Option<String>,
    /// The admin (or read-only) token; default: the file `admin.token_file` of `--config`, else
    /// the token a loopback host generated in `<state.dir>/admin-token`.
    #[arg(
        long = "admin-token",
        global = true,
        env = "STAGEHOST_ADMIN_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// The host's pipeline configuration (for its admin address, token file and `state.dir`).
    #[arg(
        long,
        short,
        global = true,
        default_value = "pipeline.toml",
        env = "STAGEHOST_CONFIG"
    )]
    config: PathBuf,
}

impl AdminAddress {
    fn client(self) -> anyhow::Result<AdminClient> {
        AdminTarget {
            address: self.address,
            token: self.token,
            config: self.config,
        }
        .client()
    }
}

#[derive(Subcommand)]
enum StuckCommand {
    /// The held records: stage, topic, partition, offset and why.
    List {
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Commit past the held record without publishing anything for it (it stays readable at
    /// its offset).
    Skip {
        /// The stage.
        stage: String,
        /// The topic of the held record.
        topic: String,
        /// Its partition.
        partition: i32,
    },
    /// Handle the held record again (once its dead-letter topic takes it).
    Retry {
        /// The stage.
        stage: String,
        /// The topic of the held record.
        topic: String,
        /// Its partition.
        partition: i32,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Show dead letters with their reasons.
    List {
        /// Only this stage's.
        #[arg(long)]
        stage: Option<String>,
        /// Only since this long ago (`30m`) or this time (`2026-11-25T10:00:00Z`).
        #[arg(long)]
        since: Option<String>,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send dead letters back to their source topic, for the stage's current plugin; each
    /// dead letter is replayed at most once.
    Replay {
        /// The stage that failed on them.
        #[arg(long)]
        stage: String,
        /// Only the dead letter with this id (or failed event id).
        #[arg(long, conflicts_with = "since")]
        id: Option<String>,
        /// Only those since this long ago (`30m`) or this time.
        #[arg(long)]
        since: Option<String>,
    },
}

/// How long the runtime waits for its threads once the command is done.
const RUNTIME_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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
            Command::Run { config, watch } => run(&config, watch).await,
            Command::Plugin { admin, command } => plugin(admin.client()?, command).await,
            Command::Stuck { admin, command } => stuck(admin.client()?, command).await,
            Command::Console { admin } => console(admin.client()?).await,
            Command::Dlq { file, command } => dlq(&file.config, command).await,
            Command::State {
                file,
                command: StateCommand::Republish { stage, yes },
            } => {
                let config = config::load(&file.config, &Overrides::from_env())?;
                print!(
                    "{}",
                    stagehost::state::republish::republish(&config, &stage, yes).await?
                );
                Ok(())
            }
            Command::Load { options, json } => {
                let report = stagehost::load::run(&options).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    println!("{}", report.summary());
                }
                Ok(())
            }
            Command::Check { config } => check(&config),
            Command::Trace(args) => trace(args).await,
            Command::Tail {
                topic,
                brokers,
                config,
                from_beginning,
                max,
                idle_timeout,
            } => {
                let kafka = stagehost::kafka::KafkaClients::for_tool(
                    config.as_deref(),
                    brokers.as_deref(),
                )?;
                stagehost::kafka::tail::tail(stagehost::kafka::tail::TailOptions {
                    kafka,
                    topic,
                    from_beginning,
                    max,
                    idle_timeout,
                })
                .await
            }
        }
    });
    // A task stuck in a blocking call (librdkafka can block while closing a consumer) must
    // not keep the process from exiting.
    runtime.shutdown_timeout(RUNTIME_STOP_TIMEOUT);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(path: &Path, watch_plugins: bool) -> anyhow::Result<()> {
    // First of all, before the configuration is read or anything starts: from here on SIGINT
    // and SIGTERM mean a clean stop, also during start-up.
    let stop = StopSignals::install()?;
    loop {
        let config = config::load(path, &Overrides::from_env())?;
        let ran = stagehost::app::run(
            config,
            RunOptions { watch_plugins },
            stop.clone().requested(),
        )
        .await;
        match ran {
            // The store lost its files while running: everything cached about it is wrong, so
            // the pipeline starts again, as a restart with an emptied state.dir would.
            Err(error)
                if !stop.is_requested()
                    && error
                        .chain()
                        .any(|cause| cause.is::<stagehost::store::StoreReplaced>()) =>
            {
                tracing::error!(
                    error = format!("{error:#}"),
                    "restarting the pipeline in process"
                );
            }
            other => return other,
        }
    }
}

fn check(path: &Path) -> anyhow::Result<()> {
    let config = config::load(path, &Overrides::from_env())?;
    let engine = stagehost::app::engine(&config)?;
    let plugins = stagehost::app::load_plugins(&engine, &config)?;
    println!("{}: ok", path.display());
    for (stage, (slot, _)) in &plugins {
        let plugin = slot.current();
        println!(
            "  stage {stage}: {} ({})",
            plugin.path.display(),
            plugin.version
        );
    }
    Ok(())
}

async fn trace(args: TraceArgs) -> anyhow::Result<()> {
    let TraceArgs {
        key,
        config,
        brokers,
        json,
    } = args;
    let mut config = config::load(&config, &Overrides::from_env())?;
    if let Some(brokers) = brokers {
        config.kafka.brokers = brokers;
    }
    let kafka = stagehost::kafka::KafkaClients::new(&config.kafka);
    tokio::task::spawn_blocking(move || {
        stagehost::kafka::check_access(&kafka, stagehost::kafka::ACCESS_PATIENCE)
    })
    .await??;
    let trace =
        tokio::task::spawn_blocking(move || stagehost::trace::lookup(&config, &key)).await??;
    if json {
        println!("{}", serde_json::to_string_pretty(&trace)?);
    } else {
        print!("{}", stagehost::trace::render(&trace));
    }
    Ok(())
}

/// Prints the console's address with the token, once the host has answered with it.
async fn console(client: AdminClient) -> anyhow::Result<()> {
    client.list().await?;
    println!("{}", client.console_url());
    Ok(())
}

async fn plugin(client: AdminClient, command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::List { json } => {
            let reports = client.list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            } else {
                print!("{}", render_list(&reports));
            }
        }
        PluginCommand::Swap { stage, file } => {
            let outcome = client.swap(&stage, &file).await?;
            if outcome.changed {
                println!(
                    "stage {}: {} -> {}",
                    outcome.stage, outcome.previous, outcome.version
                );
            } else {
                println!(
                    "stage {}: {} is already live; nothing changed",
                    outcome.stage, outcome.version
                );
            }
        }
        PluginCommand::Rollback { stage } => {
            let outcome = client.rollback(&stage).await?;
            println!(
                "stage {}: rolled back {} -> {}",
                outcome.stage, outcome.previous, outcome.version
            );
        }
    }
    Ok(())
}

async fn stuck(client: AdminClient, command: StuckCommand) -> anyhow::Result<()> {
    use stagehost::stage::Decision;
    let (decision, stage, topic, partition) = match command {
        StuckCommand::List { json } => {
            let records = client.stuck().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else if records.is_empty() {
                println!("no record is held");
            } else {
                for record in records {
                    println!(
                        "{} {}/{}@{}: {}{}",
                        record.stage,
                        record.topic,
                        record.partition,
                        record.offset,
                        record.reason,
                        record
                            .decision
                            .map(|d| format!(" (decided: {d:?})"))
                            .unwrap_or_default()
                    );
                }
            }
            return Ok(());
        }
        StuckCommand::Skip {
            stage,
            topic,
            partition,
        } => (Decision::Skip, stage, topic, partition),
        StuckCommand::Retry {
            stage,
            topic,
            partition,
        } => (Decision::Retry, stage, topic, partition),
    };
    let record = client
        .decide_stuck(&stage, &topic, partition, decision)
        .await?;
    println!(
        "{} {}/{}@{}: {:?} (carried out when the stage next looks at the partition, within a second)",
        record.stage, record.topic, record.partition, record.offset, decision
    );
    Ok(())
}

async fn dlq(path: &Path, command: DlqCommand) -> anyhow::Result<()> {
    let config = config::load(path, &Overrides::from_env())?;
    let kafka = stagehost::kafka::KafkaClients::new(&config.kafka);
    tokio::task::spawn_blocking(move || {
        stagehost::kafka::check_access(&kafka, stagehost::kafka::ACCESS_PATIENCE)
    })
    .await??;
    let since = |text: Option<String>| text.as_deref().map(dlq::parse_since).transpose();
    match command {
        DlqCommand::List {
            stage,
            since: s,
            json,
        } => {
            let filter = dlq::Filter {
                stage,
                since: since(s)?,
                id: None,
            };
            let entries =
                tokio::task::spawn_blocking(move || dlq::list(&config, &filter)).await??;
            if json {
                for entry in &entries {
                    println!("{}", serde_json::to_string(entry)?);
                }
            } else {
                print!("{}", dlq::render(&entries));
            }
        }
        DlqCommand::Replay {
            stage,
            id,
            since: s,
        } => {
            let filter = dlq::Filter {
                stage: Some(stage),
                since: since(s)?,
                id,
            };
            let report = dlq::replay(&config, &filter).await?;
            for id in &report.replayed {
                println!("replayed {id}");
            }
            for (id, at) in &report.already_replayed {
                println!("skipped {id}: already replayed at {at}");
            }
            for (id, why) in &report.not_replayable {
                println!("cannot replay {id}: {why}");
            }
            println!(
                "{} replayed, {} already replayed, {} not replayable",
                report.replayed.len(),
                report.already_replayed.len(),
                report.not_replayable.len()
            );
        }
    }
    Ok(())
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
