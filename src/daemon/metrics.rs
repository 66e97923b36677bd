//! The daemon's Prometheus metrics: the registry, the typed handles the job runner and the
//! scheduler update, and the text exposition served on `GET /metrics` of a TCP listener.
//!
//! Conventions: units in names, counters end in `_total`, timestamps in seconds since the epoch.

use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::catalog::JobKind;

/// Every metric hopsdrd exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub backup_last_success: GaugeVec,
    pub backup_last_status: IntGaugeVec,
    pub backup_duration: GaugeVec,
    pub backup_bytes: GaugeVec,
    pub backup_stored_bytes: GaugeVec,
    pub backups_total: IntCounterVec,
    pub job_running: IntGaugeVec,
    pub repository_bytes: Gauge,
    pub schedule_next_run: GaugeVec,
    pub schedule_expected_interval: GaugeVec,
    pub schedule_skipped: IntCounterVec,
    pub hopsfs_blocks_missing: Gauge,
    pub hopsfs_fence_window: Gauge,
    pub hopsfs_blocks: GaugeVec,
    pub restore_duration: Gauge,
    pub restore_last_success: Gauge,
    pub restores_total: IntCounterVec,
    /// 1 while the last restore is unfinished (scheduled backups and pruning held off).
    pub restore_unfinished: IntGauge,
    pub prune_forgotten: IntCounter,
    pub gc_freed_bytes: IntCounter,
    pub backups: IntGaugeVec,
    pub verify_last_success: Gauge,
    pub verify_damaged_blobs: IntGauge,
    /// 1 when the newest committed backup's HopsFS blocks were not checked against the metadata.
    pub hopsfs_unchecked: IntGauge,
    /// Connections closed by a limit or a timeout, by listener (`api`, `metrics`) and reason.
    pub connections_dropped: IntCounterVec,
    /// When the newest passed drill of each level finished.
    pub drill_last_success: GaugeVec,
    /// The measured time of the newest passed drill of each level (level 2: the RTO).
    pub drill_rto: GaugeVec,
    /// Drills finished since the daemon started, by level and result.
    pub drills_total: IntCounterVec,
    /// `[drill] max_age`: the age of the newest passed drill that raises an alert.
    pub drill_max_age: Gauge,
    /// When the last copy to each `[[copy]]` that finished whole finished.
    pub copy_last_success: GaugeVec,
    /// The longest interval between the copy schedules' fires, per target.
    pub copy_expected_interval: GaugeVec,
    /// Copies finished since the daemon started, by target and result.
    pub copies_total: IntCounterVec,
    /// Bytes copies sent, by target.
    pub copy_bytes: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
    r.register(Box::new(m.clone()))
        .expect("metric names are unique and valid");
    m
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        reg(&r, crate::hooks::FAILURES.clone());
        let info = reg(
            &r,
            IntGaugeVec::new(
                Opts::new("hopsdr_build_info", "hopsdr version; always 1"),
                &["version"],
            )
            .expect("valid"),
        );
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        // When this hopsdrd started: "no backup yet" is judged against its uptime.
        let start = reg(
            &r,
            Gauge::with_opts(Opts::new(
                "hopsdr_start_time_seconds",
                "When hopsdrd started, seconds since the Unix epoch",
            ))
            .expect("valid"),
        );
        start.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        );
        let gv = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &r,
                GaugeVec::new(Opts::new(name, help), labels).expect("valid"),
            )
        };
        let m = Metrics {
            backup_last_success: gv(
                "hopsdr_backup_last_success_timestamp_seconds",
                "When the newest successful backup of the component finished",
                &["component"],
            ),
            backup_last_status: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "hopsdr_backup_last_status",
                        "1 if the component's last backup succeeded, 0 if it failed or was interrupted",
                    ),
                    &["component"],
                )
                .expect("valid"),
            ),
            backup_duration: gv(
                "hopsdr_backup_duration_seconds",
                "How long the component's last backup took",
                &["component"],
            ),
            backup_bytes: gv(
                "hopsdr_backup_bytes",
                "Logical size of the component in its last successful backup",
                &["component"],
            ),
            backup_stored_bytes: gv(
                "hopsdr_backup_stored_bytes",
                "New (compressed, deduplicated) bytes the component's last successful backup wrote",
                &["component"],
            ),
            backups_total: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "hopsdr_backups_total",
                        "Backups finished since the daemon started, by result",
                    ),
                    &["result"],
                )
                .expect("valid"),
            ),
            job_running: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("hopsdr_job_running", "1 while a job of this kind runs"),
                    &["kind"],
                )
                .expect("valid"),
            ),
            repository_bytes: reg(
                &r,
                Gauge::with_opts(Opts::new(
                    "hopsdr_repository_bytes",
                    "Bytes the repository holds",
                ))
                .expect("valid"),
            ),
            schedule_next_run: gv(
                "hopsdr_schedule_next_run_timestamp_seconds",
                "When the schedule fires next",
                &["schedule"],
            ),
            schedule_expected_interval: gv(
                "hopsdr_schedule_expected_interval_seconds",
                "The interval between the schedule's fires, for alerts that follow the schedule",
                &["schedule"],
            ),
            schedule_skipped: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "hopsdr_schedule_skipped_total",
                        "Fires of a schedule that did not start a job, by reason",
                    ),
                    &["schedule", "reason"],
                )
                .expect("valid"),
            ),
            hopsfs_blocks_missing: reg(
                &r,
                Gauge::with_opts(Opts::new(
                    "hopsdr_hopsfs_blocks_missing",
                    "Blocks the last backup's metadata references that no datanode volume held",
                ))
                .expect("valid"),
            ),
            hopsfs_fence_window: reg(
                &r,
                Gauge::with_opts(Opts::new(
                    "hopsdr_hopsfs_fence_window_seconds",
                    "Seconds from the RonDB consistency point to the last datanode's pin in the last backup",
                ))
                .expect("valid"),
            ),
            hopsfs_blocks: gv(
                "hopsdr_hopsfs_blocks",
                "Finalized blocks in the last backup (total) and those transferred (new)",
                &["kind"],
            ),
            restore_unfinished: reg(
                &r,
                IntGauge::with_opts(Opts::new(
                    "hopsdr_restore_unfinished",
                    "1 while the last restore has failed or stopped unfinished: scheduled backups and pruning are held off until it is resumed to the end or abandoned",
                ))
                .expect("valid"),
            ),
            restore_duration: reg(
                &r,
                Gauge::with_opts(Opts::new(
                    "hopsdr_restore_duration_seconds",
                    "How long the last successful restore took, from start to report (the measured RTO)",
                ))
                .expect("valid"),
            ),
            restore_last_success: reg(
                &r,
                Gauge::with_opts(Opts::new(
                    "hopsdr_restore_last_success_timestamp_seconds",
                    "When the last successful restore finished",
                ))
                .expect("valid"),
            ),
            restores_total: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("hopsdr_restores_total", "Restores finished since the daemon started, by result"),
                    &["result"],
                )
                .expect("valid"),
            ),
            prune_forgotten: reg(
                &r,
                IntCounter::with_opts(Opts::new(
                    "hopsdr_prune_forgotten_total",
                    "Backups forgotten by pruning since the daemon started",
                ))
                .expect("valid"),
            ),
            gc_freed_bytes: reg(
                &r,
                IntCounter::with_opts(Opts::new(
                    "hopsdr_gc_freed_bytes_total",
                    "Bytes of blobs deleted by garbage collection since the daemon started",
                ))
                .expect("valid"),
            ),
            backups: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("hopsdr_backups", "Backups in the catalog, by state"),
                    &["state"],
                )
                .expect("valid"),
            ),
            verify_last_success: reg(
                &r,
                Gauge::with_opts(Opts::new(
                    "hopsdr_verify_last_success_timestamp_seconds",
                    "When the last verification that found a backup whole finished",
                ))
                .expect("valid"),
            ),
            verify_damaged_blobs: reg(
                &r,
                IntGauge::with_opts(Opts::new(
                    "hopsdr_verify_damaged_blobs",
                    "Damaged or missing blobs found by the last verification",
                ))
                .expect("valid"),
            ),
            hopsfs_unchecked: reg(
                &r,
                IntGauge::with_opts(Opts::new(
                    "hopsdr_backup_hopsfs_unchecked",
                    "1 when the newest committed backup copied HopsFS blocks without checking them against the blocks its metadata references (set [hopsfs] referenced_blocks)",
                ))
                .expect("valid"),
            ),
            connections_dropped: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "hopsdr_connections_dropped_total",
                        "Connections refused by a connection limit or closed by a client timeout",
                    ),
                    &["listener", "reason"],
                )
                .expect("valid"),
            ),
            drill_last_success: gv(
                "hopsdr_drill_last_success_timestamp_seconds",
                "When the newest drill of the level that proved a backup restores finished",
                &["level"],
            ),
            drill_rto: gv(
                "hopsdr_drill_rto_seconds",
                "The measured time of the newest passed drill of the level (level 2: the restore's RTO)",
                &["level"],
            ),
            drills_total: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "hopsdr_drills_total",
                        "Drills finished since the daemon started, by level and result",
                    ),
                    &["level", "result"],
                )
                .expect("valid"),
            ),
            drill_max_age: reg(
                &r,
                Gauge::with_opts(Opts::new(
                    "hopsdr_drill_max_age_seconds",
                    "[drill] max_age: a passed drill older than this raises HopsdrDrillTooOld",
                ))
                .expect("valid"),
            ),
            copy_last_success: gv(
                "hopsdr_copy_last_success_timestamp_seconds",
                "When the last copy of the repository to the target that finished whole finished",
                &["target"],
            ),
            copy_expected_interval: gv(
                "hopsdr_copy_expected_interval_seconds",
                "The longest interval between the fires of the target's copy schedules",
                &["target"],
            ),
            copies_total: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "hopsdr_copies_total",
                        "Copies of the repository finished since the daemon started, by target and result",
                    ),
                    &["target", "result"],
                )
                .expect("valid"),
            ),
            copy_bytes: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "hopsdr_copy_sent_bytes_total",
                        "Bytes sent to the target by copies since the daemon started",
                    ),
                    &["target"],
                )
                .expect("valid"),
            ),
            registry: r,
        };
        for result in ["passed", "failed", "interrupted"] {
            m.drills_total.with_label_values(&["1", result]);
        }
        for kind in JobKind::ALL {
            m.job_running.with_label_values(&[kind.as_str()]).set(0);
        }
        for result in ["succeeded", "failed", "interrupted"] {
            m.restores_total.with_label_values(&[result]);
        }
        for result in ["succeeded", "partial", "failed", "interrupted"] {
            m.backups_total.with_label_values(&[result]);
        }
        for listener in ["api", "metrics"] {
            for reason in ["limit", "timeout"] {
                m.connections_dropped.with_label_values(&[listener, reason]);
            }
        }
        m
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        // Encoding into a Vec cannot fail for valid metric families.
        let _ = enc.encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` fires, with at most
/// [`super::conn::METRICS_MAX_CONNECTIONS`] connections open and `timeout` for a request's head.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    timeout: std::time::Duration,
    shutdown: CancellationToken,
) {
    use super::conn::{self, AcceptBackoff, ConnLimiter};
    let limiter = ConnLimiter::new(conn::METRICS_MAX_CONNECTIONS, 0, 0);
    let mut backoff = AcceptBackoff::default();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => {
                    backoff.succeeded();
                    s
                }
                Err(e) => {
                    let wait = backoff.failed("metrics listener", &e);
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
            },
        };
        let permit = match limiter.try_acquire(None) {
            Ok(p) => p,
            Err(refusal) => {
                metrics
                    .connections_dropped
                    .with_label_values(&["metrics", "limit"])
                    .inc();
                let _ = stream.try_write(&conn::refusal_response(
                    "503 Service Unavailable",
                    "text/plain",
                    &format!("{refusal}\n"),
                ));
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let m2 = metrics.clone();
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let resp = if req.method() == Method::GET && req.uri().path() == "/metrics" {
                        Response::builder()
                            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                            .body(Full::new(Bytes::from(metrics.render())))
                    } else {
                        Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::from_static(b"not found: try /metrics\n")))
                    };
                    Ok::<_, hyper::http::Error>(resp.expect("static response parts are valid"))
                }
            });
            let r = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            if r.is_err_and(|e| e.is_timeout()) {
                m2.connections_dropped
                    .with_label_values(&["metrics", "timeout"])
                    .inc();
            }
        });
    }
}

/// Binds the metrics listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let m = Metrics::new();
        m.backup_last_success
            .with_label_values(&["files"])
            .set(1.7e9);
        m.schedule_skipped
            .with_label_values(&["nightly", "busy"])
            .inc();
        let text = m.render();
        for name in [
            "hopsdr_build_info",
            "hopsdr_start_time_seconds",
            "hopsdr_backup_last_success_timestamp_seconds",
            "hopsdr_backups_total",
            "hopsdr_job_running",
            "hopsdr_repository_bytes",
            "hopsdr_schedule_skipped_total",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} in {text}"
            );
        }
        assert!(
            text.contains("hopsdr_schedule_skipped_total{reason=\"busy\",schedule=\"nightly\"} 1")
        );
    }
}
