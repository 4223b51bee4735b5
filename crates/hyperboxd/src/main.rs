//! `hyperboxd`: loads the config (file, `HYPERBOX_*` environment), then serves HyperBox's API
//! on its unix socket until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hb_config::Config;

/// The HyperBox daemon.
#[derive(Parser, Debug)]
#[command(
    name = "hyperboxd",
    version,
    about = "HyperBox container engine daemon"
)]
struct Args {
    /// Config file (default /etc/hyperbox/hyperbox.toml when it exists; built-in defaults otherwise).
    #[arg(long, short = 'c', env = "HYPERBOX_CONFIG")]
    config: Option<PathBuf>,
    /// Check the config (file and environment) and exit: 0 when valid.
    #[arg(long)]
    validate_config: bool,
    /// Print the effective config as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Run as the container monitor (started by the daemon itself; not for users).
    #[arg(long, hide = true)]
    monitor: bool,
    #[arg(long, hide = true)]
    monitor_socket: Option<PathBuf>,
    #[arg(long, hide = true, default_value = "hyperbox")]
    cgroup_parent: String,
    #[arg(long, hide = true, default_value = "hb0")]
    bridge: String,
    #[arg(long, hide = true, default_value = "10.89.0.0/16")]
    subnet: String,
    #[arg(long, hide = true)]
    net_run_dir: Option<PathBuf>,
    #[arg(long, hide = true)]
    net_state_dir: Option<PathBuf>,
    #[arg(long, hide = true, default_value = "info")]
    log_level: String,
}

/// The monitor: single-threaded, no async runtime (it forks containers).
fn run_monitor(args: Args) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log_level))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let (Some(socket), Some(run), Some(state)) =
        (args.monitor_socket, args.net_run_dir, args.net_state_dir)
    else {
        eprintln!(
            "hyperboxd --monitor: --monitor-socket, --net-run-dir and --net-state-dir are required"
        );
        return ExitCode::from(2);
    };
    let net = match hb_net::NetConfig::new(&args.bridge, &args.subnet, run, state) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("hyperboxd --monitor: {e}");
            return ExitCode::from(2);
        }
    };
    let config = hb_monitor::MonitorConfig {
        socket,
        cgroup_parent: args.cgroup_parent,
        net,
        netns_pool: 4,
    };
    match hb_monitor::Monitor::new(config).and_then(|m| m.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hyperboxd --monitor: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.monitor {
        return run_monitor(args);
    }
    // vars() would panic on a variable that is not UTF-8; such a variable cannot be ours anyway.
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let config = match Config::load(args.config.as_deref(), env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hyperboxd: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if args.validate_config {
        println!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    if args.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    let filter = std::env::var("HYPERBOX_LOG").unwrap_or_else(|_| config.daemon.log_level.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hyperboxd")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hyperboxd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(hyperboxd::serve(config, args.config.clone())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hyperboxd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
