//! Benchmark reports: rows of figures with the anchor and goal they are judged against,
//! the resources the run used (CPU-seconds and peak resident memory, of this process and of
//! the processes it started and waited for), and the progress lines every scenario prints on
//! standard error while it runs.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// When the run started: progress lines say how long ago.
static STARTED: OnceLock<Instant> = OnceLock::new();

/// Starts the clock progress lines count from (the first progress line does too).
pub fn start_clock() {
    STARTED.get_or_init(Instant::now);
}

/// One progress line on standard error, with the time since the run started.
pub fn progress(msg: impl AsRef<str>) {
    let elapsed = STARTED.get_or_init(Instant::now).elapsed();
    eprintln!("  … {:>7.1} s  {}", elapsed.as_secs_f64(), msg.as_ref());
}

/// CPU time (user + system) and peak resident set, in bytes, of `who`: this process
/// (`RUSAGE_SELF`), or the processes it started and has waited for (`RUSAGE_CHILDREN`, whose
/// peak is the largest of any one of them).
fn usage(who: libc::c_int) -> (Duration, f64) {
    // SAFETY: an all-zero rusage is a valid value; getrusage fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes only the struct it is given.
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return (Duration::ZERO, 0.0);
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (
        tv(usage.ru_utime) + tv(usage.ru_stime),
        usage.ru_maxrss as f64 * 1024.0,
    )
}

pub struct Row {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// The comparable figure of another system (SwarmKit on this machine class), if any.
    pub anchor: Option<f64>,
    /// The goal; lower is better for every figure here.
    pub goal: Option<f64>,
}

pub struct Report {
    pub scenario: &'static str,
    pub notes: Vec<String>,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn new(scenario: &'static str) -> Self {
        Self {
            scenario,
            notes: Vec::new(),
            rows: Vec::new(),
        }
    }

    pub fn row(
        &mut self,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
        anchor: Option<f64>,
        goal: Option<f64>,
    ) {
        let name = name.into();
        // Every figure shows up as soon as it is measured.
        progress(format!("{name}: {} {unit}", num(value)));
        self.rows.push(Row {
            name,
            value,
            unit,
            anchor,
            goal,
        });
    }

    /// Adds what the whole run used: CPU-seconds and peak RSS of this process and of the
    /// processes it started and waited for (managers, the docker CLI, ...).
    pub fn resources(&mut self) {
        let mut add = |name: &str, value: f64, unit: &'static str| {
            self.rows.push(Row {
                name: name.into(),
                value,
                unit,
                anchor: None,
                goal: None,
            })
        };
        let (cpu, rss) = usage(libc::RUSAGE_SELF);
        add("run: shoal-bench CPU", cpu.as_secs_f64(), "CPU-s");
        add("run: shoal-bench peak RSS", rss / MIB, "MiB");
        let (cpu, rss) = usage(libc::RUSAGE_CHILDREN);
        if cpu > Duration::ZERO || rss > 0.0 {
            add(
                "run: child processes CPU (waited for)",
                cpu.as_secs_f64(),
                "CPU-s",
            );
            add("run: largest child peak RSS", rss / MIB, "MiB");
        }
    }

    pub fn to_table(&self) -> String {
        let mut out = String::new();
        writeln!(out, "scenario: {}", self.scenario).unwrap();
        for n in &self.notes {
            writeln!(out, "  {n}").unwrap();
        }
        let width = self
            .rows
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(10)
            .max(9);
        writeln!(
            out,
            "{:<width$}  {:>14}  {:>14}  {:>14}  met",
            "operation", "shoal", "swarmkit", "goal"
        )
        .unwrap();
        for r in &self.rows {
            let fmt = |v: Option<f64>| {
                v.map(|v| format!("{} {}", num(v), r.unit))
                    .unwrap_or_else(|| "-".into())
            };
            let met = match r.goal {
                Some(g) if r.value <= g => "yes",
                Some(_) => "NO",
                None => "",
            };
            writeln!(
                out,
                "{:<width$}  {:>14}  {:>14}  {:>14}  {met}",
                r.name,
                fmt(Some(r.value)),
                fmt(r.anchor),
                fmt(r.goal)
            )
            .unwrap();
        }
        out
    }

    pub fn to_json(&self) -> String {
        let rows: Vec<String> = self
            .rows
            .iter()
            .map(|r| {
                format!(
                    "{{\"name\":{:?},\"value\":{},\"unit\":{:?},\"anchor\":{},\"goal\":{}}}",
                    r.name,
                    r.value,
                    r.unit,
                    r.anchor
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "null".into()),
                    r.goal
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "null".into()),
                )
            })
            .collect();
        let notes: Vec<String> = self.notes.iter().map(|n| format!("{n:?}")).collect();
        format!(
            "{{\"scenario\":{:?},\"notes\":[{}],\"rows\":[{}]}}",
            self.scenario,
            notes.join(","),
            rows.join(",")
        )
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// A number with 3 significant digits, without exponent.
fn num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}
