//! Appending records through a running `weir ingest` server.
//!
//! A stream of the log has one writer. While `weir ingest` owns a stream,
//! another process that wants to add records to it (`weir dlq replay
//! --via`) must send them through the server: one POST per batch through
//! `http_client`, with the bearer token if one is given. Records travel as
//! length-delimited frames (`application/x-protobuf`), the one body format
//! of ingest that carries any bytes unchanged (only the framing is
//! checked), so a record is stored exactly as a direct append stores it.

use std::ops::Range;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::http_client::{self, Endpoint};

/// Largest request body this client sends; batches are split to fit
/// (ingest's default limit is 8 MiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Largest answer read: the offsets, or a refusal with its reasons.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// How long a batch may take to be stored and answered.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Where and how to post records of one stream.
#[derive(Debug)]
pub struct IngestClient {
    endpoint: Endpoint,
    path: String,
}

impl IngestClient {
    /// A client posting to stream `stream` of the server at `url`
    /// (`http://HOST:PORT`, port 80 if none), with `token` as its bearer
    /// token.
    pub fn new(url: &str, stream: &str, token: Option<String>) -> anyhow::Result<IngestClient> {
        if url.starts_with("https://") {
            bail!(
                "--via {url}: only http:// is supported; to replay into a stream that an HTTPS \
                 ingest server owns, stop the server and replay without --via"
            );
        }
        let Some(rest) = url.strip_prefix("http://") else {
            bail!("--via {url}: expected http://HOST:PORT");
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '@', '?', '#']) {
            bail!("--via {url}: expected http://HOST:PORT, without a path");
        }
        let endpoint = Endpoint::parse(url)
            .with_context(|| format!("--via {url}"))?
            .with_token(token);
        Ok(IngestClient {
            endpoint,
            path: format!("/v1/streams/{stream}/events"),
        })
    }

    /// The body holding `records` as length-delimited frames.
    pub fn body(records: &[&[u8]]) -> Vec<u8> {
        let mut body = Vec::with_capacity(records.iter().map(|r| r.len() + 5).sum());
        for r in records {
            let mut n = r.len() as u64;
            while n >= 0x80 {
                body.push((n as u8 & 0x7f) | 0x80);
                n >>= 7;
            }
            body.push(n as u8);
            body.extend_from_slice(r);
        }
        body
    }

    /// Posts `records` as one request; the offsets the server stored them
    /// at, and whether it had stored this very batch before (a replay
    /// resumed after an answer was lost). Anything but a `200` that
    /// accepted every record is an error with the server's answer.
    ///
    /// The request's `Idempotency-Key` is a digest of the target and the
    /// batch, so sending the same batch again (a retry, a resumed replay)
    /// stores it once while the server remembers the key.
    pub fn append(&self, records: &[&[u8]]) -> anyhow::Result<(Range<u64>, bool)> {
        let url = self.endpoint.url(&self.path);
        let body = Self::body(records);
        let key = idempotency_key(&self.path, &body);
        let answer = http_client::post(
            &self.endpoint,
            &self.path,
            "application/x-protobuf",
            &[("idempotency-key", &key)],
            body.into(),
            TIMEOUT,
            MAX_ANSWER_BYTES,
        )
        .with_context(|| format!("cannot post to {url}"))?;
        let answer_text = String::from_utf8_lossy(&answer.body);
        if answer.status != 200 {
            bail!("{url} answered {}: {}", answer.status, answer_text.trim());
        }
        let v: serde_json::Value = serde_json::from_slice(&answer.body)
            .with_context(|| format!("the server's answer is not JSON: {answer_text}"))?;
        let accepted = v.get("accepted").and_then(|a| a.as_u64());
        let offsets = v
            .get("offsets")
            .and_then(|o| Some((o.get(0)?.as_u64()?, o.get(1)?.as_u64()?)));
        match (accepted, offsets) {
            (Some(n), Some((first, end))) if n == records.len() as u64 && end - first == n => {
                let replayed = answer
                    .headers
                    .get("idempotent-replayed")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
                Ok((first..end, replayed))
            }
            _ => bail!(
                "the server accepted other than the {} records sent: {answer_text}",
                records.len()
            ),
        }
    }
}

/// `weir-dlq-` and a 64-bit FNV-1a digest of the request path (naming the
/// target stream) and the body: the same batch to the same stream always
/// has the same key, whatever replay sends it.
fn idempotency_key(path: &str, body: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in path.as_bytes().iter().chain([0u8].iter()).chain(body) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("weir-dlq-{h:016x}-{}", body.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = IngestClient::new("http://127.0.0.1:8080/", "transactions", None).unwrap();
        assert_eq!(c.endpoint.authority(), "127.0.0.1:8080");
        assert_eq!(c.path, "/v1/streams/transactions/events");
        for bad in ["127.0.0.1:8080", "http://", "http://h:1/x", "http://u@h:1"] {
            assert!(IngestClient::new(bad, "s", None).is_err(), "{bad}");
        }
        let e = IngestClient::new("https://h:1", "s", None).unwrap_err();
        assert!(e.to_string().contains("only http://"), "{e}");
    }

    #[test]
    fn keys_follow_the_target_and_the_batch() {
        let a = idempotency_key("/v1/streams/t/events", b"\x01x");
        assert_eq!(a, idempotency_key("/v1/streams/t/events", b"\x01x"));
        assert_ne!(a, idempotency_key("/v1/streams/u/events", b"\x01x"));
        assert_ne!(a, idempotency_key("/v1/streams/t/events", b"\x01y"));
        assert!(a.len() <= 255 && a.bytes().all(|b| b.is_ascii_graphic()));
    }

    #[test]
    fn bodies_are_length_delimited() {
        let long = vec![7u8; 300];
        let body = IngestClient::body(&[b"ab", b"", &long]);
        let mut want = vec![2, b'a', b'b', 0, 0xac, 0x02];
        want.extend_from_slice(&long);
        assert_eq!(body, want);
    }
}
