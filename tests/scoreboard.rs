//! The workshop scoreboard over real HTTP: a server in-process on a loopback port with
//! a temporary SQLite file, driven with a plain HTTP client.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

mod support;

use backend_katas::results::{GradeResult, LevelStatus, Target};
use backend_katas::scoreboard::{Catalog, Config, Running, MAX_BODY_BYTES};
use harness::clock::{ManualClock, SharedClock};
use serde_json::{json, Value};
use support::ttl_lru;

const CODE: &str = "KATA-42";

/// A fresh directory for one test's database.
fn temp_db(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("backend-katas-scoreboard-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // A missing parent directory is created by the board.
    dir.join("nested").join("board.sqlite")
}

fn start(db: &Path, clock: SharedClock) -> Running {
    let config = Config { code: CODE.into(), db: db.to_path_buf(), catalog: Catalog::of_grader(), clock };
    Running::start(config, TcpListener::bind("127.0.0.1:0").unwrap()).expect("the board starts")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn body(workshop: &str, learner: &str, result: &GradeResult) -> String {
    json!({ "workshop": workshop, "learner": learner, "result": result }).to_string()
}

/// POSTs `body` as JSON; the status and the JSON answer.
fn post(board: &Running, body: &str) -> (u16, Value) {
    post_as(board, "application/json", body)
}

fn post_as(board: &Running, content_type: &str, body: &str) -> (u16, Value) {
    let mut response = agent()
        .post(format!("{}/api/submissions", board.url()))
        .header("Content-Type", content_type)
        .send(body)
        .expect("the board answers");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}")))
}

fn board_json(board: &Running) -> Value {
    let mut response = agent().get(format!("{}/api/board", board.url())).call().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
}

fn learner<'a>(board: &'a Value, name: &str) -> &'a Value {
    board["learners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("{name} not on {board}"))
}

fn cell(board: &Value, name: &str, level: u64) -> String {
    let levels = learner(board, name)["exercises"]["ttl_lru"]["levels"].as_array().unwrap();
    let cell = levels.iter().find(|c| c["level"] == level).unwrap();
    cell["status"].as_str().unwrap().to_string()
}

fn names(board: &Value) -> Vec<&str> {
    board["learners"].as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap()).collect()
}

use LevelStatus::{Failed, NotImplemented, Passed};

#[test]
fn a_valid_submission_appears_on_the_board() {
    let board = start(&temp_db("valid"), ManualClock::new().shared());
    let (status, answer) = post(&board, &body(CODE, "  Zoë <script>  ", &ttl_lru(&[Passed, Failed])));
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["learner"], "Zoë <script>", "the name is trimmed, otherwise kept literally");
    assert_eq!(answer["progressed"], true);

    let view = board_json(&board);
    assert_eq!(view["exercises"][0]["exercise"], "ttl_lru", "columns in report-card order");
    let zoe = learner(&view, "Zoë <script>");
    assert_eq!(zoe["submissions"], 1);
    assert_eq!(zoe["furthest"], json!({ "exercise": "ttl_lru", "level": 1 }));
    assert_eq!(cell(&view, "Zoë <script>", 1), "passed");
    assert_eq!(cell(&view, "Zoë <script>", 2), "failed");

    // The page itself is served.
    let mut page = agent().get(format!("{}/", board.url())).call().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.body_mut().read_to_string().unwrap().contains("EventSource"));
}

#[test]
fn bad_submissions_are_refused_with_a_typed_error() {
    let board = start(&temp_db("refused"), ManualClock::new().shared());
    let ok = ttl_lru(&[Passed]);
    let error_of = |(status, answer): (u16, Value)| {
        assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()), "no error message: {answer}");
        status
    };

    assert_eq!(error_of(post(&board, &body("WRONG", "ana", &ok))), 403);
    for name in ["", "   ", "tab\there", "a\u{202E}b", &"x".repeat(41)] {
        assert_eq!(error_of(post(&board, &body(CODE, name, &ok))), 400, "name {name:?}");
    }
    assert_eq!(error_of(post(&board, "{not json")), 400);
    assert_eq!(error_of(post(&board, &"[".repeat(50_000))), 400, "deep nesting");
    let mut reference = ok.clone();
    reference.target = Target::Reference;
    assert_eq!(error_of(post(&board, &body(CODE, "ana", &reference))), 400);
    let mut foreign = serde_json::to_value(&ok).unwrap();
    foreign["version"] = json!(2);
    let (status, answer) = post(&board, &json!({ "workshop": CODE, "learner": "ana", "result": foreign }).to_string());
    assert_eq!(status, 400);
    assert!(answer["error"].as_str().unwrap().contains("version"), "{answer}");
    let mut unknown_field = serde_json::to_value(&ok).unwrap();
    unknown_field["surprise"] = json!(1);
    assert_eq!(
        error_of(post(&board, &json!({ "workshop": CODE, "learner": "ana", "result": unknown_field }).to_string())),
        400
    );
    let mut beyond = ok.clone();
    beyond.exercises[0].highest_level_passed = 200;
    assert_eq!(error_of(post(&board, &body(CODE, "ana", &beyond))), 400);

    let mut huge = ok.clone();
    huge.started_at = "x".repeat(MAX_BODY_BYTES);
    assert_eq!(error_of(post(&board, &body(CODE, "ana", &huge))), 413);
    assert_eq!(error_of(post_as(&board, "text/plain", &body(CODE, "ana", &ok))), 415);

    assert_eq!(board_json(&board)["learners"], json!([]), "nothing refused is on the board");
}

#[test]
fn progress_regressions_and_who_is_stuck_longest() {
    let clock = ManualClock::new();
    let board = start(&temp_db("stuck"), clock.shared());
    let minute = Duration::from_secs(60);
    assert_eq!(post(&board, &body(CODE, "ana", &ttl_lru(&[Passed, Failed]))).0, 201);
    clock.advance(minute);
    assert_eq!(post(&board, &body(CODE, "bo", &ttl_lru(&[NotImplemented]))).0, 201);
    clock.advance(minute);
    // Ana reaches L2: Bo (joined at 1 min, no progress) is now stuck longest.
    assert_eq!(post(&board, &body(CODE, "ana", &ttl_lru(&[Passed, Passed, Failed]))).1["progressed"], true);
    let view = board_json(&board);
    assert_eq!(names(&view), ["bo", "ana"]);
    assert_eq!(learner(&view, "ana")["last_progress_ms"], 120_000);
    assert_eq!(learner(&view, "ana")["furthest"], json!({ "exercise": "ttl_lru", "level": 2 }));
    assert_eq!(learner(&view, "bo")["last_progress_ms"], 60_000);
    assert_eq!(learner(&view, "bo")["furthest"], Value::Null);

    // Ana breaks L1: a regression, not progress; L2, not graded (the run stopped at
    // L1), keeps its status. Getting back to L2 is not progress either.
    clock.advance(minute);
    assert_eq!(post(&board, &body(CODE, "ana", &ttl_lru(&[Failed]))).1["progressed"], false);
    let view = board_json(&board);
    assert_eq!(cell(&view, "ana", 1), "regression");
    assert_eq!(cell(&view, "ana", 2), "passed");
    assert_eq!(post(&board, &body(CODE, "ana", &ttl_lru(&[Passed, Passed]))).1["progressed"], false);
    let view = board_json(&board);
    assert_eq!(cell(&view, "ana", 1), "passed");
    assert_eq!(learner(&view, "ana")["last_progress_ms"], 120_000);
    assert_eq!(learner(&view, "ana")["submissions"], 4);
}

#[test]
fn a_restart_on_the_same_database_shows_the_same_board() {
    let db = temp_db("restart");
    let clock = ManualClock::new();
    let board = start(&db, clock.shared());
    assert_eq!(post(&board, &body(CODE, "ana", &ttl_lru(&[Passed, Failed]))).0, 201);
    clock.advance(Duration::from_secs(90));
    assert_eq!(post(&board, &body(CODE, "山田", &ttl_lru(&[Passed, Passed, Failed]))).0, 201);
    let before = board_json(&board);
    board.stop().unwrap();

    let board = start(&db, clock.shared());
    assert_eq!(board_json(&board), before);
    assert_eq!(names(&before), ["ana", "山田"]);
}

/// Reads server-sent events from a stream on a thread; each `board` event's data.
fn subscribe(board: &Running) -> mpsc::Receiver<Value> {
    let response = agent()
        .get(format!("{}/api/events", board.url()))
        .header("Accept", "text/event-stream")
        .call()
        .expect("the event stream opens");
    assert_eq!(response.status().as_u16(), 200);
    let (sender, events) = mpsc::channel();
    std::thread::spawn(move || {
        let mut event = String::new();
        for line in BufReader::new(response.into_body().into_reader()).lines() {
            let Ok(line) = line else { return };
            if let Some(name) = line.strip_prefix("event:") {
                event = name.trim().to_string();
            } else if let Some(data) = line.strip_prefix("data:") {
                if event == "board" && sender.send(serde_json::from_str(data.trim()).unwrap()).is_err() {
                    return;
                }
            }
        }
    });
    events
}

#[test]
fn a_subscriber_receives_an_event_after_each_submission() {
    let board = start(&temp_db("events"), ManualClock::new().shared());
    let events = subscribe(&board);
    let wait = Duration::from_secs(10);
    let first = events.recv_timeout(wait).expect("the current board on connecting");
    assert_eq!(first["learners"], json!([]));

    assert_eq!(post(&board, &body(CODE, "ana", &ttl_lru(&[Passed]))).0, 201);
    let update = events.recv_timeout(wait).expect("an event after the submission");
    assert_eq!(names(&update), ["ana"]);
    assert_eq!(cell(&update, "ana", 1), "passed");

    // A refused submission sends nothing.
    assert_eq!(post(&board, &body("WRONG", "bo", &ttl_lru(&[Passed]))).0, 403);
    assert_eq!(post(&board, &body(CODE, "bo", &ttl_lru(&[Failed]))).0, 201);
    assert_eq!(names(&events.recv_timeout(wait).unwrap()), ["ana", "bo"]);

    // Stopping the board ends open streams instead of waiting for them.
    board.stop().unwrap();
}

/// The learner's side, `cargo grade --submit`'s client, against the real board: a
/// submission lands, an unchanged verdict (watch mode) is not sent again, a changed one
/// is, and a wrong code comes back as a typed refusal rather than a panic.
#[test]
fn the_learners_submit_client_reaches_the_board() {
    use backend_katas::submit::{submit, submit_if_changed, Submission, SubmitError};
    let board = start(&temp_db("client"), ManualClock::new().shared());
    let last = temp_db("client-last").with_file_name("last-submission");
    let mine =
        |levels: &[LevelStatus]| Submission { workshop: CODE.into(), learner: "ada".into(), result: ttl_lru(levels) };
    assert!(submit_if_changed(&board.url(), &mine(&[Failed]), &last).unwrap(), "the first verdict is sent");
    assert!(!submit_if_changed(&board.url(), &mine(&[Failed]), &last).unwrap(), "the same verdict is not sent again");
    assert_eq!(learner(&board_json(&board), "ada")["submissions"], 1);
    assert!(submit_if_changed(&board.url(), &mine(&[Passed, Failed]), &last).unwrap(), "a changed verdict is sent");
    let view = board_json(&board);
    assert_eq!(learner(&view, "ada")["submissions"], 2);
    assert_eq!(cell(&view, "ada", 1), "passed");

    let wrong = Submission { workshop: "NOPE".into(), ..mine(&[Passed]) };
    match submit(&board.url(), &wrong) {
        Err(SubmitError::Refused { status: 403, message }) => assert!(!message.is_empty()),
        other => panic!("a wrong code must be refused with 403, got {other:?}"),
    }
}
