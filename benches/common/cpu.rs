//! Where the CPU went during a part of a bench: the daemon, Postgres' backends serving the run's
//! database, Postgres' other processes, Redis, optionally one more process of the bench's (the
//! SMTP server), and the whole machine, from /proc. Postgres' backends are told from its other
//! processes (the WAL writer, the checkpointer, backends of other databases, which may belong to
//! other load) by the database name in their process title.

use std::collections::HashMap;
use std::fs;
use std::time::Instant;

use super::{clock_ticks_per_sec, pids, process_ticks, serves_database};

/// The processes to tell apart: the daemon's pid (or the bench's own, when it does the work
/// itself), and another one worth naming, with its name in the report.
#[derive(Debug, Clone, Copy)]
pub struct Watched<'a> {
    pub daemon: u32,
    pub other: Option<(&'static str, u32)>,
    pub db_name: &'a str,
}

/// CPU time used so far (user + system, in clock ticks) by each of [`Watched`].
pub struct CpuTimes {
    at: Instant,
    daemon: u64,
    other: Option<(&'static str, u64)>,
    /// Per pid: a process started between two readings counts from 0. Processes that exit
    /// between two readings (autovacuum workers) are missed: they count as the rest. The
    /// daemon's connections live until it stops.
    backends: HashMap<u32, u64>,
    postgres: HashMap<u32, u64>,
    redis: u64,
    /// The machine's busy and total ticks, all CPUs together (/proc/stat).
    machine_busy: u64,
    machine_total: u64,
}

/// Average cores busy between two [`CpuTimes`].
pub struct Cores {
    wall: f64,
    daemon: f64,
    other: Option<(&'static str, f64)>,
    backends: f64,
    postgres: f64,
    redis: f64,
    machine: f64,
    cpus: f64,
}

impl CpuTimes {
    pub fn now(watched: Watched<'_>) -> CpuTimes {
        let mut times = CpuTimes {
            at: Instant::now(),
            daemon: 0,
            other: watched.other.map(|(name, _)| (name, 0)),
            backends: HashMap::new(),
            postgres: HashMap::new(),
            redis: 0,
            machine_busy: 0,
            machine_total: 0,
        };
        for pid in pids() {
            let Some((command, ticks)) = process_ticks(pid) else {
                continue;
            };
            if pid == watched.daemon {
                times.daemon = ticks;
            } else if let Some((name, other)) = watched.other
                && pid == other
            {
                times.other = Some((name, ticks));
            } else if command == "postgres" {
                if serves_database(pid, watched.db_name) {
                    times.backends.insert(pid, ticks);
                } else {
                    times.postgres.insert(pid, ticks);
                }
            } else if command == "redis-server" {
                times.redis += ticks;
            }
        }
        let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
        if let Some(line) = stat.lines().find(|line| line.starts_with("cpu ")) {
            // user nice system idle iowait irq softirq steal ...
            let fields: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .take(8)
                .filter_map(|f| f.parse().ok())
                .collect();
            times.machine_total = fields.iter().sum();
            times.machine_busy = times.machine_total
                - fields.get(3).copied().unwrap_or(0)
                - fields.get(4).copied().unwrap_or(0);
        }
        times
    }

    /// What was used from `self` to `later`; `None` if /proc could not tell.
    pub fn until(&self, later: &CpuTimes) -> Option<Cores> {
        let wall = later.at.duration_since(self.at).as_secs_f64();
        if wall <= 0.0 || later.machine_total <= self.machine_total {
            return None;
        }
        let tick = clock_ticks_per_sec().unwrap_or(100.0);
        let cores = |ticks: u64| ticks as f64 / tick / wall;
        let since = |before: &HashMap<u32, u64>, after: &HashMap<u32, u64>| -> u64 {
            after
                .iter()
                .map(|(pid, &t)| t.saturating_sub(before.get(pid).copied().unwrap_or(0)))
                .sum()
        };
        let other = match (self.other, later.other) {
            (Some((name, before)), Some((_, after))) => {
                Some((name, cores(after.saturating_sub(before))))
            }
            _ => None,
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        Some(Cores {
            wall,
            daemon: cores(later.daemon.saturating_sub(self.daemon)),
            other,
            backends: cores(since(&self.backends, &later.backends)),
            postgres: cores(since(&self.postgres, &later.postgres)),
            redis: cores(later.redis.saturating_sub(self.redis)),
            machine: (later.machine_busy - self.machine_busy) as f64
                / (later.machine_total - self.machine_total) as f64
                * cpus,
            cpus,
        })
    }
}

impl Cores {
    /// Cores busy, by process, and the machine's.
    pub fn describe(&self) -> String {
        let other = self.other.map_or(0.0, |(_, cores)| cores);
        let rest = self.machine - self.daemon - self.backends - self.postgres - self.redis - other;
        format!(
            "daemon {:.2}, its Postgres backends {:.2}, Postgres' other processes {:.2}, Redis \
             {:.2}{}, the rest {rest:.2}; machine {:.2} of {:.0}",
            self.daemon,
            self.backends,
            self.postgres,
            self.redis,
            self.other_part(|cores| format!("{cores:.2}")),
            self.machine,
            self.cpus
        )
    }

    /// CPU milliseconds per unit of work (a job, a message), of `n` done in the interval.
    pub fn per_unit(&self, n: u64) -> String {
        let ms = |cores: f64| cores * self.wall * 1000.0 / n as f64;
        format!(
            "daemon {:.2} ms, its Postgres backends {:.2} ms, Postgres' other processes {:.2} ms, \
             Redis {:.2} ms{}",
            ms(self.daemon),
            ms(self.backends),
            ms(self.postgres),
            ms(self.redis),
            self.other_part(|cores| format!("{:.2} ms", ms(cores)))
        )
    }

    fn other_part(&self, show: impl Fn(f64) -> String) -> String {
        self.other
            .map(|(name, cores)| format!(", {name} {}", show(cores)))
            .unwrap_or_default()
    }
}
