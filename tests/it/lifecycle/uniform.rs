//! The mail-request endpoints (`/verify-email/resend`, `/forgot-password`,
//! `/magic-link/request`) and the code check (`/verify-email` with a wrong code) answer
//! a known address and an unknown one alike: the same status, body and headers, and the
//! same time within noise, whether the known account has a live code (a wrong guess
//! spends one of its attempts) or none (a decoy row's attempt is spent instead). One
//! known gap is measured and printed, not asserted: a live code on MariaDB.
//!
//! The timing is measured the way an attacker would: over a real TCP connection (one
//! keep-alive HTTP/1.1 connection per kind, so neither pays a handshake), on a
//! two-worker runtime, requests for a known and an unknown address strictly alternating
//! (which of the two goes first flips every pair), after a warm-up. Each kind's median
//! latency is compared; see [`NOISE_FLOOR`] and [`NOISE_SHARE`] for the bound.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{address, env, lifecycle, smtp};
use crate::support::db::databases;

/// Pairs sent before measuring (connections, caches, statement preparation, the
/// per-account resend limit reached for the known address).
const WARM_UP: usize = 40;
/// Measured requests of each kind.
const SAMPLES: usize = 200;
/// The smallest difference of medians that fails the test. One request here takes
/// roughly 0.1–0.5 ms in process; a scheduling hiccup of the shared two-core machine
/// shifts single samples by milliseconds but moves a median of 200 by far less. The
/// leak this test guards against (the per-account work, a token insert and a mail
/// queued, done before or alongside the answer) costs 0.5 ms and more.
const NOISE_FLOOR: Duration = Duration::from_micros(250);
/// The bound relative to the faster kind's median: on a loaded machine both medians
/// grow together, and so does their jitter.
const NOISE_SHARE: f64 = 0.25;
/// Independent measurements of one endpoint before it fails: a leak is systematic and
/// shows in every one (the per-account work done on the request path costs several
/// times the bound), while other tests of the same binary loading the two cores can
/// push a single measurement over it.
const ROUNDS: usize = 5;

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: std::net::SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: Vec::with_capacity(4096),
        }
    }

    /// POSTs `body` to `path`; returns the head (status line and headers, `date`
    /// removed), the body, and how long the round trip took.
    async fn post(&mut self, path: &str, body: &str) -> (String, String, Duration) {
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let started = Instant::now();
        self.stream.write_all(request.as_bytes()).await.unwrap();
        self.buf.clear();
        let (head_end, length) = loop {
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..at]).to_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse::<usize>().unwrap())
                    .expect("a content-length");
                break (at + 4, length);
            }
        };
        while self.buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let took = started.elapsed();
        let head: String = String::from_utf8_lossy(&self.buf[..head_end])
            .lines()
            .filter(|l| !l.to_ascii_lowercase().starts_with("date:"))
            .collect::<Vec<_>>()
            .join("\n");
        let body = String::from_utf8_lossy(&self.buf[head_end..head_end + length]).into_owned();
        (head, body, took)
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Alternates requests to `path` about a known and an unknown account and returns both
/// medians, checking that every answer is the same, with `status`.
async fn medians(
    addr: std::net::SocketAddr,
    path: &str,
    status: u16,
    known_body: &str,
    unknown_body: &str,
) -> (Duration, Duration) {
    let mut k = Conn::open(addr).await;
    let mut u = Conn::open(addr).await;
    let (mut on_known, mut on_unknown) = (Vec::new(), Vec::new());
    let mut reference: Option<(String, String)> = None;
    for i in 0..WARM_UP + SAMPLES {
        let pair = if i % 2 == 0 {
            let a = k.post(path, known_body).await;
            let b = u.post(path, unknown_body).await;
            (a, b)
        } else {
            let b = u.post(path, unknown_body).await;
            let a = k.post(path, known_body).await;
            (a, b)
        };
        let ((kh, kb, kt), (uh, ub, ut)) = pair;
        assert!(
            kh.starts_with(&format!("HTTP/1.1 {status} ")),
            "{path}: {kh}"
        );
        assert_eq!(
            (&kh, &kb),
            (&uh, &ub),
            "{path}: known and unknown answers differ"
        );
        match &reference {
            Some(r) => assert_eq!((&r.0, &r.1), (&kh, &kb), "{path}: the answer changed"),
            None => reference = Some((kh, kb)),
        }
        if i >= WARM_UP {
            on_known.push(kt);
            on_unknown.push(ut);
        }
    }
    (median(on_known), median(on_unknown))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_and_unknown_addresses_get_the_same_answer_in_the_same_time() {
    let Some((url, maildir)) = smtp("lifecycle uniform answers") else {
        return;
    };
    let mut failures = Vec::new();
    for t in databases("lifecycle_uniform").await {
        let n = t.name;
        // Every request does its full work: no resend limit stops the known account's
        // messages, and its code survives every wrong guess.
        let config = lifecycle(&url)
            .magic_link(true)
            .resend_limits(1000, 1000)
            .max_code_attempts(1_000_000);
        let e = env(&t, config, &maildir).await;
        let known = address();
        e.register(&known).await;
        let unknown = address();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = e.app.clone();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let id = |who: &str| serde_json::json!({ "identifier": who }).to_string();
        // A wrong code (a code is 6 digits; the chance this one is right is 10^-6).
        let code =
            |who: &str| serde_json::json!({ "identifier": who, "code": "000000" }).to_string();
        // The code check first, of an account without a live code (the clock is moved
        // past the registration code's lifetime): the same statements as an unknown
        // one. Then the mail requests.
        e.lifecycle.settled().await;
        e.clock.advance(Duration::from_secs(3600));
        // Last, the code check of an account registered now, with one live code: each
        // wrong guess spends one of its attempts (a real row written), which the unknown
        // path matches with a decoy row's.
        let live = address();
        e.register(&live).await;
        e.lifecycle.settled().await;
        let cases = [
            (
                "no live code",
                "/auth/verify-email",
                401,
                code(&known),
                code(&unknown),
            ),
            (
                "",
                "/auth/verify-email/resend",
                202,
                id(&known),
                id(&unknown),
            ),
            ("", "/auth/forgot-password", 202, id(&known), id(&unknown)),
            (
                "",
                "/auth/magic-link/request",
                202,
                id(&known),
                id(&unknown),
            ),
            (
                "a live code",
                "/auth/verify-email",
                401,
                code(&live),
                code(&unknown),
            ),
        ];
        for (label, path, status, known_body, unknown_body) in &cases {
            let mut rounds = Vec::new();
            for _ in 0..ROUNDS {
                let (k, u) = medians(addr, path, *status, known_body, unknown_body).await;
                let bound = NOISE_FLOOR.max(k.min(u).mul_f64(NOISE_SHARE));
                let diff = k.abs_diff(u);
                eprintln!(
                    "{n} {path} {label}: known {k:?}, unknown {u:?}, diff {diff:?}, bound {bound:?}"
                );
                rounds.push(format!("known {k:?}, unknown {u:?} (bound {bound:?})"));
                if diff < bound {
                    rounds.clear();
                    break;
                }
            }
            // Known gap, measured and reported but not asserted: on MariaDB a wrong guess
            // at a live code (its row read and its attempt written) costs 0.5–1 ms more
            // than the decoy path (docs/SECURITY.md, "Account lifecycle").
            let known_gap = n == "mysql" && *label == "a live code";
            if known_gap {
                eprintln!("{n} {path} {label}: known gap, not asserted: {rounds:?}");
            } else if !rounds.is_empty() {
                failures.push(format!("{n} {path} {label}: {rounds:?}"));
            }
        }
        e.lifecycle.settled().await;
        server.abort();
        t.cleanup().await;
    }
    assert!(failures.is_empty(), "{failures:?}");
}
