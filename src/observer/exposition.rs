//! `/metrics`: a `Snapshot` in the Prometheus text format (0.0.4), through `prometheus-client`.
//!
//! Each scrape makes a registry with one collector over the snapshot and
//! lets the crate write names, help, types, labels and histogram buckets
//! (so escaping and the `_total`/`_bucket` suffixes follow the spec, not
//! this file). Names follow Prometheus conventions with a `siesta_`
//! prefix: base units (seconds, bytes), `_total` on counters.

use super::snapshot::Snapshot;
use crate::metrics::region::{
    at, gauge, State, BUCKETS, CLASSES, EXIT_REASONS, INPUT_FAILURES, METHODS, RELOAD_OUTCOMES,
};
use crate::metrics::track::REFUSALS;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt::Error;

pub(crate) use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The exposition of one snapshot.
pub(crate) fn render(snap: Snapshot) -> Result<String, Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(snap)));
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

struct Scrape(Snapshot);

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrape")
    }
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result<(), Error> {
    let m = ConstCounter::new(v);
    m.encode(enc.encode_descriptor(name, help, None, m.metric_type())?)
}

/// A counter family with one label: `values[i]` under `label` = `names[i]`.
fn by_label(
    enc: &mut DescriptorEncoder,
    (name, help): (&str, &str),
    label: &str,
    names: &[&str],
    values: &[u64],
) -> Result<(), Error> {
    let mut f = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (n, v) in names.iter().zip(values) {
        ConstCounter::new(*v).encode(f.encode_family(&[(label, *n)])?)?;
    }
    Ok(())
}

fn gauge_one(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> Result<(), Error> {
    let m = ConstGauge::new(v);
    m.encode(enc.encode_descriptor(name, help, None, m.metric_type())?)
}

fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    words: &[u64],
) -> Result<(), Error> {
    let buckets: Vec<(f64, u64)> = BUCKETS.iter().copied().zip(words.iter().copied()).collect();
    let sum = words[at::HIST_WORDS - 1] as f64 / 1e6;
    let count = words[..at::HIST_WORDS - 1].iter().sum();
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    m.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), Error> {
        let s = &self.0;
        let t = &s.totals;

        let mut f = enc.encode_descriptor(
            "siesta_build_info",
            "Siesta's version (always 1).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1i64)
            .encode(f.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)?;

        let mut f = enc.encode_descriptor(
            "siesta_requests",
            "Requests finished, answered by the app or refused by the server.",
            None,
            MetricType::Counter,
        )?;
        for (mi, m) in METHODS.iter().enumerate() {
            for (ci, c) in CLASSES.iter().enumerate() {
                let v = t[at::REQUESTS + mi * CLASSES.len() + ci];
                ConstCounter::new(v)
                    .encode(f.encode_family(&[("method", *m), ("status_class", *c)])?)?;
            }
        }

        histogram(
            &mut enc,
            "siesta_request_duration_seconds",
            "From the parsed request head to the last response byte handed over.",
            &t[at::DURATION..at::DURATION + at::HIST_WORDS],
        )?;
        histogram(
            &mut enc,
            "siesta_request_queue_seconds",
            "Time a request waited for a free thread or greenlet.",
            &t[at::QUEUED..at::QUEUED + at::HIST_WORDS],
        )?;
        counter(
            &mut enc,
            "siesta_request_body_bytes",
            "Request body bytes received.",
            t[at::BODY_IN],
        )?;
        counter(
            &mut enc,
            "siesta_response_body_bytes",
            "Response body bytes sent.",
            t[at::BODY_OUT],
        )?;

        let mut f = enc.encode_descriptor(
            "siesta_requests_in_flight",
            "Requests in progress: queued, in the app, parked in wsgi.input \
             (reading_body), or waiting on a slow client (sending).",
            None,
            MetricType::Gauge,
        )?;
        for st in State::LIVE {
            ConstGauge::new(s.in_flight(st)).encode(f.encode_family(&[("state", st.name())])?)?;
        }
        gauge_one(
            &mut enc,
            "siesta_request_body_pending_bytes",
            "Declared request body bytes not received yet, over requests in progress.",
            s.gauges[gauge::PENDING].max(0),
        )?;
        let slow_now = s.requests.iter().filter(|r| s.is_slow(&r.entry)).count();
        gauge_one(
            &mut enc,
            "siesta_slow_uploads_in_progress",
            "Uploads in progress slower than --slow-upload-rate (listed requests only).",
            slow_now as i64,
        )?;
        counter(
            &mut enc,
            "siesta_slow_uploads",
            "Finished requests whose body came slower than --slow-upload-rate.",
            t[at::SLOW_UPLOADS],
        )?;

        gauge_one(
            &mut enc,
            "siesta_pool_threads",
            "Threads in thread mode's pools: --threads app slots, grown up to --max-threads \
             while requests wait on the network (0 in gevent mode).",
            s.gauges[gauge::THREADS].max(0),
        )?;

        let open = s.gauges[gauge::OPEN].max(0);
        let active = State::LIVE
            .iter()
            .map(|st| s.in_flight(*st))
            .sum::<i64>()
            .min(open);
        gauge_one(
            &mut enc,
            "siesta_connections_open",
            "Client connections open.",
            open,
        )?;
        gauge_one(
            &mut enc,
            "siesta_connections_active",
            "Open connections with a request in progress.",
            active,
        )?;
        gauge_one(
            &mut enc,
            "siesta_connections_idle",
            "Open connections between requests (keep-alive).",
            open - active,
        )?;
        counter(
            &mut enc,
            "siesta_connections_accepted",
            "Client connections accepted.",
            t[at::CONNECTIONS],
        )?;
        counter(
            &mut enc,
            "siesta_accept_failures",
            "accept() calls that failed and were retried: a worker out of file descriptors \
             (EMFILE, ENFILE) or memory cannot take connections meanwhile.",
            t[at::ACCEPT_FAILURES],
        )?;

        let mut f = enc.encode_descriptor(
            "siesta_refusals",
            "Requests the server answered itself, by reason (a limit's option name, \
             queue_timeout for 503 shedding, header_timeout, client_disconnected, app_error, ...).",
            None,
            MetricType::Counter,
        )?;
        for (i, e) in REFUSALS.iter().enumerate() {
            let status = e.status().as_u16().to_string();
            ConstCounter::new(t[at::REFUSALS + i])
                .encode(f.encode_family(&[("reason", e.reason()), ("status", status.as_str())])?)?;
        }
        let body_errors = (
            "siesta_request_body_errors",
            "wsgi.input reads that failed: body timeout, client gone, over the limit, malformed.",
        );
        let failures = &t[at::INPUT..at::INPUT + INPUT_FAILURES.len()];
        by_label(&mut enc, body_errors, "kind", &INPUT_FAILURES, failures)?;

        counter(
            &mut enc,
            "siesta_worker_starts",
            "Worker processes started by the master.",
            s.worker_starts,
        )?;
        let exits = (
            "siesta_worker_exits",
            "Worker processes that exited, by reason.",
        );
        by_label(&mut enc, exits, "reason", &EXIT_REASONS, &s.exits)?;
        let lost = (
            "siesta_requests_lost",
            "Requests that were in flight in a worker when it exited, by the worker's \
             exit reason: killed with it (timeout, crash) or cut when a stop's time \
             ran out (stop, reload). They got no complete response and are not in \
             siesta_requests_total.",
        );
        by_label(&mut enc, lost, "reason", &EXIT_REASONS, &s.lost)?;
        let reloads = (
            "siesta_reloads",
            "HUP reloads, each once, by how they ended: done, config_refused (the \
             running config kept), given_up (new workers could not load the app or \
             boot; the old ones serve on with their code), superseded (a later HUP \
             came first).",
        );
        by_label(&mut enc, reloads, "outcome", &RELOAD_OUTCOMES, &s.reloads)?;
        gauge_one(
            &mut enc,
            "siesta_workers",
            "Worker processes alive.",
            s.workers.len() as i64,
        )?;
        gauge_one(
            &mut enc,
            "siesta_workers_target",
            "Worker processes the master keeps (-w, TTIN/TTOU).",
            s.target as i64,
        )?;
        let mut f = enc.encode_descriptor(
            "siesta_worker_resident_memory_bytes",
            "Resident memory of each worker process.",
            None,
            MetricType::Gauge,
        )?;
        for w in &s.workers {
            if let Some(rss) = w.rss_bytes {
                let pid = w.pid.to_string();
                ConstGauge::new(rss as i64).encode(f.encode_family(&[("pid", pid.as_str())])?)?;
            }
        }
        gauge_one(
            &mut enc,
            "siesta_ready",
            "1 when /readyz answers 200.",
            i64::from(s.ready().is_ok()),
        )
    }
}
