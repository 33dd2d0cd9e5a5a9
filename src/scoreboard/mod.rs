//! The live workshop scoreboard (`cargo run --bin scoreboard -- --code WORKSHOP`).
//!
//! Learners' `cargo grade --submit URL --name NAME --code WORKSHOP` posts a
//! [`GradeResult`](crate::results::GradeResult); the board keeps every submission in
//! SQLite and serves a page showing every learner × exercise × level, updated live over
//! server-sent events, sorted so that whoever has been stuck longest comes first.
//!
//! * [`submission`]: the request body, its validation and the typed errors (HTTP status
//!   and message).
//! * [`store`]: SQLite: the append-only submission log and the board state derived
//!   from it, updated in the same transaction.
//! * [`http`]: the axum routes (`POST /api/submissions`, `GET /api/board`,
//!   `GET /api/events`, `GET /`).
//!
//! The exercises and levels shown are the [`Catalog`]: the grader's own, so columns
//! are in report-card order and present before anyone submits.

pub mod http;
pub mod store;
pub mod submission;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;

use harness::clock::{SharedClock, WallClock};
use serde::Serialize;

pub use store::{Store, StoreError};
pub use submission::SubmitError;

/// Bodies larger than this are refused with 413: a full `cargo grade` result with
/// every counterexample is a few tens of KiB.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Learner names: at most this many characters (Unicode scalar values), after trimming.
pub const MAX_NAME_CHARS: usize = 40;

/// The exercises a board shows, each with its levels, in report-card order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Catalog {
    pub exercises: Vec<CatalogExercise>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CatalogExercise {
    /// e.g. `ttl_lru`.
    pub exercise: String,
    /// In increasing order of level number.
    pub levels: Vec<CatalogLevel>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CatalogLevel {
    pub level: u8,
    /// e.g. `ttl` for `L2 ttl`.
    pub name: String,
}

impl Catalog {
    /// The grader's exercises and levels (read from the reference cases' metadata;
    /// nothing is run).
    pub fn of_grader() -> Catalog {
        Catalog::from_cases(&solutions::cases())
    }

    /// The exercises and levels of `cases`, in their order.
    pub fn from_cases(cases: &[harness::Case]) -> Catalog {
        let mut exercises: Vec<CatalogExercise> = Vec::new();
        for case in cases {
            let index = match exercises.iter().position(|e| e.exercise == case.exercise) {
                Some(index) => index,
                None => {
                    exercises.push(CatalogExercise { exercise: case.exercise.to_string(), levels: Vec::new() });
                    exercises.len() - 1
                }
            };
            let levels = &mut exercises[index].levels;
            if !levels.iter().any(|l| l.level == case.level.number) {
                levels.push(CatalogLevel { level: case.level.number, name: case.level.name.to_string() });
                levels.sort_by_key(|l| l.level);
            }
        }
        Catalog { exercises }
    }

    pub fn exercise(&self, name: &str) -> Option<&CatalogExercise> {
        self.exercises.iter().find(|e| e.exercise == name)
    }
}

/// Everything a running board needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The workshop code every submission must carry.
    pub code: String,
    /// The SQLite file (created with its parent directories when missing).
    pub db: PathBuf,
    pub catalog: Catalog,
    /// Submission times; [`WallClock`] outside tests.
    pub clock: SharedClock,
}

impl Config {
    pub fn new(code: impl Into<String>, db: impl Into<PathBuf>) -> Config {
        Config { code: code.into(), db: db.into(), catalog: Catalog::of_grader(), clock: WallClock::shared() }
    }
}

/// Serves the board on `listener` until `shutdown` becomes true (or its sender goes):
/// then open event streams end and the server stops once in-flight requests are done.
pub async fn serve(
    config: Config,
    store: Store,
    listener: tokio::net::TcpListener,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = http::router(Arc::new(http::Board::new(config, store, shutdown.clone())));
    let mut stop = shutdown;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
        .await
}

/// A board serving on its own thread and tokio runtime (tests, and anything that
/// wants a board next to other work). Dropping it shuts the server down gracefully
/// (open event streams end) and waits for it, closing the database.
pub struct Running {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<thread::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// Opens the store and serves on `listener` (e.g. bound to `127.0.0.1:0`).
    pub fn start(config: Config, listener: std::net::TcpListener) -> Result<Running, StartError> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let store = Store::open(&config.db)?;
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let thread = thread::Builder::new().name("scoreboard".into()).spawn(move || {
            runtime.block_on(async move {
                serve(config, store, tokio::net::TcpListener::from_std(listener)?, shutdown_rx).await
            })
        })?;
        Ok(Running { addr, shutdown: Some(shutdown), thread: Some(thread) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and waits for it; the error it stopped with, if any.
    pub fn stop(mut self) -> std::io::Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> std::io::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(true);
        }
        match self.thread.take().map(thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(std::io::Error::other("the scoreboard thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// Why a board could not start.
#[derive(Debug)]
pub enum StartError {
    Io(std::io::Error),
    Store(StoreError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Io(e) => write!(f, "{e}"),
            StartError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<std::io::Error> for StartError {
    fn from(e: std::io::Error) -> Self {
        StartError::Io(e)
    }
}

impl From<StoreError> for StartError {
    fn from(e: StoreError) -> Self {
        StartError::Store(e)
    }
}
