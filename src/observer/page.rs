//! `/status` and `/status.json`: the live status page and the data it polls.
//!
//! The page is one static HTML file (`status.html`: markup, CSS and a
//! little JavaScript, no build step) compiled into the binary; it fetches
//! `/status.json` about once a second and redraws. `json` writes a
//! `Snapshot` as that document by hand (a few numbers and strings do not
//! need a serialization framework). Nothing here reads the region itself.

use super::snapshot::Snapshot;
use crate::metrics::region::{at, gauge, State, CLASSES, METHODS};
use std::fmt::Write;

/// The status page.
pub(crate) const STATUS_HTML: &str = include_str!("status.html");

/// A JSON string literal.
fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' => out.push_str("\\u003c"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn secs(ns: u64) -> f64 {
    (ns as f64 / 1e9 * 1000.0).round() / 1000.0
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "null".to_string(), |v| v.to_string())
}

/// The snapshot as `/status.json`.
pub(crate) fn json(s: &Snapshot) -> String {
    let mut o = String::with_capacity(4096 + 256 * s.requests.len());
    let t = &s.totals;
    let requests: u64 = t[at::REQUESTS..at::REQUESTS + METHODS.len() * CLASSES.len()]
        .iter()
        .sum();
    let refusals: u64 = t[at::REFUSALS..at::INPUT].iter().sum();
    let ready = s.ready();
    let phase = match s.master_phase {
        crate::metrics::region::master_phase::STOPPING => "stopping",
        crate::metrics::region::master_phase::RELOADING => "reloading",
        _ => "running",
    };
    let _ = write!(
        o,
        "{{\"version\":\"{}\",\"ready\":{},\"ready_reason\":",
        env!("CARGO_PKG_VERSION"),
        ready.is_ok()
    );
    string(&mut o, ready.err().unwrap_or("ready"));
    let _ = write!(
        o,
        ",\"master\":{{\"pid\":{},\"phase\":\"{phase}\",\"uptime\":{}}},\"slow_upload_rate\":{}",
        s.master_pid,
        secs(s.now_ns.saturating_sub(s.master_started_ns)),
        s.slow_rate
    );
    let _ = write!(
        o,
        ",\"totals\":{{\"requests\":{requests},\"refusals\":{refusals},\"body_in\":{},\"body_out\":{},\
         \"pending_bytes\":{},\"connections_open\":{},\"worker_starts\":{},\"in_flight\":{{",
        t[at::BODY_IN],
        t[at::BODY_OUT],
        s.gauges[gauge::PENDING].max(0),
        s.gauges[gauge::OPEN].max(0),
        s.worker_starts,
    );
    for (i, st) in State::LIVE.iter().enumerate() {
        let sep = if i > 0 { "," } else { "" };
        let _ = write!(o, "{sep}\"{}\":{}", st.name(), s.in_flight(*st));
    }
    o.push_str("}},\"workers\":[");
    for (i, w) in s.workers.iter().enumerate() {
        let sep = if i > 0 { "," } else { "" };
        let _ = write!(
            o,
            "{sep}{{\"pid\":{},\"age\":{},\"phase\":\"{}\",\"uptime\":{},\"requests\":{},\
             \"in_flight\":{},\"connections\":{},\"rss\":{}}}",
            w.pid,
            w.age,
            w.phase.name(),
            secs(s.now_ns.saturating_sub(w.started_ns)),
            w.requests,
            w.in_flight.max(0),
            w.connections.max(0),
            opt(w.rss_bytes)
        );
    }
    o.push_str("],\"requests\":[");
    for (i, r) in s.requests.iter().enumerate() {
        let e = &r.entry;
        let sep = if i > 0 { "," } else { "" };
        let _ = write!(o, "{sep}{{\"pid\":{},\"method\":", r.pid);
        string(&mut o, &e.method);
        o.push_str(",\"path\":");
        string(&mut o, &e.path);
        o.push_str(",\"client\":");
        match e.client {
            Some(c) => string(&mut o, &c.to_string()),
            None => o.push_str("null"),
        }
        let idle = (e.last_byte_ns > 0).then(|| secs(s.now_ns.saturating_sub(e.last_byte_ns)));
        let _ = write!(
            o,
            ",\"state\":\"{}\",\"age\":{},\"declared\":{},\"read\":{},\"sent\":{},\"rate\":{},\
             \"idle\":{},\"slow\":{}}}",
            e.state.name(),
            secs(s.now_ns.saturating_sub(e.started_ns)),
            opt(e.declared),
            e.read,
            e.sent,
            opt(s.rate(e).map(|r| r.round())),
            opt(idle),
            s.is_slow(e)
        );
    }
    o.push_str("]}");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        let mut o = String::new();
        string(&mut o, "a\"b\\c\n</script>\u{1}");
        assert_eq!(o, "\"a\\\"b\\\\c\\n\\u003c/script>\\u0001\"");
    }
}
