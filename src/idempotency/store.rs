//! Storage backends for idempotency records: one small trait, an in-process store
//! bounded by bytes and (feature `redis`) a shared Redis store.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderName, HeaderValue, StatusCode};
use bytes::Bytes;

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

/// What a finished handler leaves behind under its key.
#[derive(Debug)]
pub(crate) enum Completion {
    /// A 2xx response to replay.
    Replay(StoredResponse),
    /// The handler ran with this fingerprint but its response cannot be replayed
    /// (too large, trailers, a body error): retries get `IDEMPOTENCY_NOT_REPLAYABLE`.
    NotReplayable(Fingerprint),
}

impl Completion {
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn fingerprint(&self) -> &Fingerprint {
        match self {
            Self::Replay(resp) => &resp.fingerprint,
            Self::NotReplayable(fp) => fp,
        }
    }
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
    /// The same request completed before, but its response was not stored.
    NotReplayable,
    /// The key was used with a different request.
    Mismatch,
}

/// A backend failure (Redis unreachable, a malformed record, a full memory store…).
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

    /// Replaces our in-flight marker with the outcome (no-op when the marker is gone).
    fn complete(
        &self,
        key: &str,
        ticket: Ticket,
        completion: Completion,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes the key if it still holds our in-flight marker.
    fn release(
        &self,
        key: &str,
        ticket: Ticket,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

// ---- in-process ------------------------------------------------------------------------

/// Bytes counted per entry besides its key, headers and body: the map slot, the
/// expiry-queue node, the shared key allocation and the record itself (approximate).
pub(crate) const ENTRY_OVERHEAD: u64 = 192;

#[derive(Debug)]
enum Slot {
    InFlight(Fingerprint),
    Done(Arc<StoredResponse>),
    NotReplayable(Fingerprint),
}

struct Entry {
    slot: Slot,
    /// Position in `markers` (in flight) or `done` (otherwise); for markers, the ticket.
    seq: u64,
    expires: Instant,
    bytes: u64,
}

#[derive(Default)]
struct Entries {
    map: HashMap<Arc<str>, Entry>,
    /// In-flight keys in expiry order. Never evicted for space.
    markers: BTreeMap<u64, Arc<str>>,
    /// Completed keys (replayable or not) in expiry order: evicted oldest first.
    done: BTreeMap<u64, Arc<str>>,
    bytes: u64,
    /// The part of `bytes` held by in-flight markers (cannot be evicted).
    in_flight_bytes: u64,
    next_seq: u64,
}

/// Single-process store bounded by bytes: completed records are evicted oldest first
/// when space is needed; in-flight markers are never evicted (when they alone fill the
/// budget, a new key is refused with a [`StoreError`]). Every record expires after `ttl`.
pub(crate) struct MemoryStore {
    entries: Mutex<Entries>,
    ttl: Duration,
    budget: u64,
}

fn marker_bytes(key: &str) -> u64 {
    ENTRY_OVERHEAD + key.len() as u64
}

fn response_bytes(key: &str, resp: &StoredResponse) -> u64 {
    let headers: usize = resp
        .headers
        .iter()
        .map(|(n, v)| 32 + n.as_str().len() + v.len())
        .sum();
    marker_bytes(key) + (headers + resp.body.len()) as u64
}

impl Entries {
    fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn remove(&mut self, key: &str) {
        if let Some(entry) = self.map.remove(key) {
            match entry.slot {
                Slot::InFlight(_) => {
                    self.markers.remove(&entry.seq);
                    self.in_flight_bytes -= entry.bytes;
                }
                Slot::Done(_) | Slot::NotReplayable(_) => {
                    self.done.remove(&entry.seq);
                }
            }
            self.bytes -= entry.bytes;
        }
    }

    /// Drops expired records; both queues are in expiry order (one ttl for all).
    fn purge_expired(&mut self, now: Instant) {
        for markers in [true, false] {
            loop {
                let queue = if markers { &self.markers } else { &self.done };
                let Some((_, key)) = queue.first_key_value() else {
                    break;
                };
                if self.map.get(key).is_some_and(|e| e.expires > now) {
                    break;
                }
                let key = key.clone();
                self.remove(&key);
            }
        }
    }

    /// Evicts completed records, oldest first, until `bytes` more fit in `budget`.
    /// Evicts nothing and returns `false` when they cannot fit beside the markers.
    fn make_room(&mut self, bytes: u64, budget: u64) -> bool {
        if self.in_flight_bytes + bytes > budget {
            return false;
        }
        while self.bytes + bytes > budget {
            let Some((_, key)) = self.done.first_key_value() else {
                return false;
            };
            let key = key.clone();
            self.remove(&key);
        }
        true
    }

    fn insert(&mut self, key: Arc<str>, slot: Slot, expires: Instant, bytes: u64) -> u64 {
        let seq = self.next_seq();
        match slot {
            Slot::InFlight(_) => {
                self.markers.insert(seq, key.clone());
                self.in_flight_bytes += bytes;
            }
            Slot::Done(_) | Slot::NotReplayable(_) => {
                self.done.insert(seq, key.clone());
            }
        }
        self.bytes += bytes;
        self.map.insert(
            key,
            Entry {
                slot,
                seq,
                expires,
                bytes,
            },
        );
        seq
    }
}

impl MemoryStore {
    /// `budget`: the most bytes the records may take (see [`ENTRY_OVERHEAD`]).
    pub(crate) fn new(budget: u64, ttl: Duration) -> Self {
        Self {
            entries: Mutex::new(Entries::default()),
            ttl,
            budget,
        }
    }

    /// Bytes currently held by the records (always ≤ the budget).
    pub(crate) fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        // No code path panics while holding the lock; if one did, the data is still
        // consistent (every mutation is a few infallible steps).
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn begin_now(&self, key: &str, fp: &Fingerprint) -> Result<Begin, StoreError> {
        let mut entries = self.lock();
        let now = Instant::now();
        entries.purge_expired(now);
        if let Some(entry) = entries.map.get(key) {
            let (theirs, found) = match &entry.slot {
                Slot::InFlight(theirs) => (theirs, Begin::InProgress),
                Slot::Done(resp) => (&resp.fingerprint, Begin::Completed(resp.clone())),
                Slot::NotReplayable(theirs) => (theirs, Begin::NotReplayable),
            };
            return Ok(if theirs == fp { found } else { Begin::Mismatch });
        }
        let bytes = marker_bytes(key);
        if !entries.make_room(bytes, self.budget) {
            return Err(StoreError::msg(
                "the in-process idempotency store is full of in-flight requests",
            ));
        }
        let seq = entries.insert(key.into(), Slot::InFlight(*fp), now + self.ttl, bytes);
        Ok(Begin::Started(Ticket::from(seq)))
    }

    fn complete_now(&self, key: &str, ticket: Ticket, completion: Completion) {
        let mut entries = self.lock();
        let now = Instant::now();
        entries.purge_expired(now);
        let ours = entries.map.get_key_value(key).and_then(|(k, e)| {
            let mine = matches!(e.slot, Slot::InFlight(_)) && Ticket::from(e.seq) == ticket;
            mine.then(|| k.clone())
        });
        let Some(key) = ours else {
            tracing::warn!("idempotency: in-flight marker expired before the outcome was stored");
            return;
        };
        entries.remove(&key);
        let (slot, bytes) = match completion {
            Completion::Replay(resp) => {
                let bytes = response_bytes(&key, &resp);
                (Slot::Done(Arc::new(resp)), bytes)
            }
            Completion::NotReplayable(fp) => (Slot::NotReplayable(fp), marker_bytes(&key)),
        };
        // A marker's worth of bytes was just freed, so a not-replayable record always fits.
        let (slot, bytes) = match slot {
            Slot::Done(resp) if !entries.make_room(bytes, self.budget) => {
                tracing::warn!(
                    "idempotency: response does not fit the memory budget; recorded as not replayable"
                );
                (Slot::NotReplayable(resp.fingerprint), marker_bytes(&key))
            }
            other => (other, bytes),
        };
        entries.make_room(bytes, self.budget);
        entries.insert(key, slot, now + self.ttl, bytes);
    }

    fn release_now(&self, key: &str, ticket: Ticket) {
        let mut entries = self.lock();
        let mine = entries
            .map
            .get(key)
            .is_some_and(|e| matches!(e.slot, Slot::InFlight(_)) && Ticket::from(e.seq) == ticket);
        if mine {
            entries.remove(key);
        }
    }
}

impl Store for MemoryStore {
    async fn try_begin(&self, key: &str, fingerprint: &Fingerprint) -> Result<Begin, StoreError> {
        self.begin_now(key, fingerprint)
    }

    async fn complete(
        &self,
        key: &str,
        ticket: Ticket,
        completion: Completion,
    ) -> Result<(), StoreError> {
        self.complete_now(key, ticket, completion);
        Ok(())
    }

    async fn release(&self, key: &str, ticket: Ticket) -> Result<(), StoreError> {
        self.release_now(key, ticket);
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

/// Completed-not-replayable record: `N` + fingerprint.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn encode_not_replayable(fingerprint: &Fingerprint) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 32);
    out.push(b'N');
    out.extend_from_slice(fingerprint);
    out
}

/// The stored form of a completion.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn encode_completion(completion: &Completion) -> Result<Vec<u8>, StoreError> {
    match completion {
        Completion::Replay(resp) => encode_response(resp),
        Completion::NotReplayable(fp) => Ok(encode_not_replayable(fp)),
    }
}

/// Completed record: `C` + fingerprint + status (u16) + header count (u16) +
/// headers (`u16` name length, name, `u32` value length, value) + body.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
fn encode_response(resp: &StoredResponse) -> Result<Vec<u8>, StoreError> {
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
    NotReplayable { fingerprint: Fingerprint },
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
        b'N' => Ok(Record::NotReplayable { fingerprint }),
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
        let Ok(Record::Done(back)) =
            decode_record(encode_completion(&Completion::Replay(resp.clone())).unwrap_or_default())
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

        let Ok(Record::NotReplayable { fingerprint }) =
            decode_record(encode_not_replayable(&[3; 32]))
        else {
            panic!("not a not-replayable record");
        };
        assert_eq!(fingerprint, [3; 32]);
    }

    fn response(fp: u8, body: usize) -> Completion {
        Completion::Replay(StoredResponse {
            fingerprint: [fp; 32],
            status: StatusCode::CREATED,
            headers: vec![],
            body: Bytes::from(vec![b'x'; body]),
        })
    }

    fn started(begin: Result<Begin, StoreError>) -> Ticket {
        match begin {
            Ok(Begin::Started(ticket)) => ticket,
            other => panic!("not started: {other:?}"),
        }
    }

    #[test]
    fn memory_store_evicts_completed_records_never_markers() {
        let budget = 8 * ENTRY_OVERHEAD;
        let store = MemoryStore::new(budget, Duration::from_secs(60));
        let held = started(store.begin_now("held", &[9; 32]));
        for i in 0..50u8 {
            let key = format!("k{i}");
            let ticket = started(store.begin_now(&key, &[i; 32]));
            store.complete_now(&key, ticket, response(i, 100));
            assert!(store.bytes() <= budget, "{} > {budget}", store.bytes());
        }
        assert!(matches!(
            store.begin_now("held", &[9; 32]),
            Ok(Begin::InProgress)
        ));
        assert!(matches!(
            store.begin_now("k49", &[49; 32]),
            Ok(Begin::Completed(_))
        ));
        assert!(matches!(
            store.begin_now("k0", &[0; 32]),
            Ok(Begin::Started(_))
        ));
        // A response bigger than the whole budget is kept as not replayable.
        store.complete_now("held", held, response(9, budget as usize));
        assert!(matches!(
            store.begin_now("held", &[9; 32]),
            Ok(Begin::NotReplayable)
        ));
        assert!(matches!(
            store.begin_now("held", &[8; 32]),
            Ok(Begin::Mismatch)
        ));
        assert!(store.bytes() <= budget);
    }

    #[test]
    fn memory_store_full_of_markers_refuses_new_keys() {
        let store = MemoryStore::new(4 * ENTRY_OVERHEAD + 8, Duration::from_secs(60));
        for i in 0..4u8 {
            started(store.begin_now(&format!("m{i}"), &[i; 32]));
        }
        assert!(store.begin_now("m4", &[4; 32]).is_err());
        for i in 0..4u8 {
            let again = store.begin_now(&format!("m{i}"), &[i; 32]);
            assert!(matches!(again, Ok(Begin::InProgress)));
        }
    }

    #[test]
    fn memory_store_forgets_expired_records_and_released_markers() {
        let store = MemoryStore::new(1 << 20, Duration::from_millis(1));
        let ticket = started(store.begin_now("a", &[1; 32]));
        store.release_now("a", ticket);
        assert_eq!(store.bytes(), 0);
        let ticket = started(store.begin_now("a", &[1; 32]));
        store.complete_now("a", ticket, response(1, 10));
        std::thread::sleep(Duration::from_millis(5));
        assert!(matches!(
            store.begin_now("a", &[1; 32]),
            Ok(Begin::Started(_))
        ));
        assert_eq!(store.bytes(), marker_bytes("a"));
    }
}
