//! `cargo run --bin scoreboard -- --code WORKSHOP`: the live workshop scoreboard (see
//! `backend_katas::scoreboard` and the README's "For facilitators").

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use backend_katas::scoreboard::{self, Config, Store};
use clap::Parser;

/// The live workshop scoreboard: learners submit with
/// `cargo grade --submit http://HOST:PORT --name NAME --code CODE`;
/// open http://HOST:PORT/ to watch the room.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The workshop code learners must submit with (share it with the room).
    #[arg(long)]
    code: String,
    /// Address to listen on. The default serves this machine only: use 0.0.0.0:PORT
    /// to share the board on a LAN.
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// The SQLite file keeping every submission (created with its parent directories);
    /// a restart on the same file shows the same board.
    #[arg(long, default_value = ".katas/scoreboard.sqlite")]
    db: PathBuf,
    /// Empty the board (every learner and submission in --db) before serving: for the
    /// next group. Keeping the old group's board instead: start with a fresh --db.
    #[arg(long)]
    reset: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scoreboard: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut store = Store::open(&args.db)?;
    if args.reset {
        let removed = store.reset()?;
        println!("Board reset: {removed} submissions removed from {}", args.db.display());
    } else {
        let kept = store.submission_count()?;
        if kept > 0 {
            println!("Continuing the board in {} ({kept} submissions; --reset to empty it)", args.db.display());
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let addr = listener.local_addr()?;
        let host = if addr.ip().is_unspecified() {
            format!("THIS-MACHINE'S-LAN-ADDRESS:{}", addr.port())
        } else {
            addr.to_string()
        };
        println!("Scoreboard for workshop {:?}: http://{host}/", args.code);
        println!("Learners run: cargo grade --submit http://{host} --name NAME --code {}", args.code);
        println!("Ctrl-C stops it; nothing is lost (--db {}).", args.db.display());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = stop.send(true);
            }
        });
        scoreboard::serve(Config::new(args.code, args.db), store, listener, stopped).await?;
        Ok(())
    })
}
