//! The scoreboard page end to end in a real headless Chromium, driven over WebDriver
//! (chromedriver + fantoccini): two learners submit, the page shows both; one
//! progresses and the page updates without a reload.
//!
//! Needs `chromium` and `chromedriver` on the PATH (Debian: `apt-get install chromium
//! chromium-driver`; `.ci/run` installs them). Without them the test is skipped with a
//! banner on stderr, unless `CI=true`, where it fails.

use std::io::Write;
use std::net::TcpListener;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod support;

use backend_katas::results::{GradeResult, LevelStatus};
use backend_katas::scoreboard::{Catalog, Config, Running};
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use harness::clock::{Stopwatch, WallClock};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use support::ttl_lru;

const CODE: &str = "BROWSER";
/// The longest any one thing may take to show up on the page.
const PATIENCE: Duration = Duration::from_secs(10);
/// A learner name that would run script if the page ever used innerHTML.
const HOSTILE: &str = "<img src=x onerror=window.pwned=1> Zoë";

type Error = Box<dyn std::error::Error>;

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| candidate.is_file())
}

/// Kills chromedriver when the test ends, however it ends.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_chromedriver(chromedriver: &Path) -> Result<(Driver, String), Error> {
    let port = free_port();
    let child =
        Command::new(chromedriver).arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let driver = Driver(child);
    let url = format!("http://127.0.0.1:{port}");
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(2))).build().into();
    let waited = Stopwatch::start();
    loop {
        if let Ok(mut response) = agent.get(format!("{url}/status")).call() {
            let status: Value = serde_json::from_str(&response.body_mut().read_to_string()?)?;
            if status["value"]["ready"] == true {
                return Ok((driver, url));
            }
        }
        if waited.elapsed() > PATIENCE {
            return Err(format!("chromedriver not ready on {url} after {PATIENCE:?}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn submit(board: &Running, learner: &str, result: &GradeResult) -> Result<(), Error> {
    let body = json!({ "workshop": CODE, "learner": learner, "result": result }).to_string();
    let response = ureq::post(format!("{}/api/submissions", board.url()))
        .header("Content-Type", "application/json")
        .send(body.as_str())?;
    assert_eq!(response.status().as_u16(), 201);
    Ok(())
}

/// Runs `script` on the page until it returns true, for at most [`PATIENCE`].
async fn eventually(client: &Client, what: &str, script: &str) -> Result<(), Error> {
    let waited = Stopwatch::start();
    loop {
        if client.execute(script, Vec::new()).await? == Value::Bool(true) {
            return Ok(());
        }
        if waited.elapsed() > PATIENCE {
            let page = client.execute("return document.body.innerText", Vec::new()).await?;
            return Err(
                format!("{what}: not within {PATIENCE:?}; the page reads:\n{}", page.as_str().unwrap_or("")).into()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn learner_names(client: &Client) -> Result<Vec<String>, Error> {
    let mut names = Vec::new();
    for cell in client.find_all(Locator::Css("#board tbody td.learner")).await? {
        names.push(cell.text().await?);
    }
    Ok(names)
}

async fn drive(client: &Client, board: &Running) -> Result<(), Error> {
    use LevelStatus::{Failed, Passed};
    client.goto(&format!("{}/", board.url())).await?;
    eventually(
        client,
        "the page connects to the event stream",
        "return document.querySelector('#status.live') !== null",
    )
    .await?;

    submit(board, "ana", &ttl_lru(&[Passed, Failed]))?;
    submit(board, HOSTILE, &ttl_lru(&[Failed]))?;
    eventually(client, "both learners appear", "return document.querySelectorAll('#board tbody tr').length === 2")
        .await?;
    let mut names = learner_names(client).await?;
    names.sort();
    assert_eq!(names, [HOSTILE, "ana"], "names are shown literally");
    let injected = client
        .execute("return window.pwned !== undefined || document.querySelector('#board img') !== null", Vec::new())
        .await?;
    assert_eq!(injected, Value::Bool(false), "a learner name was parsed as HTML");
    let ana_l2 = "#board tr[data-learner='ana'] td[data-exercise='ttl_lru'][data-level='2']";
    assert_eq!(client.find(Locator::Css(ana_l2)).await?.attr("data-status").await?.as_deref(), Some("failed"));

    // Anything set on the page now survives only if the page is not reloaded.
    client.execute("window.notReloaded = true", Vec::new()).await?;
    submit(board, "ana", &ttl_lru(&[Passed, Passed, Failed]))?;
    eventually(
        client,
        "ana's L2 turns passed",
        &format!("return document.querySelector(\"{ana_l2}\")?.dataset.status === 'passed'"),
    )
    .await?;
    assert_eq!(client.execute("return window.notReloaded === true", Vec::new()).await?, Value::Bool(true));
    let reached = client.find(Locator::Css("#board tr[data-learner='ana'] td.at")).await?.text().await?;
    assert_eq!(reached, "ttl_lru L2");
    // Ana just progressed: the other learner has been stuck longer and comes first.
    assert_eq!(learner_names(client).await?, [HOSTILE, "ana"]);
    Ok(())
}

#[test]
fn two_learners_progress_on_the_live_page() -> Result<(), Error> {
    let (Some(chromium), Some(chromedriver)) = (find_in_path("chromium"), find_in_path("chromedriver")) else {
        let why = "chromium and/or chromedriver not found on PATH (apt-get install chromium chromium-driver)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true: the browser test cannot run: {why}");
        }
        // Straight to the process's stderr: libtest captures eprintln! of passing tests.
        let bar = "!".repeat(78);
        let _ = writeln!(std::io::stderr(), "\n{bar}\n!! SKIPPED the scoreboard browser test: {why}\n{bar}\n");
        return Ok(());
    };

    let scratch = std::env::temp_dir().join(format!("backend-katas-scoreboard-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let config = Config {
        code: CODE.into(),
        db: scratch.join("board.sqlite"),
        catalog: Catalog::of_grader(),
        clock: WallClock::shared(),
    };
    let board = Running::start(config, TcpListener::bind("127.0.0.1:0")?)?;
    let (_driver, driver_url) = start_chromedriver(&chromedriver)?;

    let mut args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,800",
    ]
    .map(String::from)
    .into();
    args.push(format!("--user-data-dir={}", scratch.join("chromium-profile").display()));
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".into(), json!({ "binary": chromium, "args": args }));

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let outcome = runtime.block_on(async {
        let client = ClientBuilder::new(HttpConnector::new()).capabilities(capabilities).connect(&driver_url).await?;
        // Quit the browser whether the checks pass, fail or panic: a browser left
        // behind outlives chromedriver.
        let outcome = AssertUnwindSafe(drive(&client, &board)).catch_unwind().await;
        let _ = client.close().await;
        outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    drop(board);
    let _ = std::fs::remove_dir_all(&scratch);
    outcome
}
