//! The `fluxrelay` command. Exit status: 0 done, 1 failed while running, 2 bad usage,
//! 78 (EX_CONFIG) the configuration is wrong — nothing was started.

mod cluster;
mod config;
mod confirm_worker;
mod dlq;
mod explain;
mod kubeconfig;
mod listener;
mod malloc_arenas;
mod metrics;
mod metrics_confirm;
mod serve;
mod wait;
mod workers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use fluxrelay_core::handlers::dispatch::DispatchOptions;

use crate::config::{ConfigError, ServeConfig};
use crate::dlq::QueueName;
use crate::serve::ServeError;

const EXIT_FAILED: u8 = 1;
const EXIT_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    name = "fluxrelay",
    version,
    about = "GitLab pushes to Flux, at once, on every cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Receive GitLab webhooks and trigger Flux, in one process with an embedded durable queue
    Serve(ServeArgs),
    /// List or redrive dead letters (embedded queue, or an SQS dead-letter queue)
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Show what happened to one push on each cluster
    Explain(ExplainArgs),
    /// Register a cluster from a kubeconfig, list the registry, check a cluster
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Wait until each cluster has deployed a commit (from GitLab's commit statuses; for CI)
    Wait(WaitArgs),
}

#[derive(clap::Args)]
struct WaitArgs {
    /// The project: its id, or its path (group/project); in GitLab CI $CI_PROJECT_ID
    #[arg(long)]
    project: String,
    /// The commit; in GitLab CI $CI_COMMIT_SHA
    #[arg(long)]
    sha: String,
    /// Only clusters matching this glob (repeatable; default: every cluster with a status).
    /// A name without glob characters is waited for until its status appears
    #[arg(long = "cluster")]
    clusters: Vec<String>,
    /// Give up after this long (15m, 90s, 1h)
    #[arg(long, default_value = "15m")]
    timeout: String,
    /// How often to read the statuses
    #[arg(long, default_value = "5s")]
    poll: String,
    /// GitLab's API root (default: $CI_API_V4_URL)
    #[arg(long)]
    gitlab_url: Option<String>,
    /// The environment variable holding a token with read_api (or api) on the project
    #[arg(long, default_value = "FLUXRELAY_GITLAB_TOKEN")]
    token_env: String,
    /// The status name template fluxrelay posts with ([confirm] status_name)
    #[arg(long, default_value = fluxrelay_core::gitlab_api::statuses::DEFAULT_NAME_TEMPLATE)]
    status_name: String,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreKind {
    /// One <name>.json per cluster in --dir (fluxrelay serve's cluster_dir)
    File,
    /// The AWS functions' registry: the index object in --bucket, and one secret under
    /// --prefix for each cluster whose entry holds a credential
    Secretsmanager,
}

#[derive(clap::Args)]
struct StoreArgs {
    #[arg(long, value_enum, default_value_t = StoreKind::File)]
    store: StoreKind,
    /// The directory of entries for --store file
    #[arg(long, default_value = "clusters.d")]
    dir: PathBuf,
    /// The secret name prefix for --store secretsmanager
    #[arg(long, default_value = fluxrelay_adapters::registry_aws::DEFAULT_PREFIX)]
    prefix: String,
    /// The registry bucket for --store secretsmanager (the stack's RegistryBucketName
    /// output; default: $FLUXRELAY_REGISTRY_BUCKET)
    #[arg(long)]
    bucket: Option<String>,
    /// The registry index's key in --bucket
    #[arg(long, default_value = fluxrelay_adapters::registry_aws::DEFAULT_INDEX_KEY)]
    index_key: String,
    /// Instead: the clusters of this fluxrelay serve configuration (list and check only)
    #[arg(long)]
    config: Option<PathBuf>,
}

impl StoreArgs {
    fn store(&self) -> cluster::Store {
        match (&self.config, self.store) {
            (Some(file), _) => cluster::Store::ServeConfig(file.clone()),
            (None, StoreKind::File) => cluster::Store::Files(self.dir.clone()),
            (None, StoreKind::Secretsmanager) => cluster::Store::SecretsManager {
                location: fluxrelay_adapters::registry_aws::RegistryLocation {
                    bucket: self
                        .bucket
                        .clone()
                        .or_else(|| std::env::var("FLUXRELAY_REGISTRY_BUCKET").ok())
                        .unwrap_or_default(),
                    index_key: self.index_key.clone(),
                    prefix: self.prefix.clone(),
                },
            },
        }
    }
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Build a registry entry from a kubeconfig context and store it (never printing secrets)
    Add {
        /// The cluster's name in fluxrelay (1-63 of A-Za-z0-9-_.)
        name: String,
        /// The kubeconfig to read (default: $KUBECONFIG, else ~/.kube/config)
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Its context (default: current-context)
        #[arg(long)]
        context: Option<String>,
        /// Namespaces with GitRepositories and Receivers (repeatable)
        #[arg(long = "namespace", default_value = "flux-system")]
        namespaces: Vec<String>,
        /// Only pushes to projects matching this glob, e.g. 'platform/**' (repeatable)
        #[arg(long = "project")]
        projects: Vec<String>,
        /// Only pushes to refs matching this glob, e.g. main or 'refs/tags/v*' (repeatable)
        #[arg(long = "ref")]
        refs: Vec<String>,
        /// Annotate GitRepositories instead of calling Receivers
        #[arg(long)]
        annotate: bool,
        /// Do not read Receiver tokens from their Secrets in the cluster
        #[arg(long)]
        no_receiver_tokens: bool,
        /// Replace an existing entry (and renew its dispatcher identity's token)
        #[arg(long)]
        force: bool,
        /// Store your kubeconfig user's own credentials instead of making a least-privilege
        /// dispatcher identity (ServiceAccount, Roles, bound token) with them
        #[arg(long)]
        operator_credentials: bool,
        /// Days the dispatcher identity's token lasts (1 to 3650)
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
        token_days: u32,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// One line per registry entry, invalid ones with their problems
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Connect as the entry and check every permission, object and the receiver, with fixes
    Check {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// From one secret per cluster (before issue 13) to the registry index: says what it
    /// would do; --apply does it (use with --store secretsmanager)
    Migrate {
        /// Write the index (and copy a secret whose name is not <prefix><name>)
        #[arg(long)]
        apply: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(clap::Args)]
struct ExplainArgs {
    /// The push key (from the 202 answer or any log line); a unique prefix is enough
    key: String,
    /// The configuration file whose data directory holds the embedded queue
    #[arg(long, default_value = "fluxrelay.toml", conflicts_with = "data_dir")]
    config: PathBuf,
    /// The data directory, instead of reading it from the configuration file
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// On AWS: the dispatch dead-letter queue's URL (the stack's DispatchDLQUrl output)
    #[arg(long, value_name = "DLQ_URL", conflicts_with = "data_dir")]
    sqs: Option<String>,
    /// With --sqs: look through at most this many dead letters
    #[arg(long, value_name = "N", default_value_t = fluxrelay_adapters::sqs_dlq::BROWSE_MAX_MESSAGES, requires = "sqs")]
    max: usize,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The configuration file (TOML); see examples/fluxrelay.toml
    #[arg(long, default_value = "fluxrelay.toml")]
    config: PathBuf,
    /// Listen on this address instead of the file's `listen`
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Keep the queue in this directory instead of the file's `data_dir`
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Also register the cluster of this kubeconfig's context (subscribed to every push)
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current-context)
    #[arg(long, requires = "kubeconfig")]
    context: Option<String>,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Benchmark only: one Receiver call per push instead of one per batch (the naive
    /// dispatcher `fluxrelay-bench` compares coalescing against)
    #[arg(long, hide = true)]
    bench_no_coalesce: bool,
    /// Benchmark only: answer accepted webhooks 202 without queueing them (they are lost);
    /// the ceiling `fluxrelay-bench` compares durable ingest against
    #[arg(long, hide = true)]
    bench_ceiling_no_queue: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct QueueArgs {
    /// The configuration file whose data directory holds the queue
    #[arg(long, default_value = "fluxrelay.toml", conflicts_with = "data_dir")]
    config: PathBuf,
    /// The data directory, instead of reading it from the configuration file
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = QueueName::Dispatch)]
    queue: QueueName,
    /// An SQS dead-letter queue instead (its URL: the stack's DispatchDLQUrl or
    /// IntakeDLQUrl output); AWS credentials and region come from the environment
    #[arg(long, value_name = "DLQ_URL", conflicts_with_all = ["data_dir", "queue"])]
    sqs: Option<String>,
    /// Only this cluster's dead letters
    #[arg(long)]
    cluster: Option<String>,
    /// With --sqs: receive at most this many dead letters per run (a run also stops before
    /// the first ones it hid would show again); run again for the rest
    #[arg(long, value_name = "N", default_value_t = fluxrelay_adapters::sqs_dlq::BROWSE_MAX_MESSAGES, requires = "sqs")]
    max: usize,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// One line per dead letter: when, cluster, project, ref, status, attempts, key, reason
    List {
        #[command(flatten)]
        queue: QueueArgs,
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back on their queue to be delivered again
    Redrive {
        #[command(flatten)]
        queue: QueueArgs,
        /// With --sqs: the queue to send them to (default: the DLQ's source queue,
        /// `<stack>-dispatch-dlq.fifo` → `<stack>-dispatch.fifo`)
        #[arg(long, value_name = "QUEUE_URL", requires = "sqs")]
        to: Option<String>,
    },
}

/// At most this many threads for `serve`'s blocking queue calls.
const SERVE_BLOCKING_THREADS: usize = 16;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Dlq { command } => dlq(command),
        Command::Explain(args) => explain(args),
        Command::Cluster { command } => cluster_command(command),
        Command::Wait(args) => wait_command(args),
    }
}

fn wait_command(args: WaitArgs) -> ExitCode {
    let options = (|| -> Result<wait::WaitOptions, String> {
        let api_url = args
            .gitlab_url
            .clone()
            .or_else(|| {
                std::env::var("CI_API_V4_URL")
                    .ok()
                    .filter(|v| !v.is_empty())
            })
            .ok_or("no GitLab API URL: pass --gitlab-url (in GitLab CI, $CI_API_V4_URL is used)")?;
        let token = std::env::var(&args.token_env)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                format!(
                    "environment variable {} (the GitLab token) is not set",
                    args.token_env
                )
            })?;
        Ok(wait::WaitOptions {
            api_url,
            token: fluxrelay_core::secret::Secret::new(token),
            project: args.project.clone(),
            sha: args.sha.clone(),
            clusters: args.clusters.clone(),
            timeout: wait::parse_duration(&args.timeout).map_err(|e| format!("--timeout: {e}"))?,
            poll: wait::parse_duration(&args.poll)
                .map_err(|e| format!("--poll: {e}"))?
                .max(std::time::Duration::from_secs(1)),
            naming: fluxrelay_core::gitlab_api::statuses::StatusNaming::new(&args.status_name)
                .map_err(|e| format!("--status-name: {e}"))?,
        })
    })();
    let options = match options {
        Ok(options) => options,
        Err(message) => {
            eprintln!("fluxrelay: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fluxrelay: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let result = runtime.block_on(wait::wait(
        options,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    ));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("fluxrelay: {message}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Every line, in both formats and at every level, has its webhook paths redacted: a
    // library's span (kube-client's, at debug) carries the URL it calls.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(fluxrelay_adapters::log_writer::Redacting(std::io::stderr))
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}

fn config_failed(error: &ConfigError) -> ExitCode {
    eprintln!("fluxrelay: configuration error:");
    for problem in &error.problems {
        eprintln!("  {problem}");
    }
    ExitCode::from(EXIT_CONFIG)
}

fn serve(args: ServeArgs) -> ExitCode {
    // Before the runtime starts its threads: each would take an arena of its own.
    let arenas_limited = malloc_arenas::limit_for_serve();
    init_logging(args.log_format);
    tracing::debug!(
        arenas_limited,
        arenas = malloc_arenas::SERVE_ARENAS,
        "malloc arenas (MALLOC_ARENA_MAX or GLIBC_TUNABLES, when set, are kept)"
    );
    let mut config = match ServeConfig::load(&args.config) {
        Ok(config) => config,
        Err(error) => return config_failed(&error),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(data_dir) = args.data_dir {
        config.data_dir = data_dir;
    }
    if let Some(path) = &args.kubeconfig {
        match kubeconfig::entry_from_kubeconfig(path, args.context.as_deref()) {
            Ok(entry) => {
                if let Err(error) = config.add_cluster(entry, path) {
                    return config_failed(&error);
                }
            }
            Err(error) => return config_failed(&error),
        }
    }
    // The blocking calls are the queue's (they wait on its single writer thread) and the
    // HTTP clients' DNS lookups: more threads than this only queue on that writer, and
    // tokio's default of 512 let a burst of settles cost a thread, its stack and a malloc
    // arena each (105 threads, 60 MiB of RSS under the throughput benchmark).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(SERVE_BLOCKING_THREADS)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fluxrelay: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let options = serve::ServeOptions {
        dispatch: DispatchOptions {
            coalesce: !args.bench_no_coalesce,
        },
        bench_ceiling_no_queue: args.bench_ceiling_no_queue,
    };
    match runtime.block_on(serve::run(config, options, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(ServeError::Config(error)) => config_failed(&error),
        Err(ServeError::Runtime(message)) => {
            tracing::error!(error = %message, "fluxrelay serve failed");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// SIGTERM (service managers, `kill`) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

fn dlq(command: DlqCommand) -> ExitCode {
    let result = match command {
        DlqCommand::List { queue, json } => match &queue.sqs {
            Some(url) => with_runtime(async {
                let count = dlq::list_sqs(
                    url,
                    queue.cluster.as_deref(),
                    dlq::sqs_limits(queue.max),
                    json,
                    &mut std::io::stdout().lock(),
                )
                .await?;
                if !json {
                    eprintln!("{count} dead letter(s) in {url}");
                }
                Ok(())
            }),
            None => data_dir(&queue).and_then(|dir| {
                let count = dlq::list(
                    &dir,
                    queue.queue,
                    queue.cluster.as_deref(),
                    json,
                    &mut std::io::stdout().lock(),
                )?;
                if !json {
                    eprintln!("{count} dead letter(s) in the {} queue", queue.queue.name());
                }
                Ok(())
            }),
        },
        DlqCommand::Redrive { queue, to } => match &queue.sqs {
            Some(url) => with_runtime(async {
                let (count, target) = dlq::redrive_sqs(
                    url,
                    to.as_deref(),
                    queue.cluster.as_deref(),
                    dlq::sqs_limits(queue.max),
                )
                .await?;
                println!("redrove {count} dead letter(s) to {target}");
                Ok(())
            }),
            None => data_dir(&queue).and_then(|dir| {
                let count = dlq::redrive(&dir, queue.queue, queue.cluster.as_deref())?;
                println!(
                    "redrove {count} dead letter(s) to the {} queue",
                    queue.queue.name()
                );
                Ok(())
            }),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("fluxrelay: {message}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn explain(args: ExplainArgs) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let result = match &args.sqs {
        Some(url) => with_runtime(explain::explain_sqs(
            url,
            &args.key,
            dlq::sqs_limits(args.max),
            &mut out,
        )),
        None => {
            let dir = match &args.data_dir {
                Some(dir) => Ok(dir.clone()),
                None => config::data_dir_of(&args.config).map_err(|error| error.to_string()),
            };
            dir.and_then(|dir| explain::explain_embedded(&dir, &args.key, &mut out))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("fluxrelay: {message}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn cluster_command(command: ClusterCommand) -> ExitCode {
    let result = match command {
        ClusterCommand::Add {
            name,
            kubeconfig,
            context,
            namespaces,
            projects,
            refs,
            annotate,
            no_receiver_tokens,
            force,
            operator_credentials,
            token_days,
            store,
        } => {
            let kubeconfig = kubeconfig.or_else(default_kubeconfig);
            match kubeconfig {
                None => {
                    Err("no kubeconfig: pass --kubeconfig PATH (or set KUBECONFIG)".to_string())
                }
                Some(kubeconfig) => {
                    let options = cluster::AddOptions {
                        name,
                        kubeconfig,
                        context,
                        namespaces,
                        projects,
                        refs,
                        annotate,
                        read_receiver_tokens: !no_receiver_tokens,
                        force,
                        operator_credentials,
                        token_days,
                    };
                    with_runtime(cluster::add(&options, &store.store()))
                }
            }
        }
        ClusterCommand::List { store } => with_runtime(async {
            let count = cluster::list(&store.store()).await?;
            eprintln!("{count} cluster(s)");
            Ok(())
        }),
        ClusterCommand::Migrate { apply, store } => {
            with_runtime(cluster::migrate(&store.store(), apply))
        }
        ClusterCommand::Check { name, store } => with_runtime(async {
            if cluster::check(&store.store(), &name).await? {
                Ok(())
            } else {
                Err(format!(
                    "cluster {name}: some checks failed (✗ above, each with its fix)"
                ))
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("fluxrelay: {message}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn default_kubeconfig() -> Option<PathBuf> {
    if let Some(paths) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        return std::env::split_paths(&paths).next();
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".kube/config"))
}

fn with_runtime(work: impl std::future::Future<Output = Result<(), String>>) -> Result<(), String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the async runtime: {error}"))?
        .block_on(work)
}

fn data_dir(args: &QueueArgs) -> Result<PathBuf, String> {
    match &args.data_dir {
        Some(dir) => Ok(dir.clone()),
        None => config::data_dir_of(&args.config).map_err(|error| error.to_string()),
    }
}
