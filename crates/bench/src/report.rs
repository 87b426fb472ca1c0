//! Benchmark reports: rows of figures with the anchor and goal they are judged against.

use std::fmt::Write as _;

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
        self.rows.push(Row {
            name: name.into(),
            value,
            unit,
            anchor,
            goal,
        });
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
