//! Behaviour tests of hb-predict: the three models, the hot-tier policy, history bounds, trace
//! parsing, replay determinism and a hand-checked LRU replay.

use hb_predict::*;

fn ev(ts: f64, image: &str, size_mb: f64, project: Option<&str>) -> StartEvent {
    StartEvent {
        ts,
        image: image.into(),
        size_mb,
        project: project.map(Into::into),
        layers: Vec::new(),
    }
}

fn engine(technique: Technique, cache_mb: f64) -> Engine {
    Engine::new(EngineConfig {
        technique,
        cache_mb,
        ..EngineConfig::default()
    })
    .unwrap()
}

fn start(e: &mut Engine, event: StartEvent) -> (StartOutcome, Vec<Action>) {
    let (outcome, _) = e.on_start(&event);
    (outcome, e.observe(event))
}

const T0: f64 = 1_763_942_400.0;

#[test]
fn frequency_counts_decay() {
    let mut e = engine(Technique::Frequency, 4096.0);
    for i in 0..20 {
        start(&mut e, ev(T0 + f64::from(i) * 60.0, "a:1", 100.0, None));
    }
    let conf = |e: &Engine, now: f64| {
        e.predictions(now, 0.0)
            .iter()
            .find(|p| p.image == "a:1")
            .map_or(0.0, |p| p.confidence)
    };
    let soon = conf(&e, T0 + 1200.0 + 60.0);
    let day_later = conf(&e, T0 + 1200.0 + 86_400.0);
    let week_later = conf(&e, T0 + 1200.0 + 7.0 * 86_400.0);
    assert!(soon >= 65.0, "fresh heavy use should be confident: {soon}");
    assert!(day_later < soon, "{day_later} !< {soon}");
    assert!(
        week_later < 5.0,
        "a week of silence should decay: {week_later}"
    );
}

#[test]
fn markov_learns_a_then_b() {
    let mut e = engine(Technique::Predictive, 4096.0);
    let mut t = T0;
    for _ in 0..3 {
        start(&mut e, ev(t, "a:1", 100.0, Some("shop")));
        start(&mut e, ev(t + 5.0, "b:1", 200.0, Some("shop")));
        t += 3600.0;
    }
    // Make room pressure irrelevant but B cold: a fresh engine fed the same history.
    let history = e.history().clone();
    let mut fresh = Engine::with_history(
        EngineConfig {
            technique: Technique::Predictive,
            cache_mb: 4096.0,
            ..EngineConfig::default()
        },
        &history,
    )
    .unwrap();
    let (outcome_a, actions) = start(&mut fresh, ev(t, "a:1", 100.0, Some("shop")));
    assert_eq!(outcome_a, StartOutcome::Miss);
    let prewarm = actions
        .iter()
        .find_map(|a| match a {
            Action::Prewarm {
                image, confidence, ..
            } if image == "b:1" => Some(*confidence),
            _ => None,
        })
        .expect("B is prewarmed after A");
    assert!(prewarm >= 65.0, "confidence {prewarm}");
    let (outcome_b, _) = start(&mut fresh, ev(t + 5.0, "b:1", 200.0, Some("shop")));
    assert_eq!(outcome_b, StartOutcome::Hit);
    assert_eq!(fresh.cache().stats().prewarm_used, 1);
}

#[test]
fn markov_one_sighting_is_below_threshold() {
    let mut e = engine(Technique::Predictive, 4096.0);
    start(&mut e, ev(T0, "a:1", 100.0, Some("p")));
    start(&mut e, ev(T0 + 5.0, "b:1", 100.0, Some("p")));
    let (_, actions) = start(&mut e, ev(T0 + 7200.0, "a:1", 100.0, Some("p")));
    assert!(
        actions.iter().all(|a| !matches!(a, Action::Prewarm { .. })),
        "{actions:?}"
    );
}

#[test]
fn statistical_learns_a_periodic_image() {
    let mut e = engine(Technique::Statistical, 4096.0);
    let period = 1200.0;
    let mut last = T0;
    for i in 0..30 {
        last = T0 + f64::from(i) * period;
        start(&mut e, ev(last, "cron:1", 50.0, None));
    }
    let conf = |now: f64| {
        e.predictions(now, 0.0)
            .iter()
            .find(|p| p.image == "cron:1")
            .map_or(0.0, |p| p.confidence)
    };
    // The default interval (300 s) gives a 600 s horizon: from 12 min after the last start the
    // next one (at 20 min) is inside it; right after the last start it is not.
    let early = conf(last + 60.0);
    let due = conf(last + 720.0);
    assert!(due >= 65.0, "due soon: {due}");
    assert!(early < due, "{early} !< {due}");
}

#[test]
fn lru_order_and_size_bound() {
    let mut c = HotCache::new(300.0);
    let never = |_: &str| KeepValue::LRU;
    for (i, img) in ["a", "b", "c"].iter().enumerate() {
        assert_eq!(c.start(img, 100.0, i as f64, &never).0, StartOutcome::Miss);
    }
    assert_eq!(c.start("a", 100.0, 3.0, &never).0, StartOutcome::Hit);
    let (_, evicted) = c.start("d", 100.0, 4.0, &never);
    assert_eq!(evicted, vec!["b".to_string()]);
    assert_eq!(c.images_lru(), vec!["c", "a", "d"]);
    // Random mixed sizes: the bound holds after every operation.
    let mut c = HotCache::new(1000.0);
    let mut x: u64 = 7;
    for step in 0..5000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let image = format!("i{}", (x >> 33) % 40);
        let size = 5.0 + ((x >> 20) % 800) as f64;
        if step % 3 == 0 {
            c.prewarm(
                &image,
                size,
                (f64::from(step), f64::from(step) + 50.0),
                f64::INFINITY,
                &never,
            );
        } else {
            c.start(&image, size, f64::from(step), &never);
        }
        assert!(
            c.used_mb() <= 1000.0 + 1e-6,
            "{} > 1000 at {step}",
            c.used_mb()
        );
    }
}

#[test]
fn prediction_aware_eviction_keeps_predicted() {
    let mut c = HotCache::new(300.0);
    let never = |_: &str| KeepValue::LRU;
    c.start("a", 100.0, 0.0, &never);
    c.start("b", 100.0, 1.0, &never);
    c.start("c", 100.0, 2.0, &never);
    // "a" is the LRU entry but predicted until t=100.
    c.prewarm("a", 100.0, (3.0, 100.0), f64::INFINITY, &never);
    let (_, evicted) = c.start("d", 100.0, 4.0, &never);
    assert_eq!(evicted, vec!["b".to_string()]);
    // What the model calls done goes before plain LRU.
    let done_d = |i: &str| {
        if i == "d" {
            KeepValue::Done
        } else {
            KeepValue::LRU
        }
    };
    let (_, evicted) = c.start("e", 100.0, 5.0, &done_d);
    assert_eq!(evicted, vec!["d".to_string()]);
}

#[test]
fn a_prewarm_never_evicts_what_is_worth_more() {
    let mut c = HotCache::new(300.0);
    let worth = |i: &str| match i {
        "a" => KeepValue::PerMib(0.5),
        "b" => KeepValue::PerMib(0.1),
        _ => KeepValue::PerMib(0.3),
    };
    for (t, img) in ["a", "b", "c"].iter().enumerate() {
        c.start(img, 100.0, t as f64, &worth);
    }
    // Worth less than every warm image: refused, nothing evicted.
    assert_eq!(
        c.prewarm("d", 100.0, (3.0, 100.0), 0.05, &worth),
        (false, Vec::new())
    );
    assert!(["a", "b", "c"].iter().all(|i| c.contains(i)) && !c.contains("d"));
    assert_eq!(c.stats().prewarmed, 0);
    // Worth more than "b" only: "b" goes although "a" is the least recently used.
    assert_eq!(
        c.prewarm("d", 100.0, (4.0, 100.0), 0.2, &worth),
        (true, vec!["b".to_string()])
    );
    // Needing two victims when only one is worth less: refused, and that one stays.
    assert_eq!(
        c.prewarm("e", 200.0, (5.0, 100.0), 0.4, &worth),
        (false, Vec::new())
    );
    assert!(c.contains("c") && c.contains("a"));
}

#[test]
fn with_a_model_eviction_keeps_what_is_used_most_per_mib() {
    // A 100 MB image used ten times, then an 800 MB one once; a third start needs 100 MB.
    // LRU drops the small, busy image (used longest ago); a model drops the big one-off.
    let run = |technique| {
        let mut e = Engine::new(EngineConfig {
            technique,
            cache_mb: 1000.0,
            // Act on no prediction: only the eviction order differs.
            confidence_threshold: 100.0,
            ..EngineConfig::default()
        })
        .unwrap();
        for i in 0..10 {
            start(&mut e, ev(T0 + 60.0 * f64::from(i), "small", 100.0, None));
        }
        start(&mut e, ev(T0 + 600.0, "big", 800.0, None));
        let (_, evicted) = e.on_start(&ev(T0 + 700.0, "other", 200.0, None));
        evicted
    };
    let evicted_by = |technique| {
        run(technique)
            .into_iter()
            .map(|a| match a {
                Action::Evict { image } => image,
                other => panic!("unexpected action {other:?}"),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(evicted_by(Technique::None), vec!["small".to_string()]);
    // (statistical is left out: its inter-arrival histogram calls "small", one minute apart
    // and then quiet for 160 s, done, which goes first; that rule has its own test.)
    for technique in [Technique::Frequency, Technique::Predictive] {
        assert_eq!(
            evicted_by(technique),
            vec!["big".to_string()],
            "{technique:?}"
        );
    }
}

#[test]
fn hand_checked_lru_replay() {
    // Cache of 250 MB holds two 100 MB images. A miss, B miss, A hit, C miss (evicts B),
    // B miss (evicts A), A miss (evicts C), B hit: 2 hits of 7.
    let trace: Vec<StartEvent> = ["a", "b", "a", "c", "b", "a", "b"]
        .iter()
        .enumerate()
        .map(|(i, img)| ev(T0 + i as f64, img, 100.0, None))
        .collect();
    let r = replay(
        &trace,
        &ReplayConfig {
            technique: Technique::None,
            cache_mb: 250.0,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!((r.starts, r.hits, r.cold_starts, r.prewarmed), (7, 2, 5, 0));
    assert!((r.hit_ratio - 2.0 / 7.0).abs() < 1e-12);
    assert_eq!(r.prediction_accuracy, None);
}

#[test]
fn keepalive_drops_idle_images() {
    let trace = vec![
        ev(T0, "a", 10.0, None),
        ev(T0 + 300.0, "a", 10.0, None),
        ev(T0 + 1000.0, "a", 10.0, None),
    ];
    let r = replay(
        &trace,
        &ReplayConfig {
            technique: Technique::KeepAlive(600.0),
            cache_mb: 1000.0,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!((r.hits, r.cold_starts), (1, 2));
}

#[test]
fn replay_is_deterministic() {
    let params = GenParams {
        days: 7,
        ..GenParams::default()
    };
    for family in Family::ALL {
        let a = gen_trace(family, 42, &params);
        let b = gen_trace(family, 42, &params);
        assert_eq!(a, b);
        assert!(!a.is_empty());
        assert!(a.windows(2).all(|w| w[0].ts <= w[1].ts));
        assert!(
            a.iter().all(|e| (5.0..=800.0).contains(&e.size_mb)),
            "sizes in 5..800"
        );
        assert_ne!(a, gen_trace(family, 43, &params));
        let config = ReplayConfig {
            technique: Technique::Predictive,
            ..Default::default()
        };
        assert_eq!(replay(&a, &config).unwrap(), replay(&b, &config).unwrap());
    }
}

#[test]
fn trace_roundtrip_and_errors() {
    let trace = gen_trace(
        Family::Dev,
        1,
        &GenParams {
            days: 3,
            ..GenParams::default()
        },
    );
    let mut buf = Vec::new();
    write_trace(&mut buf, &trace).unwrap();
    assert_eq!(parse_trace(&buf[..]).unwrap(), trace);

    let good =
        r#"{"ts": 1764000000.5, "image": "postgres:16", "size_mb": 150.0, "project": "shop"}"#;
    let err = parse_trace_str(&format!("{good}\n{{\"ts\": oops}}\n")).unwrap_err();
    assert!(
        matches!(err, PredictError::TraceLine { line: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().starts_with("trace line 2"), "{err}");
    let early = r#"{"ts": 1763999999, "image": "redis:7", "size_mb": 10}"#;
    let err = parse_trace_str(&format!("{good}\n\n{early}\n")).unwrap_err();
    assert!(
        matches!(err, PredictError::TraceUnsorted { line: 3, .. }),
        "{err}"
    );
    let err = parse_trace_str(r#"{"ts": 1, "image": "x", "size_mb": -1}"#).unwrap_err();
    assert!(
        matches!(err, PredictError::TraceLine { line: 1, .. }),
        "{err}"
    );
    assert!("bogus".parse::<Technique>().is_err());
    assert_eq!(
        "keepalive:600".parse::<Technique>().unwrap(),
        Technique::KeepAlive(600.0)
    );
}

#[test]
fn history_is_bounded_and_serializable() {
    let mut h = History::new(1, 5);
    for i in 0..10 {
        h.push(ev(T0 + f64::from(i), "a", 1.0, None));
    }
    assert_eq!(h.len(), 5);
    h.push(ev(T0 + 2.0 * 86_400.0, "b", 1.0, None));
    assert_eq!(h.len(), 1, "a day's retention drops the old ones");
    let json = serde_json::to_string(&h).unwrap();
    let back: History = serde_json::from_str(&json).unwrap();
    assert_eq!(back, h);
}

#[test]
fn tune_proposes_from_the_sweep() {
    let trace = gen_trace(
        Family::Dev,
        3,
        &GenParams {
            days: 7,
            ..GenParams::default()
        },
    );
    let current = TuneConfig {
        technique: Technique::None,
        ..TuneConfig::default()
    };
    let result = tune(&trace, &current, 2).unwrap();
    assert_eq!(result.rows.first().unwrap().parameter, "current");
    assert_eq!(result.rows.last().unwrap().parameter, "proposed");
    let current_cold = result.rows[0].report.cold_starts;
    assert!(result.rows.last().unwrap().report.cold_starts <= current_cold);
    assert_eq!(
        result.cpu,
        CpuTableRow {
            cores: 2,
            parallel_ops: 1,
            batch_delay_ms: 20,
            expected_ops_per_sec: 50
        }
    );
    assert_eq!(cpu_table_row(12).parallel_ops, 4);
    assert_eq!(cpu_table_row(64).batch_delay_ms, 2);
}

#[test]
fn forget_warm_lets_a_prediction_prewarm_again() {
    let mut e = engine(Technique::Predictive, 4096.0);
    let mut t = T0;
    for _ in 0..3 {
        start(&mut e, ev(t, "a:1", 100.0, Some("shop")));
        start(&mut e, ev(t + 5.0, "b:1", 100.0, Some("shop")));
        t += 60.0;
    }
    // B is warm in the policy: A's start only protects it.
    let (_, actions) = start(&mut e, ev(t, "a:1", 100.0, Some("shop")));
    assert!(
        actions.iter().all(|a| !matches!(a, Action::Prewarm { .. })),
        "{actions:?}"
    );
    // The daemon dropped B's layers by hand: the next refresh, still in A's session,
    // prewarms it again.
    assert!(e.forget_warm("b:1"));
    assert!(!e.forget_warm("b:1"));
    let actions = e.tick(t + 10.0);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Prewarm { image, .. } if image == "b:1")),
        "{actions:?}"
    );
}

fn layered(ts: f64, image: &str, layers: &[(&str, f64)]) -> StartEvent {
    StartEvent {
        ts,
        image: image.into(),
        size_mb: layers.iter().map(|l| l.1).sum(),
        project: None,
        layers: layers
            .iter()
            .map(|(digest, size_mb)| LayerUse {
                digest: (*digest).into(),
                size_mb: *size_mb,
            })
            .collect(),
    }
}

#[test]
fn shared_layers_count_once_in_the_budget() {
    // Two images of 100 MB that share a 60 MB base: together 140 MB, not 200.
    let mut c = HotCache::new(150.0);
    let never = |_: &str| KeepValue::LRU;
    let a = Footprint::of_layers([("sha256:base", 60.0), ("sha256:a", 40.0)]);
    let b = Footprint::of_layers([("sha256:base", 60.0), ("sha256:b", 40.0)]);
    assert_eq!(
        c.start_footprint("a", &a, 0.0, &never).0,
        StartOutcome::Miss
    );
    let (outcome, evicted) = c.start_footprint("b", &b, 1.0, &never);
    assert_eq!((outcome, evicted.len()), (StartOutcome::Miss, 0));
    assert!((c.used_mb() - 140.0).abs() < 1e-9, "{}", c.used_mb());
    // Evicting "a" frees only its own layer: "b" still holds the base.
    assert!(c.drop_image("a"));
    assert!(c.holds_layer("sha256:base") && !c.holds_layer("sha256:a"));
    assert!((c.used_mb() - 100.0).abs() < 1e-9, "{}", c.used_mb());
    // An image whose every layer other warm images hold is a hit (the disk says so too).
    let base_only = Footprint::of_layers([("sha256:base", 60.0)]);
    assert_eq!(
        c.start_footprint("base", &base_only, 2.0, &never).0,
        StartOutcome::Hit
    );
    assert!(c.contains("base"));
}

#[test]
fn a_replay_with_layers_keeps_two_sharing_images_warm() {
    // 150 MB holds A and B only when their shared base counts once: A B A B are 2 hits then,
    // and none when each image is counted whole (200 MB).
    let trace: Vec<StartEvent> = ["a", "b", "a", "b"]
        .iter()
        .enumerate()
        .map(|(i, img)| {
            layered(
                T0 + i as f64,
                img,
                &[("sha256:base", 60.0), (&format!("sha256:{img}"), 40.0)],
            )
        })
        .collect();
    let config = ReplayConfig {
        technique: Technique::None,
        cache_mb: 150.0,
        ..Default::default()
    };
    let r = replay(&trace, &config).unwrap();
    assert_eq!((r.hits, r.evictions), (2, 0));
    let whole: Vec<StartEvent> = trace
        .iter()
        .map(|e| StartEvent {
            layers: Vec::new(),
            ..e.clone()
        })
        .collect();
    let r = replay(&whole, &config).unwrap();
    assert_eq!((r.hits, r.evictions), (0, 3));
    // The layers survive a trace round trip.
    let mut text = Vec::new();
    write_trace(&mut text, &trace).unwrap();
    assert_eq!(parse_trace(&text[..]).unwrap(), trace);
}

#[test]
fn a_failed_prewarm_counts_neither_as_prewarmed_nor_as_hit() {
    let mut e = engine(Technique::Predictive, 4096.0);
    let mut t = T0;
    for _ in 0..3 {
        start(&mut e, ev(t, "a:1", 100.0, Some("shop")));
        start(&mut e, ev(t + 5.0, "b:1", 100.0, Some("shop")));
        e.forget_warm("b:1");
        t += 60.0;
    }
    let prewarmed_before = e.cache().stats().prewarmed;
    let (_, actions) = start(&mut e, ev(t, "a:1", 100.0, Some("shop")));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Prewarm { image, .. } if image == "b:1")),
        "{actions:?}"
    );
    assert_eq!(e.cache().stats().prewarmed, prewarmed_before + 1);
    // The daemon's worker could not unpack it.
    assert!(e.prewarm_failed("b:1"));
    assert!(!e.prewarm_failed("b:1"));
    assert_eq!(e.cache().stats().prewarmed, prewarmed_before);
    let (outcome, _) = start(&mut e, ev(t + 5.0, "b:1", 100.0, Some("shop")));
    assert_eq!(outcome, StartOutcome::Miss);
}

#[test]
fn mark_warm_counts_no_start_and_keeps_the_budget() {
    let mut e = engine(Technique::None, 250.0);
    let f = |img: &str| Footprint::whole(img, 100.0);
    assert!(e.mark_warm("a", &f("a"), T0).is_empty());
    assert!(e.mark_warm("b", &f("b"), T0 + 1.0).is_empty());
    let actions = e.mark_warm("c", &f("c"), T0 + 2.0);
    assert_eq!(actions, vec![Action::Evict { image: "a".into() }]);
    assert_eq!(e.cache().stats().starts, 0);
    assert_eq!(
        start(&mut e, ev(T0 + 3.0, "b", 100.0, None)).0,
        StartOutcome::Hit
    );
}

#[test]
fn admission_keeps_a_miss_only_over_images_worth_less() {
    let worth = |i: &str| match i {
        "busy" => KeepValue::PerMib(0.5),
        "done" => KeepValue::Done,
        _ => KeepValue::PerMib(0.1),
    };
    let fp = |image: &str, mb: f64| Footprint::whole(image, mb);
    let mut c = HotCache::new(300.0);
    for (t, img) in ["busy", "done", "idle"].iter().enumerate() {
        c.start_footprint(img, &fp(img, 100.0), t as f64, &worth);
    }
    // Worth 0.2: "done" and "idle" may go, "busy" may not; 200 MiB needs both.
    let (outcome, evicted) = c.start_admitting("new", &fp("new", 200.0), 3.0, Some(0.2), &worth);
    assert_eq!(outcome, StartOutcome::Miss);
    assert_eq!(evicted, vec!["done".to_string(), "idle".to_string()]);
    assert!(c.contains("new") && c.contains("busy"));
    // Worth 0.05 with "new" (worth 0.1) in the way: runs, not kept, nothing evicted.
    let (outcome, evicted) = c.start_admitting("rare", &fp("rare", 100.0), 4.0, Some(0.05), &worth);
    assert_eq!((outcome, evicted), (StartOutcome::Miss, Vec::new()));
    assert!(!c.contains("rare"));
    assert_eq!(c.stats().not_kept, 1);
    // Predicted (protected) images are never pushed out by a start admission weighs.
    c.prewarm("busy", 100.0, (5.0, 1000.0), f64::INFINITY, &worth);
    let (_, evicted) = c.start_admitting("big", &fp("big", 300.0), 6.0, Some(10.0), &worth);
    assert!(evicted.is_empty() && c.contains("busy") && !c.contains("big"));
    // The next start of the rare image is a miss again: it was not kept.
    let (outcome, _) = c.start_admitting("rare", &fp("rare", 100.0), 7.0, Some(0.05), &worth);
    assert_eq!(outcome, StartOutcome::Miss);
    assert_eq!(c.stats().not_kept, 3);
}

#[test]
fn a_prediction_stops_protecting_its_image_once_it_starts() {
    // "rare" is predicted and prewarmed, then started: the prediction came true. From then on
    // it is worth its use like any other image, not held over a busier one.
    let worth = |i: &str| match i {
        "busy" => KeepValue::PerMib(0.5),
        _ => KeepValue::PerMib(0.1),
    };
    let mut c = HotCache::new(300.0);
    c.start("busy", 100.0, 0.0, &worth);
    c.prewarm("rare", 100.0, (1.0, 1000.0), 1.0, &worth);
    assert_eq!(c.start("rare", 100.0, 2.0, &worth).0, StartOutcome::Hit);
    c.start("other", 100.0, 3.0, &worth);
    // A user's start needs 100 MiB: the least worth per MiB goes, "other" or "rare", LRU
    // among equals: "rare", used first.
    let (_, evicted) = c.start("next", 100.0, 4.0, &worth);
    assert_eq!(evicted, vec!["rare".to_string()]);
    assert!(c.contains("busy"));
}
