//! The guide's 20 MB bound on prediction models, measured with a counting allocator: the bytes
//! an engine holds after learning 100,000 events, minus those of a model-less engine fed the
//! same events (the history itself is the daemon's persisted log, reported separately).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Mutex;

use hb_predict::{Engine, EngineConfig, History, StartEvent, Technique};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The counter is process-wide: tests that allocate must not overlap one that measures.
static SERIAL: Mutex<()> = Mutex::new(());

fn events() -> Vec<StartEvent> {
    // 100,000 starts over 2,000 images and 300 projects across 30 days: far more variety than
    // a real host, so the maps are large.
    let mut x: u64 = 1;
    (0..100_000u32)
        .map(|i| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            StartEvent {
                ts: 1_763_942_400.0 + f64::from(i) * 25.0,
                image: format!("registry.example/team/image-{}:v1", (x >> 33) % 2000),
                size_mb: 100.0,
                project: Some(format!("project-{}", (x >> 45) % 300)),
                layers: Vec::new(),
            }
        })
        .collect()
}

fn engine_bytes(technique: Technique, history: &History) -> isize {
    let before = LIVE.load(Ordering::SeqCst);
    let config = EngineConfig {
        technique,
        history_max_events: 100_000,
        ..EngineConfig::default()
    };
    let engine = Engine::with_history(config, history).unwrap();
    let bytes = LIVE.load(Ordering::SeqCst) - before;
    drop(engine);
    bytes
}

#[test]
fn models_stay_within_20_mb_at_100k_events() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut history = History::new(30, 100_000);
    for e in events() {
        history.push(e);
    }
    assert_eq!(history.len(), 100_000);
    let baseline = engine_bytes(Technique::None, &history);
    println!(
        "engine without a model (history + names): {:.2} MB",
        baseline as f64 / 1e6
    );
    for technique in [
        Technique::Frequency,
        Technique::Predictive,
        Technique::Statistical,
    ] {
        let model = engine_bytes(technique, &history) - baseline;
        println!(
            "{}: model {:.2} MB at 100k events",
            technique.label(),
            model as f64 / 1e6
        );
        assert!(
            model < 20_000_000,
            "{} model takes {model} bytes",
            technique.label()
        );
    }
}

#[test]
fn models_and_their_open_claims_stay_within_20_mb_when_driven_live() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Driven as the daemon drives it (start, observe, ticks), the engine also holds the open
    // claims its calibration tracks; count them with the model (capacities, not lengths).
    for technique in [
        Technique::Frequency,
        Technique::Predictive,
        Technique::Statistical,
    ] {
        let config = EngineConfig {
            technique,
            history_max_events: 100_000,
            ..EngineConfig::default()
        };
        let mut engine = Engine::new(config).unwrap();
        let mut peak = 0;
        for event in events() {
            while let Some(due) = engine.next_tick() {
                if due > event.ts {
                    break;
                }
                engine.tick(due);
                peak = peak.max(engine.model_heap_bytes());
            }
            engine.on_start(&event);
            engine.observe(event);
        }
        peak = peak.max(engine.model_heap_bytes());
        println!(
            "{}: model and open claims at most {:.2} MB over 100k live events",
            technique.label(),
            peak as f64 / 1e6
        );
        assert!(
            peak < 20_000_000,
            "{} peaks at {peak} bytes",
            technique.label()
        );
    }
}
