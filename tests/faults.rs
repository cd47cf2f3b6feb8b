//! Faults injected on purpose between the hub and its databases (a TCP proxy
//! in the test, `common::proxy`): a site down at start, a connection cut
//! mid-read, a master connection cut mid-write, a black-holed site, a slow
//! link, and a site back after its circuit opened. After each, the next
//! quiet sync must leave the master exactly equal to the sites.

mod common;

use std::time::{Duration, Instant};

use common::proxy::{FaultProxy, Mode};
use common::{Fleet, pg_create_db, psql};

const SITE_SALES: &str =
    "CREATE TABLE sales (id bigint PRIMARY KEY, sku text NOT NULL, qty int NOT NULL,
    price numeric(12,2) NOT NULL, updated_at timestamptz NOT NULL);";
const MASTER_SALES: &str = "CREATE TABLE sales (store_id text NOT NULL, id bigint NOT NULL, sku text NOT NULL,
    qty int NOT NULL, price numeric(12,2) NOT NULL, updated_at timestamptz NOT NULL, PRIMARY KEY (store_id, id));";

/// A site database with `rows` sales: id i, sku `k<i>`, qty i % 7, price
/// i/100, one millisecond apart.
fn site_with_rows(prefix: &str, rows: u32) -> String {
    let url = pg_create_db(prefix);
    psql(&url, SITE_SALES);
    psql(
        &url,
        &format!(
            "INSERT INTO sales SELECT g, 'k' || g, g % 7, g / 100.0,
                    timestamptz '2026-01-01 00:00:00+00' + g * interval '1 millisecond'
             FROM generate_series(1, {rows}) g;"
        ),
    );
    url
}

/// `url` with its port replaced by `port` (to go through a proxy).
fn via(url: &str, port: u16) -> String {
    let (head, tail) = url.rsplit_once(':').expect("url with a port");
    let database = tail.split_once('/').expect("url with a database").1;
    format!("{head}:{port}/{database}")
}

/// The port of a `postgres://user@host:port/db` URL.
fn port_of(url: &str) -> u16 {
    let tail = url.rsplit_once(':').expect("url with a port").1;
    tail.split_once('/')
        .expect("database")
        .0
        .parse()
        .expect("port")
}

fn config(hub: &str, master: &str, sites: &[(&str, String)]) -> String {
    let mut text = format!("[hub]\n{hub}\n\n[master]\nurl = \"{master}\"\n");
    for (id, url) in sites {
        text.push_str(&format!("\n[[site]]\nid = \"{id}\"\nurl = \"{url}\"\n"));
    }
    text.push_str(
        "\n[[flow]]\nname = \"sales\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"sales\"\n  target = \"sales\"\n  \
         primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n",
    );
    text
}

/// Count and a digest of every row, in key order, as the site holds them
/// (`store_id` left out at the master).
fn contents(url: &str, site: Option<&str>) -> String {
    let filter = site.map_or(String::new(), |s| format!("WHERE store_id = '{s}'"));
    psql(
        url,
        &format!(
            "SELECT count(*) || ' ' || coalesce(md5(string_agg(concat_ws('|', id, sku, qty, price, updated_at), ',' ORDER BY id)), '-')
             FROM sales {filter}"
        ),
    )
}

fn new_master() -> String {
    let master = pg_create_db("fault_master");
    psql(&master, MASTER_SALES);
    master
}

#[test]
fn a_connection_cut_mid_read_loses_nothing() {
    let master = new_master();
    let site = site_with_rows("fault_read", 30_000);
    let proxy = FaultProxy::start(port_of(&site));
    let fleet = Fleet::new();
    fleet.write_config(&config(
        "batch_size = 1000\nconnect_retries = 0",
        &master,
        &[("s1", via(&site, proxy.port))],
    ));
    // About a third of the way through the reads.
    proxy.cut_after_down_bytes(600_000);
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(proxy.cuts(), 1);
    assert!(
        out.stdout.contains(
            "flow `sales` stream `sales` site `s1`: reading from the site: the connection was lost"
        ),
        "{}",
        out.stdout
    );
    let partial: u32 = psql(&master, "SELECT count(*) FROM sales").parse().unwrap();
    assert!(
        partial > 0 && partial < 30_000,
        "{partial} rows after the cut"
    );
    // Committed batches only: whole batches of 1,000.
    assert_eq!(partial % 1000, 0, "{partial}");

    fleet.sync_ok(&[]);
    assert_eq!(contents(&master, Some("s1")), contents(&site, None));
    assert!(contents(&site, None).starts_with("30000 "));
    // Checkpoints consistent: a quiet sync writes nothing.
    let out = fleet.sync_ok(&[]);
    assert!(out.stdout.contains("succeeded"), "{}", out.stdout);
    assert_eq!(
        psql(
            &master,
            "SELECT rows_written FROM hubsync.runs ORDER BY started_at DESC LIMIT 1"
        ),
        "0"
    );
}

#[test]
fn a_master_connection_cut_mid_write_loses_nothing() {
    let master = new_master();
    let site = site_with_rows("fault_write", 20_000);
    let proxy = FaultProxy::start(port_of(&master));
    let fleet = Fleet::new();
    fleet.write_config(&config(
        "batch_size = 2000",
        &via(&master, proxy.port),
        &[("s1", site.clone())],
    ));
    // Well inside the upserts' text arrays (each batch sends ~100 kB).
    proxy.cut_after_up_bytes(500_000);
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(proxy.cuts(), 1);
    assert_ne!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    // Regression: this was reported as "row (s1, 6001): cannot connect".
    assert!(
        out.stdout
            .contains("site `s1`: writing to master table `sales`: the connection was lost ("),
        "{}",
        out.stdout
    );
    let partial: u32 = psql(&master, "SELECT count(*) FROM sales").parse().unwrap();
    assert!(partial < 20_000, "{partial}");
    assert_eq!(partial % 2000, 0, "a batch half-written: {partial}");

    fleet.sync_ok(&[]);
    assert_eq!(contents(&master, Some("s1")), contents(&site, None));
}

#[test]
fn a_site_down_at_start_fails_alone_and_catches_up() {
    let master = new_master();
    let down = site_with_rows("fault_down", 500);
    let up = site_with_rows("fault_up", 300);
    let proxy = FaultProxy::start(port_of(&down));
    proxy.set(Mode::Refuse);
    let fleet = Fleet::new();
    fleet.write_config(&config(
        "connect_retries = 0",
        &master,
        &[("down", via(&down, proxy.port)), ("up", up.clone())],
    ));
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("site `down`"), "{}", out.stdout);
    assert_eq!(
        psql(
            &master,
            "SELECT store_id, count(*) FROM sales GROUP BY 1 ORDER BY 1"
        ),
        "up|300"
    );
    proxy.set(Mode::Pass);
    fleet.sync_ok(&[]);
    assert_eq!(contents(&master, Some("down")), contents(&down, None));
    assert_eq!(contents(&master, Some("up")), contents(&up, None));
}

#[test]
fn a_black_holed_site_fails_after_its_timeout_and_a_slow_one_arrives_whole() {
    let master = new_master();
    let dead = site_with_rows("fault_hole", 100);
    let slow = site_with_rows("fault_slow", 3_000);
    let hole = FaultProxy::start(port_of(&dead));
    hole.set(Mode::BlackHole);
    let wan = FaultProxy::start(port_of(&slow));
    wan.set(Mode::Delay(Duration::from_millis(20)));
    let fleet = Fleet::new();
    fleet.write_config(&config(
        "connect_timeout = \"1s\"\nconnect_retries = 0\nbatch_size = 500",
        &master,
        &[
            ("dead", via(&dead, hole.port)),
            ("slow", via(&slow, wan.port)),
        ],
    ));
    let started = Instant::now();
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(out.stdout.contains("site `dead`"), "{}", out.stdout);
    assert!(
        out.stdout.contains("1 s"),
        "the error should give the timeout: {}",
        out.stdout
    );
    assert_eq!(contents(&master, Some("slow")), contents(&slow, None));
    assert_eq!(contents(&master, Some("dead")), "0 -");
}

#[test]
fn a_site_back_after_its_circuit_opened_is_retried_and_catches_up() {
    let master = new_master();
    let site = site_with_rows("fault_circuit", 200);
    let proxy = FaultProxy::start(port_of(&site));
    proxy.set(Mode::Refuse);
    let fleet = Fleet::new();
    fleet.write_config(&config(
        "connect_retries = 0\ncircuit_breaker_failures = 1\ncircuit_breaker_cooldown = \"2s\"",
        &master,
        &[("s1", via(&site, proxy.port))],
    ));
    assert_eq!(fleet.hubsync(&["sync"]).code, 1);
    let out = fleet.hubsync(&["sync"]);
    assert!(out.stdout.contains("circuit open"), "{}", out.stdout);
    let status = fleet.hubsync(&["status"]);
    assert!(status.stdout.contains("open"), "{}", status.stdout);
    proxy.set(Mode::Pass);
    std::thread::sleep(Duration::from_millis(2_500));
    fleet.sync_ok(&[]);
    assert_eq!(contents(&master, Some("s1")), contents(&site, None));
}
