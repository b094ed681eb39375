//! KEDA's external scaler protocol (gRPC), served with tonic.
//!
//! KEDA's operator polls the scaler named in a ScaledObject's `external`
//! trigger. The scaler reports one metric, `weir_workers`, with a target
//! of 1 per replica: KEDA hands both to the HPA as an external metric of
//! type `AverageValue`, for which the HPA's desired replica count is
//! `ceil(metricValue / targetAverageValue)` = `ceil(desired / 1)` =
//! `desired`, within the ScaledObject's min and max (and the HPA's 10 %
//! tolerance, which can hold back a change of one worker above 10). So
//! KEDA runs exactly the count the scaler decided. `IsActive` is true
//! while that count is above 0 (KEDA scales to zero only when it is false
//! and `minReplicaCount` is 0).
//!
//! The server is plaintext gRPC (HTTP/2 without TLS): the scaler listens
//! on loopback by default and in a cluster behind a NetworkPolicy that
//! admits KEDA's operator only (deploy/kubernetes/scale-out/scaler.yaml);
//! tonic is built without a TLS stack.

use std::net::SocketAddr;
use std::pin::Pin;

use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::proto::external_scaler_server::{ExternalScaler, ExternalScalerServer};
use crate::proto::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef,
};

/// The metric KEDA scales on.
pub const METRIC: &str = "weir_workers";
/// Its target per replica (see the module docs for the arithmetic).
pub const TARGET_PER_REPLICA: i64 = 1;

/// The replica count the HPA derives from a metric value and its
/// `AverageValue` target: `ceil(value / target)`.
pub fn hpa_replicas(value: f64, target: f64) -> u64 {
    (value / target).ceil().max(0.0) as u64
}

/// The service: answers from the latest decision.
#[derive(Debug, Clone)]
pub struct Service {
    desired: watch::Receiver<usize>,
}

impl Service {
    /// A service reporting the counts sent on `desired`.
    pub fn new(desired: watch::Receiver<usize>) -> Service {
        Service { desired }
    }

    fn desired(&self) -> usize {
        *self.desired.borrow()
    }
}

type ActiveStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<IsActiveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalScaler for Service {
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        let active = self.desired() > 0;
        tracing::debug!(scaled_object = %request.get_ref().name, active, "KEDA IsActive");
        Ok(Response::new(IsActiveResponse { result: active }))
    }

    type StreamIsActiveStream = ActiveStream;

    /// The current answer at once, then each change of it.
    async fn stream_is_active(
        &self,
        _request: Request<ScaledObjectRef>,
    ) -> Result<Response<ActiveStream>, Status> {
        let rx = self.desired.clone();
        let stream = futures_util::stream::unfold((rx, None), |(mut rx, last)| async move {
            loop {
                let active = *rx.borrow_and_update() > 0;
                if last != Some(active) {
                    return Some((Ok(IsActiveResponse { result: active }), (rx, Some(active))));
                }
                // The sender gone: the scaler is stopping; end the stream.
                rx.changed().await.ok()?;
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_metric_spec(
        &self,
        _request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        Ok(Response::new(GetMetricSpecResponse {
            metric_specs: vec![MetricSpec {
                metric_name: METRIC.to_string(),
                target_size: TARGET_PER_REPLICA,
                target_size_float: TARGET_PER_REPLICA as f64,
            }],
        }))
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let name = request.into_inner().metric_name;
        // KEDA may pass the name as given in the spec or with its
        // trigger-index prefix (`s0-weir_workers`).
        if !(name.is_empty() || name == METRIC || name.ends_with(&format!("-{METRIC}"))) {
            return Err(Status::not_found(format!(
                "unknown metric {name:?}: this scaler reports {METRIC:?}"
            )));
        }
        let desired = self.desired();
        Ok(Response::new(GetMetricsResponse {
            metric_values: vec![MetricValue {
                metric_name: if name.is_empty() { METRIC.into() } else { name },
                metric_value: desired as i64,
                metric_value_float: desired as f64,
            }],
        }))
    }
}

/// A bound listener for [`serve`] (bound before serving, so that a busy
/// port is an error at start and tests can listen on port 0).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--listen {addr}: cannot listen: {e}"))
}

/// Serves the protocol on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Service,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tonic::transport::Server::builder()
        .add_service(ExternalScalerServer::new(service))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        )
        .await
        .map_err(|e| anyhow::anyhow!("gRPC server failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpa_arithmetic_gives_the_desired_count() {
        for desired in [0usize, 1, 2, 7, 16, 1000] {
            assert_eq!(
                hpa_replicas(desired as f64, TARGET_PER_REPLICA as f64),
                desired as u64
            );
        }
    }
}
