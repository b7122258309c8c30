//! The corekv server: `corekv` with no flags serves clients on 127.0.0.1:2379.

use clap::Parser;

/// glibc malloc showed up as ~10% of server CPU (small per-request buffers freed on other
/// executors' threads); mimalloc's per-thread heaps are cheaper for this pattern.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use corekv::config::{Config, Flags};

fn main() {
    // A panic on any thread (an executor, the committer) leaves the member unable to keep
    // its promises: report it and stop the whole process, rather than serve half-dead.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        eprintln!("corekv: a thread panicked; stopping");
        std::process::exit(70);
    }));
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("grpc-proxy") {
        grpc_proxy(&args[2..]);
    }
    let flags: Flags = parse_or_exit(args, "corekv", "corekv --help");
    // glommio logs at error level when a device has no polled I/O support: not ours to report.
    let directives = format!("{},glommio::reactor=off", flags.log_level);
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,glommio::reactor=off"));
    // Colour codes only for a person at a terminal; a log file or collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match flags.log_format.as_str() {
        "json" => log.json().flatten_event(true).init(),
        _ => log.init(),
    }
    if let Some(point) = &flags.failpoint {
        corekv::failpoint::arm(point);
    }
    let cfg = match Config::from_flags(flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("corekv: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = corekv::launch::run(cfg) {
        eprintln!("corekv: {e}");
        std::process::exit(1);
    }
}

/// `corekv grpc-proxy start [flags]`, as `etcd grpc-proxy start`.
fn grpc_proxy(args: &[String]) -> ! {
    if args.first().map(String::as_str) != Some("start") {
        eprintln!("corekv grpc-proxy: usage: corekv grpc-proxy start [flags]");
        std::process::exit(2);
    }
    let argv =
        std::iter::once("corekv grpc-proxy start".to_string()).chain(args[1..].iter().cloned());
    let flags: corekv::proxy::ProxyFlags =
        parse_or_exit(argv, "corekv grpc-proxy", "corekv grpc-proxy start --help");
    let filter =
        tracing_subscriber::EnvFilter::try_new(format!("{},glommio::reactor=off", flags.log_level))
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,glommio::reactor=off"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
    if let Err(e) = corekv::proxy::run(flags) {
        eprintln!("corekv grpc-proxy: {e}");
        std::process::exit(1);
    }
    std::process::exit(0);
}

/// Parses flags, or exits: 0 after --help or --version, 2 with one line (like etcd's flag
/// errors, instead of clap's usage block) for anything wrong.
fn parse_or_exit<T: Parser>(argv: impl IntoIterator<Item = String>, me: &str, help: &str) -> T {
    match T::try_parse_from(argv) {
        Ok(f) => f,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                std::process::exit(0);
            }
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("{me}: {} (see {help})", first.trim_start_matches("error: "));
            std::process::exit(2);
        }
    }
}
