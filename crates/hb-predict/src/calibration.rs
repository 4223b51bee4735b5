//! [`Calibration`]: how often a model's guesses came true, per kind of evidence and confidence
//! band, so the engine never acts on a confidence the host has not borne out. Every guess is a
//! claim "this image starts within the horizon"; the image's next start settles the claims it
//! meets, the horizon's end fails the rest.
//!
//! Why: a model's confidence is only as good as its assumptions. A Markov chain that saw A
//! then B twice says 67 % whether the host runs fixed compose orders (it comes true nearly
//! always) or random picks (it seldom does); `confidence_threshold` then means little. Users
//! start images whether or not they were prewarmed, so prewarming cannot bias the count.
//! Calibration only lowers: a band pools guesses of unequal evidence, and raising the weak
//! ones with the strong ones' record wasted prewarms (BENCHMARKS.md, issue 5).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Basis, Guess};
use crate::{PredictError, Result};

/// Confidence bands: ten of 10 points each.
const BANDS: usize = 10;
/// Guesses below this raw confidence (percent) are not tracked: far below any useful
/// threshold, and the frequency model makes one per image at each tick.
const FLOOR: f64 = 10.0;
/// Weight of the model's own claim, in claims: a band's calibrated confidence starts at the raw
/// one and moves to the observed share as settled claims outnumber this (few, so a band that
/// fails is heeded after a handful of claims).
pub(crate) const PRIOR_CLAIMS: f64 = 5.0;
/// Most open claims held (a daemon with thousands of images stays bounded); new ones beyond
/// it go uncounted until old ones settle.
const MAX_OPEN: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Claim {
    cell: Cell,
    deadline: f64,
}

/// Where a claim is counted: its basis and confidence band.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cell {
    basis: Basis,
    band: u8,
}

impl Cell {
    fn of(guess: &Guess) -> Cell {
        Cell {
            basis: guess.basis,
            band: ((guess.confidence / 10.0).floor().max(0.0) as usize).min(BANDS - 1) as u8,
        }
    }
}

/// What a calibration has learned, to persist across daemon restarts (open claims are not
/// kept: they settle within their horizon). JSON: `{"bands": {"project_chain": [[came true,
/// settled], ...ten bands...], ...}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CalibrationRecord {
    /// Per kind of evidence (`use_rate`, `project_chain`, `global_chain`, `inter_arrival`,
    /// `hour_of_day`), per 10-point band from 0-10 % up: [claims that came true, settled].
    pub bands: BTreeMap<String, Vec<[u32; 2]>>,
}

/// Settled claims per (basis, band) and the claims still open, by image.
#[derive(Debug, Clone, Default)]
pub(crate) struct Calibration {
    /// (came true, settled) per basis and band.
    cells: [[(u32, u32); BANDS]; Basis::COUNT],
    /// Open claims per interned image id (ids are dense).
    open: Vec<Vec<Claim>>,
    open_len: usize,
}

impl Calibration {
    /// Opens a claim for `guess` made at `now`.
    pub(crate) fn claim(&mut self, guess: &Guess, now: f64) {
        if guess.confidence < FLOOR {
            return;
        }
        let claim = Claim {
            cell: Cell::of(guess),
            deadline: now + guess.horizon_secs,
        };
        let index = guess.image as usize;
        if self.open.len() <= index {
            self.open.resize_with(index + 1, Vec::new);
        }
        let claims = &mut self.open[index];
        // A guess repeated while its claim is open (each tick re-asserts what still holds)
        // extends that claim: counted once, it cannot outweigh a guess settled at once.
        if let Some(open) = claims.iter_mut().find(|c| c.cell == claim.cell) {
            open.deadline = open.deadline.max(claim.deadline);
            return;
        }
        if self.open_len >= MAX_OPEN {
            return;
        }
        claims.push(claim);
        self.open_len += 1;
    }

    /// `image` started at `now`: its open claims came true if their horizon still ran.
    pub(crate) fn started(&mut self, image: u32, now: f64) {
        let Some(claims) = self.open.get_mut(image as usize).map(std::mem::take) else {
            return;
        };
        self.open_len -= claims.len();
        for claim in claims {
            let counts = self.count(claim.cell);
            counts.0 = counts.0.saturating_add(u32::from(claim.deadline >= now));
            counts.1 = counts.1.saturating_add(1);
        }
    }

    /// Fails the claims whose horizon ended before `now`.
    pub(crate) fn expire(&mut self, now: f64) {
        let mut failed = Vec::new();
        for claims in &mut self.open {
            claims.retain(|claim| {
                let open = claim.deadline >= now;
                if !open {
                    failed.push(claim.cell);
                }
                open
            });
        }
        self.open_len -= failed.len();
        for cell in failed {
            let counts = self.count(cell);
            counts.1 = counts.1.saturating_add(1);
        }
    }

    fn count(&mut self, cell: Cell) -> &mut (u32, u32) {
        &mut self.cells[cell.basis as usize][usize::from(cell.band)]
    }

    /// The confidence (percent) `guess` has earned: the share of settled claims like it (same
    /// basis and band) that came true, blended with the model's own confidence
    /// weighted as [`PRIOR_CLAIMS`] claims, and never above the model's. Also returns how many
    /// like claims were settled.
    pub(crate) fn calibrated(&self, guess: &Guess) -> (f64, u32) {
        let raw = guess.confidence;
        if raw < FLOOR {
            return (raw, 0);
        }
        let cell = Cell::of(guess);
        let (hits, settled) = self.cells[cell.basis as usize][usize::from(cell.band)];
        let p =
            (f64::from(hits) + raw / 100.0 * PRIOR_CLAIMS) / (f64::from(settled) + PRIOR_CLAIMS);
        ((100.0 * p).min(raw), settled)
    }

    /// The settled counts, to persist.
    pub(crate) fn to_record(&self) -> CalibrationRecord {
        let bands = Basis::ALL
            .iter()
            .map(|&basis| {
                let counts = self.cells[basis as usize]
                    .iter()
                    .map(|&(hits, settled)| [hits, settled])
                    .collect();
                (basis.name().to_string(), counts)
            })
            .collect();
        CalibrationRecord { bands }
    }

    /// Takes the settled counts of a persisted record; checked whole before anything changes.
    pub(crate) fn restore(&mut self, record: &CalibrationRecord) -> Result<()> {
        let invalid = |reason: String| PredictError::InvalidRecord { reason };
        let mut cells = [[(0u32, 0u32); BANDS]; Basis::COUNT];
        for (name, counts) in &record.bands {
            let basis = Basis::ALL
                .iter()
                .find(|b| b.name() == name)
                .ok_or_else(|| invalid(format!("unknown kind of evidence {name:?}")))?;
            if counts.len() != BANDS {
                return Err(invalid(format!(
                    "{name}: {} bands, expected {BANDS}",
                    counts.len()
                )));
            }
            for (band, &[hits, settled]) in counts.iter().enumerate() {
                if hits > settled {
                    return Err(invalid(format!(
                        "{name} band {band}: {hits} came true of {settled} settled"
                    )));
                }
                cells[*basis as usize][band] = (hits, settled);
            }
        }
        self.cells = cells;
        Ok(())
    }

    /// Heap bytes of the open claims.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.open.capacity() * std::mem::size_of::<Vec<Claim>>()
            + self
                .open
                .iter()
                .map(|v| v.capacity() * std::mem::size_of::<Claim>())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guess(image: u32, confidence: f64) -> Guess {
        Guess {
            image,
            confidence,
            horizon_secs: 100.0,
            reason: String::new(),
            basis: Basis::ProjectChain,
        }
    }

    #[test]
    fn an_unsettled_band_keeps_the_models_word() {
        let c = Calibration::default();
        assert_eq!(c.calibrated(&guess(1, 67.0)), (67.0, 0));
        assert_eq!(c.calibrated(&guess(1, 5.0)), (5.0, 0));
    }

    #[test]
    fn claims_that_fail_pull_their_band_down_and_claims_that_hold_leave_it() {
        let mut c = Calibration::default();
        for i in 0..60 {
            c.claim(&guess(i, 67.0), 0.0);
        }
        // 15 of the 60 images start in time, 5 too late, the rest never.
        for i in 0..15 {
            c.started(i, 50.0);
        }
        for i in 15..20 {
            c.started(i, 150.0);
        }
        c.expire(200.0);
        let (p, settled) = c.calibrated(&guess(99, 67.0));
        assert_eq!(settled, 60);
        let expected = 100.0 * (15.0 + 0.67 * PRIOR_CLAIMS) / (60.0 + PRIOR_CLAIMS);
        assert!((p - expected).abs() < 1e-9, "{p} vs {expected}");
        assert!(p < 40.0, "a band that mostly fails falls: {p}");
        // Other bands and bases are untouched.
        assert_eq!(c.calibrated(&guess(1, 55.0)), (55.0, 0));
        let global = Guess {
            basis: Basis::GlobalChain,
            ..guess(1, 67.0)
        };
        assert_eq!(c.calibrated(&global), (67.0, 0));

        let mut c = Calibration::default();
        for round in 0..40 {
            c.claim(&guess(1, 55.0), f64::from(round) * 10.0);
            c.started(1, f64::from(round) * 10.0 + 5.0);
        }
        let (p, settled) = c.calibrated(&guess(1, 55.0));
        assert_eq!(settled, 40);
        assert_eq!(
            p, 55.0,
            "a band that always comes true keeps the model's word"
        );
        assert_eq!(c.open_len, 0);
        assert!(c.open.iter().all(Vec::is_empty));
    }

    #[test]
    fn a_record_round_trips_and_bad_ones_change_nothing() {
        let mut c = Calibration::default();
        for i in 0..10 {
            c.claim(&guess(i, 67.0), 0.0);
        }
        c.started(3, 50.0);
        c.expire(200.0);
        let record = c.to_record();
        assert_eq!(record.bands["project_chain"][6], [1, 10]);
        let json = serde_json::to_string(&record).unwrap();
        let mut restored = Calibration::default();
        restored
            .restore(&serde_json::from_str(&json).unwrap())
            .unwrap();
        assert_eq!(restored.cells, c.cells);
        assert_eq!(
            restored.calibrated(&guess(1, 67.0)),
            c.calibrated(&guess(1, 67.0))
        );

        for (bad, why) in [
            (r#"{"bands":{"tea_leaves":[]}}"#, "unknown kind"),
            (r#"{"bands":{"use_rate":[[0,1]]}}"#, "1 bands, expected 10"),
            (
                r#"{"bands":{"use_rate":[[0,0],[0,0],[0,0],[0,0],[0,0],[0,0],[0,0],[5,2],[0,0],[0,0]]}}"#,
                "5 came true of 2",
            ),
        ] {
            let record: CalibrationRecord = serde_json::from_str(bad).unwrap();
            let err = restored.restore(&record).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
            assert_eq!(restored.cells, c.cells, "a bad record changes nothing");
        }
    }

    #[test]
    fn open_claims_stay_bounded() {
        let mut c = Calibration::default();
        for i in 0..(MAX_OPEN as u32 + 10) {
            c.claim(&guess(i, 50.0), 0.0);
        }
        assert_eq!(c.open_len, MAX_OPEN);
        c.expire(1000.0);
        assert_eq!(c.open_len, 0);
        assert_eq!(c.cells[Basis::ProjectChain as usize][5].1, MAX_OPEN as u32);
    }

    #[test]
    fn a_guess_repeated_while_open_is_one_claim() {
        let mut c = Calibration::default();
        // Re-asserted at each tick for ten ticks, never started: one failure, not ten.
        for tick in 0..10 {
            c.claim(&guess(7, 67.0), f64::from(tick) * 50.0);
        }
        assert_eq!(c.open_len, 1);
        c.expire(1000.0);
        assert_eq!(c.cells[Basis::ProjectChain as usize][6], (0, 1));
        // Extended past a start that comes late for the first assertion: it came true.
        c.claim(&guess(7, 67.0), 1000.0);
        c.claim(&guess(7, 67.0), 1080.0);
        c.started(7, 1150.0);
        assert_eq!(c.cells[Basis::ProjectChain as usize][6], (1, 2));
    }
}
