//! member, endpoint, alarm, defrag, move-leader.

use std::time::Instant;

use clap::{Args, Subcommand};

use super::gofmt::{format_duration, parse_uint, quote};
use super::print::{err, out, out_bytes, EpHashKv, EpHealth, EpStatus};
use super::{
    connect, connect_with, dial_warning, CtlError, Format, Global, EXIT_BAD_ARGS, EXIT_ERROR,
};
use crate::client::{Client, ClientError};
use crate::proto::etcdserverpb as pb;

#[derive(Subcommand, Debug)]
pub enum MemberCmd {
    /// Adds a member into the cluster
    Add {
        /// comma separated peer URLs for the new member.
        #[arg(long, default_value = "")]
        peer_urls: String,
        /// indicates if the new member is raft learner
        #[arg(long)]
        learner: bool,
        /// <memberName>
        args: Vec<String>,
    },
    /// Removes a member from the cluster
    Remove {
        /// <memberID>
        args: Vec<String>,
    },
    /// Updates a member in the cluster
    Update {
        /// comma separated peer URLs for the updated member.
        #[arg(long, default_value = "")]
        peer_urls: String,
        /// <memberID>
        args: Vec<String>,
    },
    /// Lists all members in the cluster
    List,
    /// Promotes a non-voting member in the cluster
    Promote {
        /// <memberID>
        args: Vec<String>,
    },
}

#[derive(Args, Debug)]
#[command(arg_required_else_help = true)]
pub struct EndpointArgs {
    /// use all endpoints from the cluster member list
    #[arg(long, global = true)]
    pub cluster: bool,
    #[command(subcommand)]
    pub cmd: EndpointCmd,
}

#[derive(Subcommand, Debug)]
pub enum EndpointCmd {
    /// Checks the healthiness of endpoints specified in `--endpoints` flag
    Health,
    /// Prints out the status of endpoints specified in `--endpoints` flag
    Status,
    /// Prints the KV history hash for each endpoint in --endpoints
    Hashkv {
        /// maximum revision to hash (default: all revisions)
        #[arg(long, default_value_t = 0)]
        rev: i64,
    },
}

#[derive(Subcommand, Debug)]
pub enum AlarmCmd {
    /// Disarms all alarms
    Disarm { args: Vec<String> },
    /// Lists all alarms
    List { args: Vec<String> },
}

#[derive(Args, Debug)]
pub struct DefragArgs {
    /// use all endpoints from the cluster member list
    #[arg(long)]
    pub cluster: bool,
}

#[derive(Args, Debug)]
pub struct MoveLeaderArgs {
    /// <transferee-member-id>
    pub args: Vec<String>,
}

fn member_id(args: &[String]) -> Result<u64, CtlError> {
    let [arg] = args else {
        return Err(CtlError::new(EXIT_BAD_ARGS, "member ID is not provided"));
    };
    parse_uint(arg, 16).map_err(|e| {
        CtlError::new(
            EXIT_BAD_ARGS,
            format!("bad member ID arg ({e}), expecting ID in Hex"),
        )
    })
}

/// Reports a membership change: "Member <id> <verb> cluster <cluster id>" in the simple format,
/// the response otherwise.
fn member_changed(
    printer: &super::Printer,
    id: u64,
    verb: &str,
    r: &impl prost::Message,
    header: Option<&pb::ResponseHeader>,
    member: Option<&pb::Member>,
    members: &[pb::Member],
) {
    let cluster = header.map_or(0, |h| h.cluster_id);
    match printer.format {
        Format::Simple => out(&format!("Member {id:16x} {verb} cluster {cluster:16x}\n")),
        Format::Protobuf => out_bytes(&r.encode_to_vec()),
        _ => out(&members_json(header, member, members)),
    }
}

/// The JSON of a membership change response: header, member (add only), members.
fn members_json(
    h: Option<&pb::ResponseHeader>,
    member: Option<&pb::Member>,
    members: &[pb::Member],
) -> String {
    let mut j = super::json::Json::new();
    j.begin_obj();
    if let Some(h) = h {
        j.obj("header");
        j.int_oe("cluster_id", h.cluster_id);
        j.int_oe("member_id", h.member_id);
        j.int_oe("revision", h.revision);
        j.int_oe("raft_term", h.raft_term);
        j.end_obj();
    }
    let write_member = |j: &mut super::json::Json, m: &pb::Member| {
        j.int_oe("ID", m.id);
        j.str_oe("name", &m.name);
        j.strs_oe("peerURLs", &m.peer_ur_ls);
        j.strs_oe("clientURLs", &m.client_ur_ls);
        j.bool_oe("isLearner", m.is_learner);
    };
    if let Some(m) = member {
        j.obj("member");
        write_member(&mut j, m);
        j.end_obj();
    }
    if !members.is_empty() {
        j.arr("members");
        for m in members {
            j.begin_obj();
            write_member(&mut j, m);
            j.end_obj();
        }
        j.end_arr();
    }
    j.end_obj();
    j.finish() + "\n"
}

pub async fn member(g: &Global, cmd: MemberCmd) -> Result<(), CtlError> {
    match cmd {
        MemberCmd::List => {
            let printer = g.printer()?;
            let client = connect(g).await?;
            let resp = client.member_list().await.map_err(CtlError::rpc)?;
            printer.member_list(&resp)
        }
        MemberCmd::Add {
            peer_urls,
            learner,
            args,
        } => {
            let name = match args.as_slice() {
                [] => return Err(CtlError::new(EXIT_BAD_ARGS, "member name not provided")),
                [name] => name.clone(),
                _ => {
                    let mut ev = "too many arguments".to_string();
                    for s in &args {
                        if s.to_lowercase().starts_with("http") {
                            ev.push_str(&format!(", did you mean --peer-urls={s}"));
                        }
                    }
                    return Err(CtlError::new(EXIT_BAD_ARGS, ev));
                }
            };
            if peer_urls.is_empty() {
                return Err(CtlError::new(
                    EXIT_BAD_ARGS,
                    "member peer urls not provided",
                ));
            }
            let urls: Vec<String> = peer_urls.split(',').map(String::from).collect();
            let printer = g.printer()?;
            let client = connect(g).await?;
            let resp = client
                .member_add(pb::MemberAddRequest {
                    peer_ur_ls: urls,
                    is_learner: learner,
                })
                .await
                .map_err(CtlError::rpc)?;
            let new = resp.member.clone().unwrap_or_default();
            member_changed(
                &printer,
                new.id,
                "added to",
                &resp,
                resp.header.as_ref(),
                resp.member.as_ref(),
                &resp.members,
            );
            if printer.format == Format::Simple {
                let mut conf = Vec::new();
                for m in &resp.members {
                    for u in &m.peer_ur_ls {
                        let n = if m.id == new.id { &name } else { &m.name };
                        conf.push(format!("{n}={u}"));
                    }
                }
                out(&format!(
                    "\nETCD_NAME={}\nETCD_INITIAL_CLUSTER={}\nETCD_INITIAL_ADVERTISE_PEER_URLS={}\nETCD_INITIAL_CLUSTER_STATE=\"existing\"\n",
                    quote(name.as_bytes()),
                    quote(conf.join(",").as_bytes()),
                    quote(peer_urls.as_bytes())
                ));
            }
            Ok(())
        }
        MemberCmd::Remove { args } => {
            let id = member_id(&args)?;
            let printer = g.printer()?;
            let client = connect(g).await?;
            let resp = client
                .member_remove(pb::MemberRemoveRequest { id })
                .await
                .map_err(CtlError::rpc)?;
            member_changed(
                &printer,
                id,
                "removed from",
                &resp,
                resp.header.as_ref(),
                None,
                &resp.members,
            );
            Ok(())
        }
        MemberCmd::Update { peer_urls, args } => {
            let id = member_id(&args)?;
            if peer_urls.is_empty() {
                return Err(CtlError::new(
                    EXIT_BAD_ARGS,
                    "member peer urls not provided",
                ));
            }
            let printer = g.printer()?;
            let client = connect(g).await?;
            let resp = client
                .member_update(pb::MemberUpdateRequest {
                    id,
                    peer_ur_ls: peer_urls.split(',').map(String::from).collect(),
                })
                .await
                .map_err(CtlError::rpc)?;
            member_changed(
                &printer,
                id,
                "updated in",
                &resp,
                resp.header.as_ref(),
                None,
                &resp.members,
            );
            Ok(())
        }
        MemberCmd::Promote { args } => {
            let id = member_id(&args)?;
            let printer = g.printer()?;
            let client = connect(g).await?;
            let resp = client
                .member_promote(pb::MemberPromoteRequest { id })
                .await
                .map_err(CtlError::rpc)?;
            member_changed(
                &printer,
                id,
                "promoted in",
                &resp,
                resp.header.as_ref(),
                None,
                &resp.members,
            );
            Ok(())
        }
    }
}

/// The endpoints to visit: `--endpoints`, or with `--cluster` every member's client URLs.
async fn endpoints(g: &Global, cluster: bool) -> Result<Vec<String>, CtlError> {
    if !cluster {
        return Ok(g.endpoints.clone());
    }
    let client = connect(g).await?;
    let resp = client.member_list().await.map_err(|e| {
        CtlError::new(
            EXIT_ERROR,
            format!("failed to fetch endpoints from etcd cluster member list: {e}"),
        )
    })?;
    Ok(resp
        .members
        .iter()
        .flat_map(|m| m.client_ur_ls.iter().cloned())
        .collect())
}

/// A client for one endpoint; a dial failure reads as etcdctl's deadline error.
async fn dial_one(g: &Global, ep: &str) -> Result<Client, ClientError> {
    let opts = g
        .options_for(vec![ep.to_string()])
        .map_err(|e| ClientError::Transport(e.msg.unwrap_or_default()))?;
    Client::connect(opts.clone()).await.map_err(|e| {
        dial_warning(&opts.endpoints, &e);
        ClientError::Timeout
    })
}

async fn health_of(g: &Global, ep: String) -> EpHealth {
    let start = Instant::now();
    let result = match dial_one(g, &ep).await {
        Ok(c) => c
            .range(pb::RangeRequest {
                key: "health".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    let took = format_duration(start.elapsed());
    match result {
        Ok(()) => EpHealth {
            ep,
            health: true,
            took,
            error: String::new(),
        },
        // Permission denied still went through consensus: healthy.
        Err(ClientError::Status(s)) if s.message == "etcdserver: permission denied" => EpHealth {
            ep,
            health: true,
            took,
            error: String::new(),
        },
        Err(e) => EpHealth {
            ep,
            health: false,
            took,
            error: e.to_string(),
        },
    }
}

pub async fn endpoint(g: &Global, a: EndpointArgs) -> Result<(), CtlError> {
    match a.cmd {
        EndpointCmd::Health => {
            let eps = endpoints(g, a.cluster).await?;
            let printer = g.printer()?;
            let mut list = Vec::new();
            for ep in eps {
                list.push(health_of(g, ep).await);
            }
            printer.endpoint_health(&list)?;
            if list.iter().any(|h| !h.error.is_empty()) {
                return Err(CtlError::new(EXIT_ERROR, "unhealthy cluster"));
            }
            Ok(())
        }
        EndpointCmd::Status => {
            let printer = g.printer()?;
            let eps = endpoints(g, a.cluster).await?;
            let mut list = Vec::new();
            let mut failed = false;
            for ep in eps {
                let r = match dial_one(g, &ep).await {
                    Ok(c) => c.status().await,
                    Err(e) => Err(e),
                };
                match r {
                    Ok(resp) => list.push(EpStatus { ep, resp }),
                    Err(e) => {
                        failed = true;
                        err(&format!(
                            "Failed to get the status of endpoint {ep} ({e})\n"
                        ));
                    }
                }
            }
            printer.endpoint_status(&list)?;
            if failed {
                return Err(CtlError::silent(EXIT_ERROR));
            }
            Ok(())
        }
        EndpointCmd::Hashkv { rev } => {
            let printer = g.printer()?;
            let eps = endpoints(g, a.cluster).await?;
            let mut list = Vec::new();
            let mut last_err = None;
            for ep in eps {
                let r = match dial_one(g, &ep).await {
                    Ok(c) => c.hash_kv(rev).await,
                    Err(e) => Err(e),
                };
                match r {
                    Ok(resp) => list.push(EpHashKv { ep, resp }),
                    Err(e) => {
                        err(&format!("Failed to get the hash of endpoint {ep} ({e})\n"));
                        last_err = Some(e);
                    }
                }
            }
            printer.endpoint_hashkv(&list)?;
            match last_err {
                Some(e) => Err(CtlError::rpc(e)),
                None => Ok(()),
            }
        }
    }
}

pub async fn alarm(g: &Global, cmd: AlarmCmd) -> Result<(), CtlError> {
    use pb::alarm_request::AlarmAction;
    let (args, disarm) = match &cmd {
        AlarmCmd::Disarm { args } => (args, true),
        AlarmCmd::List { args } => (args, false),
    };
    if !args.is_empty() {
        let which = if disarm { "disarm" } else { "list" };
        return Err(CtlError::new(
            EXIT_BAD_ARGS,
            format!("alarm {which} command accepts no arguments"),
        ));
    }
    let printer = g.printer()?;
    let client = connect(g).await?;
    let list = client
        .alarm(pb::AlarmRequest {
            action: AlarmAction::Get as i32,
            member_id: 0,
            alarm: 0,
        })
        .await
        .map_err(CtlError::rpc)?;
    if !disarm {
        return printer.alarm(&list);
    }
    // clientv3 disarms each listed alarm and reports what each disarm returned.
    let mut ret = pb::AlarmResponse::default();
    for a in &list.alarms {
        let r = client
            .alarm(pb::AlarmRequest {
                action: AlarmAction::Deactivate as i32,
                member_id: a.member_id,
                alarm: a.alarm,
            })
            .await
            .map_err(CtlError::rpc)?;
        ret.alarms.extend(r.alarms);
    }
    printer.alarm(&ret)
}

pub async fn defrag(g: &Global, a: DefragArgs) -> Result<(), CtlError> {
    g.printer()?;
    let eps = endpoints(g, a.cluster).await?;
    let mut failures = 0;
    for ep in eps {
        let r = match dial_one(g, &ep).await {
            Ok(c) => c.defragment().await,
            Err(e) => Err(e),
        };
        match r {
            Ok(_) => out(&format!("Finished defragmenting etcd member[{ep}]\n")),
            Err(e) => {
                err(&format!("Failed to defragment etcd member[{ep}] ({e})\n"));
                failures += 1;
            }
        }
    }
    if failures != 0 {
        return Err(CtlError::silent(EXIT_ERROR));
    }
    Ok(())
}

pub async fn move_leader(g: &Global, a: MoveLeaderArgs) -> Result<(), CtlError> {
    let [arg] = a.args.as_slice() else {
        return Err(CtlError::new(
            EXIT_BAD_ARGS,
            "move-leader command needs 1 argument",
        ));
    };
    let target = parse_uint(arg, 16).map_err(|e| CtlError::new(EXIT_BAD_ARGS, e))?;
    let printer = g.printer()?;
    let mut leader = None;
    for ep in &g.endpoints {
        let client = connect_with(g.options_for(vec![ep.clone()])?).await?;
        let st = client.status().await.map_err(CtlError::rpc)?;
        let me = st.header.as_ref().map_or(0, |h| h.member_id);
        if me == st.leader {
            leader = Some((client, st.leader));
            break;
        }
    }
    let Some((client, leader_id)) = leader else {
        return Err(CtlError::new(
            EXIT_BAD_ARGS,
            format!("no leader endpoint given at [{}]", g.endpoints.join(" ")),
        ));
    };
    let resp = client.move_leader(target).await.map_err(CtlError::rpc)?;
    match printer.format {
        Format::Simple => out(&format!(
            "Leadership transferred from {leader_id:x} to {target:x}\n"
        )),
        Format::Json => out(&members_json(resp.header.as_ref(), None, &[])),
        Format::Protobuf => out_bytes(&prost::Message::encode_to_vec(&resp)),
        Format::Fields | Format::Table => {
            return Err(CtlError::new(
                super::EXIT_BAD_FEATURE,
                format!(
                    "{} not supported as output format",
                    if printer.format == Format::Table {
                        "table"
                    } else {
                        "fields"
                    }
                ),
            ))
        }
    }
    Ok(())
}
