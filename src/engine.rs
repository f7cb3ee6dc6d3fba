//! The composition root: [`Engine::start`] builds the parts (the metrics recorder, the core's
//! actors, the durable store, the bus, the payment consumer and the outbox publisher, the Redis
//! snapshot, the HTTP server's state), starts the server, recovers, and runs until stopped;
//! [`EngineHandle::stop`] drains. `main`, the integration tests and the benchmarks all start
//! exactly this. Nothing else lives here.

use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::web;
use anyhow::Context as _;

use crate::actors::Core;
use crate::actors::payment;
use crate::config::Settings;
use crate::http::AppState;
use crate::persistence::bus::{Amqp, Sink, run_outbox};
use crate::persistence::{Persistence, Snapshot, Store};

/// The core plus its HTTP server, bound and ready to run.
pub struct Engine {
    core: Core,
    server: Server,
    port: u16,
    drained: Arc<tokio::sync::OnceCell<()>>,
}

/// Stops a running engine from elsewhere.
#[derive(Clone)]
pub struct EngineHandle {
    core: Core,
    server: ServerHandle,
    /// The drain, run once however many callers ask for it; later callers wait for the first.
    drained: Arc<tokio::sync::OnceCell<()>>,
}

impl EngineHandle {
    /// Graceful stop, the one path SIGTERM and tests take: sessions are told to close (1001), the
    /// server stops accepting and drains its connections, the trip actors stop, queued writes
    /// are flushed to the database (up to `http.shutdown_timeout_s`), then the cell actors stop.
    /// Returns once all of that is done.
    pub async fn stop(&self) {
        self.drained
            .get_or_init(|| async {
                self.core.signal_shutdown();
                self.server.stop(true).await;
                self.core.halt_trips().await;
                if let Some(p) = self.core.persistence()
                    && !p.flush(self.core.settings.http.shutdown_timeout()).await
                {
                    tracing::error!(
                        pending = p.pending(),
                        "stopping with writes the database did not take"
                    );
                }
                self.core.shutdown();
            })
            .await;
    }
}

impl Engine {
    /// Binds the listener (port 0 picks a free one), starts the core, opens the durable store
    /// (running its migrations) and the Redis snapshot when configured, starts the server, then
    /// recovers live trips and snapshot drivers; `/ready` answers 200 only after that. Must run
    /// inside an actix system.
    ///
    /// # Errors
    ///
    /// Invalid settings, a port that cannot be bound, a database or Redis that cannot be reached,
    /// or a recovery that fails.
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        let listener = crate::http::bind(
            &settings.http.host,
            settings.http.port,
            settings.http.backlog,
        )?;
        let port = listener.local_addr()?.port();
        let metrics = crate::metrics::install();
        let core = Core::start(settings)?;
        core.set_ready(false);
        let store = Store::connect(core.settings.database.url.as_deref())
            .await
            .context("cannot open the database (database.url)")?;
        store
            .migrate()
            .await
            .context("database migrations failed")?;
        tracing::info!(backend = store.backend().as_str(), "database ready");
        // Configured promotions are seeded; a code stored before (maybe disabled) is kept.
        for promo in &core.settings.pricing.promotions {
            store
                .create_promotion(&promo.promotion(), crate::clock::now_ms())
                .await
                .context("cannot seed the configured promotions")?;
        }
        let persistence = Persistence::start(store.clone(), core.settings.database.max_pending);
        let committed = persistence.committed();
        core.attach_persistence(persistence);
        let sink = match &core.settings.amqp.url {
            Some(url) => {
                actix_rt::spawn(payment::consume_amqp(
                    core.clone(),
                    url.clone(),
                    core.shutdown_signal(),
                ));
                Sink::Amqp(Box::new(Amqp::new(url, &core.settings.amqp.exchange)))
            }
            None => {
                actix_rt::spawn(payment::consume_local(core.clone(), core.bus.subscribe()));
                Sink::Local(core.bus.clone())
            }
        };
        core.start_notifications();
        actix_rt::spawn(payment::reconcile(core.clone(), core.shutdown_signal()));
        actix_rt::spawn(run_outbox(
            store,
            sink,
            core.settings.amqp.publish_batch,
            committed,
            Arc::clone(&core.broker_healthy),
            core.shutdown_signal(),
        ));
        if let Some(url) = &core.settings.redis.url {
            let redis = &core.settings.redis;
            let snapshot = Snapshot::connect(url, &redis.key_prefix, redis.ttl_s)
                .await
                .context("cannot reach Redis (redis.url)")?;
            core.attach_snapshot(snapshot);
        }
        let state = web::Data::new(AppState::new(core.clone(), metrics)?);
        let keys = crate::http::tokens::JwtKeys::new(&core.settings.auth.jwt_secret);
        // Calls to peers (a driver handed over, SPEC §11) carry an operator token of the
        // instance's own: the peers share the signing key.
        let instance = uuid::Uuid::now_v7();
        core.attach_peer_token(Box::new(move || {
            keys.issue(instance, crate::dispatch::Role::Operator, None, 60)
                .ok()
        }));
        actix_rt::spawn(sweep(web::Data::clone(&state), core.shutdown_signal()));
        let server = crate::http::server(state, listener)?;
        tracing::info!(port, "hexdispatch listening");
        let (trips, drivers) = core.recover().await.context("recovery failed")?;
        tracing::info!(trips, drivers, "recovery done; ready");
        core.set_ready(true);
        Ok(Self {
            core,
            server,
            port,
            drained: Arc::default(),
        })
    }

    /// The bound port.
    #[must_use]
    pub const fn port(&self) -> u16 {
        self.port
    }

    /// The shared core.
    #[must_use]
    pub const fn core(&self) -> &Core {
        &self.core
    }

    /// A handle to stop the engine.
    #[must_use]
    pub fn handle(&self) -> EngineHandle {
        EngineHandle {
            core: self.core.clone(),
            server: self.server.handle(),
            drained: Arc::clone(&self.drained),
        }
    }

    /// Runs until [`EngineHandle::stop`] is called, and returns once that stop has drained.
    ///
    /// # Errors
    ///
    /// I/O errors from the server.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.handle();
        let result = self.server.await;
        // The server ends when a stop began; the stop goes on to flush: wait for all of it.
        handle.stop().await;
        result
    }

    /// Runs until SIGINT or SIGTERM, then stops gracefully (see [`EngineHandle::stop`]) and
    /// returns only once every queued write has been flushed.
    ///
    /// # Errors
    ///
    /// I/O errors from the server or the signal handlers.
    pub async fn run_until_signalled(self) -> std::io::Result<()> {
        let handle = self.handle();
        actix_rt::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received; stopping gracefully");
            handle.stop().await;
        });
        self.run_until_stopped().await
    }
}

/// Forgets, every so often, what has outlived its retention (finished trips, idle limiter
/// entries), so memory does not grow with history.
async fn sweep(state: web::Data<AppState>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut every = tokio::time::interval(state.prune_interval());
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {
                let forgotten = state.prune(crate::clock::now_ms());
                if forgotten > 0 {
                    tracing::debug!(forgotten, "finished trips left memory");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
