//! The HTTP side of the board (axum):
//!
//! * `POST /api/submissions` (also `POST /`, for a `--submit` URL given as the
//!   board's address): store a submission; 201 with `{"id", "learner", "progressed",
//!   "ignored"}`, or an error status with `{"error": "..."}` (see [`SubmitError`]).
//! * `GET /api/board`: the board as JSON ([`BoardView`]).
//! * `GET /api/events`: server-sent events; each `board` event carries the whole
//!   board, first on connecting and then after every accepted submission.
//! * `GET /`: the page (`page.html`), which renders those events.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use tokio::sync::{broadcast, watch};

use super::store::{BoardView, Recorded, Store, StoreError};
use super::submission::{self, SubmitError};
use super::{Catalog, Config, MAX_BODY_BYTES};
use harness::clock::SharedClock;

const PAGE: &str = include_str!("page.html");

/// The shared state of a running board.
pub struct Board {
    code: String,
    catalog: Catalog,
    clock: SharedClock,
    /// SQLite calls are short and the room is small: one connection, one at a time,
    /// always on a blocking thread.
    store: Arc<Mutex<Store>>,
    /// The board's JSON after each accepted submission, for the event streams.
    updates: broadcast::Sender<Arc<str>>,
    /// Becomes true when the server shuts down: event streams end, so that a graceful
    /// shutdown does not wait for browsers to go away.
    shutdown: watch::Receiver<bool>,
}

impl Board {
    pub fn new(config: Config, store: Store, shutdown: watch::Receiver<bool>) -> Board {
        let (updates, _) = broadcast::channel(16);
        Board {
            code: config.code,
            catalog: config.catalog,
            clock: config.clock,
            store: Arc::new(Mutex::new(store)),
            updates,
            shutdown,
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock.now().as_nanos() / 1_000_000
    }

    /// Runs `f` on the store, on a blocking thread.
    async fn with_store<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Board, &mut Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let board = Arc::clone(self);
        let joined = tokio::task::spawn_blocking(move || {
            let mut store = board.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&board, &mut store)
        })
        .await;
        joined.unwrap_or_else(|e| Err(StoreError::Internal(format!("the database task failed: {e}"))))
    }

    async fn board_json(self: &Arc<Self>) -> Result<Arc<str>, StoreError> {
        self.with_store(|board, store| Ok(to_json(&store.board(&board.catalog, board.now_ms())?))).await
    }
}

fn to_json(view: &BoardView) -> Arc<str> {
    // A BoardView holds only strings, numbers and maps with string keys: it always
    // serialises.
    serde_json::to_string(view).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string()).into()
}

pub fn router(board: Arc<Board>) -> Router {
    Router::new()
        .route("/", get(page).post(submit))
        .route("/api/submissions", post(submit))
        .route("/api/board", get(board_view))
        .route("/api/events", get(events))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(board)
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

impl IntoResponse for SubmitError {
    fn into_response(self) -> Response {
        (self.status(), Json(serde_json::json!({ "error": self.to_string() }))).into_response()
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let mime = value.split(';').next().unwrap_or("").trim();
    mime.eq_ignore_ascii_case("application/json")
}

async fn submit(
    State(board): State<Arc<Board>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Recorded>), SubmitError> {
    if !is_json(&headers) {
        return Err(SubmitError::WrongContentType);
    }
    // The body limit layer makes reading a longer body fail with 413, whether or not
    // it announced its length.
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => SubmitError::TooLarge,
        _ => SubmitError::Malformed(rejection.body_text()),
    })?;
    let submission = submission::parse(&body, &board.code, &board.catalog)?;
    let recorded = board
        .with_store(move |board, store| {
            let now = board.now_ms();
            let recorded = store.record(&submission, &board.catalog, now)?;
            // Sent under the lock, so that streams see boards in commit order. No
            // subscriber is not an error.
            let _ = board.updates.send(to_json(&store.board(&board.catalog, now)?));
            Ok(recorded)
        })
        .await
        .map_err(|e| {
            eprintln!("scoreboard: storing a submission failed: {e}");
            SubmitError::Storage(e.to_string())
        })?;
    Ok((StatusCode::CREATED, Json(recorded)))
}

async fn board_view(State(board): State<Arc<Board>>) -> Response {
    match board.board_json().await {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json.to_string()).into_response(),
        Err(e) => {
            (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
        }
    }
}

async fn events(State(board): State<Arc<Board>>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Subscribe before reading the current board: an update committed in between is
    // then sent twice rather than lost.
    let updates = board.updates.subscribe();
    let first = board.board_json().await.ok();
    let shutdown = board.shutdown.clone();
    let stream =
        stream::unfold((board, updates, shutdown, first), |(board, mut updates, mut shutdown, first)| async move {
            if let Some(json) = first {
                return Some((board_event(&json), (board, updates, shutdown, None)));
            }
            let update = tokio::select! {
                update = updates.recv() => update,
                () = stopped(&mut shutdown) => return None,
            };
            let json = match update {
                Ok(json) => json,
                // Fell behind: the latest board is all that matters.
                Err(broadcast::error::RecvError::Lagged(_)) => board.board_json().await.ok()?,
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((board_event(&json), (board, updates, shutdown, None)))
        });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Returns once the server is shutting down (or its shutdown sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn board_event(json: &str) -> Result<Event, Infallible> {
    Ok(Event::default().event("board").data(json))
}
