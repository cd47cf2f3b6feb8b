//! The outbox's claim on real masters: two hubs (two connection pools)
//! claiming at once never get the same event, and together get them all;
//! a claimed event is not claimable again until its lease ends.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use hubsync::config::DbUrl;
use hubsync::connector::{ConnectOptions, Connector};
use hubsync::state::{DeliveryState, NewEvent, StateStore};

async fn connect(url: &DbUrl) -> Connector {
    let options = ConnectOptions {
        max_connections: 4,
        connect_timeout: Duration::from_secs(10),
        acquire_timeout: Duration::from_secs(30),
        statement_timeout: None,
        create_if_missing: true,
    };
    Connector::connect(url, &options).await.expect("connect")
}

fn event(n: usize) -> NewEvent {
    NewEvent {
        event_id: format!("e{n:03}"),
        flow: "sales".into(),
        site: "s1".into(),
        event: "rows_changed".into(),
        handler: "on[0]".into(),
        payload: format!("{{\"n\":{n}}}"),
    }
}

/// Claims 7 at a time until none is due; returns the claimed ids.
async fn claim_all(
    state: &StateStore,
    master: &Connector,
    lease: &(dyn Fn(&hubsync::state::OutboxRecord) -> Duration + Sync),
) -> Vec<String> {
    let mut mine = Vec::new();
    loop {
        let claimed = state
            .claim_events(master, 7, Utc::now(), lease)
            .await
            .unwrap();
        if claimed.is_empty() {
            return mine;
        }
        assert!(claimed.iter().all(|r| r.attempts == 1));
        mine.extend(claimed.into_iter().map(|r| r.event_id));
    }
}

/// Enqueues 60 events, then two hubs claim 7 at a time until none is due.
async fn two_hubs_share_the_outbox(url: DbUrl) {
    let one = connect(&url).await;
    let two = connect(&url).await;
    let state_one = StateStore::open(&one).await.unwrap();
    let state_two = StateStore::open(&two).await.unwrap();
    let mut tx = one.begin().await.unwrap();
    let events: Vec<NewEvent> = (0..60).map(event).collect();
    state_one.enqueue_events(&mut tx, &events).await.unwrap();
    tx.commit().await.unwrap();
    let lease = |_: &hubsync::state::OutboxRecord| Duration::from_secs(60);
    // Interleaved on one task: each claim's round trips overlap the other's.
    let (a, b) = tokio::join!(
        claim_all(&state_one, &one, &lease),
        claim_all(&state_two, &two, &lease)
    );
    let set_a: BTreeSet<&String> = a.iter().collect();
    let set_b: BTreeSet<&String> = b.iter().collect();
    assert_eq!(set_a.len() + set_b.len(), 60, "an event was claimed twice");
    assert!(set_a.is_disjoint(&set_b));
    let all: BTreeSet<String> = a.iter().chain(&b).cloned().collect();
    let expected: BTreeSet<String> = events.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(all, expected);
    // Leased for 60 s: nothing due now; due again once the lease is over.
    let later = Utc::now() + chrono::Duration::seconds(61);
    assert!(
        state_one
            .claim_events(&one, 100, Utc::now(), &lease)
            .await
            .unwrap()
            .is_empty()
    );
    let again = state_one
        .claim_events(&one, 100, later, &lease)
        .await
        .unwrap();
    assert_eq!(again.len(), 60);
    assert!(again.iter().all(|r| r.attempts == 2));
    // Delivered and dead ones are never claimed; only non-pending replay.
    assert!(state_one.event_delivered(&one, "e000").await.unwrap());
    assert!(!state_one.event_delivered(&one, "e000").await.unwrap());
    state_one
        .event_failed(&one, "e001", "HTTP 500", None)
        .await
        .unwrap();
    assert!(!state_one.replay_event(&one, "e002").await.unwrap());
    let dead = state_one
        .events(&one, Some(DeliveryState::Dead), 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].event_id.as_str(), dead[0].last_error.as_deref()),
        ("e001", Some("HTTP 500"))
    );
    assert_eq!(state_one.event_counts(&one).await.unwrap(), (58, 1, 1));
    let much_later = later + chrono::Duration::seconds(120);
    let third = state_one
        .claim_events(&one, 100, much_later, &lease)
        .await
        .unwrap();
    assert_eq!(third.len(), 58);
    assert!(state_one.replay_event(&one, "e001").await.unwrap());
    let replayed = state_one
        .claim_events(&one, 100, much_later, &lease)
        .await
        .unwrap();
    assert_eq!(replayed.len(), 1);
    assert_eq!(
        (replayed[0].event_id.as_str(), replayed[0].attempts),
        ("e001", 1)
    );
    one.close().await;
    two.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_hubs_never_claim_the_same_event() {
    let url = common::pg_create_db("outbox_claim");
    let url = DbUrl::parse(&url, None, Path::new("/")).unwrap();
    two_hubs_share_the_outbox(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_hubs_never_claim_the_same_event() {
    let dir = tempfile::tempdir().unwrap();
    let url = DbUrl::Sqlite {
        path: dir.path().join("master.db"),
    };
    two_hubs_share_the_outbox(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_two_hubs_never_claim_the_same_event() {
    let url = common::my_create_db("outbox_claim");
    let url = DbUrl::parse(&url, None, Path::new("/")).unwrap();
    two_hubs_share_the_outbox(url).await;
}
