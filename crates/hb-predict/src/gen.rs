//! Synthetic trace generators for three workload families, deterministic for a seed (a
//! SplitMix64 PRNG of our own). Times are UTC; the trace starts on a Monday 00:00.
//!
//! Assumptions, kept plain on purpose (nothing here is fitted to the models):
//! - `dev`: one developer's machine. 6 compose projects of 3-6 images (shared databases, own
//!   app images). Weekdays: 1-3 sessions between 09:00 and 18:00 (a 10 % chance of a short one
//!   on weekend days). The project of a session is the week's focus project 55 % of the time,
//!   otherwise any. A session is a compose-up (the project's order, 1-4 s apart), app-image
//!   restarts every 5-30 min, a 25 % chance of a full re-up, and one-off tool containers
//!   (no project) now and then; sessions last 30-150 min.
//! - `ci`: one CI runner. 10 pipelines of 3-7 ordered steps (each step an image, 30 s - 6 min);
//!   commits arrive on weekdays 08:00-19:00 at ~6/h (Poisson), 10 % of them start a burst
//!   (merge train) of 2-6 more within 10 min; 3 pipelines also run nightly at 02:00.
//! - `team`: a shared team host. 60 images, Zipf(1.0) popularity over a ranking that drifts
//!   (6 rank swaps a day); rate 40/h in working hours, 5/h evenings, 1/h at night, 20 % of that
//!   on weekends; 8 users (the project) each with 3 favourite images picked half the time; a
//!   start is followed within 1-3 min by the image's companion 30 % of the time; a burst a
//!   day with probability 1/2 (one image, 10-30 starts in 15 min).

use std::str::FromStr;

use crate::event::StartEvent;
use crate::{PredictError, Result};

/// A workload family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Developer sessions around compose projects.
    Dev,
    /// CI pipelines.
    Ci,
    /// A team's diurnal use with bursts and drifting popularity.
    Team,
}

impl Family {
    /// Accepted spellings.
    pub const NAMES: &'static str = "dev, ci, team";
    /// All families.
    pub const ALL: [Family; 3] = [Family::Dev, Family::Ci, Family::Team];

    /// The family's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Dev => "dev",
            Family::Ci => "ci",
            Family::Team => "team",
        }
    }
}

impl FromStr for Family {
    type Err = PredictError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "dev" => Ok(Family::Dev),
            "ci" => Ok(Family::Ci),
            "team" => Ok(Family::Team),
            _ => Err(PredictError::UnknownName {
                kind: "family",
                name: s.to_string(),
                expected: Family::NAMES,
            }),
        }
    }
}

/// Generator parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct GenParams {
    /// Days of trace.
    pub days: u32,
    /// Unix time of the first day's midnight (should be a Monday; UTC).
    pub start_ts: f64,
}

impl Default for GenParams {
    fn default() -> Self {
        GenParams {
            days: 28,
            // Monday 2025-11-24 00:00 UTC.
            start_ts: 1_763_942_400.0,
        }
    }
}

/// SplitMix64: tiny, deterministic, good enough for workloads.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
}

/// Public images with realistic unpacked sizes (MiB).
const CATALOG: &[(&str, f64)] = &[
    ("postgres:16", 430.0),
    ("redis:7", 140.0),
    ("nginx:1.27", 190.0),
    ("mysql:8.4", 600.0),
    ("mongo:7", 700.0),
    ("rabbitmq:3-management", 250.0),
    ("elasticsearch:8.15", 800.0),
    ("minio/minio:latest", 160.0),
    ("memcached:1.6", 85.0),
    ("grafana/grafana:11", 420.0),
    ("prom/prometheus:v2", 250.0),
    ("traefik:v3", 180.0),
    ("node:20", 800.0),
    ("python:3.12-slim", 150.0),
    ("rust:1.83", 800.0),
    ("golang:1.23", 800.0),
    ("alpine:3.20", 8.0),
    ("busybox:1.36", 5.0),
    ("ubuntu:24.04", 80.0),
    ("debian:bookworm-slim", 75.0),
    ("docker:27-cli", 210.0),
    ("maven:3-eclipse-temurin-21", 560.0),
    ("gradle:8-jdk21", 700.0),
    ("eclipse-temurin:21-jre", 270.0),
    ("php:8.3-fpm", 500.0),
    ("ruby:3.3", 780.0),
    ("hashicorp/terraform:1.9", 110.0),
    ("bitnami/kubectl:1.31", 250.0),
    ("sonarsource/sonar-scanner-cli", 640.0),
    ("cypress/included:13", 800.0),
];

fn catalog(index: usize) -> (String, f64) {
    let (name, size) = CATALOG[index % CATALOG.len()];
    (name.to_string(), size)
}

/// Generates a trace of `family`, sorted by `ts`, deterministic for `seed`.
pub fn gen_trace(family: Family, seed: u64, params: &GenParams) -> Vec<StartEvent> {
    let mut rng = Rng(seed ^ 0xA076_1D64_78BD_642F ^ (family as u64) << 48);
    let mut events = match family {
        Family::Dev => gen_dev(&mut rng, params),
        Family::Ci => gen_ci(&mut rng, params),
        Family::Team => gen_team(&mut rng, params),
    };
    events.sort_by(|a, b| a.ts.total_cmp(&b.ts));
    events
}

fn is_weekend(day: u32) -> bool {
    // Day 0 is a Monday.
    day % 7 >= 5
}

fn push(out: &mut Vec<StartEvent>, ts: f64, image: &(String, f64), project: Option<&str>) {
    out.push(StartEvent {
        ts: (ts * 1000.0).round() / 1000.0,
        image: image.0.clone(),
        size_mb: image.1,
        project: project.map(str::to_string),
        layers: Vec::new(),
    });
}

fn gen_dev(rng: &mut Rng, params: &GenParams) -> Vec<StartEvent> {
    const SERVICES: [usize; 11] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11];
    let names = ["shop", "billing", "search", "auth", "blog", "etl"];
    let mut projects: Vec<(String, Vec<(String, f64)>)> = Vec::new();
    for name in names {
        let services = 1 + rng.below(3);
        let mut images = Vec::new();
        for _ in 0..services {
            let s = catalog(SERVICES[rng.below(SERVICES.len())]);
            if !images.contains(&s) {
                images.push(s);
            }
        }
        let apps = 2 + rng.below(2);
        for app in ["api", "web", "worker"].iter().take(apps) {
            images.push((format!("{name}-{app}:dev"), rng.range(120.0, 600.0).round()));
        }
        images.truncate(6);
        projects.push((name.to_string(), images));
    }
    let tools: Vec<(String, f64)> = [16, 17, 18, 13, 19].iter().map(|&i| catalog(i)).collect();
    let mut out = Vec::new();
    let mut focus = rng.below(projects.len());
    for day in 0..params.days {
        if day % 7 == 0 {
            focus = rng.below(projects.len());
        }
        let midnight = params.start_ts + f64::from(day) * 86_400.0;
        let sessions = if is_weekend(day) {
            usize::from(rng.chance(0.1))
        } else {
            1 + rng.below(3)
        };
        let mut t = midnight + rng.range(9.0, 10.5) * 3600.0;
        for _ in 0..sessions {
            let (pname, images) = if rng.chance(0.55) {
                &projects[focus]
            } else {
                &projects[rng.below(projects.len())]
            };
            let end = t + rng.range(30.0, 150.0) * 60.0;
            let up = |t: &mut f64, out: &mut Vec<StartEvent>, rng: &mut Rng| {
                for image in images {
                    push(out, *t, image, Some(pname));
                    *t += rng.range(1.0, 4.0);
                }
            };
            up(&mut t, &mut out, rng);
            while t < end {
                t += rng.range(5.0, 30.0) * 60.0;
                if rng.chance(0.25) {
                    up(&mut t, &mut out, rng);
                } else if rng.chance(0.2) {
                    push(&mut out, t, &tools[rng.below(tools.len())], None);
                } else {
                    // Restart an app image (they are last in the compose order).
                    let apps = images.len().saturating_sub(1).max(1);
                    push(
                        &mut out,
                        t,
                        &images[images.len() - 1 - rng.below(apps.min(2))],
                        Some(pname),
                    );
                }
            }
            t += rng.range(10.0, 90.0) * 60.0;
            if t > midnight + 18.5 * 3600.0 {
                break;
            }
        }
    }
    out
}

fn gen_ci(rng: &mut Rng, params: &GenParams) -> Vec<StartEvent> {
    // Step pools in pipeline order: setup, build, services, test, package, deploy.
    let setup = [16, 17, 19];
    let build = [12, 14, 15, 21, 22, 25, 24];
    let services = [0, 1, 3, 4, 5];
    let test = [13, 12, 29, 28];
    let package = [20];
    let deploy = [26, 27];
    let mut pipelines: Vec<(String, Vec<(String, f64)>)> = Vec::new();
    for i in 0..10 {
        let mut steps = vec![catalog(setup[rng.below(setup.len())])];
        steps.push(catalog(build[rng.below(build.len())]));
        if rng.chance(0.6) {
            steps.push(catalog(services[rng.below(services.len())]));
        }
        if rng.chance(0.7) {
            steps.push(catalog(test[rng.below(test.len())]));
        }
        steps.push(catalog(package[0]));
        if rng.chance(0.5) {
            steps.push(catalog(deploy[rng.below(deploy.len())]));
        }
        pipelines.push((format!("repo-{i}"), steps));
    }
    let mut out = Vec::new();
    let run = |t0: f64, p: usize, out: &mut Vec<StartEvent>, rng: &mut Rng| {
        let (name, steps) = &pipelines[p];
        let mut t = t0;
        for step in steps {
            push(out, t, step, Some(name));
            t += rng.range(30.0, 360.0);
        }
    };
    for day in 0..params.days {
        let midnight = params.start_ts + f64::from(day) * 86_400.0;
        for nightly in 0..3 {
            run(
                midnight + 2.0 * 3600.0 + f64::from(nightly as u32) * 60.0,
                nightly,
                &mut out,
                rng,
            );
        }
        if is_weekend(day) {
            continue;
        }
        let mut t = midnight + 8.0 * 3600.0;
        loop {
            t += rng.exp(600.0);
            if t > midnight + 19.0 * 3600.0 {
                break;
            }
            run(t, rng.below(pipelines.len()), &mut out, rng);
            if rng.chance(0.1) {
                for _ in 0..(2 + rng.below(5)) {
                    run(
                        t + rng.range(0.0, 600.0),
                        rng.below(pipelines.len()),
                        &mut out,
                        rng,
                    );
                }
            }
        }
    }
    out
}

fn gen_team(rng: &mut Rng, params: &GenParams) -> Vec<StartEvent> {
    let mut images: Vec<(String, f64)> = (0..CATALOG.len()).map(catalog).collect();
    for i in 0..(60 - CATALOG.len()) {
        images.push((
            format!("registry.team/svc-{i}:latest"),
            rng.range(40.0, 700.0).round(),
        ));
    }
    let n = images.len();
    let mut rank: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        rank.swap(i, rng.below(i + 1));
    }
    let companion: Vec<usize> = (0..n).map(|_| rng.below(n)).collect();
    let weights: Vec<f64> = (0..n).map(|r| 1.0 / (r as f64 + 1.0)).collect();
    let total: f64 = weights.iter().sum();
    let users: Vec<(String, [usize; 3])> = (0..8)
        .map(|u| {
            (
                format!("user-{u}"),
                [rng.below(n), rng.below(n), rng.below(n)],
            )
        })
        .collect();
    let mut out = Vec::new();
    for day in 0..params.days {
        for _ in 0..6 {
            let a = rng.below(n);
            let b = (a + 1 + rng.below(5)) % n;
            rank.swap(a, b);
        }
        let midnight = params.start_ts + f64::from(day) * 86_400.0;
        let scale = if is_weekend(day) { 0.2 } else { 1.0 };
        for hour in 0..24 {
            let per_hour = match hour {
                9..=17 => 40.0,
                7 | 8 | 18..=21 => 5.0,
                _ => 1.0,
            } * scale;
            let mut t = midnight + f64::from(hour) * 3600.0;
            let end = t + 3600.0;
            loop {
                t += rng.exp(3600.0 / per_hour);
                if t >= end {
                    break;
                }
                let (user, favourites) = &users[rng.below(users.len())];
                let pick = if rng.chance(0.5) {
                    favourites[rng.below(3)]
                } else {
                    let mut x = rng.unit() * total;
                    let mut r = 0;
                    while r + 1 < n && x >= weights[r] {
                        x -= weights[r];
                        r += 1;
                    }
                    rank[r]
                };
                push(&mut out, t, &images[pick], Some(user));
                if rng.chance(0.3) {
                    push(
                        &mut out,
                        t + rng.range(60.0, 180.0),
                        &images[companion[pick]],
                        Some(user),
                    );
                }
            }
        }
        if rng.chance(0.5) {
            let image = &images[rng.below(n)];
            let t0 = midnight + rng.range(9.0, 17.0) * 3600.0;
            for _ in 0..(10 + rng.below(21)) {
                push(&mut out, t0 + rng.range(0.0, 900.0), image, None);
            }
        }
    }
    out
}
