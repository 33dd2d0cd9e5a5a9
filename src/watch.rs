//! `cargo grade --watch [exercise]`: re-grades whenever an attempt is saved.
//!
//! The grader is compiled together with the attempt, so each change means a rebuild:
//! the watcher runs `cargo build` for the `grade` binary, shows a build error as such
//! (nothing is graded), and otherwise runs the freshly built grader on the exercise
//! being edited, level by level, stopping at the first level that fails.
//!
//! Changes are seen through the `notify` crate's native watcher and, always beside it,
//! its polling watcher: some file systems (network mounts, container bind mounts) send
//! no events, and polling a handful of files once a second costs nothing. Events that
//! arrive together (an editor's save is often several writes) are taken as one change.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, SystemTime};

use notify::Watcher as _;

/// How often the polling watcher looks at the files.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// Events closer together than this are one change.
pub const SETTLE: Duration = Duration::from_millis(300);

/// What to watch and how to grade.
pub struct WatchPlan {
    /// The workspace root (its `exercises/src` is watched).
    pub root: PathBuf,
    /// The grader binary to run after each build (this very binary's path, taken at
    /// start: a rebuild replaces the file under it).
    pub grader: PathBuf,
    /// Grade only this exercise; else the one whose file changed last.
    pub exercise: Option<String>,
    /// Passed on to the grader (e.g. `--submit URL --name N --code C`, `--jobs 2`).
    pub grader_args: Vec<String>,
    /// The exercises there are, to map a changed file to one.
    pub known: Vec<String>,
}

/// Watches `dir` (recursively) with the native watcher, where the platform has one,
/// and a polling one; changed paths arrive on the receiver.
pub struct Watching {
    _watchers: Vec<Box<dyn notify::Watcher + Send>>,
    pub changes: Receiver<PathBuf>,
}

pub fn watch(dir: &Path) -> Result<Watching, notify::Error> {
    watch_with(dir, true)
}

/// [`watch`], with the native watcher or polling alone (what a file system without
/// events gets).
pub fn watch_with(dir: &Path, native: bool) -> Result<Watching, notify::Error> {
    let (tx, changes) = mpsc::channel();
    let handler = move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if event.kind.is_create() || event.kind.is_modify() || event.kind.is_remove() {
                for path in event.paths {
                    let _ = tx.send(path);
                }
            }
        }
    };
    let mut watchers: Vec<Box<dyn notify::Watcher + Send>> = Vec::new();
    let config = notify::Config::default().with_poll_interval(POLL_EVERY).with_compare_contents(false);
    let mut poll = notify::PollWatcher::new(handler.clone(), config)?;
    poll.watch(dir, notify::RecursiveMode::Recursive)?;
    watchers.push(Box::new(poll));
    // The native watcher is the fast path; without it polling still sees every save.
    if native {
        if let Ok(mut native) = notify::recommended_watcher(handler) {
            if native.watch(dir, notify::RecursiveMode::Recursive).is_ok() {
                watchers.push(Box::new(native));
            }
        }
    }
    Ok(Watching { _watchers: watchers, changes })
}

/// Waits for the next change and returns every path changed until things settle.
/// `None` when the watchers are gone.
pub fn next_change(changes: &Receiver<PathBuf>, settle: Duration) -> Option<Vec<PathBuf>> {
    let first = changes.recv().ok()?;
    Some(settled(changes, settle, first))
}

/// [`next_change`], giving up after `limit` without any change.
pub fn next_change_within(changes: &Receiver<PathBuf>, settle: Duration, limit: Duration) -> Option<Vec<PathBuf>> {
    let first = changes.recv_timeout(limit).ok()?;
    Some(settled(changes, settle, first))
}

fn settled(changes: &Receiver<PathBuf>, settle: Duration, first: PathBuf) -> Vec<PathBuf> {
    let mut paths = vec![first];
    loop {
        match changes.recv_timeout(settle) {
            Ok(path) => paths.push(path),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return paths,
        }
    }
}

/// The exercise a source file belongs to: `exercises/src/<name>.rs` or
/// `exercises/src/<name>/...`, for a known exercise name.
pub fn exercise_of(path: &Path, src: &Path, known: &[String]) -> Option<String> {
    let relative = path.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    known.iter().find(|k| k.as_str() == name).cloned()
}

/// The exercise whose source was modified last, to start with when none is named.
fn last_edited(src: &Path, known: &[String]) -> Option<String> {
    let modified = |name: &String| -> Option<SystemTime> {
        let file = src.join(format!("{name}.rs"));
        let dir = src.join(name);
        [file, dir].iter().filter_map(|p| p.metadata().and_then(|m| m.modified()).ok()).max()
    };
    known.iter().filter_map(|name| Some((modified(name)?, name))).max().map(|(_, name)| name.clone())
}

const CLEAR_SCREEN: &str = "\x1b[2J\x1b[H";

/// Builds the grader; on a build error, says so (the compiler's output went to the
/// terminal already) and returns false.
fn build(root: &Path) -> bool {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--quiet", "--package", "backend-katas", "--bin", "grade"])
        .stdin(Stdio::null())
        .status();
    match status {
        Ok(status) if status.success() => true,
        Ok(_) => {
            println!("\nBUILD FAILED: your attempt does not compile (above). Nothing was graded; save a fix to retry.");
            false
        }
        Err(error) => {
            println!("\ncould not run cargo to build the grader: {error}");
            false
        }
    }
}

fn grade(plan: &WatchPlan, exercise: &str) {
    let status = Command::new(&plan.grader)
        .current_dir(&plan.root)
        .arg(exercise)
        .arg("--stop-at-failing-level")
        .args(&plan.grader_args)
        .stdin(Stdio::null())
        .status();
    if let Err(error) = status {
        println!("could not run the grader {}: {error}", plan.grader.display());
    }
}

/// Grades now, then after every change, until interrupted (Ctrl-C ends the watcher,
/// the build and the grading together: they share the terminal's process group).
pub fn run(plan: WatchPlan) -> ExitCode {
    let src = plan.root.join("exercises").join("src");
    let watching = match watch(&src) {
        Ok(watching) => watching,
        Err(error) => {
            eprintln!("error: cannot watch {}: {error}", src.display());
            return ExitCode::from(2);
        }
    };
    let mut exercise = plan.exercise.clone().or_else(|| last_edited(&src, &plan.known));
    let round = |exercise: &Option<String>| {
        print!("{CLEAR_SCREEN}");
        let Some(exercise) = exercise else {
            println!("Watching {}: save an exercise to grade it.", src.display());
            return;
        };
        println!("Watching {} (Ctrl-C to stop): grading {exercise}...\n", src.display());
        if build(&plan.root) {
            grade(&plan, exercise);
        }
        println!("\nWatching for changes (Ctrl-C to stop).");
    };
    round(&exercise);
    // The native and the polling watcher both report a save, up to a poll apart: a
    // path counts as changed only if its modification time differs from the last seen.
    let mut seen: HashMap<PathBuf, Option<SystemTime>> = HashMap::new();
    let mut changed = |path: &PathBuf| {
        let modified = path.metadata().and_then(|m| m.modified()).ok();
        seen.insert(path.clone(), modified) != Some(modified)
    };
    while let Some(paths) = next_change(&watching.changes, SETTLE) {
        let relevant: Vec<&PathBuf> =
            paths.iter().filter(|p| p.extension().is_some_and(|e| e == "rs")).filter(|p| changed(p)).collect();
        if relevant.is_empty() {
            continue;
        }
        if plan.exercise.is_none() {
            if let Some(edited) = relevant.iter().rev().find_map(|p| exercise_of(p, &src, &plan.known)) {
                exercise = Some(edited);
            }
        }
        round(&exercise);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Vec<String> {
        ["ttl_lru", "top_k"].map(String::from).to_vec()
    }

    #[test]
    fn a_changed_file_names_its_exercise() {
        let src = Path::new("/w/exercises/src");
        assert_eq!(exercise_of(&src.join("ttl_lru.rs"), src, &known()).as_deref(), Some("ttl_lru"));
        assert_eq!(exercise_of(&src.join("top_k/heap.rs"), src, &known()).as_deref(), Some("top_k"));
        assert_eq!(exercise_of(&src.join("lib.rs"), src, &known()), None);
        assert_eq!(exercise_of(Path::new("/elsewhere/ttl_lru.rs"), src, &known()), None);
    }

    #[test]
    fn saving_a_file_is_seen_once_settled() {
        let dir = std::env::temp_dir().join(format!("katas-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let watching = watch(&dir).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let file = dir.join("ttl_lru.rs");
        // An editor's save: several writes in a row.
        for i in 0..3 {
            std::fs::write(&file, format!("// {i}\n")).unwrap();
        }
        let paths = next_change_within(&watching.changes, SETTLE, Duration::from_secs(10)).expect("a change");
        assert!(paths.iter().any(|p| p.ends_with("ttl_lru.rs")), "{paths:?}");
        assert_eq!(exercise_of(&file, &dir, &known()).as_deref(), Some("ttl_lru"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn polling_alone_sees_a_save() {
        let dir = std::env::temp_dir().join(format!("katas-poll-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let watching = watch_with(&dir, false).unwrap();
        std::thread::sleep(POLL_EVERY + Duration::from_millis(200));
        std::fs::write(dir.join("top_k.rs"), "// saved\n").unwrap();
        let paths =
            next_change_within(&watching.changes, SETTLE, Duration::from_secs(10)).expect("polling saw the save");
        assert!(paths.iter().any(|p| p.ends_with("top_k.rs")), "{paths:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
