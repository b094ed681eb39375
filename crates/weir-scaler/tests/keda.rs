//! KEDA's side of the protocol against a real scaler: the scaler that
//! `weir scaler` runs (same code, in a thread), scraping a real HTTP
//! `/metrics` endpoint this test serves with a load it controls, and a
//! tonic client speaking KEDA's external scaler protocol to it.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use weir_scaler::cli::ServeArgs;
use weir_scaler::keda::{hpa_replicas, METRIC};
use weir_scaler::observe::Series;
use weir_scaler::proto::external_scaler_client::ExternalScalerClient;
use weir_scaler::proto::{GetMetricsRequest, ScaledObjectRef};
use weir_scaler::run::Scaler;

const SERIES: Series = Series {
    source_records: "weir_source_records_total",
    consumer_lag: "weir_log_consumer_lag_records",
};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

/// A worker's `/metrics` whose source counter grows at `rate` records/s.
struct FakeWorker {
    state: Mutex<(Instant, f64, f64)>, // (since, records at since, rate)
}

impl FakeWorker {
    fn records(&self) -> f64 {
        let s = self.state.lock().unwrap();
        s.1 + s.2 * s.0.elapsed().as_secs_f64()
    }
    fn set_rate(&self, rate: f64) {
        let mut s = self.state.lock().unwrap();
        let now = Instant::now();
        s.1 += s.2 * now.duration_since(s.0).as_secs_f64();
        s.0 = now;
        s.2 = rate;
    }
}

fn serve_worker(rate: f64) -> (String, Arc<FakeWorker>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let w = Arc::new(FakeWorker {
        state: Mutex::new((Instant::now(), 0.0, rate)),
    });
    let worker = w.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let mut req = Vec::new();
            while !req.windows(4).any(|x| x == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let body = format!(
                "# TYPE weir_source_records_total counter\n\
                 weir_source_records_total{{pipeline=\"p\",source=\"in\"}} {:.0}\n\
                 # TYPE weir_log_consumer_lag_records gauge\n\
                 weir_log_consumer_lag_records{{stream=\"in\"}} 0\n",
                worker.records()
            );
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                body.len(),
                body
            );
        }
    });
    (addr, w)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn keda_reads_the_desired_count_and_it_follows_the_load() {
    // 3 900 ev/s at 1 000 ev/s per worker and 80 % utilisation: 4.875,
    // so 5 workers; 7 900 ev/s: 9.875, so 10.
    let (worker_addr, worker) = serve_worker(3_900.0);
    let port = free_port();
    let cli = Cli::try_parse_from([
        "scaler",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--workers-metrics",
        &worker_addr,
        "--worker-capacity",
        "1000",
        "--interval",
        "200ms",
        "--startup-time",
        "1s",
        "--scale-down-window",
        "1s",
        "--forecast-window",
        "2s",
        "--max-workers",
        "50",
    ])
    .unwrap();
    let scaler = Scaler::new(cli.serve, SERIES).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::spawn(move || scaler.run(stop))
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = connect(port).await;
        let mut client = ExternalScalerClient::new(channel);
        let object = ScaledObjectRef {
            name: "weir-worker".into(),
            namespace: "weir".into(),
            scaler_metadata: [("pipeline".to_string(), "fraud-v1".to_string())].into(),
        };
        let spec = client
            .get_metric_spec(object.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(spec.metric_specs.len(), 1);
        let spec = &spec.metric_specs[0];
        assert_eq!(
            (
                spec.metric_name.as_str(),
                spec.target_size,
                spec.target_size_float
            ),
            (METRIC, 1, 1.0)
        );
        assert!(
            client
                .is_active(object.clone())
                .await
                .unwrap()
                .into_inner()
                .result
        );

        let desired = |client: &mut ExternalScalerClient<tonic::transport::Channel>| {
            let mut client = client.clone();
            let object = object.clone();
            async move {
                let r = client
                    .get_metrics(GetMetricsRequest {
                        scaled_object_ref: Some(object),
                        metric_name: METRIC.into(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let v = &r.metric_values[0];
                assert_eq!(v.metric_name, METRIC);
                assert_eq!(v.metric_value as f64, v.metric_value_float);
                // What the HPA makes of it (AverageValue, target 1).
                hpa_replicas(v.metric_value_float, spec_target()) as usize
            }
        };
        let steady = wait_for(&mut client, &desired, |n| n == 5, "5 workers at 3 900 ev/s").await;
        assert_eq!(steady, 5);

        worker.set_rate(7_900.0);
        let risen = wait_for(
            &mut client,
            &desired,
            |n| n >= 10,
            "10+ workers at 7 900 ev/s",
        )
        .await;
        assert!(risen >= 10, "{risen}");
        // Once the trend has left the window, exactly 10.
        let settled = wait_for(&mut client, &desired, |n| n == 10, "10 workers").await;
        assert_eq!(settled, 10);

        // A metric this scaler does not report is refused.
        let e = client
            .get_metrics(GetMetricsRequest {
                scaled_object_ref: Some(object.clone()),
                metric_name: "something_else".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);

        // StreamIsActive sends the current answer at once.
        let mut stream = client.stream_is_active(object).await.unwrap().into_inner();
        assert!(stream.message().await.unwrap().unwrap().result);
    });
    stop.store(true, Ordering::Relaxed);
    thread.join().unwrap().unwrap();
}

fn spec_target() -> f64 {
    1.0
}

async fn connect(port: u16) -> tonic::transport::Channel {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
        {
            Ok(c) => return c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot connect to the scaler: {e}"),
        }
    }
}

async fn wait_for<F, Fut>(
    client: &mut ExternalScalerClient<tonic::transport::Channel>,
    desired: &F,
    ok: impl Fn(usize) -> bool,
    what: &str,
) -> usize
where
    F: Fn(&mut ExternalScalerClient<tonic::transport::Channel>) -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let n = desired(client).await;
        if ok(n) {
            return n;
        }
        seen.push(n);
        assert!(Instant::now() < deadline, "never {what}; saw {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
