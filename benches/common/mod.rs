//! What every bench shares: criterion's settings, and the probe that skips an
//! attempt (loudly) while it is still a stub or gives a wrong first answer.

// Every bench compiles its own copy and uses only part of it.
#![allow(dead_code)]

use std::time::Duration;

use criterion::Criterion;
use harness::suite::{guarded, install_quiet_panic_hook};

/// Short runs (1 s each): every bench in under a minute on 2 cores. Noisier than
/// longer runs; `-- --measurement-time 5` on the command line steadies them.
pub fn criterion_config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(10)
}

/// Runs `probe` on the attempt; `Some` of its value when `check` accepts it, else
/// `None` after saying why on stderr. Panics (`todo!()` included) are caught quietly.
pub fn attempt_probe<T>(
    label: &str,
    probe: impl FnOnce() -> T,
    check: impl FnOnce(&T) -> Result<(), String>,
) -> Option<T> {
    let default_hook = std::panic::take_hook();
    install_quiet_panic_hook();
    let result = guarded(probe);
    std::panic::set_hook(default_hook);
    match result {
        Ok(value) => match check(&value) {
            Ok(()) => Some(value),
            Err(why) => {
                eprintln!("\n*** {label}: attempt skipped: {why}; run `cargo grade` ***\n");
                None
            }
        },
        Err(panic) => {
            eprintln!("\n*** {label}: attempt skipped: {panic}; run `cargo grade` ***\n");
            None
        }
    }
}

/// `Ok` if `got` is `want`, else what was got instead.
pub fn expect<T: PartialEq + std::fmt::Debug>(got: &T, want: &T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("its first answer was {got:?}, expected {want:?}"))
    }
}
