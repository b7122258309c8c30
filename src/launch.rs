//! Starts a member: probes its ports, opens its data, and wires the consensus executor to one
//! network executor per core.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::channels::shared_channel;
use glommio::net::{AcceptedTcpStream, TcpListener};
use glommio::{Latency, LocalExecutorBuilder, Placement, Shares};

use crate::api::watch::WatchStreams;
use crate::api::{Api, Limits};
use crate::config::Config;
use crate::net::conn::{self, ConnContext};
use crate::net::http1::VersionInfo;
use crate::net::metrics::{Metrics, StaticInfo};
use crate::net::placement::{ConnPlacement, OpenConnection};
use crate::proto::corekvpb::MemberIdentity;
use crate::server::apply::{self, Applier};
use crate::server::backend::CONSISTENT_INDEX_KEY;
use crate::server::datadir::{DataDir, ReceivedSnapshot};
use crate::server::driver::{self, DriverConfig, Link, Peers};
use crate::server::link::{CoreClient, Envelope, ReplyBatch};
use crate::server::members::Members;
use crate::server::node::{Node, NodeConfig};
use crate::server::raft_log::RaftLog;
use crate::server::wal_records;
use crate::storage::Bucket;
use crate::tls::{ClientTls, ServerTls};

/// The etcd API level corekv implements, reported where etcd reports its version.
pub const ETCD_API_VERSION: &str = "3.4.0";
/// The cluster version reported in metrics, as etcd 3.4 reports it.
const ETCD_CLUSTER_VERSION: &str = "3.4";
/// Capacity of each cross-executor channel, in batches.
const LINK_CAPACITY: usize = 1024;
/// Accepted connections on their way from executor 0 to the executor that serves them.
const HANDOFF_CAPACITY: usize = 1024;
/// CPU shares of the consensus task queue against the network's default 1000: on the shared
/// executor, raft and apply come first.
const CONSENSUS_SHARES: usize = 2000;

/// A failure to start, reported as one line.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("listen on {addr}: {err}")]
    Listen {
        addr: SocketAddr,
        err: std::io::Error,
    },
    #[error("{0}")]
    Data(String),
    #[error("starting executors: {0}")]
    Executor(String),
    #[error("{0}")]
    Tls(String),
}

/// Fails when something already listens on `addr`. glommio sets SO_REUSEPORT on every
/// listener, so without this a second server would bind the same port silently.
///
/// A plain bind also fails while connections of a killed predecessor linger on the port
/// (FIN_WAIT, TIME_WAIT); only a socket in LISTEN state counts as "in use".
fn probe_port(addr: SocketAddr) -> Result<(), StartError> {
    use socket2::{Domain, Socket, Type};
    let err = |err| StartError::Listen { addr, err };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    match socket.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && !listening_on(addr) => Ok(()),
        Err(e) => Err(err(e)),
    }
}

/// Whether a socket listens on `addr`'s port at that address or a wildcard, from the
/// kernel's socket tables (glommio is Linux-only, and so is this).
fn listening_on(addr: SocketAddr) -> bool {
    const LISTEN: &str = "0A";
    let port = format!("{:04X}", addr.port());
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        let Ok(text) = std::fs::read_to_string(table) else {
            return true; // cannot tell: assume taken
        };
        text.lines().skip(1).any(|line| {
            let mut cols = line.split_whitespace();
            let local = cols.nth(1).unwrap_or("");
            let state = cols.nth(1).unwrap_or("");
            let Some((ip_hex, port_hex)) = local.split_once(':') else {
                return false;
            };
            state == LISTEN
                && port_hex == port
                && (ip_hex.bytes().all(|b| b == b'0') || proc_ip(ip_hex) == Some(addr.ip()))
        })
    })
}

/// Parses an address column of /proc/net/tcp (hex, in host byte order per 32-bit word).
fn proc_ip(hex: &str) -> Option<std::net::IpAddr> {
    let words: Option<Vec<u32>> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok())
        .collect();
    let bytes: Vec<u8> = words?.iter().flat_map(|w| w.to_ne_bytes()).collect();
    match bytes.len() {
        4 => Some(std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).into()),
        16 => {
            let b: [u8; 16] = bytes.try_into().ok()?;
            let v6 = std::net::Ipv6Addr::from(b);
            Some(v6.to_ipv4_mapped().map_or(v6.into(), Into::into))
        }
        _ => None,
    }
}

/// Runs the member until the process is killed. Returns only on a start-up failure.
pub fn run(cfg: Config) -> Result<(), StartError> {
    let metrics_addrs = metrics_addrs(&cfg)?;
    for addr in cfg
        .client_listen
        .iter()
        .chain(&cfg.peer_listen)
        .map(|u| u.addr)
        .chain(metrics_addrs.iter().copied())
    {
        probe_port(addr)?;
    }
    std::fs::create_dir_all(cfg.data_dir.join("member"))
        .map_err(|e| StartError::Data(format!("creating {}: {e}", cfg.data_dir.display())))?;
    let tls = crate::tls::member::resolve(&cfg).map_err(StartError::Tls)?;

    let metrics = Arc::new(Metrics::new(cfg.cores, cfg.flags.metrics == "extensive"));
    let _ = metrics.info.set(StaticInfo {
        server_version: ETCD_API_VERSION.into(),
        cluster_version: ETCD_CLUSTER_VERSION.into(),
        quota_backend_bytes: cfg.quota_bytes(),
    });
    let net = NetShared {
        limits: Limits {
            max_request_bytes: cfg.flags.max_request_bytes,
            max_txn_ops: cfg.flags.max_txn_ops,
            max_concurrent_streams: cfg.flags.max_concurrent_streams,
        },
        version: VersionInfo {
            server: ETCD_API_VERSION.into(),
            cluster: ETCD_API_VERSION.into(),
            corekv: env!("CARGO_PKG_VERSION").into(),
        },
        metrics: metrics.clone(),
        auth: Arc::new(crate::auth::AuthShared::new(cfg.auth_options())),
        client_listen: cfg.client_listen.iter().map(|u| (u.addr, u.tls)).collect(),
        client_tls: tls.client.clone(),
    };
    // Executor 0 runs the consensus core beside its share of the network; the others reach
    // it over a pair of channels each.
    // Executor 0 also accepts every client connection and hands each to the executor that
    // serves it (see net::placement).
    let mut core_ends = Vec::new();
    let mut net_ends = Vec::new();
    let mut handoff_senders = Vec::new();
    for _ in 1..cfg.cores {
        let (req_tx, req_rx) = shared_channel::new_bounded::<Vec<Envelope>>(LINK_CAPACITY);
        let (rep_tx, rep_rx) = shared_channel::new_bounded::<ReplyBatch>(LINK_CAPACITY);
        let (conn_tx, conn_rx) = shared_channel::new_bounded::<Handoff>(HANDOFF_CAPACITY);
        core_ends.push((req_rx, rep_tx));
        net_ends.push((req_tx, rep_rx, conn_rx));
        handoff_senders.push(conn_tx);
    }
    let placement = ConnPlacement::new(cfg.cores);

    // The member's ID comes back: a joining or restarted member's is not the flags'.
    let (ready_tx, ready_rx) = mpsc::channel::<Result<u64, String>>();
    let core_cfg = cfg.clone();
    let net0 = net.clone();
    let spin = Duration::from_micros(cfg.flags.spin_us);
    let first = LocalExecutorBuilder::new(Placement::Unbound)
        .name("net-0+consensus")
        .spin_before_park(spin)
        .spawn(move || async move {
            let peer_tls = (tls.peer_server, tls.peer_dial);
            let opened =
                open_member(&core_cfg, net0.metrics.clone(), net0.auth.clone(), peer_tls).await;
            let (node, wal, peers, recovered) = match opened {
                Ok(v) => v,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(node.id()));
            let core = CoreClient::new(0);
            let consensus = glommio::executor().create_task_queue(
                Shares::Static(CONSENSUS_SHARES),
                Latency::NotImportant,
                "consensus",
            );
            let local = core.clone();
            let driver_cfg = DriverConfig {
                tick: Duration::from_millis(core_cfg.flags.heartbeat_interval),
                snapshot_count: core_cfg.flags.snapshot_count,
                snapshot_log_bytes: 256 << 20,
                backend_commit_interval: Duration::from_millis(100),
                backend_commit_writes: 10_000,
            };
            let metrics = net0.metrics.clone();
            glommio::spawn_local_into(
                async move {
                    // Connect every remote link at once: each connect waits for its peer.
                    let connects: Vec<_> = core_ends
                        .into_iter()
                        .map(|(req_rx, rep_tx)| {
                            glommio::spawn_local(async move {
                                let (from_net, to_net) =
                                    futures_lite::future::zip(req_rx.connect(), rep_tx.connect())
                                        .await;
                                Link::Remote { from_net, to_net }
                            })
                        })
                        .collect();
                    let mut links = vec![Link::Local(local)];
                    for c in connects {
                        links.push(c.await);
                    }
                    driver::run(node, wal, recovered, links, driver_cfg, metrics, peers).await;
                },
                consensus,
            )
            .expect("the consensus task queue exists")
            .detach();
            let ctx = conn_context(core, net0.clone());
            glommio::spawn_local(serve_metrics_urls(ctx.clone(), metrics_addrs)).detach();
            // Simple tokens expire here, outside the consensus core, which reads no clock.
            let auth = net0.auth.clone();
            glommio::spawn_local(async move {
                loop {
                    glommio::timer::sleep(std::time::Duration::from_secs(1)).await;
                    auth.tokens.sweep();
                }
            })
            .detach();
            accept_and_place(ctx, net0, placement, handoff_senders).await;
        })
        .map_err(|e| StartError::Executor(e.to_string()))?;

    let member_id = match ready_rx.recv() {
        Ok(Ok(id)) => id,
        Ok(Err(e)) => {
            let _ = first.join();
            return Err(StartError::Data(e));
        }
        Err(_) => return Err(StartError::Data("the consensus executor stopped".into())),
    };
    metrics
        .member_id
        .store(member_id, std::sync::atomic::Ordering::Relaxed);

    let mut handles = vec![first];
    for (i, (req_tx, rep_rx, conn_rx)) in net_ends.into_iter().enumerate() {
        let executor = (i + 1) as u16;
        let net = net.clone();
        let h = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("net-{executor}"))
            .spin_before_park(spin)
            .spawn(move || async move {
                let (to_core, from_core) =
                    futures_lite::future::zip(req_tx.connect(), rep_rx.connect()).await;
                let core = CoreClient::new(executor);
                glommio::spawn_local(core.clone().run_sender(to_core)).detach();
                glommio::spawn_local(core.clone().run_receiver(from_core)).detach();
                serve_handed_off(conn_context(core, net), conn_rx).await;
            })
            .map_err(|e| StartError::Executor(e.to_string()))?;
        handles.push(h);
    }
    tracing::info!(
        name = %cfg.flags.name,
        data_dir = %cfg.data_dir.display(),
        client_urls = %cfg.client_urls.join(","),
        member_id = format!("{member_id:x}"),
        executors = cfg.cores,
        "corekv is serving"
    );
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

/// What every network executor serves with.
#[derive(Clone)]
struct NetShared {
    limits: Limits,
    version: VersionInfo,
    metrics: Arc<Metrics>,
    auth: Arc<crate::auth::AuthShared>,
    /// The client listen addresses, and whether each is TLS.
    client_listen: Vec<(SocketAddr, bool)>,
    client_tls: Option<Arc<ServerTls>>,
}

/// A connection accepted on executor 0 for another executor, with its placement slot and
/// whether it came in on a TLS listener.
type Handoff = (AcceptedTcpStream, OpenConnection, bool);

/// What a network executor serves its connections with.
fn conn_context(core: Rc<CoreClient>, net: NetShared) -> Rc<ConnContext> {
    let watch_streams = Rc::new(WatchStreams::new(net.limits.max_request_bytes));
    core.set_watch_sink(watch_streams.clone());
    let grpc_stats = net.metrics.shard(core.executor() as usize);
    Rc::new(ConnContext {
        api: Api {
            grpc_stats,
            core,
            watch_streams,
            limits: net.limits,
            metrics: net.metrics,
            auth: net.auth,
        },
        version: net.version,
        tls: net.client_tls,
    })
}

/// Executor 0: accepts every client connection, serves those placed here and hands the
/// others over.
async fn accept_and_place(
    ctx: Rc<ConnContext>,
    net: NetShared,
    placement: Arc<ConnPlacement>,
    handoff_senders: Vec<shared_channel::SharedSender<Handoff>>,
) {
    let mut handoffs = Vec::new();
    for tx in handoff_senders {
        handoffs.push(tx.connect().await);
    }
    let handoffs = Rc::new(handoffs);
    let mut accepts = Vec::new();
    for (addr, tls) in net.client_listen {
        let listener = match listen(addr) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("corekv: listen on {addr}: {e}");
                std::process::exit(1);
            }
        };
        let (ctx, placement, handoffs) = (ctx.clone(), placement.clone(), handoffs.clone());
        accepts.push(glommio::spawn_local(async move {
            loop {
                match listener.shared_accept().await {
                    Ok(accepted) => {
                        let slot = placement.place();
                        match slot.executor() {
                            0 => serve_accepted(accepted, slot, tls, ctx.clone()),
                            e => {
                                // A full channel only delays this accept loop; the
                                // connection is queued in the kernel meanwhile.
                                if handoffs[e - 1].send((accepted, slot, tls)).await.is_err() {
                                    tracing::warn!("network executor {e} is gone");
                                }
                            }
                        }
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: keep serving the open ones.
                        tracing::warn!("accept failed: {e}");
                        glommio::timer::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }));
    }
    for a in accepts {
        a.await;
    }
}

/// Executors other than 0: serve the connections executor 0 placed here.
async fn serve_handed_off(ctx: Rc<ConnContext>, conn_rx: shared_channel::SharedReceiver<Handoff>) {
    let conn_rx = conn_rx.connect().await;
    while let Some((accepted, slot, tls)) = conn_rx.recv().await {
        serve_accepted(accepted, slot, tls, ctx.clone());
    }
}

fn serve_accepted(
    accepted: AcceptedTcpStream,
    slot: OpenConnection,
    tls: bool,
    ctx: Rc<ConnContext>,
) {
    let stream = accepted.bind_to_executor();
    glommio::spawn_local(async move {
        conn::serve(stream, tls, ctx).await;
        drop(slot);
    })
    .detach();
}

/// The client listener (executor 0 only), with SO_REUSEADDR so connections of a killed
/// predecessor in TIME_WAIT do not block it.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    // SAFETY: the descriptor is a listening TCP socket we own; the listener takes it over.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// Opens the WAL and the backend, replays the log, and builds the consensus core. A fresh
/// data dir is bootstrapped from the --initial-* flags; an existing one ignores them and
/// keeps the identity it was bootstrapped with, as etcd does.
async fn open_member(
    cfg: &Config,
    metrics: Arc<Metrics>,
    auth: Arc<crate::auth::AuthShared>,
    (peer_server_tls, dial_tls): (Option<Arc<ServerTls>>, Option<Arc<ClientTls>>),
) -> Result<(Node<Applier>, wal::Wal, Peers, Option<(u64, wal::Position)>), String> {
    let dd = DataDir::new(&cfg.data_dir);
    let wal_dir = dd.wal();
    let (wal, recovery) = open_wal(cfg).await?;
    tracing::info!(
        records = recovery.records.len(),
        "WAL recovered up to position {}",
        recovery.last_valid
    );
    if let Some(t) = &recovery.truncated {
        tracing::warn!("WAL recovery truncated a torn tail: {t:?}");
    }
    let voters: Vec<u64> = cfg.initial_cluster.iter().map(|m| m.id).collect();
    let bootstrap = raft::eraftpb::ConfState::from((voters.clone(), vec![]));
    let fresh = recovery.records.is_empty();
    let db_path = dd.db();
    let mut cfg = cfg.clone();
    let mut joining = None;
    let mut log = if fresh && cfg.flags.initial_cluster_state == "existing" {
        let info = join_cluster(&cfg, dial_tls.as_deref())?;
        cfg.member_id = info.0;
        cfg.cluster_id = info.1.cluster_id;
        dd.write_identity(&MemberIdentity {
            name: cfg.flags.name.clone(),
            member_id: cfg.member_id,
            cluster_id: cfg.cluster_id,
        })?;
        // A first record, so that a restart knows this data dir belongs to the cluster; the
        // log itself comes from the leader (its entries from the start, or a snapshot).
        let hs = wal_records::encode_hard_state(&Default::default());
        wal.append_batch(&[(hs.0, hs.1.as_slice())])
            .await
            .map_err(|e| format!("writing the first WAL record: {e}"))?;
        joining = Some(Members::from_records(&info.1.members, &info.1.removed));
        tracing::info!(
            member_id = format!("{:x}", cfg.member_id),
            cluster_id = format!("{:x}", cfg.cluster_id),
            "joining an existing cluster"
        );
        RaftLog::new(Default::default())
    } else if fresh {
        if crate::storage::Db::open(&db_path, Default::default())
            .map(|db| {
                db.begin_read()
                    .get(Bucket::Meta, CONSISTENT_INDEX_KEY)
                    .ok()
                    .flatten()
                    .is_some()
            })
            .unwrap_or(false)
        {
            return Err(format!(
                "the WAL in {} is empty but the backend {} holds applied entries: the WAL was \
                 lost; restore the data dir from a backup, or remove the member and add it again",
                wal_dir.display(),
                db_path.display()
            ));
        }
        let log = bootstrap_new_member(&cfg, &wal).await?;
        tracing::info!(
            member_id = format!("{:x}", cfg.member_id),
            cluster_id = format!("{:x}", cfg.cluster_id),
            members = cfg.initial_cluster.len(),
            "bootstrapped a new cluster member"
        );
        log
    } else {
        match dd.read_identity()? {
            Some(id) => {
                cfg.member_id = id.member_id;
                cfg.cluster_id = id.cluster_id;
                tracing::info!(
                    member_id = format!("{:x}", id.member_id),
                    cluster_id = format!("{:x}", id.cluster_id),
                    "restarting a member from its data dir (the --initial-cluster flags are ignored)"
                );
            }
            // A data dir from before corekv kept its identity and members: the flags give
            // them, once.
            None => {
                write_identity_and_members(&dd, &cfg, &bootstrap)?;
            }
        }
        wal_records::recover_raft_log(&recovery.records, bootstrap)
            .map_err(|e| format!("recovering the raft log from {}: {e}", wal_dir.display()))?
    };
    let cfg = &cfg;
    finish_interrupted_install(&dd, &recovery.records)?;
    let sm = Applier::open(&db_path, cfg, log.conf_state(), metrics, auth)
        .map_err(|e| format!("opening the backend {}: {e}", db_path.display()))?;
    if sm.members_table().is_removed(cfg.member_id) {
        return Err(format!(
            "this member ({:x}) was removed from the cluster; its data dir ({}) cannot be used \
             to rejoin: add it again as a new member (member add) and start it with an empty \
             data dir and --initial-cluster-state existing",
            cfg.member_id,
            cfg.data_dir.display()
        ));
    }
    let snap_index = log.snapshot_metadata().index;
    let applied = crate::server::node::StateMachine::applied_index(&sm);
    if applied < snap_index {
        return Err(format!(
            "the backend is at raft index {applied} but the WAL starts after a snapshot at {snap_index}: entries in between are lost"
        ));
    }
    let last = raft::Storage::last_index(&log).map_err(|e| format!("raft log: {e}"))?;
    if applied > last {
        return Err(format!(
            "the backend is at raft index {applied} but the WAL ends at {last}: the WAL lost entries"
        ));
    }
    log.raise_commit(applied);
    // raft-rs starts from its storage's membership as of the applied index, and applies no
    // conf change at or below it again: the backend's is that one (the WAL's snapshot record
    // may predate members added or removed since).
    log.set_conf_state(sm.conf_state().clone());
    let recovered = wal_records::first_entry_position(&recovery.records).map(|at| (last, at));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let node_cfg = NodeConfig {
        id: cfg.member_id,
        cluster_id: cfg.cluster_id,
        election_tick: cfg.election_ticks(),
        heartbeat_tick: 1,
        request_timeout_ticks: cfg.request_timeout_ticks(),
        health_interval_ticks: 5000 / cfg.flags.heartbeat_interval.max(1),
        // Nanoseconds since the epoch: batch ids of this run start past any earlier run's.
        first_batch_id: now.as_nanos() as u64,
        // Like etcd's idutil: the member's low 16 bits, then milliseconds, then a counter;
        // positive, and past every ID an earlier run of this member handed out.
        first_lease_id: ((cfg.member_id & 0x7fff) << 48
            | (now.as_millis() as u64 & 0xff_ffff_ffff) << 8) as i64,
        name: cfg.flags.name.clone(),
        client_urls: cfg.client_urls.clone(),
        version: ETCD_API_VERSION.into(),
        // etcd checks only a member that had data; a new one has nothing to compare.
        initial_corrupt_check: cfg.flags.experimental_initial_corrupt_check && !fresh,
        corrupt_check_ticks: cfg.corrupt_check_ticks(),
    };
    let logger = crate::server::raft_logger::logger();
    // A lone voter campaigns at its first tick (Node::tick), not after an election timeout.
    let node = Node::new(node_cfg, log, sm, &logger).map_err(|e| format!("raft: {e}"))?;
    let mut listeners = Vec::new();
    for url in &cfg.peer_listen {
        let l = listen(url.addr).map_err(|e| format!("listen on {}: {e}", url.addr))?;
        listeners.push((l, peer_server_tls.clone().filter(|_| url.tls)));
    }
    let peers = Peers {
        listeners,
        dial_tls,
        snap_dir: dd.snap(),
        started_empty: fresh,
        joining,
    };
    Ok((node, wal, peers, recovered))
}

/// Opens (or creates) the member's WAL with the flags' segment size.
pub async fn open_wal(cfg: &Config) -> Result<(wal::Wal, wal::Recovery), String> {
    let wal_dir = DataDir::new(&cfg.data_dir).wal();
    // The WAL's default O_DSYNC writes measured faster here than write + fdatasync in all
    // six server A/B pairs: 1 client 1876 vs 1064 and 1586 vs 1378 puts/s, 16 clients +9%
    // and +19%, 1000 clients +2% and +6%, with lower p99 in five of six.
    let wal_opts = wal::WalOptions {
        segment_size: cfg.flags.wal_segment_bytes,
        faults: crate::failpoint::wal_faults(),
        wake_every: (cfg.flags.wal_wake_us > 0)
            .then(|| Duration::from_micros(cfg.flags.wal_wake_us)),
        ..Default::default()
    };
    wal::Wal::open(&wal_dir, wal_opts)
        .await
        .map_err(|e| format!("opening the WAL in {}: {e}", wal_dir.display()))
}

/// Makes the data dir of a member of a new cluster, as the --initial-* flags describe it:
/// its identity, the initial members in the backend, and the WAL's first records (the
/// committed conf changes that add each member). A first start does this on an empty data
/// dir, `corekvctl snapshot restore` on a backend copied from a snapshot (whose old members
/// and applied index it has removed). Returns the raft log those records hold.
pub async fn bootstrap_new_member(cfg: &Config, wal: &wal::Wal) -> Result<RaftLog, String> {
    let dd = DataDir::new(&cfg.data_dir);
    let voters: Vec<u64> = cfg.initial_cluster.iter().map(|m| m.id).collect();
    let bootstrap = raft::eraftpb::ConfState::from((voters, vec![]));
    let initial = write_identity_and_members(&dd, cfg, &bootstrap)?;
    let log = bootstrap_log(&initial, bootstrap.clone());
    let mut records = vec![wal_records::encode_snapshot(log.snapshot_metadata())];
    let entries = raft::Storage::entries(
        &log,
        1,
        raft::Storage::last_index(&log).expect("in memory") + 1,
        None,
        raft::GetEntriesContext::empty(false),
    )
    .expect("in memory");
    records.extend(wal_records::encode_persist(&crate::server::node::Persist {
        number: 0,
        entries,
        hard_state: Some(log.hard_state().clone()),
        snapshot: None,
    }));
    let refs: Vec<(u8, &[u8])> = records.iter().map(|(t, b)| (*t, b.as_slice())).collect();
    wal.append_batch(&refs)
        .await
        .map_err(|e| format!("writing the first WAL records: {e}"))?;
    Ok(log)
}

/// Records this member's identity (from the flags) and the initial members in the backend;
/// returns those members.
fn write_identity_and_members(
    dd: &DataDir,
    cfg: &Config,
    conf_state: &raft::eraftpb::ConfState,
) -> Result<Members, String> {
    dd.write_identity(&MemberIdentity {
        name: cfg.flags.name.clone(),
        member_id: cfg.member_id,
        cluster_id: cfg.cluster_id,
    })?;
    let initial = Members::initial(&cfg.initial_cluster);
    let db_path = dd.db();
    apply::bootstrap_backend(&db_path, &initial, conf_state).map_err(|e| {
        format!(
            "writing the members into the backend {}: {e}",
            db_path.display()
        )
    })?;
    Ok(initial)
}

/// The raft log of a new cluster, as etcd bootstraps one: a conf change adding each member
/// (indexes 1..=n, term 1, committed), carrying the member's record, so that a member that
/// joins later can rebuild the members from the log alone.
fn bootstrap_log(initial: &Members, conf_state: raft::eraftpb::ConfState) -> RaftLog {
    use crate::proto::corekvpb::ConfChangeContext;
    use prost::Message as _;
    let mut log = RaftLog::new(conf_state);
    let mut entries = Vec::new();
    for (i, rec) in initial.records().enumerate() {
        let mut single = raft::eraftpb::ConfChangeSingle::default();
        single.set_change_type(raft::eraftpb::ConfChangeType::AddNode);
        single.node_id = rec.id;
        let mut cc = raft::eraftpb::ConfChangeV2::default();
        cc.mut_changes().push(single);
        let ctx = ConfChangeContext {
            proposer: 0,
            request_id: 0,
            member: Some(rec.clone()),
        };
        let mut e = raft::eraftpb::Entry {
            index: i as u64 + 1,
            term: 1,
            ..Default::default()
        };
        e.set_entry_type(raft::eraftpb::EntryType::EntryConfChangeV2);
        e.data = protobuf::Message::write_to_bytes(&cc)
            .expect("encoding into a Vec cannot fail")
            .into();
        e.context = ctx.encode_to_vec().into();
        entries.push(e);
    }
    log.append(&entries);
    log.set_hard_state(raft::eraftpb::HardState {
        term: 1,
        commit: entries.len() as u64,
        ..Default::default()
    });
    log
}

/// Asks the running cluster (the other members of --initial-cluster) for its members, and
/// finds this one among them by its peer URLs: (its ID, the cluster's answer).
fn join_cluster(
    cfg: &Config,
    tls: Option<&ClientTls>,
) -> Result<(u64, crate::proto::corekvpb::PeerClusterInfo), String> {
    let mut mine = cfg.peer_urls.clone();
    mine.sort();
    let others: Vec<String> = cfg
        .initial_cluster
        .iter()
        .filter(|m| m.name != cfg.flags.name)
        .flat_map(|m| m.peer_urls.clone())
        .collect();
    if others.is_empty() {
        return Err(
            "--initial-cluster-state existing needs the other members in --initial-cluster \
             (as `member add` prints it)"
                .into(),
        );
    }
    let info = crate::peer::probe::cluster_info(&others, tls)
        .map_err(|e| format!("cannot reach the existing cluster to join it: {e}"))?;
    let me = info.members.iter().find(|m| {
        let mut urls = m.peer_urls.clone();
        urls.sort();
        urls == mine
    });
    match me {
        Some(m) if m.name.is_empty() || m.name == cfg.flags.name => Ok((m.id, info.clone())),
        Some(m) => Err(format!(
            "the cluster has member {:x} with these peer URLs, but it is named {:?}, not {:?}",
            m.id, m.name, cfg.flags.name
        )),
        None => Err(format!(
            "cluster {:x} has no member with the peer URLs {}: add this member first (member \
             add --peer-urls={})",
            info.cluster_id,
            mine.join(","),
            mine.join(",")
        )),
    }
}

/// A crash after the WAL recorded a snapshot from the leader but before the backend was
/// replaced by it leaves the received file in member/snap/: install it now. Other files
/// there are leftovers.
fn finish_interrupted_install(dd: &DataDir, records: &[wal::Record]) -> Result<(), String> {
    if let Some(index) = wal_records::newest_installed_snapshot(records) {
        let received = dd.received_snapshot(index);
        if received.is_file() {
            let db = dd.db();
            let applied = crate::storage::Db::open(&db, Default::default())
                .ok()
                .and_then(|d| {
                    d.begin_read()
                        .get(Bucket::Meta, CONSISTENT_INDEX_KEY)
                        .ok()
                        .flatten()
                        .and_then(|b| b.try_into().ok().map(u64::from_be_bytes))
                })
                .unwrap_or(0);
            if applied < index {
                tracing::info!("finishing the install of the snapshot at raft index {index}");
                ReceivedSnapshot::new(received.clone())
                    .install_as(&db)
                    .map_err(|e| format!("installing {}: {e}", received.display()))?;
            }
        }
    }
    dd.clean_snapshots(None);
    Ok(())
}

/// The addresses of --listen-metrics-urls (none when the flag is empty).
fn metrics_addrs(cfg: &Config) -> Result<Vec<SocketAddr>, StartError> {
    let urls = &cfg.flags.listen_metrics_urls;
    if urls.trim().is_empty() {
        return Ok(Vec::new());
    }
    let urls = crate::config::parse_urls("listen-metrics-urls", urls)
        .map_err(|e| StartError::Data(e.to_string()))?;
    if let Some(u) = urls.iter().find(|u| u.tls) {
        return Err(StartError::Data(format!(
            "--listen-metrics-urls {}: https metrics URLs are not supported yet (use http://)",
            u.url
        )));
    }
    Ok(urls.iter().map(|u| u.addr).collect())
}

/// --listen-metrics-urls: plain HTTP/1.1 `/metrics` and `/health` (executor 0), as etcd
/// serves them there.
async fn serve_metrics_urls(ctx: Rc<ConnContext>, addrs: Vec<SocketAddr>) {
    for addr in addrs {
        let listener = match listen(addr) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("corekv: listen on {addr}: {e}");
                std::process::exit(1);
            }
        };
        let ctx = ctx.clone();
        glommio::spawn_local(async move {
            loop {
                match listener.accept().await {
                    Ok(stream) => {
                        let ctx = ctx.clone();
                        glommio::spawn_local(async move {
                            crate::net::http1::serve(stream, &ctx).await;
                        })
                        .detach();
                    }
                    Err(e) => {
                        tracing::warn!("accepting a metrics connection failed: {e}");
                        glommio::timer::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        })
        .detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_socket_is_seen_and_a_closed_one_is_not() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert!(listening_on(addr));
        assert!(probe_port(addr).is_err());
        drop(l);
        assert!(!listening_on(addr));
        assert!(probe_port(addr).is_ok());
    }
}
