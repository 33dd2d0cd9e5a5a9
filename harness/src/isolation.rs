//! Runs each case in a child process with a deadline and a memory limit, so that a
//! panic, `todo!()`, an infinite loop, a deadlock, an out-of-memory or a
//! `process::exit` in an attempt is reported for that one case and the run goes on.
//!
//! The child is the very binary that asked (re-executed with [`CASE_ENV`] set): every
//! front end calls [`serve_child_if_requested`] first thing in `main`. The child talks
//! back over stdout with two kinds of marked lines: `trying` (the input about to be
//! replayed, so that a hang can be shown with its input) and one final `verdict`.

use std::env;
use std::fmt::{self, Write as _};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{self, Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wait_timeout::ChildExt;

use crate::clock::Stopwatch;
use crate::suite::{guarded, install_quiet_panic_hook, split_hint, Case, CaseError};

/// Set in the child's environment to the id of the case it must run.
pub const CASE_ENV: &str = "KATAS_CASE";
/// Set in the child's environment when it must announce every input it tries, the hot
/// sequential ones included (see [`trying_quietly`]).
pub const ANNOUNCE_ENV: &str = "KATAS_ANNOUNCE_EVERY_INPUT";
/// Set in the child's environment to its memory limit in bytes (RLIMIT_DATA).
pub const MEMORY_ENV: &str = "KATAS_MEMORY_LIMIT";
/// Every case gets this much heap unless the runner is told otherwise.
pub const DEFAULT_MEMORY_LIMIT: u64 = 1 << 30;

const TRYING_MARK: &str = "@katas:trying ";
/// Sent by the child's watchdog about once a second while the case makes progress.
const ALIVE_MARK: &str = "@katas:alive";
/// A case that keeps making progress may run this many times its deadline, at most.
pub const PROGRESS_CAP: u32 = 4;
/// How often the parent looks at a running child.
const POLL: Duration = Duration::from_millis(100);
const VERDICT_MARK: &str = "@katas:verdict ";
/// Lines of the attempt's own output kept for the report.
const OUTPUT_TAIL_LINES: usize = 20;

static IN_CHILD: AtomicBool = AtomicBool::new(false);
static ANNOUNCE_EVERY_INPUT: AtomicBool = AtomicBool::new(false);

#[derive(Serialize, Deserialize)]
enum WireVerdict {
    Passed,
    NotImplemented(String),
    Failed(String),
    Skipped(String),
}

/// If this process was started as a case's child, runs that case and exits; otherwise
/// returns at once. Call it before anything else in `main`.
pub fn serve_child_if_requested(cases: &[Case]) {
    let Ok(id) = env::var(CASE_ENV) else { return };
    IN_CHILD.store(true, Ordering::SeqCst);
    ANNOUNCE_EVERY_INPUT.store(env::var_os(ANNOUNCE_ENV).is_some(), Ordering::SeqCst);
    // Memory levels measure the real heap: count every allocation the case makes.
    crate::heap::enable();
    install_quiet_panic_hook();
    if let Some(limit) = env::var(MEMORY_ENV).ok().and_then(|v| v.parse::<u64>().ok()) {
        // Best effort: if the limit cannot be set the case still runs, just unbounded.
        let _ = rlimit::setrlimit(rlimit::Resource::DATA, limit, limit);
    }
    // A deadlock or an infinite loop is reported within seconds of the last progress,
    // with the calls that never returned, rather than at the case's deadline.
    crate::watchdog::spawn(
        || {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{ALIVE_MARK}");
            let _ = out.flush();
        },
        |report| {
            send_verdict(&WireVerdict::Failed(report));
            process::exit(0);
        },
    );
    let verdict = match cases.iter().find(|case| case.id == id) {
        None => WireVerdict::Failed(format!("no case with id `{id}` in this binary")),
        Some(case) => match guarded(|| (case.run)()) {
            Ok(Ok(())) => WireVerdict::Passed,
            Ok(Err(CaseError::NotImplemented(detail))) => WireVerdict::NotImplemented(detail),
            Ok(Err(CaseError::Failed(report))) => WireVerdict::Failed(report),
            Ok(Err(CaseError::Skipped(reason))) => WireVerdict::Skipped(reason),
            Err(panic) => match panic.into_case_error("while running the case") {
                CaseError::NotImplemented(detail) => WireVerdict::NotImplemented(detail),
                CaseError::Failed(report) | CaseError::Skipped(report) => WireVerdict::Failed(report),
            },
        },
    };
    send_verdict(&verdict);
    process::exit(0);
}

fn send_verdict(verdict: &WireVerdict) {
    let line = serde_json::to_string(verdict).expect("verdicts always serialize");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{VERDICT_MARK}{line}");
    let _ = out.flush();
}

/// Announces the input about to be tried, to the parent (so that a crash or a hang is
/// shown with its input) and to the watchdog. Cheap no-op outside a child.
pub fn trying(input: &dyn fmt::Debug) {
    if !IN_CHILD.load(Ordering::Relaxed) {
        return;
    }
    static LINE: Mutex<String> = Mutex::new(String::new());
    let mut line = LINE.lock().unwrap_or_else(PoisonError::into_inner);
    line.clear();
    line.push_str(TRYING_MARK);
    // A `Debug` rendering is one line; make sure of it, the wire is line-based.
    let _ = write!(line, "{input:?}");
    if line.contains('\n') {
        *line = line.replace('\n', " ");
    }
    crate::watchdog::set_trying(Box::new(Announced(line[TRYING_MARK.len()..].to_string())));
    line.push('\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

/// [`trying`] for the hot path (every replay of an exhaustive enumeration, hundreds of
/// thousands per case): the input is only kept, for the watchdog to render if the
/// case gets stuck, and not written out. If the child then dies without a verdict
/// (crash, exit, out of memory, deadline), the parent runs the case again with
/// [`ANNOUNCE_ENV`] set, where every input is announced: sequential replays are
/// deterministic, so the re-run stops at the same input and shows it.
pub fn trying_quietly(input: Box<dyn fmt::Debug + Send>) {
    if !IN_CHILD.load(Ordering::Relaxed) {
        return;
    }
    if ANNOUNCE_EVERY_INPUT.load(Ordering::Relaxed) {
        trying(&input);
    } else {
        crate::watchdog::set_trying(input);
    }
}

/// An input already rendered as text.
struct Announced(String);

impl fmt::Debug for Announced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a case ended, as seen from the parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    NotImplemented {
        detail: String,
    },
    Failed {
        report: String,
    },
    /// Could not run here (no Redis server); not a verdict on the attempt.
    Skipped {
        reason: String,
    },
    TimedOut {
        limit: Duration,
        trying: Option<String>,
        output: String,
    },
    OutOfMemory {
        limit_bytes: u64,
        trying: Option<String>,
    },
    /// The child ended on its own before giving a verdict (e.g. `process::exit`).
    Exited {
        code: i32,
        trying: Option<String>,
        output: String,
    },
    /// Killed by a signal it raised itself: abort, stack overflow, segfault.
    Crashed {
        detail: String,
        trying: Option<String>,
        output: String,
    },
}

impl Outcome {
    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Passed)
    }

    /// A verdict against the attempt: neither passed, nor still a stub, nor unable to
    /// run here. The card explains the first such case; `--hint` hints at it.
    pub fn is_failure(&self) -> bool {
        !matches!(self, Outcome::Passed | Outcome::NotImplemented { .. } | Outcome::Skipped { .. })
    }

    /// One word for the report card.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::NotImplemented { .. } => "not implemented",
            Outcome::Failed { .. } => "FAILED",
            Outcome::Skipped { .. } => "SKIPPED",
            Outcome::TimedOut { .. } => "TIMED OUT",
            Outcome::OutOfMemory { .. } => "OUT OF MEMORY",
            Outcome::Exited { .. } => "EXITED",
            Outcome::Crashed { .. } => "CRASHED",
        }
    }

    /// The child ended without a verdict and without announcing what it was trying.
    fn lacks_its_input(&self) -> bool {
        matches!(
            self,
            Outcome::TimedOut { trying: None, .. }
                | Outcome::OutOfMemory { trying: None, .. }
                | Outcome::Exited { trying: None, .. }
                | Outcome::Crashed { trying: None, .. }
        )
    }

    /// The nudge for this outcome: the hint the failure carries for the behaviour that
    /// differed, else the case's behaviour tier. Never a design: that is for `--hint`.
    pub fn hint<'a>(&'a self, case: &'a Case) -> &'a str {
        let behaviour = case.hints.get(crate::suite::HintTier::Behaviour);
        match self {
            Outcome::Failed { report } => split_hint(report).1.unwrap_or(behaviour),
            _ => behaviour,
        }
    }

    /// Everything a learner needs to see about a non-passing outcome.
    pub fn details(&self) -> String {
        fn with_input(text: String, trying: &Option<String>, output: &str) -> String {
            let mut text = text;
            if let Some(input) = trying {
                text.push_str(&format!("\nwhile trying: {input}"));
            }
            if !output.trim().is_empty() {
                text.push_str(&format!("\nlast output of the attempt:\n{}", output.trim_end()));
            }
            text
        }
        match self {
            Outcome::Passed => String::new(),
            Outcome::NotImplemented { detail } => format!("still a stub: {detail}"),
            Outcome::Failed { report } => split_hint(report).0.to_string(),
            Outcome::Skipped { reason } => format!("skipped: {reason}"),
            Outcome::TimedOut { limit, trying, output } => with_input(
                format!(
                    "made no progress for {limit:?} (or ran {PROGRESS_CAP} times that long): an infinite loop or a deadlock?"
                ),
                trying,
                output,
            ),
            Outcome::OutOfMemory { limit_bytes, trying } => with_input(
                format!("ran out of memory (limit {} MiB): unbounded growth?", limit_bytes >> 20),
                trying,
                "",
            ),
            Outcome::Exited { code, trying, output } => with_input(
                format!("the process exited with code {code} before the case finished: does the attempt call process::exit?"),
                trying,
                output,
            ),
            Outcome::Crashed { detail, trying, output } => with_input(detail.clone(), trying, output),
        }
    }
}

/// Runs `case` in a child process (this same binary) and waits at most its deadline.
pub fn run_isolated(case: &Case) -> Outcome {
    run_isolated_in(case, DEFAULT_MEMORY_LIMIT, &[])
}

/// [`run_isolated`] with an explicit memory limit, and where the child's environment
/// differs: `(name, Some(value))` sets a variable, `(name, None)` removes it (e.g. to
/// test behaviour without Redis).
pub fn run_isolated_in(case: &Case, memory_limit: u64, env_changes: &[(&str, Option<&str>)]) -> Outcome {
    let outcome = run_child(case, memory_limit, env_changes);
    if !outcome.lacks_its_input() {
        return outcome;
    }
    // The child died on an input it tried quietly: run it again announcing every input.
    let mut env = env_changes.to_vec();
    env.push((ANNOUNCE_ENV, Some("1")));
    let again = run_child(case, memory_limit, &env);
    if !again.passed() && !again.lacks_its_input() && again.label() == outcome.label() {
        again
    } else {
        outcome
    }
}

fn run_child(case: &Case, memory_limit: u64, env_changes: &[(&str, Option<&str>)]) -> Outcome {
    let exe = match env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return crashed(format!("cannot find this binary to re-run it: {e}")),
    };
    let mut command = Command::new(exe);
    for (name, value) in env_changes {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    let spawned = command
        .env(CASE_ENV, &case.id)
        .env(MEMORY_ENV, memory_limit.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return crashed(format!("cannot start the case's process: {e}")),
    };
    let stdout = child.stdout.take().expect("stdout was piped");
    let stderr = child.stderr.take().expect("stderr was piped");
    let signs_of_life = Arc::new(AtomicU64::new(0));
    // Read both pipes concurrently so a chatty child never blocks on a full pipe.
    let stdout_reader = {
        let signs_of_life = Arc::clone(&signs_of_life);
        thread::spawn(move || ChildReport::read(stdout, &signs_of_life))
    };
    let stderr_reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        text
    });

    let status = wait_while_progressing(&mut child, case.deadline, &signs_of_life);
    let report = stdout_reader.join().unwrap_or_default();
    let stderr = stderr_reader.join().unwrap_or_default();
    classify(case, status, report, &stderr, memory_limit)
}

/// Waits for the child as long as it shows signs of life: it is killed after `deadline`
/// without any (a heartbeat or a new input tried), or after [`PROGRESS_CAP`] times
/// `deadline` in all. A correct attempt on a slow or busy machine keeps progressing,
/// so it is never cut off for being slow. `None` if it was killed.
fn wait_while_progressing(child: &mut Child, deadline: Duration, signs_of_life: &AtomicU64) -> Option<ExitStatus> {
    let started = Stopwatch::start();
    let mut quiet_since = Stopwatch::start();
    let mut seen = signs_of_life.load(Ordering::Relaxed);
    loop {
        match child.wait_timeout(POLL) {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => break,
        }
        let now_seen = signs_of_life.load(Ordering::Relaxed);
        if now_seen != seen {
            seen = now_seen;
            quiet_since = Stopwatch::start();
        }
        if quiet_since.elapsed() >= deadline || started.elapsed() >= deadline * PROGRESS_CAP {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn crashed(detail: String) -> Outcome {
    Outcome::Crashed { detail, trying: None, output: String::new() }
}

/// What the parent gathered from the child's stdout.
#[derive(Default)]
struct ChildReport {
    trying: Option<String>,
    verdict: Option<WireVerdict>,
    output_tail: Vec<String>,
}

impl ChildReport {
    fn read(stdout: impl Read, signs_of_life: &AtomicU64) -> ChildReport {
        let mut report = ChildReport::default();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line == ALIVE_MARK {
                signs_of_life.fetch_add(1, Ordering::Relaxed);
            } else if let Some(input) = line.strip_prefix(TRYING_MARK) {
                signs_of_life.fetch_add(1, Ordering::Relaxed);
                report.trying = Some(input.to_string());
            } else if let Some(json) = line.strip_prefix(VERDICT_MARK) {
                report.verdict = serde_json::from_str(json).ok();
            } else {
                if report.output_tail.len() == OUTPUT_TAIL_LINES {
                    report.output_tail.remove(0);
                }
                report.output_tail.push(line);
            }
        }
        report
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn classify(case: &Case, status: Option<ExitStatus>, report: ChildReport, stderr: &str, memory_limit: u64) -> Outcome {
    let output = {
        let mut out = report.output_tail.join("\n");
        let err = tail(stderr, OUTPUT_TAIL_LINES);
        if !err.is_empty() {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&err);
        }
        out
    };
    let trying = report.trying;
    let Some(status) = status else {
        return Outcome::TimedOut { limit: case.deadline, trying, output };
    };
    if let Some(verdict) = report.verdict {
        return match verdict {
            WireVerdict::Passed => Outcome::Passed,
            WireVerdict::NotImplemented(detail) => Outcome::NotImplemented { detail },
            WireVerdict::Failed(report) => Outcome::Failed { report },
            WireVerdict::Skipped(reason) => Outcome::Skipped { reason },
        };
    }
    if stderr.contains("memory allocation of") {
        return Outcome::OutOfMemory { limit_bytes: memory_limit, trying };
    }
    if let Some(code) = status.code() {
        return Outcome::Exited { code, trying, output };
    }
    let detail = if stderr.contains("has overflowed its stack") {
        "stack overflow: unbounded recursion?".to_string()
    } else {
        format!("the process was killed by a signal ({})", signal_name(status))
    };
    Outcome::Crashed { detail, trying, output }
}

#[cfg(unix)]
fn signal_name(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(6) => "SIGABRT: abort".into(),
        Some(9) => "SIGKILL".into(),
        Some(11) => "SIGSEGV: invalid memory access".into(),
        Some(n) => format!("signal {n}"),
        None => "unknown".into(),
    }
}

#[cfg(not(unix))]
fn signal_name(_: ExitStatus) -> String {
    "unknown".into()
}
