//! The JEE-Advanced-like test and the attempt generator that the scoring and exports benches
//! share: the sections and their topics, the keys, and answers right or wrong drawn from a
//! seeded generator, so that every run scores and exports the same attempts.

use quizworker_jobs::scoring::Answer;

pub const OPTIONS: [&str; 4] = ["A", "B", "C", "D"];

/// Section id, title and its five topics.
pub const SECTIONS: [(&str, &str, [&str; 5]); 3] = [
    (
        "physics",
        "Physics",
        [
            "kinematics",
            "laws of motion",
            "electrostatics",
            "optics",
            "modern physics",
        ],
    ),
    (
        "chemistry",
        "Chemistry",
        [
            "atomic structure",
            "chemical bonding",
            "thermodynamics",
            "organic reactions",
            "coordination compounds",
        ],
    ),
    (
        "mathematics",
        "Mathematics",
        [
            "calculus",
            "algebra",
            "coordinate geometry",
            "probability",
            "vectors and 3D",
        ],
    ),
];

/// A question's key, as the attempt generator needs it.
#[derive(Clone, Copy)]
pub enum Key {
    /// The index of the right option.
    Mcq(usize),
    /// The right options, a bit per option of [`OPTIONS`].
    Msq(u8),
    Integer(u32),
    /// Right from `{k}.40` to `{k}.60`.
    Range(u32),
    /// `{k}.81` with a tolerance of 0.01, after rounding to 2 decimals.
    Tolerance(u32),
}

pub struct Question {
    pub id: String,
    pub key: Key,
}

/// The options of a mask, in order.
pub fn picked(mask: u8) -> impl Iterator<Item = &'static str> {
    (0..OPTIONS.len())
        .filter(move |i| mask & (1 << i) != 0)
        .map(|i| OPTIONS[i])
}

/// One of the ways of writing the right answer.
pub fn right_answer(key: Key, rng: &mut Lcg) -> Answer {
    let text = |s: String| Answer::Text(s);
    match key {
        Key::Mcq(k) => text(OPTIONS[k].to_owned()),
        Key::Msq(mask) => options(mask, rng),
        Key::Integer(n) => text(match rng.below(3) {
            0 => format!("{n}.0"),
            1 => format!("{n:03}"),
            _ => n.to_string(),
        }),
        Key::Range(k) => text(format!(
            "{k}.{}",
            ["5", "40", "6", "55"][rng.below(4) as usize]
        )),
        Key::Tolerance(k) => text(format!(
            "{k}.{}",
            ["81", "8149", "805", "82"][rng.below(4) as usize]
        )),
    }
}

/// A wrong answer; for an MSQ, often a partial one (some right options, no wrong one).
pub fn wrong_answer(key: Key, rng: &mut Lcg) -> Answer {
    let text = |s: String| Answer::Text(s);
    match key {
        Key::Mcq(k) => text(OPTIONS[(k + 1 + rng.below(3) as usize) % 4].to_owned()),
        Key::Msq(mask) => {
            let missing = !mask & 0b1111;
            if missing != 0 && (mask.count_ones() < 2 || rng.below(2) == 0) {
                // A wrong option chosen: incorrect.
                options(mask | nth_bit(missing, rng), rng)
            } else {
                // A right option left out: partial.
                options(mask & !nth_bit(mask, rng), rng)
            }
        }
        Key::Integer(n) => text((n + 1 + rng.below(9)).to_string()),
        Key::Range(k) => text(match rng.below(3) {
            0 => format!("{k}.62"),
            1 => format!("{k}.3"),
            _ => format!("{}.5", k + 1),
        }),
        Key::Tolerance(k) => text(match rng.below(3) {
            // 9.825 rounds to 9.83, out of 9.81 +- 0.01.
            0 => format!("{k}.825"),
            1 => format!("{k}.7"),
            _ => format!("{}.81", k + 1),
        }),
    }
}

/// The options of a mask, starting at a random one (candidates click in any order).
fn options(mask: u8, rng: &mut Lcg) -> Answer {
    let mut chosen: Vec<String> = picked(mask).map(str::to_owned).collect();
    let len = chosen.len();
    chosen.rotate_left(rng.below(len as u32) as usize);
    Answer::Options(chosen)
}

/// One of the set bits of `mask`, at random.
fn nth_bit(mask: u8, rng: &mut Lcg) -> u8 {
    let n = rng.below(mask.count_ones()) as usize;
    (0..8)
        .map(|i| 1u8 << i)
        .filter(|bit| mask & bit != 0)
        .nth(n)
        .unwrap_or(0)
}

/// Knuth's MMIX LCG: deterministic, no dependency.
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Lcg {
        let mut rng = Lcg(seed ^ 0x9e37_79b9_7f4a_7c15);
        rng.next();
        rng
    }

    pub fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }

    /// From 0 to `n - 1`; `n` must not be 0.
    pub fn below(&mut self, n: u32) -> u32 {
        self.next() % n
    }
}
