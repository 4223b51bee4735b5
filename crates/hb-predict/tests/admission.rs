//! Admission to the hot tier: a start the model says is worth less than what it would push out
//! runs (it is a miss) but is not kept, so the busy small images stay warm. These tests use the
//! engine's public API only (the same calls the daemon makes).

use hb_predict::*;

const T0: f64 = 1_763_942_400.0;

fn ev(ts: f64, image: &str, size_mb: f64) -> StartEvent {
    StartEvent {
        ts,
        image: image.into(),
        size_mb,
        project: None,
        layers: Vec::new(),
    }
}

fn engine(technique: Technique, cache_mb: f64) -> Engine {
    Engine::new(EngineConfig {
        technique,
        cache_mb,
        // Act on no prediction: only keeping and eviction are under test.
        confidence_threshold: 100.0,
        ..EngineConfig::default()
    })
    .expect("a valid config")
}

/// Starts `event` as the daemon does; returns the outcome and the images evicted.
fn start(e: &mut Engine, event: StartEvent) -> (StartOutcome, Vec<String>) {
    let (outcome, actions) = e.on_start(&event);
    e.observe(event);
    let evicted = actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Evict { image } => Some(image),
            Action::Prewarm { .. } => None,
        })
        .collect();
    (outcome, evicted)
}

const SMALL: [&str; 4] = ["alpine", "busybox", "debian", "python"];

/// Four 100 MiB images started in turn every minute for `rounds` rounds from `from`; returns
/// the time after the last start.
fn busy_small_set(e: &mut Engine, from: f64, rounds: u32) -> f64 {
    let mut t = from;
    for _ in 0..rounds {
        for image in SMALL {
            start(e, ev(t, image, 100.0));
            t += 60.0;
        }
    }
    t
}

#[test]
fn a_big_one_off_start_does_not_push_the_busy_small_images_out() {
    for technique in [
        Technique::Frequency,
        Technique::Predictive,
        Technique::Statistical,
    ] {
        let mut e = engine(technique, 1000.0);
        let t = busy_small_set(&mut e, T0, 10);
        // 900 MiB once: it must be unpacked to run, a miss, but keeping it would need three of
        // the four busy images' room.
        let (outcome, evicted) = start(&mut e, ev(t, "node:20", 900.0));
        assert_eq!(outcome, StartOutcome::Miss, "{technique:?}");
        assert!(evicted.is_empty(), "{technique:?} evicted {evicted:?}");
        assert!(!e.cache().contains("node:20"), "{technique:?}");
        // The small set is still hot after it.
        for (i, image) in SMALL.iter().enumerate() {
            let (outcome, _) = start(&mut e, ev(t + 60.0 * (i as f64 + 1.0), image, 100.0));
            assert_eq!(outcome, StartOutcome::Hit, "{technique:?}: {image}");
        }
        assert!(e.cache().used_mb() <= 1000.0);
    }
}

#[test]
fn without_a_model_the_hot_tier_stays_plain_lru() {
    // `none` is the LRU baseline: a miss is always kept, evicting the least recently used.
    let mut e = engine(Technique::None, 1000.0);
    let t = busy_small_set(&mut e, T0, 10);
    let (outcome, evicted) = start(&mut e, ev(t, "node:20", 900.0));
    assert_eq!(outcome, StartOutcome::Miss);
    assert_eq!(evicted, vec!["alpine", "busybox", "debian"]);
    assert!(e.cache().contains("node:20"));
}

#[test]
fn a_one_off_is_kept_when_it_only_takes_free_room() {
    // Room to spare: keeping it costs nothing, so the next start of it is a hit.
    let mut e = engine(Technique::Frequency, 2000.0);
    let t = busy_small_set(&mut e, T0, 10);
    assert_eq!(start(&mut e, ev(t, "node:20", 900.0)).0, StartOutcome::Miss);
    assert_eq!(
        start(&mut e, ev(t + 60.0, "node:20", 900.0)).0,
        StartOutcome::Hit
    );
}

#[test]
fn an_image_that_becomes_busy_is_kept() {
    // The small set went quiet a day ago; a big image now used every few minutes wins its
    // room: admission refuses what is worth little, not what is new.
    let mut e = engine(Technique::Frequency, 1000.0);
    let quiet = busy_small_set(&mut e, T0, 3) + 86_400.0;
    let mut outcomes = Vec::new();
    for i in 0..6 {
        outcomes.push(start(&mut e, ev(quiet + 300.0 * f64::from(i), "node:20", 900.0)).0);
    }
    assert_eq!(outcomes.last(), Some(&StartOutcome::Hit), "{outcomes:?}");
    assert!(e.cache().contains("node:20"));
}

#[test]
fn a_replay_keeps_the_busy_set_through_big_one_offs() {
    // A busy small set with a different big one-off image every ten minutes: LRU loses the
    // small set at every one-off; with a model it stays warm.
    let mut trace = Vec::new();
    let mut t = T0;
    for round in 0..30 {
        for image in SMALL {
            trace.push(ev(t, image, 100.0));
            t += 30.0;
        }
        if round % 5 == 4 {
            trace.push(ev(t, &format!("one-off-{round}"), 800.0));
            t += 30.0;
        }
    }
    let run = |technique| {
        replay(
            &trace,
            &ReplayConfig {
                technique,
                cache_mb: 1000.0,
                confidence_threshold: 100.0,
                ..Default::default()
            },
        )
        .expect("replay")
    };
    let lru = run(Technique::None);
    let frequency = run(Technique::Frequency);
    // LRU: the four first starts, the six one-offs, and all four small images after each of
    // the five one-offs a round follows (the one-off evicts the two least recently used; each
    // of those, cold, evicts the next least recently used small one before the one-off).
    assert_eq!(lru.cold_starts, 4 + 6 + 5 * 4, "{lru:?}");
    // With the model: the four first starts and the six one-offs only.
    assert_eq!(frequency.cold_starts, 4 + 6, "{frequency:?}");
}
