//! `ssehub serve --outbox postgres://…`: the real binary relaying an outbox table (made from
//! deploy/postgres/outbox.sql) on the shared PostgreSQL, or on a private cluster for the test
//! that restarts the server. Each test reads the events with a real SSE client.

use std::time::Duration;

use crate::support::binary::BinaryHub;
use crate::support::postgres::{connect, OutboxTable, PrivatePostgres, SHARED_URL};
use crate::support::redis::RedisServer;
use crate::support::{SseClient, SECRET};

/// The binary relaying `table`, with `extra` settings, in `data_dir` if given.
fn relay(table: &OutboxTable, extra: &[&str], data_dir: Option<&std::path::Path>) -> BinaryHub {
    let mut args = vec![
        "--jwt-key",
        SECRET,
        "--anonymous",
        "--outbox",
        &table.url,
        "--outbox-table",
        &table.name,
    ];
    args.extend_from_slice(extra);
    match data_dir {
        Some(dir) => BinaryHub::start_in(dir, &args, &[]),
        None => BinaryHub::start(&args, &[]),
    }
}

/// Reads `n` events, failing after 15 s without one; returns their (id, data).
async fn events(sub: &mut SseClient, n: usize) -> Vec<(String, String)> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match sub.next_event_within(Duration::from_secs(15)).await {
            Some(event) => got.push((event.id, event.data)),
            None => panic!(
                "got {} of {n} events (ended: {:?}): {got:?}",
                got.len(),
                sub.ended
            ),
        }
    }
    got
}

/// Inserts a committed sentinel row and asserts that it is the very next event: nothing
/// (no duplicate, no rolled-back row) came between.
async fn assert_next_is_sentinel(table: &mut OutboxTable, sub: &mut SseClient) {
    table.insert(&[("sentinel", "sentinel")]).await;
    let next = events(sub, 1).await;
    assert_eq!(next, [("sentinel".to_owned(), "sentinel".to_owned())]);
}

/// A metric's value from the hub's /metrics (`None` when it is not there).
async fn metric(hub: &BinaryHub, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{}/metrics", hub.addr))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

async fn wait_until_empty(table: &OutboxTable) {
    for _ in 0..500 {
        if table.count(false).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("rows left in {}: {}", table.name, table.count(false).await);
}

fn rows(prefix: &str, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("{prefix}{i}"), format!("data {prefix}{i}")))
        .collect()
}

fn as_refs(rows: &[(String, String)]) -> Vec<(&str, &str)> {
    rows.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_rows_are_delivered_once_in_commit_order_then_deleted() {
    let mut table = OutboxTable::create(SHARED_URL).await;
    let hub = relay(&table, &[], None);
    let mut sub = SseClient::open(&format!("{}?topic=t", hub.url), &[]).await;
    // Three transactions, committed one after the other, of several rows each.
    let expected = rows("r", 30);
    for chunk in expected.chunks(10) {
        table.insert(&as_refs(chunk)).await;
    }
    assert_eq!(events(&mut sub, 30).await, expected);
    assert_next_is_sentinel(&mut table, &mut sub).await;
    wait_until_empty(&table).await;
    assert_eq!(
        metric(&hub, "ssehub_outbox_relayed_total").await,
        Some(31.0)
    );
    table.drop_table().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_rows_are_never_delivered() {
    let mut table = OutboxTable::create(SHARED_URL).await;
    let hub = relay(&table, &[], None);
    let mut sub = SseClient::open(&format!("{}?topic=t", hub.url), &[]).await;
    let transaction = table.client.transaction().await.expect("begin");
    let sql = format!(
        "INSERT INTO {} (id, topics, data) VALUES ('rolled-back', ARRAY['t'], 'no')",
        table.name
    );
    transaction.execute(&sql, &[]).await.expect("insert");
    transaction.rollback().await.expect("rollback");
    table.insert(&[("after", "committed")]).await;
    // The committed row that came later arrives, and nothing before it.
    assert_eq!(
        events(&mut sub, 1).await,
        [("after".to_owned(), "committed".to_owned())]
    );
    assert_next_is_sentinel(&mut table, &mut sub).await;
    table.drop_table().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_committed_after_a_later_one_is_not_lost_or_reordered() {
    let mut table = OutboxTable::create(SHARED_URL).await;
    let hub = relay(&table, &[], None);
    let mut sub = SseClient::open(&format!("{}?topic=t", hub.url), &[]).await;
    let mut first = connect(SHARED_URL).await;
    let insert = |id: &str| {
        format!(
            "INSERT INTO {} (id, topics, data) VALUES ('{id}', ARRAY['t'], '{id}')",
            table.name
        )
    };
    // T1 writes first (its xid is the older) and commits last.
    let t1 = first.transaction().await.expect("begin");
    t1.execute(&insert("t1"), &[]).await.expect("insert");
    table.client.execute(&insert("t2"), &[]).await.expect("T2");
    // T2 is committed and notified; a relay reading by sequence or by visibility would
    // deliver it now and never see T1's row come in before it. This relay waits for T1.
    sub.assert_no_event(Duration::from_secs(2)).await;
    t1.commit().await.expect("commit T1");
    let got = events(&mut sub, 2).await;
    assert_eq!(
        got,
        [
            ("t1".to_owned(), "t1".to_owned()),
            ("t2".to_owned(), "t2".to_owned())
        ]
    );
    assert_next_is_sentinel(&mut table, &mut sub).await;
    table.drop_table().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_cannot_be_published_is_marked_failed_and_skipped() {
    let mut table = OutboxTable::create(SHARED_URL).await;
    let hub = relay(&table, &[], None);
    let mut sub = SseClient::open(&format!("{}?topic=t", hub.url), &[]).await;
    // A type with a line break cannot be an SSE field.
    let sql = format!(
        "INSERT INTO {} (id, topics, data, type) VALUES ('poison', ARRAY['t'], 'x', E'a\\nb')",
        table.name
    );
    table.client.execute(&sql, &[]).await.expect("insert");
    table.insert(&[("good", "good")]).await;
    assert_eq!(
        events(&mut sub, 1).await,
        [("good".to_owned(), "good".to_owned())]
    );
    // The relay marks it in the transaction it commits once the batch's publishes were
    // acknowledged: after the subscriber may already have the good row.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while table.count(true).await == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(table.count(true).await, 1, "the poison row is kept, marked");
    // Counted just after that commit.
    while metric(&hub, "ssehub_outbox_failed_total").await != Some(1.0)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&hub, "ssehub_outbox_failed_total").await, Some(1.0));
    assert_next_is_sentinel(&mut table, &mut sub).await;
    table.drop_table().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_batch_loses_and_doubles_nothing_after_restart() {
    let mut table = OutboxTable::create(SHARED_URL).await;
    let data_dir = tempfile::tempdir().expect("data dir");
    let mut hub = relay(&table, &[], Some(data_dir.path()));
    let mut sub = SseClient::open(&format!("{}?topic=t", hub.url), &[]).await;
    let expected = rows("k", 3000);
    table.insert(&as_refs(&expected)).await;
    // Kill the relay as soon as the first events were delivered: its first batch is
    // published (acknowledged, stored) but not yet deleted.
    let before = events(&mut sub, 1).await;
    hub.crash();
    let left = table.count(false).await;
    assert!(left > 0, "killed too late: every row was already deleted");
    assert_eq!(before[0], expected[0]);

    let hub = relay(&table, &[], Some(data_dir.path()));
    // Everything the history holds, from the start: each row exactly once, in order.
    let mut sub = SseClient::open(
        &format!("{}?topic=t", hub.url),
        &[("Last-Event-ID", "earliest")],
    )
    .await;
    assert_eq!(events(&mut sub, 3000).await, expected);
    assert_next_is_sentinel(&mut table, &mut sub).await;
    wait_until_empty(&table).await;
    table.drop_table().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_one_table_publish_each_row_once() {
    let mut table = OutboxTable::create(SHARED_URL).await;
    let redis = RedisServer::start(false).await;
    let url = redis.url();
    let shared = ["--history", "redis", "--redis-url", &url];
    let mut a = relay(&table, &shared, None);
    let b = relay(&table, &shared, None);
    let sub_a = SseClient::open(&format!("{}?topic=t", a.url), &[]).await;
    let mut sub_b = SseClient::open(&format!("{}?topic=t", b.url), &[]).await;
    let expected = rows("s", 400);
    for chunk in expected[..200].chunks(20) {
        table.insert(&as_refs(chunk)).await;
    }
    assert_eq!(events(&mut sub_b, 200).await, expected[..200]);
    // The leader goes away (its lock with its connection): the standby takes over.
    let leader_was_a = metric(&a, "ssehub_outbox_leader").await == Some(1.0);
    let relayed_by_a = metric(&a, "ssehub_outbox_relayed_total").await;
    let relayed_by_b = metric(&b, "ssehub_outbox_relayed_total").await;
    assert_eq!(
        relayed_by_a.zip(relayed_by_b).map(|(a, b)| a + b),
        Some(200.0),
        "each row relayed by one instance"
    );
    let (survivor, mut sub) = if leader_was_a {
        a.crash();
        (b, sub_b)
    } else {
        let mut b = b;
        b.crash();
        (a, sub_a)
    };
    for chunk in expected[200..].chunks(20) {
        table.insert(&as_refs(chunk)).await;
    }
    assert_eq!(events(&mut sub, 200).await, expected[200..]);
    assert_next_is_sentinel(&mut table, &mut sub).await;
    wait_until_empty(&table).await;
    assert_eq!(metric(&survivor, "ssehub_outbox_leader").await, Some(1.0));
    table.drop_table().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_resumes_by_itself_after_postgresql_restarts() {
    let server = PrivatePostgres::start();
    let mut table = OutboxTable::create(&server.url()).await;
    let hub = relay(&table, &[], None);
    let mut sub = SseClient::open(&format!("{}?topic=t", hub.url), &[]).await;
    table.insert(&[("before", "before")]).await;
    assert_eq!(
        events(&mut sub, 1).await,
        [("before".to_owned(), "before".to_owned())]
    );
    server.stop();
    // The relay sees the database gone.
    let mut disconnected = false;
    for _ in 0..500 {
        if metric(&hub, "ssehub_outbox_connected").await == Some(0.0) {
            disconnected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        disconnected,
        "ssehub_outbox_connected stayed 1 with the database down"
    );
    // Readiness says so, and stays 200: the hub still serves and takes publishes.
    let readyz = format!("http://{}/readyz", hub.addr);
    let (status, body) = readiness(&readyz).await;
    assert_eq!(status, 200);
    assert!(
        body.starts_with("degraded: the outbox database is unreachable"),
        "{body}"
    );
    server.start_again();
    let mut table = OutboxTable {
        client: connect(&server.url()).await,
        ..table
    };
    table.insert(&[("after", "after")]).await;
    assert_eq!(
        events(&mut sub, 1).await,
        [("after".to_owned(), "after".to_owned())]
    );
    assert_eq!(metric(&hub, "ssehub_outbox_connected").await, Some(1.0));
    assert_eq!(readiness(&readyz).await, (200, "ready\n".to_owned()));
    table.drop_table().await;
}

/// `GET /readyz`: the status and the body.
async fn readiness(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("readyz");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}
