//! raft-rs logs through slog; corekv logs through tracing. This drain hands raft-rs's records
//! (elections, leader changes, conf changes, transfers) to tracing under the target
//! `corekv::raft`, so they land in the same log, in the same format (text or JSON), filtered
//! by the same --log-level, as etcd's raft lines do.

use std::fmt::Write as _;

struct TracingDrain;

/// Collects a record's key-value pairs as ` key=value`.
struct Pairs(String);

impl slog::Serializer for Pairs {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        // raft-rs logs per message at debug level: format nothing the log would drop.
        let level = match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::Level::ERROR,
            slog::Level::Warning => tracing::Level::WARN,
            slog::Level::Info => tracing::Level::INFO,
            slog::Level::Debug | slog::Level::Trace => tracing::Level::DEBUG,
        };
        if level > tracing::level_filters::LevelFilter::current() {
            return Ok(());
        }
        let mut pairs = Pairs(String::new());
        let _ = slog::KV::serialize(&record.kv(), record, &mut pairs);
        let _ = slog::KV::serialize(values, record, &mut pairs);
        let msg = record.msg();
        let kv = pairs.0;
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "corekv::raft", "{msg}{kv}")
            }
            slog::Level::Warning => tracing::warn!(target: "corekv::raft", "{msg}{kv}"),
            slog::Level::Info => tracing::info!(target: "corekv::raft", "{msg}{kv}"),
            slog::Level::Debug | slog::Level::Trace => {
                tracing::debug!(target: "corekv::raft", "{msg}{kv}")
            }
        }
        Ok(())
    }
}

/// The logger to give raft-rs.
pub fn logger() -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!())
}
