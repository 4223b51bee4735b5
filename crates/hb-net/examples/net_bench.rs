//! Times the per-container network paths (as root): `--network none` (create_netns + release),
//! bridge (create_netns + attach_bridge + release) and bridge with one published port.
//! Uses a bridge and subnet of its own (`hbb<pid>`, 10.198.0.0/24) and removes them at the end.
//!
//! `cargo run --release -p hb-net --example net_bench -- [rounds]`

use std::time::{Duration, Instant};

use hb_net::{parse_port_mapping, NetConfig, Networks};

fn stats(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let pick = |q: f64| v[((v.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e3;
    println!(
        "{name:<40} n={:<4} median {:7.3} ms  p90 {:7.3} ms  max {:7.3} ms",
        v.len(),
        pick(0.5),
        pick(0.9),
        pick(1.0)
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("net_bench needs root");
        std::process::exit(2);
    }
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let dir = std::env::temp_dir().join(format!("hb-net-bench-{}", std::process::id()));
    let bridge = format!("hbb{}", std::process::id() % 100_000);
    let config = NetConfig::new(&bridge, "10.198.0.0/24", dir.join("run"), dir.join("state"))?;
    let nets = Networks::open(config)?;
    // Bridge setup (once per daemon: bridge, sysctls, base iptables rules) is not per container.
    let t = Instant::now();
    let ns = nets.create_netns("warmup")?;
    nets.attach_bridge(&ns, "warmup", &[])?;
    nets.release("warmup", &ns)?;
    println!(
        "first attach incl. bridge setup: {:.3} ms",
        t.elapsed().as_secs_f64() * 1e3
    );

    let (mut none, mut create, mut attach, mut release, mut bridge_total) =
        (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..rounds {
        let id = format!("none{i}");
        let t = Instant::now();
        let ns = nets.create_netns(&id)?;
        none.push(t.elapsed());
        nets.release(&id, &ns)?;

        let id = format!("br{i}");
        let t0 = Instant::now();
        let ns = nets.create_netns(&id)?;
        let t1 = Instant::now();
        nets.attach_bridge(&ns, &id, &[])?;
        let t2 = Instant::now();
        nets.release(&id, &ns)?;
        let t3 = Instant::now();
        create.push(t1 - t0);
        attach.push(t2 - t1);
        release.push(t3 - t2);
        bridge_total.push(t3 - t0);
    }
    let mut ported = vec![];
    let port = parse_port_mapping("127.0.0.1::80")?;
    for i in 0..rounds.min(30) {
        let id = format!("pt{i}");
        let t = Instant::now();
        let ns = nets.create_netns(&id)?;
        nets.attach_bridge(&ns, &id, std::slice::from_ref(&port))?;
        nets.release(&id, &ns)?;
        ported.push(t.elapsed());
    }
    stats("none: create_netns", none);
    stats("bridge: create_netns", create);
    stats("bridge: attach_bridge (no ports)", attach);
    stats("bridge: release", release);
    stats("bridge: create+attach+release", bridge_total);
    stats("bridge, 1 port: create+attach+release", ported);

    // The bench's own bridge and base rules.
    nets.remove_bridge()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
