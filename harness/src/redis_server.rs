//! A private `redis-server` for the distributed levels: started on a free loopback
//! port, killed and restarted by outage tests, stopped on drop. With `REDIS_URL` set,
//! that server is used instead (outage tests then skip: they cannot restart it).
//!
//! When no server can be had, Redis cases are *skipped* and say so loudly; under
//! `CI=true` a missing Redis is a failure instead (see [`unavailable`]).

use std::env;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::clock::Stopwatch;
use crate::suite::CaseError;

/// Where to find a server: `REDIS_URL`, else `redis-server` on the PATH.
pub fn availability() -> Result<(), String> {
    if env::var_os("REDIS_URL").is_some() {
        return Ok(());
    }
    find_binary().map(|_| ())
}

fn find_binary() -> Result<PathBuf, String> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| "no redis-server on the PATH and no REDIS_URL set (install redis-server, e.g. apt-get install redis-server)".to_string())
}

/// `true` when a missing Redis must fail rather than skip.
pub fn required() -> bool {
    env::var("CI").is_ok_and(|v| v == "true")
}

/// The case error for "no Redis here": skipped, or failed under `CI=true`.
pub fn unavailable(why: impl Into<String>) -> CaseError {
    let why = why.into();
    if required() {
        CaseError::Failed(format!("Redis is required when CI=true, but: {why}"))
    } else {
        CaseError::Skipped(why)
    }
}

/// A running server this process owns (or an external one from `REDIS_URL`).
pub struct RedisServer {
    port: u16,
    url: String,
    child: Option<Child>,
    external: bool,
}

impl RedisServer {
    /// Starts a server (or adopts `REDIS_URL`'s) and waits until it accepts connections.
    pub fn start() -> Result<RedisServer, CaseError> {
        if let Ok(url) = env::var("REDIS_URL") {
            return Ok(RedisServer { port: 0, url, child: None, external: true });
        }
        let binary = find_binary().map_err(unavailable)?;
        // Ask the OS for a free port, then hand it to redis-server.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| unavailable(format!("no free loopback port: {e}")))?
            .port();
        let mut server = RedisServer { port, url: format!("redis://127.0.0.1:{port}/"), child: None, external: false };
        server.spawn(&binary)?;
        Ok(server)
    }

    fn spawn(&mut self, binary: &PathBuf) -> Result<(), CaseError> {
        let child = Command::new(binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| unavailable(format!("cannot start redis-server: {e}")))?;
        self.child = Some(child);
        let waited = Stopwatch::start();
        while waited.elapsed() < Duration::from_secs(10) {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(20));
        }
        Err(unavailable(format!("redis-server did not listen on port {} within 10s", self.port)))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this server can be killed and restarted (not an external `REDIS_URL`).
    pub fn owned(&self) -> bool {
        !self.external
    }

    /// Kills the server (an outage). Data is lost, as after a crash without persistence.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) -> Result<(), CaseError> {
        self.kill();
        let binary = find_binary().map_err(unavailable)?;
        self.spawn(&binary)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback proxy in front of a server that counts the commands clients send
/// (RESP arrays), i.e. round trips as the client sees them. Commands a Lua script runs
/// inside Redis are not counted, unlike Redis's own `total_commands_processed`.
pub struct CommandCounter {
    pub url: String,
    commands: Arc<AtomicU64>,
}

impl CommandCounter {
    /// Proxies `127.0.0.1:<port of target_url>`; its threads live as long as the process.
    pub fn start(target_url: &str) -> Result<CommandCounter, String> {
        let target = target_url
            .trim_end_matches('/')
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .ok_or_else(|| format!("cannot read a port from {target_url:?}"))?;
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let commands = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&commands);
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { continue };
                let (client_r, server_w) = (client.try_clone(), server.try_clone());
                let counted = Arc::clone(&counted);
                if let (Ok(mut client_r), Ok(mut server_w)) = (client_r, server_w) {
                    thread::spawn(move || {
                        let mut parser = RespCounter::default();
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = client_r.read(&mut buf) {
                            if n == 0 || server_w.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            counted.fetch_add(parser.feed(&buf[..n]), Ordering::SeqCst);
                        }
                        let _ = server_w.shutdown(Shutdown::Write);
                    });
                }
                let (mut server_r, mut client_w) = (server, client);
                thread::spawn(move || {
                    let _ = std::io::copy(&mut server_r, &mut client_w);
                    let _ = client_w.shutdown(Shutdown::Write);
                });
            }
        });
        Ok(CommandCounter { url: format!("redis://127.0.0.1:{port}/"), commands })
    }

    /// Commands sent through the proxy so far.
    pub fn commands(&self) -> u64 {
        self.commands.load(Ordering::SeqCst)
    }
}

/// Counts complete top-level RESP commands (`*N` arrays of bulk strings) in a byte stream.
#[derive(Default)]
struct RespCounter {
    line: Vec<u8>,
    /// Bulk strings still expected in the current command.
    items_left: u64,
    /// Bytes (payload + CRLF) still to skip for the current bulk string.
    skip: u64,
}

impl RespCounter {
    fn feed(&mut self, mut bytes: &[u8]) -> u64 {
        let mut done = 0;
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = (self.skip as usize).min(bytes.len());
                self.skip -= n as u64;
                bytes = &bytes[n..];
                if self.skip == 0 {
                    self.items_left -= 1;
                    if self.items_left == 0 {
                        done += 1;
                    }
                }
                continue;
            }
            let byte = bytes[0];
            bytes = &bytes[1..];
            self.line.push(byte);
            if !self.line.ends_with(b"\r\n") {
                continue;
            }
            let header = String::from_utf8_lossy(&self.line[..self.line.len() - 2]).to_string();
            self.line.clear();
            let number = header.get(1..).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
            match header.as_bytes().first() {
                Some(b'*') if number == 0 => done += 1,
                Some(b'*') => self.items_left = number,
                Some(b'$') => self.skip = number + 2,
                _ => {}
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_commands_are_counted_across_split_writes() {
        let mut counter = RespCounter::default();
        let stream = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\nv\r\nx\r\n";
        let (a, b) = stream.split_at(17);
        assert_eq!(counter.feed(a) + counter.feed(b), 2);
    }

    #[test]
    fn missing_redis_skips_locally_and_fails_under_ci() {
        // `required` reads CI; both answers are typed errors, never a pass.
        match unavailable("none here") {
            CaseError::Skipped(why) => assert!(!required() && why == "none here"),
            CaseError::Failed(why) => assert!(required() && why.contains("CI=true")),
            other => panic!("unexpected {other:?}"),
        }
    }
}
