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
}

fn main() -> ExitCode {
    let args = Args::parse();
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
    match runtime.block_on(hyperboxd::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hyperboxd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
