//! The in-memory store only: its byte budget.

use axum::Router;
use axum::http::StatusCode;
use futures_util::future::select_all;
use sentri::{IdempotencyLayer, IdempotencyOptions};

use super::{
    Backend, Reply, USER, assert_in_progress, code_of, gated_app, options, req, retry_gated, runs,
    send,
};
use crate::support::common::unique;

fn memory_layer(max_memory_bytes: u64) -> IdempotencyLayer {
    match IdempotencyLayer::new(IdempotencyOptions {
        max_memory_bytes,
        ..options(&Backend::Memory)
    }) {
        Ok(layer) => layer,
        Err(err) => panic!("layer: {err:?}"),
    }
}

fn stored_bytes(layer: &IdempotencyLayer) -> u64 {
    match layer.stored_bytes() {
        Some(bytes) => bytes,
        None => panic!("the memory store reports its bytes"),
    }
}

fn spawn_send(app: &Router, key: &str) -> tokio::task::JoinHandle<Reply> {
    let (app, key) = (app.clone(), key.to_owned());
    tokio::spawn(
        async move { send(&app, req("POST", "/gated", Some(&key), Some(USER), "{}")).await },
    )
}

async fn joined(task: tokio::task::JoinHandle<Reply>) -> Reply {
    match task.await {
        Ok(reply) => reply,
        Err(err) => panic!("task: {err}"),
    }
}

/// Flooding the byte budget with completed responses evicts completed responses, oldest
/// first, never an in-flight marker; the store never holds more than its budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_budget_evicts_completed_never_in_flight() {
    const BUDGET: u64 = 16 * 1024;
    let layer = memory_layer(BUDGET);
    let (app, count, gate) = gated_app(layer.clone());
    let held: Vec<String> = (0..4).map(|_| unique("held")).collect();
    let tasks: Vec<_> = held.iter().map(|key| spawn_send(&app, key)).collect();
    gate.started(4).await;

    let flood: Vec<String> = (0..200).map(|_| unique("flood")).collect();
    for key in &flood {
        let (s, _, _) = send(&app, req("POST", "/pay", Some(key), Some(USER), "{}")).await;
        assert_eq!(s, StatusCode::CREATED);
        assert!(
            stored_bytes(&layer) <= BUDGET,
            "{} > {BUDGET}",
            stored_bytes(&layer)
        );
    }
    assert_eq!(runs(&count), 204);
    for key in &held {
        assert_in_progress(&app, &gate, key).await;
    }
    // The oldest completed response was evicted (its retry runs again); the newest is kept.
    let (_, h, _) = send(&app, req("POST", "/pay", Some(&flood[0]), Some(USER), "{}")).await;
    assert!(h.get("x-idempotent-replayed").is_none());
    assert_eq!(runs(&count), 205);
    let (_, h, _) = send(
        &app,
        req("POST", "/pay", Some(&flood[199]), Some(USER), "{}"),
    )
    .await;
    assert_eq!(h["x-idempotent-replayed"], "true");
    assert_eq!(runs(&count), 205);

    gate.open.add_permits(4);
    for (key, task) in held.iter().zip(tasks) {
        let (s, h, first) = joined(task).await;
        assert_eq!(s, StatusCode::CREATED);
        assert!(h.get("x-idempotent-replayed").is_none());
        let (_, h, again) = retry_gated(&app, &gate, key).await;
        assert_eq!(h["x-idempotent-replayed"], "true");
        assert_eq!(again, first);
    }
    assert_eq!(runs(&count), 205, "no handler ran twice");
    assert!(stored_bytes(&layer) <= BUDGET);
}

/// When in-flight markers alone fill the budget, a new key is refused with 503 (the
/// default fail-closed policy) instead of evicting one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_full_of_in_flight_requests_refuses_new_keys() {
    let budget = sentri::idempotency::MIN_MEMORY_BYTES;
    let layer = memory_layer(budget);
    let (app, count, gate) = gated_app(layer.clone());
    let long_key = |i: usize| format!("{i:03}{}", "k".repeat(252));
    let mut held = Vec::new();
    let refused = loop {
        assert!(held.len() < 64, "the budget never filled up");
        let key = long_key(held.len());
        let mut task = spawn_send(&app, &key);
        tokio::select! {
            reply = &mut task => break reply,
            () = gate.started(1) => held.push((key, task)),
        }
    };
    let Ok((s, _, body)) = refused else {
        panic!("task failed")
    };
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(code_of(&body), "SERVICE_UNAVAILABLE");
    assert!(held.len() >= 2, "{} markers fit", held.len());
    assert!(stored_bytes(&layer) <= budget);
    for (key, _) in &held {
        assert_in_progress(&app, &gate, key).await;
    }
    let started = held.len();
    let mut held = held;
    while !held.is_empty() {
        // One at a time: a later completion may evict this response for space, and a
        // retry after that would run (and wait on the gate) again. The permit goes to
        // whichever handler queued on the gate first, which need not be the first one
        // that signalled `started` (a worker can be preempted between the two), so take
        // the task that finished.
        gate.open.add_permits(1);
        let (done, i, _) = select_all(held.iter_mut().map(|(_, task)| task)).await;
        let (key, _) = held.swap_remove(i);
        let Ok((s, _, _)) = done else {
            panic!("task failed")
        };
        assert_eq!(s, StatusCode::CREATED);
        // Replayed, or (when the response did not fit beside the other markers) refused
        // as not replayable: never run again.
        let (s, _, body) = retry_gated(&app, &gate, &key).await;
        assert!(
            s == StatusCode::CREATED || code_of(&body) == "IDEMPOTENCY_NOT_REPLAYABLE",
            "{s}"
        );
    }
    assert_eq!(runs(&count), started);
    assert!(stored_bytes(&layer) <= budget);
}
