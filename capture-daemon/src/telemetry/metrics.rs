//! The daemon's `/metrics`, `/healthz` and `/readyz` on `--metrics-addr`.
//!
//! Each subsystem owns its counters (plain relaxed atomics, cheap enough for the per-event
//! path) and registers them here as a [`Source`], which turns them into metric families at
//! scrape time; the `prometheus` crate's registry gathers them and its text encoder writes the
//! exposition (format 0.0.4). Nothing here knows any subsystem. No label or value ever carries
//! captured content.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
};

use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus::{
    Encoder as _, TextEncoder,
    core::{Collector, Desc},
    proto::{self, MetricFamily, MetricType},
};
use tracing::{debug, info};

/// A subsystem's metrics, read at scrape time.
pub trait Source: Send + Sync + 'static {
    /// Appends this subsystem's metric families to `out`.
    fn collect(&self, out: &mut Families);
}

/// Metric families as a [`Source`] builds them.
#[derive(Default)]
pub struct Families(Vec<MetricFamily>);

impl Families {
    /// A counter without labels. `name` ends in `_total`, as the exposition shows it.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.labelled(name, help, MetricType::COUNTER, &[], [(&[][..], value)]);
    }

    /// A gauge without labels.
    pub fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.labelled(name, help, MetricType::GAUGE, &[], [(&[][..], value)]);
    }

    /// A gauge whose value is not a count (a timestamp in seconds, for example).
    pub fn gauge_f64(&mut self, name: &str, help: &str, value: f64) {
        self.push(name, help, MetricType::GAUGE, &[], [(&[][..], value)]);
    }

    /// A family with labels: one sample per label-value set, in `label_names` order.
    pub fn labelled<'v>(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        label_names: &[&str],
        samples: impl IntoIterator<Item = (&'v [&'v str], u64)>,
    ) {
        #[expect(
            clippy::cast_precision_loss,
            reason = "the exposition format carries floats; counts stay exact below 2^53"
        )]
        let samples = samples.into_iter().map(|(labels, v)| (labels, v as f64));
        self.push(name, help, kind, label_names, samples);
    }

    /// A family with labels whose values are not counts (seconds, for example).
    pub fn labelled_f64<'v>(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        label_names: &[&str],
        samples: impl IntoIterator<Item = (&'v [&'v str], f64)>,
    ) {
        self.push(name, help, kind, label_names, samples);
    }

    fn push<'v>(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        label_names: &[&str],
        samples: impl IntoIterator<Item = (&'v [&'v str], f64)>,
    ) {
        let mut family = MetricFamily::default();
        family.set_name(name.to_owned());
        family.set_help(help.to_owned());
        family.set_field_type(kind);
        for (values, value) in samples {
            let labels = label_names
                .iter()
                .zip(values)
                .map(|(name, value)| {
                    let mut pair = proto::LabelPair::default();
                    pair.set_name((*name).to_owned());
                    pair.set_value((*value).to_owned());
                    pair
                })
                .collect();
            let mut metric = proto::Metric::default();
            metric.set_label(labels);
            if kind == MetricType::GAUGE {
                let mut g = proto::Gauge::default();
                g.set_value(value);
                metric.set_gauge(g);
            } else {
                let mut c = proto::Counter::default();
                c.set_value(value);
                metric.set_counter(c);
            }
            family.mut_metric().push(metric);
        }
        self.0.push(family);
    }

    /// These families alone in the text exposition (what a subsystem's tests look at).
    pub fn render(&self) -> String {
        encode(&self.0)
    }
}

/// One source's metrics alone in the text exposition (what a subsystem's tests look at).
pub fn render_source(source: &dyn Source) -> String {
    let mut families = Families::default();
    source.collect(&mut families);
    families.render()
}

fn encode(families: &[MetricFamily]) -> String {
    let mut out = Vec::with_capacity(8192);
    // Encoding in-memory families into a Vec cannot fail: the encoder only reports I/O errors
    // of its writer and families without a type, and `Families` always sets one.
    let _ = TextEncoder::new().encode(families, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The registry every subsystem's [`Source`] is added to, and the health state served beside it.
#[derive(Clone, Default)]
pub struct Registry {
    inner: prometheus::Registry,
    health: Arc<Health>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a subsystem's metrics. Their names and labels are read once here to describe
    /// them, so a source registered twice, or two sources with one name, are refused.
    pub fn register(&self, source: Arc<dyn Source>) -> Result<(), prometheus::Error> {
        let mut families = Families::default();
        source.collect(&mut families);
        let descs = families
            .0
            .iter()
            .map(|f| {
                let labels = f
                    .get_metric()
                    .first()
                    .map(|m| m.get_label().iter().map(|l| l.name().to_owned()).collect())
                    .unwrap_or_default();
                Desc::new(
                    f.name().to_owned(),
                    f.help().to_owned(),
                    labels,
                    std::collections::HashMap::new(),
                )
            })
            .collect::<Result<_, _>>()?;
        self.inner.register(Box::new(Adapter { descs, source }))
    }

    /// The Prometheus text exposition of every registered source.
    pub fn render(&self) -> String {
        encode(&self.inner.gather())
    }

    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }
}

struct Adapter {
    descs: Vec<Desc>,
    source: Arc<dyn Source>,
}

impl Collector for Adapter {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = Families::default();
        self.source.collect(&mut families);
        families.0
    }
}

/// `/readyz`: ready once capture runs (with `--kubernetes`, once the node's pods are listed
/// and their targets in place).
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Relaxed)
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the task is dropped.
pub async fn serve(addr: SocketAddr, metrics: Registry) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(%addr, "metrics listening");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    async move { Ok::<_, std::convert::Infallible>(route(&req, &metrics)) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await
                {
                    debug!(error = %e, "metrics connection");
                }
            });
        }
    });
    Ok(())
}

fn route(req: &Request<hyper::body::Incoming>, metrics: &Registry) -> Response<Full<Bytes>> {
    let (status, body) = match req.uri().path() {
        "/metrics" => (StatusCode::OK, metrics.render()),
        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
        "/readyz" if metrics.health().is_ready() => (StatusCode::OK, "ready\n".to_string()),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_string()),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}
