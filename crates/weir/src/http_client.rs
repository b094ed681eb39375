//! The HTTP client of `weir top`, `weir tap` and `weir chaos`: weir-metrics'
//! (feature `client`), which the scaler shares; its tests stay here, next
//! to the commands' tests that use their server.

pub use weir_metrics::client::*;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hyper::body::Bytes;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::thread;
    use std::time::Duration;

    /// Serves each of `responses` (as pieces written with a pause between
    /// them) to one connection, in order; returns the address and the
    /// requests received (their heads).
    pub(crate) fn serve(responses: Vec<Vec<Vec<u8>>>) -> (String, thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handle = thread::spawn(move || {
            let mut requests = Vec::new();
            for pieces in responses {
                let (mut conn, _) = listener.accept().unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = conn.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                requests.push(String::from_utf8_lossy(&request).into_owned());
                for piece in pieces {
                    if conn.write_all(&piece).is_err() {
                        break;
                    }
                    let _ = conn.flush();
                    thread::sleep(Duration::from_millis(15));
                }
            }
            requests
        });
        (addr, handle)
    }

    fn pieces(parts: &[&[u8]]) -> Vec<Vec<u8>> {
        parts.iter().map(|p| p.to_vec()).collect()
    }

    #[test]
    fn endpoint_parsing() {
        for ok in [
            "127.0.0.1:9464",
            "http://127.0.0.1:9464",
            "HTTP://127.0.0.1:9464/",
            " 127.0.0.1:9464 ",
        ] {
            assert_eq!(Endpoint::parse(ok).unwrap().authority(), "127.0.0.1:9464");
        }
        assert_eq!(
            Endpoint::parse("http://[::1]:80").unwrap().authority(),
            "[::1]:80"
        );
        assert_eq!(
            Endpoint::parse("localhost:9464").unwrap().url("/metrics"),
            "http://localhost:9464/metrics"
        );
        for bad in [
            "",
            "localhost",
            "http://localhost",
            ":9464",
            "https://a:1",
            "a:1/metrics",
            "a:port",
            "a:70000",
            "::1",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad:?} accepted");
        }
        let e = Endpoint::parse("https://127.0.0.1:9464").unwrap_err();
        assert!(format!("{e}").contains("https is not supported"), "{e}");
    }

    #[test]
    fn get_over_tcp_content_length_chunked_close_and_errors() {
        let (addr, server) = serve(vec![
            pieces(&[b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\nhello world"]),
            pieces(&[
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-",
                b"Encoding: chunked\r\n\r\n5\r\nhel",
                b"lo\r\n6\r\n world\r",
                b"\n0\r\n\r\n",
            ]),
            pieces(&[b"HTTP/1.0 200 OK\r\n\r\nuntil ", b"the end"]),
            pieces(&[b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nshort"]),
            pieces(&[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n12345"]),
            pieces(&[b"HTTP/1.1 404 Gone Fishing\r\nContent-Length: 4\r\n\r\nnope"]),
        ]);
        let ep = Endpoint::parse(&format!("http://{addr}")).unwrap();
        let t = Duration::from_secs(5);

        let r = get(&ep, "/metrics", t, 1 << 20).unwrap();
        assert_eq!((r.status, r.reason.as_str()), (200, "OK"));
        assert_eq!(r.body, b"hello world");

        let mut r = get_streaming(&ep, "/tap/x?rate=5", t, None).unwrap();
        assert_eq!(r.status, 200);
        let mut parts = Vec::new();
        while let Some(b) = r.body.next_bytes().unwrap() {
            parts.push(b);
        }
        assert_eq!(parts.concat(), b"hello world");
        assert!(parts.len() >= 2, "streamed as it arrived: {parts:?}");

        let r = get(&ep, "/", t, 1 << 20).unwrap();
        assert_eq!(r.body, b"until the end");

        let e = get(&ep, "/", t, 1 << 20).unwrap_err();
        assert!(
            format!("{e:#}").contains("end of file before message length reached"),
            "{e:#}"
        );

        let e = get(&ep, "/", t, 3).unwrap_err();
        assert!(format!("{e:#}").contains("over 3 bytes"), "{e:#}");

        let r = get(&ep, "/", t, 1 << 20).unwrap();
        assert_eq!((r.status, r.reason.as_str()), (404, "Gone Fishing"));
        assert_eq!(r.body, b"nope");

        let requests = server.join().unwrap();
        let first = requests[0].to_ascii_lowercase();
        assert!(first.starts_with("get /metrics http/1.1\r\n"), "{first}");
        assert!(first.contains(&format!("\r\nhost: {addr}\r\n")), "{first}");
        assert!(first.contains("\r\nuser-agent: weir\r\n"), "{first}");
        assert!(requests[1].starts_with("GET /tap/x?rate=5 HTTP/1.1\r\n"));
    }

    #[test]
    fn post_sends_the_body_with_its_type() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"{\"a\":1}\n") {
                let n = conn.read(&mut buf).unwrap();
                assert!(n > 0, "closed early");
                request.extend_from_slice(&buf[..n]);
            }
            conn.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            )
            .unwrap();
            String::from_utf8(request).unwrap()
        });
        let ep = Endpoint::parse(&addr).unwrap();
        let r = post(
            &ep,
            "/v1/streams/s/events",
            "application/x-ndjson",
            &[("Idempotency-Key", "k1")],
            Bytes::from_static(b"{\"a\":1}\n"),
            Duration::from_secs(5),
            1024,
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, b"ok".as_slice()));
        let request = server.join().unwrap().to_ascii_lowercase();
        assert!(request.starts_with("post /v1/streams/s/events http/1.1\r\n"));
        assert!(request.contains("\r\ncontent-type: application/x-ndjson\r\n"));
        assert!(request.contains("\r\ncontent-length: 8\r\n"));
        assert!(request.contains("\r\nidempotency-key: k1\r\n"));
    }

    #[test]
    fn connection_refused_names_the_address() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let ep = Endpoint::parse(&addr).unwrap();
        let e = get(&ep, "/metrics", Duration::from_secs(2), 1024).unwrap_err();
        let text = format!("{e:#}");
        assert!(
            text.contains(&format!("cannot connect to {addr}")),
            "{text}"
        );
    }

    #[test]
    fn server_closing_without_answer_is_an_error() {
        let (addr, server) = serve(vec![vec![]]);
        let ep = Endpoint::parse(&addr).unwrap();
        let e = get(&ep, "/metrics", Duration::from_secs(2), 1024).unwrap_err();
        assert!(format!("{e:#}").contains("without answering"), "{e:#}");
        server.join().unwrap();
    }

    #[test]
    fn a_server_that_never_answers_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let ep = Endpoint::parse(&addr).unwrap();
        let started = std::time::Instant::now();
        let e = get(&ep, "/metrics", Duration::from_millis(200), 1024).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        let text = format!("{e:#}");
        assert!(
            text.contains(&format!("GET http://{addr}/metrics"))
                && text.contains("no answer within 0.2 s"),
            "{text}"
        );
        drop(listener);
    }
}
