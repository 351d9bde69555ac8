//! Storage backends for idempotency records: one small trait, an in-process moka
//! store and (feature `redis`) a shared Redis store.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, StatusCode};
use bytes::Bytes;
use moka::future::Cache;
use moka::ops::compute::Op;
use moka::policy::EvictionPolicy;

/// SHA-256 over the request (method, path and query, body).
pub(crate) type Fingerprint = [u8; 32];

/// Identifies one in-flight marker, so only its owner completes or releases it.
pub(crate) type Ticket = u128;

/// A 2xx response kept for replay.
#[derive(Debug, Clone)]
pub(crate) struct StoredResponse {
    pub(crate) fingerprint: Fingerprint,
    pub(crate) status: StatusCode,
    /// `content-type` and the configured replayable headers.
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) body: Bytes,
}

/// The outcome of trying to claim a key.
#[derive(Debug)]
pub(crate) enum Begin {
    /// The key was free and is now marked in flight by us.
    Started(Ticket),
    /// Another request with the same key and fingerprint is running.
    InProgress,
    /// The same request completed before: replay this.
    Completed(Arc<StoredResponse>),
    /// The key was used with a different request.
    Mismatch,
}

/// A backend failure (Redis unreachable, a malformed record…).
#[derive(Debug)]
pub(crate) struct StoreError(pub(crate) Box<dyn std::error::Error + Send + Sync + 'static>);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "idempotency store: {}", self.0)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

impl StoreError {
    pub(crate) fn msg(msg: &'static str) -> Self {
        Self(msg.into())
    }
}

/// The storage contract. Every operation is atomic per key.
pub(crate) trait Store: Send + Sync {
    /// Claims `key` for a request with `fingerprint`, or reports what holds it.
    fn try_begin(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
    ) -> impl Future<Output = Result<Begin, StoreError>> + Send;

    /// Replaces our in-flight marker with the response (no-op when the marker is gone).
    fn complete(
        &self,
        key: &str,
        ticket: Ticket,
        response: StoredResponse,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes the key if it still holds our in-flight marker.
    fn release(
        &self,
        key: &str,
        ticket: Ticket,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

// ---- in-process (moka) -----------------------------------------------------------------

#[derive(Debug, Clone)]
enum Slot {
    InFlight {
        fingerprint: Fingerprint,
        ticket: Ticket,
    },
    Done(Arc<StoredResponse>),
}

/// Single-process store: a moka cache bounded by entry count, LRU eviction, per-entry TTL.
pub(crate) struct MemoryStore {
    cache: Cache<String, Slot>,
    next_ticket: AtomicU64,
}

impl MemoryStore {
    pub(crate) fn new(max_size: u64, ttl: Duration) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(max_size)
                .time_to_live(ttl)
                // LRU, not TinyLFU: a fresh in-flight marker must never be refused admission.
                .eviction_policy(EvictionPolicy::lru())
                .build(),
            next_ticket: AtomicU64::new(1),
        }
    }
}

impl Store for MemoryStore {
    async fn try_begin(&self, key: &str, fingerprint: &Fingerprint) -> Result<Begin, StoreError> {
        let ticket = Ticket::from(self.next_ticket.fetch_add(1, Ordering::Relaxed));
        let mut outcome = Begin::Started(ticket);
        let fp = *fingerprint;
        self.cache
            .entry_by_ref(key)
            .and_compute_with(|existing| {
                let op = match existing.map(|e| e.into_value()) {
                    None => Op::Put(Slot::InFlight {
                        fingerprint: fp,
                        ticket,
                    }),
                    Some(Slot::InFlight { fingerprint, .. }) => {
                        outcome = if fingerprint == fp {
                            Begin::InProgress
                        } else {
                            Begin::Mismatch
                        };
                        Op::Nop
                    }
                    Some(Slot::Done(resp)) => {
                        outcome = if resp.fingerprint == fp {
                            Begin::Completed(resp)
                        } else {
                            Begin::Mismatch
                        };
                        Op::Nop
                    }
                };
                std::future::ready(op)
            })
            .await;
        Ok(outcome)
    }

    async fn complete(
        &self,
        key: &str,
        ticket: Ticket,
        response: StoredResponse,
    ) -> Result<(), StoreError> {
        let response = Arc::new(response);
        self.cache
            .entry_by_ref(key)
            .and_compute_with(|existing| {
                let op = match existing.map(|e| e.into_value()) {
                    Some(Slot::InFlight { ticket: t, .. }) if t == ticket => {
                        Op::Put(Slot::Done(response))
                    }
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
        Ok(())
    }

    async fn release(&self, key: &str, ticket: Ticket) -> Result<(), StoreError> {
        self.cache
            .entry_by_ref(key)
            .and_compute_with(|existing| {
                let op = match existing.map(|e| e.into_value()) {
                    Some(Slot::InFlight { ticket: t, .. }) if t == ticket => Op::Remove,
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
        Ok(())
    }
}

// ---- record encoding (Redis values) ----------------------------------------------------

/// In-flight marker: `P` + fingerprint + ticket.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn encode_marker(fingerprint: &Fingerprint, ticket: Ticket) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 32 + 16);
    out.push(b'P');
    out.extend_from_slice(fingerprint);
    out.extend_from_slice(&ticket.to_be_bytes());
    out
}

/// Completed record: `C` + fingerprint + status (u16) + header count (u16) +
/// headers (`u16` name length, name, `u32` value length, value) + body.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn encode_response(resp: &StoredResponse) -> Result<Vec<u8>, StoreError> {
    let headers_len: usize = resp
        .headers
        .iter()
        .map(|(n, v)| 6 + n.as_str().len() + v.len())
        .sum();
    let mut out = Vec::with_capacity(1 + 32 + 4 + headers_len + resp.body.len());
    out.push(b'C');
    out.extend_from_slice(&resp.fingerprint);
    out.extend_from_slice(&resp.status.as_u16().to_be_bytes());
    let count =
        u16::try_from(resp.headers.len()).map_err(|_| StoreError::msg("too many headers"))?;
    out.extend_from_slice(&count.to_be_bytes());
    for (name, value) in &resp.headers {
        let n = u16::try_from(name.as_str().len())
            .map_err(|_| StoreError::msg("header name too long"))?;
        let v = u32::try_from(value.len()).map_err(|_| StoreError::msg("header too long"))?;
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(&v.to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(&resp.body);
    Ok(out)
}

/// A record read back from a shared store.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum Record {
    InFlight { fingerprint: Fingerprint },
    Done(StoredResponse),
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.0.len() < n {
            return Err(StoreError::msg("truncated idempotency record"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn decode_record(raw: Vec<u8>) -> Result<Record, StoreError> {
    let mut r = Reader(&raw);
    let tag = r.array::<1>()?[0];
    let fingerprint = r.array::<32>()?;
    match tag {
        b'P' => {
            r.array::<16>()?; // the owner's ticket
            Ok(Record::InFlight { fingerprint })
        }
        b'C' => {
            let status = StatusCode::from_u16(u16::from_be_bytes(r.array::<2>()?))
                .map_err(|_| StoreError::msg("bad status in idempotency record"))?;
            let count = u16::from_be_bytes(r.array::<2>()?);
            let mut headers = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                let n = usize::from(u16::from_be_bytes(r.array::<2>()?));
                let name = HeaderName::from_bytes(r.take(n)?)
                    .map_err(|_| StoreError::msg("bad header name in idempotency record"))?;
                let v = u32::from_be_bytes(r.array::<4>()?) as usize;
                let value = HeaderValue::from_bytes(r.take(v)?)
                    .map_err(|_| StoreError::msg("bad header value in idempotency record"))?;
                headers.push((name, value));
            }
            let offset = raw.len() - r.0.len();
            let mut body = Bytes::from(raw);
            let body = body.split_off(offset);
            Ok(Record::Done(StoredResponse {
                fingerprint,
                status,
                headers,
                body,
            }))
        }
        _ => Err(StoreError::msg("unknown idempotency record")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let resp = StoredResponse {
            fingerprint: [7; 32],
            status: StatusCode::CREATED,
            headers: vec![(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body: Bytes::from_static(b"{\"n\":1}"),
        };
        let Ok(Record::Done(back)) = decode_record(encode_response(&resp).unwrap_or_default())
        else {
            panic!("not a completed record");
        };
        assert_eq!(back.status, StatusCode::CREATED);
        assert_eq!(back.headers, resp.headers);
        assert_eq!(back.body, resp.body);
        assert_eq!(back.fingerprint, [7; 32]);

        let Ok(Record::InFlight { fingerprint }) = decode_record(encode_marker(&[1; 32], 42))
        else {
            panic!("not a marker");
        };
        assert_eq!(fingerprint, [1; 32]);
        assert!(decode_record(vec![b'C', 1, 2]).is_err());
    }
}
