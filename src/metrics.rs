//! Prometheus metrics (`location = /metrics { prometheus all; }`, Angie's syntax): the figures
//! imbang already keeps — the process's connections and requests ([`crate::stats`]), reloads,
//! and each upstream peer's counters (the ones the API shows) — written in Prometheus's text
//! exposition format (version 0.0.4) when scraped. Nothing is counted for the metrics: a scrape
//! reads the atomics the request path updates anyway, so a configured `/metrics` costs the
//! requests nothing.
//!
//! Written here rather than with the prometheus-client crate: that crate writes OpenMetrics
//! only (a counter's `# TYPE` names the family without `_total`, its samples have it, and the
//! page ends in `# EOF`), which the Prometheus text parser and `promtool check metrics` read as
//! families without help or type. Every Prometheus server reads the 0.0.4 text format, and it
//! is what Angie's module, node_exporter and nginx-prometheus-exporter serve.

use std::fmt::{Display, Write};
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use tokio::time::Instant;

use crate::proxy::{RequestCtx, ResponseBody, Shared};
use crate::stats::{self, ZoneKind};

/// `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Answers a request to a `prometheus all` location: GET and HEAD get the metrics, any other
/// method 405.
pub fn respond(shared: &Shared, ctx: &RequestCtx<'_>) -> Response<ResponseBody> {
    let method = &ctx.parts.method;
    if method != Method::GET && method != Method::HEAD {
        return crate::proxy::error::error_page(StatusCode::METHOD_NOT_ALLOWED);
    }
    let mut response = Response::new(ResponseBody::full(Bytes::from(render(shared))));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// The text exposition being written.
struct Page {
    out: String,
}

impl Page {
    /// Starts a metric family: its help and type lines.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = write!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
    }

    /// One sample of the family begun last.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                escape_label(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family with one sample and no labels.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// A label value as the text format quotes it: `\`, `"` and line feeds escaped.
fn escape_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// One peer's figures, read once per scrape.
struct PeerRow<'a> {
    upstream: &'a str,
    peer: String,
    state: &'static str,
    active: u32,
    requests: u64,
    responses: [u64; 5],
    failed: u64,
    unavail: u64,
    sent: u64,
    received: u64,
    /// `(checks, failed, went unhealthy, last passed)` when a `health_check` probes it.
    checks: Option<(u64, u64, u64, Option<bool>)>,
    /// Time to the response head, and to its last byte.
    latency: [stats::HistogramFigures; 2],
}

/// The states a peer may be in (the API's), one series each.
const STATES: [&str; 5] = ["up", "down", "unavail", "unhealthy", "checking"];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The whole page.
pub fn render(shared: &Shared) -> String {
    let mut page = Page {
        out: String::with_capacity(4096),
    };
    page.family(
        "imbang_build_info",
        "gauge",
        "imbang's version, as a label; always 1.",
    );
    page.sample(
        "imbang_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );

    // === configuration ===
    let live = &shared.live;
    let (failures, last_failed) = stats::reload_failures();
    page.single(
        "imbang_config_reloads_total",
        "counter",
        "Reloads that put a new configuration in force.",
        live.reloads(),
    );
    page.single(
        "imbang_config_reload_failures_total",
        "counter",
        "Reloads refused (the configuration in force stayed).",
        failures,
    );
    page.single(
        "imbang_config_last_reload_successful",
        "gauge",
        "Whether the last reload put its configuration in force (1) or was refused (0).",
        u8::from(!last_failed),
    );
    let loaded = (live.loaded_at().duration_since(UNIX_EPOCH)).map_or(0.0, |d| d.as_secs_f64());
    page.single(
        "imbang_config_last_reload_success_timestamp_seconds",
        "gauge",
        "When the configuration in force was loaded (Unix time).",
        format_args!("{loaded:.3}"),
    );

    // === client connections and requests (stub_status's figures) ===
    let f = stats::figures();
    let counters = [
        (
            "imbang_connections_accepted_total",
            "Client connections accepted.",
            f.accepted,
        ),
        (
            "imbang_connections_handled_total",
            "Client connections served (accepted and not dropped).",
            f.handled,
        ),
        (
            "imbang_connections_dropped_total",
            "Client connections accepted and closed at once (over a limit).",
            f.accepted.saturating_sub(f.handled),
        ),
        (
            "imbang_http_requests_total",
            "Client requests (HTTP/1 requests and HTTP/2 streams).",
            f.requests,
        ),
        (
            "imbang_ssl_handshakes_total",
            "TLS handshakes with clients that succeeded.",
            f.handshakes,
        ),
        (
            "imbang_ssl_handshakes_failed_total",
            "TLS handshakes with clients that failed (refused, broken off, timed out).",
            f.handshakes_failed,
        ),
        (
            "imbang_ssl_session_reuses_total",
            "TLS handshakes with clients that resumed a session.",
            f.session_reuses,
        ),
    ];
    for (name, help, value) in counters {
        page.single(name, "counter", help, value);
    }
    let gauges = [
        (
            "imbang_connections_active",
            "Client connections open now.",
            f.active,
        ),
        (
            "imbang_connections_reading",
            "Client connections whose request head is being read.",
            f.reading,
        ),
        (
            "imbang_connections_writing",
            "Client connections whose request is being answered.",
            f.writing,
        ),
        (
            "imbang_connections_idle",
            "Client connections open with no request (keep-alive).",
            f.waiting,
        ),
    ];
    for (name, help, value) in gauges {
        page.single(name, "gauge", help, value);
    }

    // === status zones (`status_zone` on servers and locations) ===
    let snapshot = live.snapshot();
    for (kind, prefix, what) in [
        (ZoneKind::Server, "imbang_http_server_zone", "server"),
        (ZoneKind::Location, "imbang_http_location_zone", "location"),
    ] {
        let zones: Vec<_> = crate::api::zone_names(&snapshot.config, kind)
            .into_iter()
            .map(|name| {
                let figures = stats::zone(kind, &name).figures();
                (name, figures)
            })
            .collect();
        if zones.is_empty() {
            continue;
        }
        type Field = fn(&stats::ZoneFigures) -> u64;
        let families: [(&str, &str, String, Field); 3] = [
            (
                "requests_total",
                "counter",
                format!("Requests counted in the {what} zone (status_zone)."),
                |f| f.requests,
            ),
            (
                "discarded_total",
                "counter",
                format!("Requests of the {what} zone completed without a response."),
                |f| f.discarded,
            ),
            (
                "processing",
                "gauge",
                format!("Requests of the {what} zone being processed."),
                |f| f.processing,
            ),
        ];
        for (suffix, kind, help, field) in families {
            let name = format!("{prefix}_{suffix}");
            page.family(&name, kind, &help);
            for (zone, f) in &zones {
                page.sample(&name, &[("zone", zone)], field(f));
            }
        }
        let name = format!("{prefix}_request_duration_seconds");
        page.family(
            &name,
            "histogram",
            &format!(
                "Time from a request's location found to its response head, in the {what} zone."
            ),
        );
        for (zone, f) in &zones {
            histogram(&mut page, &name, ("zone", zone), &f.time);
        }
        let name = format!("{prefix}_responses_total");
        page.family(
            &name,
            "counter",
            &format!("Responses of the {what} zone, by status class."),
        );
        for (zone, f) in &zones {
            for (class, n) in CLASSES.iter().zip(f.responses) {
                page.sample(&name, &[("zone", zone), ("code_class", class)], n);
            }
        }
    }

    // === ACME certificates (`acme_certificate`), as the API's `/acme` shows them ===
    let acme = crate::acme::api(&snapshot.config);
    if let Some(certs) = acme.as_object().filter(|m| !m.is_empty()) {
        let label = |name: &'_ str, cert: &'_ serde_json::Value| {
            let issuer = cert["issuer"].as_str().unwrap_or_default().to_owned();
            (name.to_owned(), issuer)
        };
        page.family(
            "imbang_acme_certificate_expiry_seconds",
            "gauge",
            "Seconds until the certificate in force expires (negative: expired); none until one is issued.",
        );
        for (name, cert) in certs {
            if let Some(left) = cert["expires_in"].as_i64() {
                let (name, issuer) = label(name, cert);
                let labels = [("certificate", name.as_str()), ("issuer", issuer.as_str())];
                page.sample("imbang_acme_certificate_expiry_seconds", &labels, left);
            }
        }
        page.family(
            "imbang_acme_certificate_failures",
            "gauge",
            "Failed attempts in a row to obtain or renew the certificate (0 after a success).",
        );
        for (name, cert) in certs {
            let (name, issuer) = label(name, cert);
            let labels = [("certificate", name.as_str()), ("issuer", issuer.as_str())];
            let failures = cert["failures"].as_u64().unwrap_or_default();
            page.sample("imbang_acme_certificate_failures", &labels, failures);
        }
    }

    // === upstream groups and their peers ===
    let mut groups: Vec<_> = snapshot.groups().collect();
    groups.sort_by(|a, b| a.balancer().name().cmp(b.balancer().name()));
    // Each group's peers as of now (those of a group that follows DNS change as it runs).
    let members: Vec<_> = groups.iter().map(|g| g.balancer()).collect();
    let now = Instant::now();
    let mut rows = Vec::new();
    for members in &members {
        let upstream = members.name();
        let mut seen = Vec::new();
        for peer in members.peers() {
            // A server written twice shares its state: one series.
            if seen.contains(&peer.addr()) {
                continue;
            }
            seen.push(peer.addr());
            let state = peer.state();
            let active = state.active_health();
            let verdicts = active.verdicts();
            let (sent, received) = state.bytes();
            let (header, response) = state.latency();
            rows.push(PeerRow {
                latency: [header, response],
                upstream,
                peer: peer.addr().to_string(),
                state: crate::api::peer_state(peer, verdicts, now),
                active: state.in_flight(),
                requests: state.requests(),
                responses: state.responses(),
                failed: state.failed(),
                unavail: state.went_unavailable(),
                sent,
                received,
                checks: (!verdicts.is_empty()).then(|| {
                    let last: Vec<bool> = verdicts.iter().filter_map(|v| v.last_passed).collect();
                    (
                        verdicts.iter().map(|v| v.checks).sum(),
                        verdicts.iter().map(|v| v.failed).sum(),
                        verdicts.iter().map(|v| v.went_unhealthy).sum(),
                        (!last.is_empty()).then(|| last.iter().all(|&p| p)),
                    )
                }),
            });
        }
    }
    type Field = fn(&PeerRow) -> u64;
    let per_peer: [(&str, &str, &str, Field); 6] = [
        (
            "imbang_upstream_peer_requests_total",
            "counter",
            "Requests sent to the peer (attempts, retries included).",
            |r| r.requests,
        ),
        (
            "imbang_upstream_peer_failures_total",
            "counter",
            "Attempts on the peer that failed (error, timeout, proxy_next_upstream status).",
            |r| r.failed,
        ),
        (
            "imbang_upstream_peer_unavailable_total",
            "counter",
            "Times failures made the peer unavailable (max_fails within fail_timeout).",
            |r| r.unavail,
        ),
        (
            "imbang_upstream_peer_sent_bytes_total",
            "counter",
            "Bytes sent to the peer (request heads and bodies of answered attempts).",
            |r| r.sent,
        ),
        (
            "imbang_upstream_peer_received_bytes_total",
            "counter",
            "Bytes received from the peer (response heads and bodies).",
            |r| r.received,
        ),
        (
            "imbang_upstream_peer_active",
            "gauge",
            "Requests in flight on the peer.",
            |r| u64::from(r.active),
        ),
    ];
    for (name, kind, help, field) in per_peer {
        page.family(name, kind, help);
        for r in &rows {
            page.sample(
                name,
                &[("upstream", r.upstream), ("peer", &r.peer)],
                field(r),
            );
        }
    }
    let name = "imbang_upstream_peer_responses_total";
    page.family(
        name,
        "counter",
        "Response heads received from the peer, by status class.",
    );
    for r in &rows {
        for (class, n) in CLASSES.iter().zip(r.responses) {
            let labels = [
                ("upstream", r.upstream),
                ("peer", r.peer.as_str()),
                ("code_class", class),
            ];
            page.sample(name, &labels, n);
        }
    }
    let name = "imbang_upstream_peer_state";
    page.family(
        name,
        "gauge",
        "The peer's state (up, down, unavail, unhealthy, checking): 1 for the one it is in.",
    );
    for r in &rows {
        for state in STATES {
            let labels = [
                ("upstream", r.upstream),
                ("peer", r.peer.as_str()),
                ("state", state),
            ];
            page.sample(name, &labels, u8::from(r.state == state));
        }
    }
    let checked: Vec<_> = (rows.iter())
        .filter_map(|r| r.checks.map(|c| (r, c)))
        .collect();
    if !checked.is_empty() {
        type Check = fn((u64, u64, u64, Option<bool>)) -> u64;
        let families: [(&str, &str, Check); 3] = [
            (
                "imbang_upstream_peer_health_checks_total",
                "Active health checks (health_check) made on the peer.",
                |c| c.0,
            ),
            (
                "imbang_upstream_peer_health_check_failures_total",
                "Active health checks of the peer that failed.",
                |c| c.1,
            ),
            (
                "imbang_upstream_peer_unhealthy_total",
                "Times active health checks found the peer unhealthy.",
                |c| c.2,
            ),
        ];
        for (name, help, field) in families {
            page.family(name, "counter", help);
            for (r, c) in &checked {
                let labels = [("upstream", r.upstream), ("peer", r.peer.as_str())];
                page.sample(name, &labels, field(*c));
            }
        }
        let name = "imbang_upstream_peer_health_check_last_passed";
        page.family(
            name,
            "gauge",
            "Whether the peer's last active health check passed (1) or failed (0).",
        );
        for (r, c) in &checked {
            if let Some(passed) = c.3 {
                let labels = [("upstream", r.upstream), ("peer", r.peer.as_str())];
                page.sample(name, &labels, u8::from(passed));
            }
        }
    }
    let histograms = [
        (
            "imbang_upstream_header_duration_seconds",
            "Time from choosing a peer of the group to its response head, of the attempts answered.",
        ),
        (
            "imbang_upstream_response_duration_seconds",
            "Time from choosing a peer of the group to the last byte of its response.",
        ),
    ];
    for (i, (name, help)) in histograms.into_iter().enumerate() {
        page.family(name, "histogram", help);
        for group in &groups {
            let members = group.balancer();
            let upstream = members.name();
            let mut sum = stats::HistogramFigures::default();
            for r in rows.iter().filter(|r| r.upstream == upstream) {
                sum.add(&r.latency[i]);
            }
            histogram(&mut page, name, ("upstream", upstream), &sum);
        }
    }
    let name = "imbang_upstream_keepalive_connections";
    page.family(
        name,
        "gauge",
        "Idle kept-alive connections to the group's peers.",
    );
    for group in &groups {
        let mut addrs: Vec<_> = group.balancer().peers().iter().map(|p| p.addr()).collect();
        addrs.sort();
        addrs.dedup();
        let idle: usize = addrs.iter().map(|&a| shared.pool.idle(a)).sum();
        page.sample(name, &[("upstream", group.balancer().name())], idle);
    }
    let queued: Vec<_> = (groups.iter())
        .filter_map(|g| g.balancer().queue_spec().map(|q| (g, q)))
        .collect();
    if !queued.is_empty() {
        let name = "imbang_upstream_queue_size";
        page.family(name, "gauge", "Requests waiting in the group's queue.");
        for (g, _) in &queued {
            page.sample(
                name,
                &[("upstream", g.balancer().name())],
                g.balancer().waiting(),
            );
        }
        let name = "imbang_upstream_queue_max_size";
        page.family(name, "gauge", "The group's queue size (queue).");
        for (g, q) in &queued {
            page.sample(name, &[("upstream", g.balancer().name())], q.size);
        }
    }
    page.out
}

/// One histogram's samples: cumulative `_bucket`s up to `+Inf`, `_sum` (seconds), `_count`.
fn histogram(page: &mut Page, name: &str, label: (&str, &str), h: &stats::HistogramFigures) {
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0;
    for (i, n) in h.buckets.iter().enumerate() {
        cumulative += n;
        let le = match stats::BUCKETS_US.get(i) {
            Some(&us) => (us as f64 / 1e6).to_string(),
            None => "+Inf".to_owned(),
        };
        page.sample(&bucket, &[label, ("le", &le)], cumulative);
    }
    let sum = h.sum_us as f64 / 1e6;
    page.sample(&format!("{name}_sum"), &[label], sum);
    page.sample(&format!("{name}_count"), &[label], cumulative);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_as_the_text_format_says() {
        let mut page = Page { out: String::new() };
        page.sample("m", &[("a", "x\"y\\z\nw"), ("b", "c")], 3);
        assert_eq!(page.out, "m{a=\"x\\\"y\\\\z\\nw\",b=\"c\"} 3\n");
    }
}
