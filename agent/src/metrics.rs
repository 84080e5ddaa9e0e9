//! What `GET /metrics` reports, in Prometheus' text format: requests by
//! route and status, request durations, store commit durations.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Histogram bucket bounds in seconds (upper bounds; `+Inf` is implied).
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A cumulative histogram.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        for (bound, count) in BUCKETS.iter().zip(&mut self.counts) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    /// Appends the histogram as `name` with `labels` (`a="b",…` or empty).
    pub fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// Per-route request counters and durations.
#[derive(Debug, Default)]
pub struct ApiMetrics {
    /// (route template, status) → requests.
    requests: BTreeMap<(String, u16), u64>,
    /// route template → durations.
    durations: BTreeMap<String, Histogram>,
}

impl ApiMetrics {
    pub fn record(&mut self, route: &str, status: u16, seconds: f64) {
        *self
            .requests
            .entry((route.to_string(), status))
            .or_default() += 1;
        self.durations
            .entry(route.to_string())
            .or_default()
            .observe(seconds);
    }

    pub fn write(&self, out: &mut String) {
        out.push_str(
            "# HELP stratus_agent_api_requests_total API requests by route and status code.\n",
        );
        out.push_str("# TYPE stratus_agent_api_requests_total counter\n");
        for ((route, status), n) in &self.requests {
            let _ = writeln!(
                out,
                "stratus_agent_api_requests_total{{route=\"{route}\",code=\"{status}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP stratus_agent_api_request_duration_seconds API request durations by route.\n",
        );
        out.push_str("# TYPE stratus_agent_api_request_duration_seconds histogram\n");
        for (route, h) in &self.durations {
            h.write(
                out,
                "stratus_agent_api_request_duration_seconds",
                &format!("route=\"{route}\""),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_text() {
        let mut h = Histogram::default();
        h.observe(0.003);
        h.observe(3.0);
        let mut out = String::new();
        h.write(&mut out, "x_seconds", "");
        assert!(out.contains("x_seconds_bucket{le=\"0.005\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_count 2\n"), "{out}");
    }
}
