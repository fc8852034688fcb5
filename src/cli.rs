//! The `easel` command line: the server and the operator's account tools.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::accounts::{Account, Accounts, limits};
use crate::app::{Application, open_db};
use crate::catalog::Catalog;
use crate::client::{Client, Request, failure, images};
use crate::config::{Config, Overrides, Role};
use crate::db::{Db, display_url, sqlite_file};
use crate::logging::LogFormat;
use crate::money::Micros;

#[derive(Parser)]
#[command(name = "easel", version, about = "Self-hosted image-generation task API")]
struct Cli {
    /// Configuration file (default: ./easel.toml if it exists).
    #[arg(long, global = true, env = "EASEL_CONFIG")]
    config: Option<PathBuf>,
    /// Where the SQLite database and result files live.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Log lines as text or as one JSON object per line.
    #[arg(long, global = true, env = "EASEL_LOG_FORMAT", value_enum, default_value_t)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the API and the workers.
    Serve {
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// What this node runs (default `all`; env EASEL_ROLE).
        #[arg(long, value_enum)]
        role: Option<Role>,
    },
    /// Manage accounts.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage credits.
    #[command(subcommand)]
    Credits(CreditsCommand),
    /// Generate images through a running Easel (EASEL_URL, EASEL_API_KEY).
    Generate(GenerateArgs),
}

#[derive(Args)]
struct GenerateArgs {
    #[arg(long)]
    model: String,
    #[arg(long)]
    prompt: String,
    /// `2K`, `3K`, `4K`, `WxH` or `auto`, as the model accepts.
    #[arg(long)]
    size: Option<String>,
    /// Images to make.
    #[arg(long, default_value_t = 1)]
    n: u32,
    /// A reference image URL (repeatable).
    #[arg(long = "ref")]
    references: Vec<String>,
    /// Wait for the images, with a progress bar, and save them.
    #[arg(long)]
    wait: bool,
    /// Where to save the images (with --wait).
    #[arg(long, default_value = ".")]
    out: PathBuf,
    #[arg(long, env = "EASEL_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, env = "EASEL_API_KEY", hide_env_values = true)]
    api_key: String,
    #[command(flatten)]
    print: JsonFlag,
}

#[derive(Args)]
struct JsonFlag {
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum AccountsCommand {
    /// Create an account with a first key.
    Create {
        #[arg(long)]
        name: String,
        /// Opening credits in USD.
        #[arg(long, default_value_t = 0.0)]
        credits: f64,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Show an account (by id or name).
    Show {
        id: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Replace the account's webhook signing secret and print the new one.
    RotateWebhookSecret {
        id: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Set an account's limits for one model (omitted ones return to the model's default).
    SetLimits {
        id: String,
        #[arg(long)]
        model: String,
        /// Task creations per minute.
        #[arg(long)]
        rpm: Option<u32>,
        /// Unfinished (pending + processing) tasks at once.
        #[arg(long)]
        concurrency: Option<u32>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Issue another key for an account.
    Create {
        #[arg(long)]
        account: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Revoke a key at once, also on running servers.
    Revoke { key_id: String },
}

#[derive(Subcommand)]
enum CreditsCommand {
    /// Add credits to an account.
    Add {
        #[arg(long)]
        account: String,
        /// Amount in USD.
        #[arg(long)]
        amount: f64,
        #[command(flatten)]
        out: JsonFlag,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = if matches!(cli.command, Command::Serve { .. }) { "info,sqlx=warn" } else { "warn" };
    crate::logging::init(cli.log_format, default_log);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Generate(args) = cli.command {
        return generate(args).await;
    }
    let (listen, role) = match &cli.command {
        Command::Serve { listen, role } => (*listen, *role),
        _ => (None, None),
    };
    let config = Config::load(cli.config.as_deref(), Overrides { listen, data_dir: cli.data_dir.clone(), role })?;
    match cli.command {
        Command::Serve { .. } => serve(config).await,
        Command::Accounts(cmd) => accounts_command(&config, cmd).await,
        Command::Keys(cmd) => keys_command(&config, cmd).await,
        Command::Credits(cmd) => credits_command(&config, cmd).await,
        Command::Generate(_) => unreachable!("handled before loading the server configuration"),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    if let Some(created) = &app.bootstrap {
        println!(
            "Created account {} ({}) with {} of credits.\nAPI key (shown once, keep it): {}\n\
             Webhook signing secret (shown once, keep it): {}",
            created.account.name,
            created.account.id,
            created.account.balance,
            created.key.key,
            created.account.webhook_secret
        );
    }
    println!("Easel listening on http://{}", app.local_addr());
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    app.run(shutdown).await
}

/// `easel generate`: submits through the model's own API; with `--wait`, follows the task to
/// its end and saves its images. `--json` prints the dialect-free task view (`GET
/// /api/v1/tasks/{id}`), plus `files` once saved; a task that did not succeed is still printed
/// there, and the command fails with its code and message.
async fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.url, &args.api_key)?;
    let request =
        Request { model: args.model, prompt: args.prompt, size: args.size, n: args.n, references: args.references };
    let route = client.route(&request).await?;
    let task = client.submit(&route).await?;
    if !args.wait {
        if args.print.json {
            println!("{}", json!({"id": task, "model": route.model(), "api": route.api(), "state": "pending"}));
        } else {
            println!("{task}");
        }
        return Ok(());
    }
    let mut view = client.wait(&task, request.n).await?;
    if let Some(failed) = failure(&view) {
        if args.print.json {
            println!("{view}");
        }
        anyhow::bail!("task {task} {}: {failed}", view["state"].as_str().unwrap_or("ended"));
    }
    let files = client.save(&task, &images(&view), &args.out).await.with_context(|| format!("saving task {task}"))?;
    if args.print.json {
        view["files"] = json!(files);
        println!("{view}");
    } else {
        for path in &files {
            println!("{}", path.display());
        }
    }
    Ok(())
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
    shutdown.cancel();
}

/// Opens the database for the account, key and credit commands. At the default location
/// (`./easel-data`, relative to wherever the command runs) they never create one: a database
/// made there by a command run in the wrong directory is not the server's, and a key issued into
/// it would be refused. A location named on purpose (`--data-dir`, `EASEL_DATA_DIR`,
/// `data_dir` in the config, `EASEL_DATABASE_URL`) may be set up by the CLI before the first
/// `easel serve`. Which database was used goes to stderr, so that `--json` stays one object.
async fn open_existing_db(config: &Config) -> anyhow::Result<Db> {
    let url = config.database_url();
    let named = config.database_url.is_some() || config.data_dir != Config::default().data_dir;
    let missing = sqlite_file(&url).filter(|file| !file.exists());
    if let Some(file) = &missing
        && !named
    {
        let file = std::path::absolute(file).unwrap_or_else(|_| file.clone());
        anyhow::bail!(
            "no Easel database at {} (the default location, relative to this directory), and none was \
             created. Point at the server's database with --data-dir DIR or EASEL_DATA_DIR=DIR (the \
             directory `easel serve` uses), or EASEL_DATABASE_URL=sqlite://PATH or postgres://…",
            file.display()
        );
    }
    let verb = if missing.is_some() { "creating new database" } else { "database" };
    eprintln!("{verb}: {}", display_url(&url));
    open_db(config).await
}

fn account_json(a: &Account) -> serde_json::Value {
    json!({
        "account_id": a.id,
        "name": a.name,
        "balance": a.balance.to_usd(),
        "held": a.held.to_usd(),
        "created_at": a.created_at,
    })
}

fn print_account(a: &Account, as_json: bool) {
    if as_json {
        println!("{}", account_json(a));
    } else {
        println!("{} ({})\n  balance: {}\n  held:    {}", a.name, a.id, a.balance, a.held);
    }
}

async fn accounts_command(config: &Config, cmd: AccountsCommand) -> anyhow::Result<()> {
    let accounts = Accounts::new(open_existing_db(config).await?);
    match cmd {
        AccountsCommand::Create { name, credits, out } => {
            let created = accounts.create(&name, Micros::from_usd(credits)?).await?;
            if out.json {
                let mut obj = account_json(&created.account);
                obj["key"] = json!(created.key.key);
                obj["key_id"] = json!(created.key.key_id);
                obj["webhook_secret"] = json!(created.account.webhook_secret);
                println!("{obj}");
            } else {
                print_account(&created.account, false);
                println!(
                    "  key:    {} ({})\n  webhook secret: {}",
                    created.key.key, created.key.key_id, created.account.webhook_secret
                );
            }
        }
        AccountsCommand::Show { id, out } => print_account(&accounts.find(&id).await?, out.json),
        AccountsCommand::RotateWebhookSecret { id, out } => {
            let account = accounts.find(&id).await?;
            let secret = accounts.rotate_webhook_secret(&account.id).await?;
            if out.json {
                println!("{}", json!({"account_id": account.id, "webhook_secret": secret}));
            } else {
                println!("{secret}");
            }
        }
        AccountsCommand::SetLimits { id, model, rpm, concurrency } => {
            let catalog = Catalog::new(&config.models)?;
            let model = catalog.get(&model).ok_or_else(|| anyhow::anyhow!("no model {model:?} in the catalog"))?;
            let account = accounts.find(&id).await?;
            limits::set(accounts.db(), &account.id, &model.id, rpm, concurrency).await?;
            let now = limits::effective(accounts.db(), &account.id, model).await?;
            println!("{} on {}: {} per minute, {} at once", account.name, model.id, now.rpm, now.max_concurrent);
        }
    }
    Ok(())
}

async fn keys_command(config: &Config, cmd: KeysCommand) -> anyhow::Result<()> {
    let accounts = Accounts::new(open_existing_db(config).await?);
    match cmd {
        KeysCommand::Create { account, out } => {
            let account = accounts.find(&account).await?;
            let key = accounts.issue_key(&account.id).await?;
            if out.json {
                println!("{}", json!({"key_id": key.key_id, "key": key.key, "account_id": account.id}));
            } else {
                println!("{} ({})", key.key, key.key_id);
            }
        }
        KeysCommand::Revoke { key_id } => {
            anyhow::ensure!(accounts.revoke_key(&key_id, None).await?, "no active key {key_id}");
            println!("revoked {key_id}");
        }
    }
    Ok(())
}

async fn credits_command(config: &Config, cmd: CreditsCommand) -> anyhow::Result<()> {
    let accounts = Accounts::new(open_existing_db(config).await?);
    match cmd {
        CreditsCommand::Add { account, amount, out } => {
            let account = accounts.find(&account).await?;
            let amount = Micros::from_usd(amount)?;
            anyhow::ensure!(amount > Micros::ZERO, "--amount must be positive");
            let updated = accounts.add_credits(&account.id, amount).await?;
            print_account(&updated, out.json);
        }
    }
    Ok(())
}
