//! A private Redis Cluster for the cluster levels: 3 masters and 3 replicas, each a
//! `redis-server --cluster-enabled yes` on free loopback ports, joined the way
//! `redis-cli --cluster create` joins them (CLUSTER SET-CONFIG-EPOCH, ADDSLOTSRANGE,
//! MEET, REPLICATE; done here so no redis-cli is needed), and stopped and removed on
//! drop. Replica `i + 3` starts as the replica of master `i`.
//!
//! The faults the cases inject:
//! * [`RedisCluster::sever_replica`]: the replica is stopped (SIGSTOP) and the master
//!   drops its replication link, so what the master acknowledges from then on exists
//!   only there: asynchronous replication's window, made deterministic. Killing the
//!   master ([`RedisCluster::kill`]) then loses those writes when the replica is
//!   resumed ([`RedisCluster::resume`]) and promoted, as a real failover can.
//! * [`RedisCluster::migrate_slot`]: a live resharding step (MIGRATING / IMPORTING,
//!   keys moved one MIGRATE at a time, SETSLOT NODE), so calls meet ASK, TRYAGAIN and
//!   MOVED while it runs.
//!
//! With `REDIS_CLUSTER_NODES` set (comma-separated `host:port` seeds of a cluster of
//! one's own), that cluster is used instead, and the cases that kill nodes or move
//! slots skip (see the README).

use std::env;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use crate::clock::Stopwatch;
use crate::redis_server::{find_binary, unavailable};
use crate::suite::CaseError;

/// The cluster's node timeout (`cluster-node-timeout`): how long a master may be
/// unreachable before the others mark it failed and its replica takes over.
pub const NODE_TIMEOUT: Duration = Duration::from_millis(1000);

/// How long after a promotion a cluster case waits for calls to work again before it
/// fails: the contract's [`CLUSTER_RECOVERY`](crate::rate_limit::CLUSTER_RECOVERY) and a
/// minute more, so a busy machine never fails a correct client, while one that never
/// learns the new topology still fails.
pub const RECOVERY_DEADLINE: Duration = Duration::from_secs(crate::rate_limit::CLUSTER_RECOVERY.as_secs() + 60);

/// Slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// One node of the cluster, as `CLUSTER NODES` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub port: u16,
    pub master: bool,
    /// The master's id, for a replica.
    pub replica_of: Option<String>,
    /// Slot ranges served, inclusive, for a master.
    pub slots: Vec<(u16, u16)>,
}

struct Node {
    port: u16,
    bus_port: u16,
    child: Option<Child>,
}

/// A running cluster this process owns, or an external one (`REDIS_CLUSTER_NODES`).
pub struct RedisCluster {
    nodes: Vec<Node>,
    seeds: Vec<String>,
    dir: Option<PathBuf>,
    external: bool,
}

fn free_ports(n: usize) -> Result<Vec<u16>, CaseError> {
    // All listeners stay open until every port is chosen, so no port is handed out twice.
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| unavailable(format!("no free loopback port: {e}")))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|e| unavailable(format!("no free loopback port: {e}")))
}

fn failed(what: &str, e: impl std::fmt::Display) -> CaseError {
    CaseError::failed(format!("the grader's Redis Cluster: {what}: {e}"))
}

/// A command to one node on a fresh connection (the grader's own, never the attempt's).
pub fn node_command<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut connection = client.get_connection_with_timeout(Duration::from_secs(2))?;
    connection.set_read_timeout(Some(Duration::from_secs(10)))?;
    cmd.query(&mut connection)
}

fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(|v| v.trim().to_string()))
}

/// Parses `CLUSTER NODES`: live nodes only (not failed, not in handshake).
pub fn parse_nodes(text: &str) -> Vec<NodeInfo> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 || fields[2].contains("fail") || fields[2].contains("handshake") {
                return None;
            }
            let port = fields[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let master = fields[2].contains("master");
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|x| (x, x)),
                })
                .collect();
            let replica_of = (!master && fields[3] != "-").then(|| fields[3].to_string());
            Some(NodeInfo { id: fields[0].to_string(), port, master, replica_of, slots })
        })
        .collect()
}

impl RedisCluster {
    /// Starts a cluster (or adopts `REDIS_CLUSTER_NODES`') and waits until every slot
    /// is served and every replica is in sync.
    pub fn start() -> Result<RedisCluster, CaseError> {
        if let Ok(seeds) = env::var("REDIS_CLUSTER_NODES") {
            let seeds: Vec<String> = seeds
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| if s.contains("://") { s.to_string() } else { format!("redis://{s}/") })
                .collect();
            if seeds.is_empty() {
                return Err(CaseError::failed(
                    "REDIS_CLUSTER_NODES is set but names no node (host:port,host:port,...)",
                ));
            }
            return Ok(RedisCluster { nodes: Vec::new(), seeds, dir: None, external: true });
        }
        let binary = find_binary().map_err(unavailable)?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let shm = PathBuf::from("/dev/shm");
        let parent = if shm.is_dir() { shm } else { env::temp_dir() };
        let dir = parent.join(format!("katas-cluster-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst)));
        let _ = std::fs::remove_dir_all(&dir);
        let ports = free_ports(12)?;
        let mut cluster = RedisCluster {
            nodes: (0..6).map(|i| Node { port: ports[i], bus_port: ports[i + 6], child: None }).collect(),
            seeds: ports[..3].iter().map(|p| format!("redis://127.0.0.1:{p}/")).collect(),
            dir: Some(dir.clone()),
            external: false,
        };
        for i in 0..6 {
            let node_dir = dir.join(cluster.nodes[i].port.to_string());
            std::fs::create_dir_all(&node_dir)
                .map_err(|e| unavailable(format!("cannot create {}: {e}", node_dir.display())))?;
            cluster.spawn(i, &binary, &node_dir)?;
        }
        cluster.join()?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize, binary: &PathBuf, dir: &std::path::Path) -> Result<(), CaseError> {
        let node = &mut self.nodes[i];
        let (port, bus) = (node.port.to_string(), node.bus_port.to_string());
        let timeout = NODE_TIMEOUT.as_millis().to_string();
        let dir = dir.to_string_lossy().into_owned();
        #[rustfmt::skip]
        let args = [
            "--port", &port, "--cluster-port", &bus, "--bind", "127.0.0.1", "--dir", &dir,
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", &timeout,
            // Always let a replica take over, however long it was cut off (the cases cut it off on purpose).
            "--cluster-replica-validity-factor", "0",
            // Slots on healthy masters keep serving while one master is down.
            "--cluster-require-full-coverage", "no",
            "--cluster-allow-replica-migration", "no",
            "--save", "", "--appendonly", "no",
            // A replica's full sync starts at once (the default waits 5s for more replicas).
            "--repl-diskless-sync-delay", "0",
        ];
        let child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| unavailable(format!("cannot start redis-server: {e}")))?;
        node.child = Some(child);
        let waited = Stopwatch::start();
        while waited.elapsed() < Duration::from_secs(10) {
            if TcpStream::connect(("127.0.0.1", node.port)).is_ok() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(20));
        }
        Err(unavailable(format!("redis-server did not listen on port {} within 10s", node.port)))
    }

    fn join(&mut self) -> Result<(), CaseError> {
        let ports: Vec<u16> = self.nodes.iter().map(|n| n.port).collect();
        let mut ids = Vec::new();
        for (i, &port) in ports.iter().enumerate() {
            let id: String = node_command(port, redis::cmd("CLUSTER").arg("MYID")).map_err(|e| failed("MYID", e))?;
            ids.push(id);
            let _: redis::Value = node_command(port, redis::cmd("CLUSTER").arg("SET-CONFIG-EPOCH").arg(i + 1))
                .map_err(|e| failed("SET-CONFIG-EPOCH", e))?;
        }
        let third = SLOTS / 3;
        for (m, (from, to)) in [(0, third - 1), (third, 2 * third - 1), (2 * third, SLOTS - 1)].into_iter().enumerate()
        {
            let _: redis::Value = node_command(ports[m], redis::cmd("CLUSTER").arg("ADDSLOTSRANGE").arg(from).arg(to))
                .map_err(|e| failed("ADDSLOTSRANGE", e))?;
        }
        for i in 1..6 {
            let meet =
                redis::cmd("CLUSTER").arg("MEET").arg("127.0.0.1").arg(ports[i]).arg(self.nodes[i].bus_port).clone();
            let _: redis::Value = node_command(ports[0], &meet).map_err(|e| failed("MEET", e))?;
        }
        self.wait_until("every node knows the 6 nodes", |cluster| {
            cluster.nodes.iter().all(|n| cluster.view(n.port).is_some_and(|v| v.len() == 6))
        })?;
        for r in 3..6 {
            let _: redis::Value = node_command(ports[r], redis::cmd("CLUSTER").arg("REPLICATE").arg(&ids[r - 3]))
                .map_err(|e| failed("REPLICATE", e))?;
        }
        self.wait_until("every slot served and every replica in sync", |cluster| cluster.healthy(&ports))
    }

    /// `CLUSTER NODES` as `port` sees it (live nodes only).
    pub fn view(&self, port: u16) -> Option<Vec<NodeInfo>> {
        node_command::<String>(port, redis::cmd("CLUSTER").arg("NODES")).ok().map(|t| parse_nodes(&t))
    }

    /// Every node in `ports` says the cluster is ok, sees 3 masters serving all slots,
    /// and each master has a replica whose link is up.
    fn healthy(&self, ports: &[u16]) -> bool {
        ports.iter().all(|&port| {
            let Ok(info) = node_command::<String>(port, redis::cmd("CLUSTER").arg("INFO")) else { return false };
            if info_field(&info, "cluster_state").as_deref() != Some("ok") {
                return false;
            }
            let Some(view) = self.view(port) else { return false };
            let masters: Vec<&NodeInfo> = view.iter().filter(|n| n.master && !n.slots.is_empty()).collect();
            let served: u32 = masters.iter().flat_map(|m| &m.slots).map(|&(a, b)| u32::from(b - a) + 1).sum();
            let replicated = masters.iter().all(|m| view.iter().any(|n| n.replica_of.as_deref() == Some(&m.id)));
            if served != u32::from(SLOTS) || masters.len() != 3 || !replicated {
                return false;
            }
            // A replica's link is up, and a master's replica is online on its side too
            // (past the full sync: it acknowledges WAIT).
            let Ok(info) = node_command::<String>(port, redis::cmd("INFO").arg("replication")) else { return false };
            match info_field(&info, "role").as_deref() {
                Some("slave") => info_field(&info, "master_link_status").as_deref() == Some("up"),
                _ => {
                    let serves = masters.iter().any(|m| m.port == port);
                    !serves || info_field(&info, "slave0").is_some_and(|s| s.contains("state=online"))
                }
            }
        })
    }

    fn wait_until(&self, what: &str, mut done: impl FnMut(&RedisCluster) -> bool) -> Result<(), CaseError> {
        // Generous: forming a cluster takes about a second; a busy machine may take longer.
        let waited = Stopwatch::start();
        while waited.elapsed() < Duration::from_secs(60) {
            if done(self) {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(CaseError::failed(format!("the grader's Redis Cluster: not {what} after 60s")))
    }

    /// Seed URLs for a cluster client (`redis://127.0.0.1:port/`).
    pub fn seeds(&self) -> &[String] {
        &self.seeds
    }

    /// Whether this cluster's nodes can be killed and its slots moved (not an external one).
    pub fn owned(&self) -> bool {
        !self.external
    }

    /// The skip for a case that must kill nodes or move slots on an external cluster.
    pub fn require_owned(&self, what: &str) -> Result<(), CaseError> {
        if self.owned() {
            return Ok(());
        }
        Err(CaseError::Skipped(format!(
            "REDIS_CLUSTER_NODES points at a cluster of your own, which this case cannot {what}"
        )))
    }

    fn live_ports(&self) -> Vec<u16> {
        if self.external {
            return self
                .seeds
                .iter()
                .filter_map(|s| s.trim_end_matches('/').rsplit(':').next()?.parse().ok())
                .collect();
        }
        self.nodes.iter().filter(|n| n.child.is_some()).map(|n| n.port).collect()
    }

    /// The masters serving slots, as a live node sees them.
    pub fn masters(&self) -> Result<Vec<NodeInfo>, CaseError> {
        for port in self.live_ports() {
            if let Some(view) = self.view(port) {
                return Ok(view.into_iter().filter(|n| n.master && !n.slots.is_empty()).collect());
            }
        }
        Err(CaseError::failed("the grader's Redis Cluster: no live node answers CLUSTER NODES"))
    }

    /// The replica of master `master` (by port), if it has one.
    pub fn replica_of(&self, master: u16) -> Result<Option<u16>, CaseError> {
        for port in self.live_ports() {
            if let Some(view) = self.view(port) {
                let Some(m) = view.iter().find(|n| n.port == master) else { continue };
                return Ok(view.iter().find(|n| n.replica_of.as_deref() == Some(&m.id)).map(|n| n.port));
            }
        }
        Ok(None)
    }

    /// Keys whose name starts with `prefix`, per master port (SCAN on each master).
    pub fn keys_per_master(&self, prefix: &str) -> Result<Vec<(u16, Vec<String>)>, CaseError> {
        let mut out = Vec::new();
        for master in self.masters()? {
            let pattern = format!("{}*", glob_escape(prefix));
            let mut keys = Vec::new();
            let mut cursor = 0u64;
            loop {
                let (next, batch): (u64, Vec<String>) = node_command(
                    master.port,
                    redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000),
                )
                .map_err(|e| failed("SCAN", e))?;
                keys.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            out.push((master.port, keys));
        }
        Ok(out)
    }

    fn node(&mut self, port: u16) -> Result<&mut Node, CaseError> {
        self.nodes.iter_mut().find(|n| n.port == port).ok_or_else(|| failed("no such node", port))
    }

    fn signal(&mut self, port: u16, signal: libc::c_int) -> Result<(), CaseError> {
        let node = self.node(port)?;
        let Some(child) = &node.child else { return Err(failed("not running", port)) };
        // SAFETY: kill(2) on the pid of a child this process spawned and has not reaped.
        if unsafe { libc::kill(child.id() as libc::pid_t, signal) } != 0 {
            return Err(failed("kill(2)", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Stops `master`'s replica (SIGSTOP) and makes the master drop its replication
    /// link: writes the master acknowledges from now on exist on the master alone.
    /// Returns the replica's port. Resume it with [`RedisCluster::resume`] soon (within
    /// [`NODE_TIMEOUT`] or so, or the others mark it failed for a moment).
    pub fn sever_replica(&mut self, master: u16) -> Result<u16, CaseError> {
        let replica = self.replica_of(master)?.ok_or_else(|| failed("no replica for master", master))?;
        self.signal(replica, libc::SIGSTOP)?;
        let _: redis::Value = node_command(master, redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("replica"))
            .map_err(|e| failed("CLIENT KILL TYPE replica", e))?;
        Ok(replica)
    }

    /// Resumes a node stopped by [`RedisCluster::sever_replica`].
    pub fn resume(&mut self, port: u16) -> Result<(), CaseError> {
        self.signal(port, libc::SIGCONT)
    }

    /// Kills a node (SIGKILL) for good: its data is gone.
    pub fn kill(&mut self, port: u16) -> Result<(), CaseError> {
        let node = self.node(port)?;
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(())
    }

    /// Starts a killed node again on its port and data dir: it rejoins as a replica of
    /// whichever node took over its slots, as an operator would bring it back. Waits
    /// until every master has an in-sync replica again.
    pub fn rejoin(&mut self, port: u16) -> Result<(), CaseError> {
        let binary = find_binary().map_err(unavailable)?;
        let dir = self.dir.clone().ok_or_else(|| failed("cannot restart a node of", "an external cluster"))?;
        let i = self.nodes.iter().position(|n| n.port == port).ok_or_else(|| failed("no such node", port))?;
        self.spawn(i, &binary, &dir.join(port.to_string()))?;
        let live = self.live_ports();
        self.wait_until("every master replicated again", |cluster| cluster.healthy(&live))
    }

    /// Waits until `replica` is a master serving slots and every live node says the
    /// cluster is ok; returns how long that took.
    pub fn wait_promoted(&self, replica: u16) -> Result<Duration, CaseError> {
        let waited = Stopwatch::start();
        let live = self.live_ports();
        self.wait_until(&format!("replica {replica} promoted"), |cluster| {
            let promoted = cluster.view(replica).is_some_and(|v| {
                v.iter().any(|n| n.port == replica && n.master && !n.slots.is_empty())
                    && v.iter().filter(|n| n.master && !n.slots.is_empty()).count() == 3
            });
            promoted
                && live.iter().all(|&port| {
                    node_command::<String>(port, redis::cmd("CLUSTER").arg("INFO"))
                        .is_ok_and(|info| info_field(&info, "cluster_state").as_deref() == Some("ok"))
                })
        })?;
        Ok(waited.elapsed())
    }

    /// Moves `slot` from its master to the master on port `to`, one key per MIGRATE
    /// (so a multi-key call on the slot meets a split slot: TRYAGAIN), then tells
    /// every node the new owner. Returns how many keys moved.
    pub fn migrate_slot(&self, slot: u16, to: u16) -> Result<usize, CaseError> {
        let masters = self.masters()?;
        let from = masters
            .iter()
            .find(|m| m.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .ok_or_else(|| failed("no master serves slot", slot))?;
        let target = masters.iter().find(|m| m.port == to).ok_or_else(|| failed("no master on port", to))?;
        if from.port == to {
            return Ok(0);
        }
        let setslot = |port: u16, state: &str, id: &str| -> Result<(), CaseError> {
            let _: redis::Value = node_command(port, redis::cmd("CLUSTER").arg("SETSLOT").arg(slot).arg(state).arg(id))
                .map_err(|e| failed("SETSLOT", e))?;
            Ok(())
        };
        setslot(to, "IMPORTING", &from.id)?;
        setslot(from.port, "MIGRATING", &target.id)?;
        let mut moved = 0;
        loop {
            let keys: Vec<String> =
                node_command(from.port, redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(slot).arg(10))
                    .map_err(|e| failed("GETKEYSINSLOT", e))?;
            if keys.is_empty() {
                break;
            }
            for key in keys {
                let _: redis::Value = node_command(
                    from.port,
                    redis::cmd("MIGRATE")
                        .arg("127.0.0.1")
                        .arg(to)
                        .arg("")
                        .arg(0)
                        .arg(5000)
                        .arg("REPLACE")
                        .arg("KEYS")
                        .arg(&key),
                )
                .map_err(|e| failed("MIGRATE", e))?;
                moved += 1;
                // Let calls run against the half-moved slot.
                thread::sleep(Duration::from_millis(2));
            }
        }
        // The new owner first, then the old one, then everyone (the order redis-cli uses).
        setslot(to, "NODE", &target.id)?;
        setslot(from.port, "NODE", &target.id)?;
        for port in self.live_ports() {
            if port != to && port != from.port {
                // A replica may refuse while it syncs; gossip tells it anyway.
                let _ = setslot(port, "NODE", &target.id);
            }
        }
        Ok(moved)
    }
}

impl RedisCluster {
    /// The spread the cluster cases grade: every master holds some of `namespace`'s
    /// keys (those starting with `{namespace:`). `what` says what was done ("100
    /// tenants checked") and `advice` how keys should be tagged.
    pub fn require_spread(&self, namespace: &str, what: &str, advice: &str) -> Result<(), CaseError> {
        let per_master = self.keys_per_master(&format!("{{{namespace}:"))?;
        let counts: Vec<(u16, usize)> = per_master.iter().map(|(port, keys)| (*port, keys.len())).collect();
        if counts.iter().any(|&(_, n)| n == 0) {
            return Err(CaseError::failed(format!(
                "{what}, but the namespace's keys per master (port, keys) are {counts:?}: every master should hold \
                 some. {advice}"
            )));
        }
        Ok(())
    }

    /// Live resharding, as the cluster cases grade it: up to 6 of the slots that hold
    /// `namespace`'s keys (starting with `{namespace:`) on the first master move to the
    /// second (see [`RedisCluster::migrate_slot`]) while `calls` runs on `rt`; then
    /// `calls` must have succeeded. `what` names the keys for the messages ("the 40
    /// tenants' keys").
    pub fn reshard_while(
        &self,
        rt: &tokio::runtime::Runtime,
        namespace: &str,
        what: &str,
        calls: impl std::future::Future<Output = Result<(), String>> + Send + 'static,
    ) -> Result<(), CaseError> {
        let masters = self.masters()?;
        let (from, to) = (masters[0].port, masters[1].port);
        let mut slots: Vec<u16> = self
            .keys_per_master(&format!("{{{namespace}:"))?
            .iter()
            .filter(|(port, _)| *port == from)
            .flat_map(|(_, keys)| keys.iter().map(|k| slot_of(k.as_bytes())))
            .collect();
        slots.sort_unstable();
        slots.dedup();
        if slots.is_empty() {
            return Err(CaseError::failed(format!(
                "master {from} holds none of {what}: tag keys by the unit of atomicity, so they spread over the masters"
            )));
        }
        slots.truncate(6);
        let calls = rt.spawn(calls);
        let mut moved = 0;
        for &slot in &slots {
            moved += self.migrate_slot(slot, to)?;
        }
        rt.block_on(calls)
            .map_err(|e| CaseError::failed(format!("a task failed: {e}")))?
            .map_err(|e| CaseError::failed(format!("while slots {slots:?} moved from master {from} to {to}: {e}")))?;
        if moved == 0 {
            return Err(CaseError::failed(format!(
                "no key moved with slots {slots:?}: the grader found nothing to reshard"
            )));
        }
        Ok(())
    }
}

/// An answer as a case shows it, with what a CROSSSLOT refusal means when it is one
/// (`unit`: what every key of one script should share, "tenant" or "record").
pub fn explain_crossslot(text: String, unit: &str) -> String {
    // The redis crate prints the error kind as "CrossSlot".
    if text.to_ascii_uppercase().contains("CROSSSLOT") {
        format!("{text}: one script's keys span several hash slots; tag every key of a {unit} alike")
    } else {
        text
    }
}

/// `s` with Redis glob characters escaped, for SCAN MATCH.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The slot of a key, per the cluster spec (CRC16 of its hash tag, or of the whole key).
pub fn slot_of(key: &[u8]) -> u16 {
    // Same rule as `redis_server::hash_tag`, on bytes.
    let tag = key.iter().position(|&b| b == b'{').and_then(|open| {
        let close = key[open + 1..].iter().position(|&b| b == b'}')? + open + 1;
        (close > open + 1).then(|| &key[open + 1..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tag.unwrap_or(key)) % SLOTS
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                // SAFETY: as in `signal`: our own unreaped child. A stopped node must be
                // resumed to die promptly.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGCONT) };
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_cluster_spec() {
        // Examples from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot_of(b"123456789"), 0x31C3 % SLOTS);
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"{user1000}.followers"));
        assert_eq!(slot_of(b"foo{}{bar}"), slot_of(b"foo{}{bar}"));
        assert_ne!(slot_of(b"foo{}{bar}"), slot_of(b"bar"), "an empty tag hashes the whole key");
        assert_eq!(slot_of(b"foo{{bar}}zap"), slot_of(b"{bar"));
    }

    #[test]
    fn cluster_nodes_lines_parse() {
        let text = "07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected\n\
                    e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 [93-<-292f8b365bb7edb5e285caf0b7e6ddc7265a2f4c]\n\
                    824fe116063bc5fcf9f4ffd895bc17aee7731ac3 127.0.0.1:30006@31006 master,fail - 1426238316232 1426238315228 6 disconnected";
        let nodes = parse_nodes(text);
        assert_eq!(nodes.len(), 2, "a failed node is not live");
        assert_eq!(nodes[0].replica_of.as_deref(), Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca"));
        assert_eq!(nodes[1].slots, vec![(0, 5460)]);
        assert_eq!(nodes[1].port, 30001);
        assert_eq!(glob_escape("a*b[c]"), "a\\*b\\[c\\]");
    }
}
