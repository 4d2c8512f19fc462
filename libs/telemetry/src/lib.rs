//! Telemetry shared by every Mamori role: structured logs (`tracing`), span
//! export over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, W3C trace
//! context carried inside event batches, and the operations HTTP endpoint
//! (`/metrics` in Prometheus format, `/healthz`, `/readyz`).

mod escape;
mod ops;
mod supervise;
mod trace;

pub use escape::OneLine;
pub use ops::{Readiness, metrics_handle, serve_ops};
pub use supervise::Supervisor;
pub use trace::{TelemetryGuard, current_traceparent, init, set_parent_from_traceparent};
