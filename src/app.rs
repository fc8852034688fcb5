//! Builds the whole service from a [`Config`]: used by `easel serve` and by the tests.

use std::fs::File;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::accounts::rate::RateLimiter;
use crate::accounts::{Accounts, CreatedAccount};
use crate::api::{self, AppState, Services};
use crate::catalog::Catalog;
use crate::config::{Config, Role};
use crate::db::{Db, Dialect};
use crate::egress::{Egress, Policy};
use crate::ids::random_hex;
use crate::listener::{self, Limits};
use crate::media::Media;
use crate::money::Micros;
use crate::routing::Router;
use crate::signals::Bus;
use crate::storage::{ResultLinks, Storage};
use crate::tasks::TaskStore;
use crate::tasks::worker::WorkerPool;
use crate::webhooks::{Dispatcher, Schedule};

pub struct Application {
    listener: TcpListener,
    /// The listener's timeouts and connection cap.
    limits: Limits,
    state: AppState,
    workers: Arc<WorkerPool>,
    dispatcher: Arc<Dispatcher>,
    bus: Bus,
    db: Db,
    /// The account created on first start, if this start created it.
    pub bootstrap: Option<CreatedAccount>,
    /// Held for the process's life: one server per SQLite data dir.
    _lock: Option<File>,
}

/// Opens the database named by the configuration (for the CLI as well as the server).
pub async fn open_db(config: &Config) -> anyhow::Result<Db> {
    Db::connect(&config.database_url()).await
}

fn lock_data_dir(config: &Config) -> anyhow::Result<File> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
    let path = config.data_dir.join("easel.lock");
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    file.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "another `easel serve` is already using {} (SQLite allows one server)",
            config.data_dir.display()
        )
    })?;
    Ok(file)
}

impl Application {
    pub async fn build(mut config: Config) -> anyhow::Result<Self> {
        let node = config.server.node_id.get_or_insert_with(|| format!("node-{}", random_hex::<3>())).clone();
        // First, so that a mistake in `[models]` stops the start before anything is opened.
        let catalog = Arc::new(Catalog::new(&config.models)?);
        let db = open_db(&config).await?;
        let lock = match db.dialect {
            Dialect::Sqlite => Some(lock_data_dir(&config)?),
            Dialect::Postgres => None,
        };
        let accounts = Accounts::new(db.clone());
        let bus = Bus::new(db.dialect);
        let tasks = TaskStore::new(db.clone(), bus.clone());
        if lock.is_some() && config.role != Role::All {
            tracing::warn!(role = ?config.role, "on SQLite one server owns the data; only role `all` both takes and runs tasks");
        }
        if lock.is_some() {
            // We are the only server on this database: leases still standing are a dead process's.
            let orphaned = tasks.expire_all_leases().await?;
            if orphaned > 0 {
                tracing::info!(tasks = orphaned, "resuming tasks left in flight by the previous run");
            }
            let callbacks = crate::webhooks::store::release_all_leases(&db).await?;
            let keys = crate::tasks::idempotency::free_all_unfinished(&db).await?;
            if callbacks > 0 || keys > 0 {
                tracing::info!(callbacks, idempotency_keys = keys, "freed what the previous run left in flight");
            }
        }
        let bootstrap = bootstrap_account(&accounts, &config).await?;

        let limits = Limits::new(&config.http, listener::fd_limit::raise());
        tracing::info!(max_connections = limits.max_connections, "connection cap");
        let listener =
            TcpListener::bind(config.listen).await.with_context(|| format!("listening on {}", config.listen))?;
        let public_url = config.public_url(listener.local_addr()?);
        let storage = Storage::open(&config.storage_url(), public_url, &db).await?;
        let router = Arc::new(Router::from_config(&config.channels, &config.local, &config.server, &catalog)?);
        // The operator's switches hold across restarts: before any task is claimed.
        router.load_switches(&db).await.context("reading the channel switches")?;
        let media = Media::new(&config.media);
        let limiter = RateLimiter::new(config.redis_url.as_deref(), &config.redis).await?;
        let egress = Egress::new(Policy::new(config.server.allow_private_network))?;
        let workers = Arc::new(WorkerPool {
            store: tasks.clone(),
            catalog: catalog.clone(),
            router: router.clone(),
            egress: egress.clone(),
            storage: storage.clone(),
            media: media.clone(),
            max_interruptions: config.server.max_task_interruptions,
            workers: config.server.workers.max(1),
            lease: Duration::from_secs(config.server.lease_secs.max(3)),
            grace: config.shutdown_grace(),
            bus: bus.clone(),
            running: Default::default(),
            node: node.clone(),
        });
        let links = ResultLinks::new(storage.clone(), config.retention_ms());
        let state = AppState::new(Services {
            config,
            db: db.clone(),
            limiter,
            bus: bus.clone(),
            egress: egress.clone(),
            router: router.clone(),
            catalog,
            accounts,
            tasks: tasks.clone(),
            links: links.clone(),
            storage,
            media,
        });
        let dispatcher = Arc::new(Dispatcher {
            db: db.clone(),
            tasks,
            accounts: state.accounts.clone(),
            links,
            catalog: state.catalog.clone(),
            schedule: Schedule::from_config(&state.config.webhooks),
            slots: state.config.webhooks.dispatch_slots.max(1),
            egress,
            wake: bus.callbacks_queued(),
        });
        Ok(Self { listener, limits, state, workers, dispatcher, bus, db, bootstrap, _lock: lock })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves (and, by the node's role, works) until `shutdown` is cancelled; then stops taking
    /// work, gives requests and tasks in hand the grace period to end, hands back the leases of
    /// tasks still running, and returns.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let background = if self.state.config.role.runs_tasks() { self.spawn_background(&shutdown) } else { vec![] };
        let grace = self.state.config.shutdown_grace();
        // Every role listens: API nodes too follow tasks that run elsewhere (`Prefer: wait`, events).
        let notifications = tokio::spawn(self.bus.clone().listen(self.state.config.database_url(), shutdown.clone()));
        let deadlines = tokio::spawn(crate::tasks::worker::cancel_overdue(self.state.tasks.clone(), shutdown.clone()));
        let node = self.state.config.server.node_id.clone().unwrap_or_default();
        let heartbeat =
            tokio::spawn(crate::nodes::heartbeat(self.db.clone(), node, self.state.config.role, shutdown.clone()));
        // Every role too: workers route by the switches, and every node reports them.
        let switches = tokio::spawn(crate::routing::switches::follow(
            self.state.router.clone(),
            self.db.clone(),
            self.bus.channels_switched(),
            shutdown.clone(),
        ));
        let app = api::router(self.state.clone());
        tokio::select! {
            () = listener::serve(self.listener, app, self.limits, shutdown.clone()) => {}
            _ = crate::shutdown::grace_over(&shutdown, grace) => {
                tracing::warn!("requests still open after the shutdown grace period are cut off");
            }
        }
        shutdown.cancel();
        futures::future::join_all(background).await;
        let _ = tokio::join!(notifications, deadlines, heartbeat, switches);
        self.db.close().await;
        Ok(())
    }

    /// The task workers, the callback dispatcher, the scheduled channel tests and the retention
    /// sweeper.
    fn spawn_background(&self, shutdown: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        vec![
            tokio::spawn(self.workers.clone().run(shutdown.clone())),
            tokio::spawn(self.dispatcher.clone().run(shutdown.clone())),
            tokio::spawn(crate::routing::probe::schedule(
                self.state.router.clone(),
                self.state.catalog.clone(),
                self.state.media.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(crate::retention::run(
                self.db.clone(),
                self.state.tasks.clone(),
                self.state.storage.clone(),
                self.state.config.retention_ms(),
                shutdown.clone(),
            )),
        ]
    }
}

/// On an empty store, creates the `default` account with its opening credits and a key.
async fn bootstrap_account(accounts: &Accounts, config: &Config) -> anyhow::Result<Option<CreatedAccount>> {
    if accounts.count().await? > 0 {
        return Ok(None);
    }
    let credits = Micros::from_usd(config.server.bootstrap_credits_usd)?;
    match accounts.create("default", credits).await {
        Ok(created) => Ok(Some(created)),
        // Another node bootstrapped at the same moment.
        Err(crate::accounts::AccountError::NameTaken(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
