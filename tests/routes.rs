//! Routes to `[[system]]` databases and the dynamic `[inventory]`, against
//! real servers: a PostgreSQL master, a MariaDB system, SQLite sites and
//! systems, through the CLI.

mod common;

use std::time::{Duration, Instant};

use common::{Fleet, my_create_db, mysql, pg_create_db, psql, sqlite_exec, sqlite_query};

/// Site `sales` rows (id, qty, updated_at): a sale has qty > 0, a return
/// qty < 0.
fn site_sales(rows: &[(i64, i64, u32)]) -> String {
    let mut sql = String::from(
        "CREATE TABLE IF NOT EXISTS sales (id INTEGER PRIMARY KEY, qty INTEGER NOT NULL, updated_at TEXT NOT NULL);\n",
    );
    for (id, qty, second) in rows {
        sql.push_str(&format!(
            "INSERT INTO sales VALUES ({id}, {qty}, '2026-03-01T10:00:{second:02}.000000Z');\n"
        ));
    }
    sql
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(150));
    }
}

/// Two SQLite sites pulled into a PostgreSQL master, every row also routed
/// to a MariaDB `[[system]]` table under other column names (`sale_id`,
/// `quantity`, site id in `store`).
#[test]
fn a_pull_writes_the_master_and_a_mariadb_system_route_with_its_own_mapping() {
    let fleet = Fleet::new();
    let master = pg_create_db("routes_master");
    let erp = my_create_db("routes_erp");
    psql(
        &master,
        "CREATE TABLE sales (store_id text, id bigint, qty bigint, updated_at text, PRIMARY KEY (store_id, id))",
    );
    mysql(
        &erp,
        "CREATE TABLE returns (store VARCHAR(20), sale_id BIGINT, quantity BIGINT, PRIMARY KEY (store, sale_id))",
    );
    sqlite_exec(
        &fleet.path("s1.db"),
        &site_sales(&[(1, 3, 1), (2, -1, 2), (3, 5, 3)]),
    );
    sqlite_exec(&fleet.path("s2.db"), &site_sales(&[(1, -2, 1), (2, 4, 2)]));
    fleet.write_config(&format!(
        r#"[master]
url = "{master}"
[[system]]
name = "erp"
url = "{erp}"
[[site]]
id = "s1"
url = "sqlite://s1.db"
[[site]]
id = "s2"
url = "sqlite://s2.db"
[[flow]]
name = "sales"
direction = "pull"
  [[flow.stream]]
  source = "sales"
  target = "sales"
  primary_key = ["id"]
  cursor = "updated_at"
  site_column = "store_id"
    [[flow.stream.route]]
    system = "erp"
    target = "returns"
    columns = {{ sale_id = "id", quantity = "qty" }}
    primary_key = ["sale_id"]
    site_column = "store"
    when = "row.qty < 0"
"#
    ));
    let out = fleet.sync_ok(&[]);
    // The summary counts each site's routed rows: one return at each.
    assert_eq!(
        summary_cells(&out.stdout, "s1"),
        ["sales", "s1", "succeeded", "3", "3", "0", "1"]
    );
    assert_eq!(
        summary_cells(&out.stdout, "s2"),
        ["sales", "s2", "succeeded", "2", "2", "0", "1"]
    );
    assert_eq!(
        psql(
            &master,
            "SELECT store_id, id, qty FROM sales ORDER BY store_id, id"
        ),
        "s1|1|3\ns1|2|-1\ns1|3|5\ns2|1|-2\ns2|2|4"
    );
    // Returns only: s1's sale 2 and s2's sale 1.
    assert_eq!(
        mysql(
            &erp,
            "SELECT store, sale_id, quantity FROM returns ORDER BY store, sale_id"
        ),
        "s1|2|-1\ns2|1|-2"
    );
    // A changed return reaches both; a new sale only the master.
    sqlite_exec(
        &fleet.path("s2.db"),
        "UPDATE sales SET qty = -3, updated_at = '2026-03-01T10:01:00.000000Z' WHERE id = 1;
         INSERT INTO sales VALUES (3, 6, '2026-03-01T10:01:01.000000Z');",
    );
    let out = fleet.sync_ok(&[]);
    // s2's changed return is routed again; s1 changed nothing.
    assert_eq!(summary_cells(&out.stdout, "s1")[6], "0");
    assert_eq!(summary_cells(&out.stdout, "s2")[6], "1");
    assert_eq!(
        mysql(
            &erp,
            "SELECT store, sale_id, quantity FROM returns ORDER BY store, sale_id"
        ),
        "s1|2|-1\ns2|1|-3"
    );
    assert_eq!(
        psql(
            &master,
            "SELECT id, qty FROM sales WHERE store_id = 's2' ORDER BY id"
        ),
        "1|-3\n2|4\n3|6"
    );
}

/// The system is written before the master's batch + checkpoint
/// transaction: a system that refuses a batch leaves the master and the
/// checkpoint at the last batch it took, and the next run delivers the rest
/// to both.
#[test]
fn a_failed_system_write_leaves_the_checkpoint_and_the_next_run_delivers() {
    let fleet = Fleet::new();
    let master = pg_create_db("routes_fail");
    psql(
        &master,
        "CREATE TABLE sales (store_id text, id bigint, qty bigint, updated_at text, PRIMARY KEY (store_id, id))",
    );
    // The SQLite system refuses sale 4 while `fail` holds a row.
    sqlite_exec(
        &fleet.path("erp.db"),
        "CREATE TABLE returns (store_id TEXT, id INTEGER, qty INTEGER, updated_at TEXT, PRIMARY KEY (store_id, id));
         CREATE TABLE fail (x INTEGER);
         INSERT INTO fail VALUES (1);
         CREATE TRIGGER refuse BEFORE INSERT ON returns
           WHEN NEW.id = 4 AND EXISTS (SELECT 1 FROM fail)
           BEGIN SELECT RAISE(ABORT, 'erp is down for sale 4'); END;",
    );
    sqlite_exec(
        &fleet.path("s1.db"),
        &site_sales(&[(1, 1, 1), (2, 2, 2), (3, 3, 3), (4, -4, 4), (5, 5, 5)]),
    );
    fleet.write_config(&format!(
        r#"[hub]
batch_size = 2
[master]
url = "{master}"
[[system]]
name = "erp"
url = "sqlite://erp.db"
[[site]]
id = "s1"
url = "sqlite://s1.db"
[[flow]]
name = "sales"
direction = "pull"
  [[flow.stream]]
  source = "sales"
  target = "sales"
  primary_key = ["id"]
  cursor = "updated_at"
  cursor_lag = "0s"
  site_column = "store_id"
    [[flow.stream.route]]
    system = "erp"
    target = "returns"
"#
    ));
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(
            "writing to system `erp` table `returns`: row (store_id, id) = (s1, 4): erp is down for sale 4"
        ),
        "{}",
        out.stdout
    );
    // Batches [1, 2] went through; batch [3, 4] reached neither database
    // (the system's transaction rolled back, the master's never began).
    assert_eq!(psql(&master, "SELECT id FROM sales ORDER BY id"), "1\n2");
    assert_eq!(
        sqlite_query(&fleet.path("erp.db"), "SELECT id FROM returns ORDER BY id"),
        "1\n2"
    );
    assert_eq!(
        psql(&master, "SELECT position FROM hubsync.checkpoints"),
        r#"[{"t":"text","v":"2026-03-01T10:00:02.000000Z"},{"t":"int","v":2}]"#
    );
    sqlite_exec(&fleet.path("erp.db"), "DELETE FROM fail");
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(&master, "SELECT id, qty FROM sales ORDER BY id"),
        "1|1\n2|2\n3|3\n4|-4\n5|5"
    );
    assert_eq!(
        sqlite_query(
            &fleet.path("erp.db"),
            "SELECT store_id, id, qty FROM returns ORDER BY id"
        ),
        "s1|1|1\ns1|2|2\ns1|3|3\ns1|4|-4\ns1|5|5"
    );
}

/// `[inventory]`: the stores are rows of a master table; `hubsync run`
/// reads it before every pass, so a store added while it runs is pulled
/// and a store deactivated is no longer worked, without a restart.
#[test]
fn run_picks_up_an_added_store_and_drops_a_removed_one_between_passes() {
    let fleet = Fleet::new();
    sqlite_exec(
        &fleet.path("master.db"),
        "CREATE TABLE sales (store_id TEXT, id INTEGER, qty INTEGER, updated_at TEXT, PRIMARY KEY (store_id, id));
         CREATE TABLE stores (id TEXT PRIMARY KEY, file TEXT, region TEXT, active INTEGER);
         INSERT INTO stores VALUES ('s1', 's1.db', 'north', 1);",
    );
    sqlite_exec(&fleet.path("s1.db"), &site_sales(&[(1, 3, 1)]));
    sqlite_exec(&fleet.path("s2.db"), &site_sales(&[(1, 7, 1), (2, 8, 2)]));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    fleet.write_config(&format!(
        r#"[master]
url = "sqlite://master.db"
[api]
listen = "127.0.0.1:{port}"
[inventory]
query = "SELECT id, file, region FROM stores WHERE active = 1"
url = "sqlite://{{file}}"
[[flow]]
name = "sales"
direction = "pull"
schedule = "every 1s"
  [[flow.stream]]
  source = "sales"
  target = "sales"
  primary_key = ["id"]
  cursor = "updated_at"
  site_column = "store_id"
"#,
    ));
    let child = fleet.spawn(&["run"]);
    let master_rows = || {
        sqlite_query(
            &fleet.path("master.db"),
            "SELECT store_id, id, qty FROM sales ORDER BY store_id, id",
        )
    };
    wait_for("store s1's rows", || master_rows() == "s1|1|3");
    // A store added to the table while the hub runs.
    sqlite_exec(
        &fleet.path("master.db"),
        "INSERT INTO stores VALUES ('s2', 's2.db', 'south', 1)",
    );
    wait_for("store s2's rows", || {
        master_rows() == "s1|1|3\ns2|1|7\ns2|2|8"
    });
    // The API lists the inventory's sites, with their tags.
    let agent: ureq::Agent = ureq::Agent::config_builder().proxy(None).build().into();
    let sites = agent
        .get(&format!("http://127.0.0.1:{port}/api/v1/sites"))
        .call()
        .expect("GET /api/v1/sites")
        .body_mut()
        .read_to_string()
        .unwrap();
    assert_eq!(
        sites,
        r#"{"sites":[{"id":"s1","dialect":"sqlite","tags":{"region":"north"}},{"id":"s2","dialect":"sqlite","tags":{"region":"south"}}],"inventory_error":null}"#
    );
    // Store s1 deactivated: its new sale never arrives, while s2's later
    // sale proves the passes go on.
    sqlite_exec(
        &fleet.path("master.db"),
        "UPDATE stores SET active = 0 WHERE id = 's1'",
    );
    std::thread::sleep(Duration::from_millis(2500));
    sqlite_exec(&fleet.path("s1.db"), &site_sales(&[(2, 9, 9)]));
    sqlite_exec(&fleet.path("s2.db"), &site_sales(&[(3, 6, 9)]));
    wait_for("store s2's third sale", || {
        master_rows().ends_with("s2|3|6")
    });
    std::thread::sleep(Duration::from_millis(2500));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().expect("wait for hubsync run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr
            .contains("over 0 static sites and the `[inventory]` query's (read before every pass)"),
        "{stderr}"
    );
    assert_eq!(master_rows(), "s1|1|3\ns2|1|7\ns2|2|8\ns2|3|6");
    // s1 ran no pass after its last one before the deactivation: the
    // newest run of s2 is later than the newest of s1.
    let last = |site: &str| {
        sqlite_query(
            &fleet.path("master.db"),
            &format!("SELECT max(started_at) FROM hubsync_runs WHERE site = '{site}'"),
        )
    };
    assert!(
        last("s2") > last("s1"),
        "s1 {} s2 {}",
        last("s1"),
        last("s2")
    );
}

/// Static `[[site]]`s and `[inventory]` together: an inventory row whose id
/// a static site has is left out with a warning; the static site is used.
#[test]
fn an_inventory_row_colliding_with_a_static_site_is_left_out_with_a_warning() {
    let fleet = Fleet::new();
    sqlite_exec(
        &fleet.path("master.db"),
        "CREATE TABLE sales (store_id TEXT, id INTEGER, qty INTEGER, updated_at TEXT, PRIMARY KEY (store_id, id));
         CREATE TABLE stores (id TEXT PRIMARY KEY, file TEXT);
         INSERT INTO stores VALUES ('s1', 'other.db'), ('s2', 's2.db');",
    );
    sqlite_exec(&fleet.path("s1.db"), &site_sales(&[(1, 3, 1)]));
    sqlite_exec(&fleet.path("other.db"), &site_sales(&[(1, 99, 1)]));
    sqlite_exec(&fleet.path("s2.db"), &site_sales(&[(1, 7, 1)]));
    fleet.write_config(
        r#"[master]
url = "sqlite://master.db"
[[site]]
id = "s1"
url = "sqlite://s1.db"
[inventory]
query = "SELECT id, file FROM stores"
url = "sqlite://{file}"
[[flow]]
name = "sales"
direction = "pull"
  [[flow.stream]]
  source = "sales"
  target = "sales"
  primary_key = ["id"]
  cursor = "updated_at"
  site_column = "store_id"
"#,
    );
    let out = fleet.sync_ok(&[]);
    assert!(
        out.stderr.contains(
            "warning: inventory row `s1`: a `[[site]]` of the config has this id; the static site is used and the row left out"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(
        sqlite_query(
            &fleet.path("master.db"),
            "SELECT store_id, id, qty FROM sales ORDER BY store_id, id"
        ),
        "s1|1|3\ns2|1|7"
    );
}

/// A push whose sites each get the rows of a CEL `when` over the row and
/// the site's tags; every site's checkpoint still moves past every row
/// read, so a row no site of a kind wants is not read again.
#[test]
fn a_push_with_a_site_predicate_gives_each_site_its_rows() {
    let fleet = Fleet::new();
    sqlite_exec(
        &fleet.path("master.db"),
        "CREATE TABLE prices (sku INTEGER PRIMARY KEY, zone TEXT, tier TEXT, price TEXT, updated_at TEXT);
         INSERT INTO prices VALUES
           (1, 'A', 'all',   '10.00', '2026-03-01T10:00:01.000000Z'),
           (2, 'A', 'gold',  '20.00', '2026-03-01T10:00:02.000000Z'),
           (3, 'A', 'basic', '30.00', '2026-03-01T10:00:03.000000Z'),
           (4, 'B', 'all',   '40.00', '2026-03-01T10:00:04.000000Z'),
           (5, 'B', 'gold',  '50.00', '2026-03-01T10:00:05.000000Z');",
    );
    // The sites keep no zone or tier: `when` reads master columns the
    // stream does not write.
    let site_table = "CREATE TABLE prices (sku INTEGER PRIMARY KEY, price TEXT, updated_at TEXT);";
    for site in ["s1", "s2", "s3"] {
        sqlite_exec(&fleet.path(&format!("{site}.db")), site_table);
    }
    let config = |when: &str| {
        format!(
            r#"[master]
url = "sqlite://master.db"
[[site]]
id = "s1"
url = "sqlite://s1.db"
tags = {{ zone = "A", tier = "gold" }}
[[site]]
id = "s2"
url = "sqlite://s2.db"
tags = {{ zone = "A", tier = "basic" }}
[[site]]
id = "s3"
url = "sqlite://s3.db"
tags = {{ zone = "B", tier = "gold" }}
[[flow]]
name = "prices"
direction = "push"
  [[flow.stream]]
  source = "prices"
  target = "prices"
  primary_key = ["sku"]
  cursor = "updated_at"
  cursor_lag = "0s"
  columns = {{ sku = "sku", price = "price", updated_at = "updated_at" }}
  when = "{when}"
"#
        )
    };
    fleet.write_config(&config(
        "row.zone == site.tags.zone && (row.tier == 'all' || row.tier == site.tags.tier)",
    ));
    fleet.sync_ok(&[]);
    let skus = |site: &str| {
        sqlite_query(
            &fleet.path(&format!("{site}.db")),
            "SELECT sku, price FROM prices ORDER BY sku",
        )
    };
    // s1 (A, gold): 1 (all) and 2; s2 (A, basic): 1 and 3; s3 (B, gold): 4 and 5.
    assert_eq!(skus("s1"), "1|10.00\n2|20.00");
    assert_eq!(skus("s2"), "1|10.00\n3|30.00");
    assert_eq!(skus("s3"), "4|40.00\n5|50.00");
    // Every checkpoint is past sku 5, the last row read, sent or not.
    assert_eq!(
        sqlite_query(
            &fleet.path("master.db"),
            "SELECT site, position FROM hubsync_checkpoints ORDER BY site"
        ),
        [
            r#"s1|[{"t":"text","v":"2026-03-01T10:00:05.000000Z"},{"t":"int","v":5}]"#,
            r#"s2|[{"t":"text","v":"2026-03-01T10:00:05.000000Z"},{"t":"int","v":5}]"#,
            r#"s3|[{"t":"text","v":"2026-03-01T10:00:05.000000Z"},{"t":"int","v":5}]"#,
        ]
        .join("\n")
    );
    sqlite_exec(
        &fleet.path("master.db"),
        "INSERT INTO prices VALUES (6, 'A', 'gold', '60.00', '2026-03-01T10:00:06.000000Z')",
    );
    let out = fleet.sync_ok(&[]);
    assert_eq!(skus("s1"), "1|10.00\n2|20.00\n6|60.00");
    assert_eq!(skus("s2"), "1|10.00\n3|30.00");
    assert!(out.stdout.contains("prices   s2"), "{}", out.stdout);
    // A predicate naming a column the source lacks fails before any read,
    // naming the expression and the column.
    fleet.write_config(&config("row.region == site.tags.zone"));
    let out = fleet.hubsync(&["sync", "--site", "s1"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains(
            "flow `prices`, stream `prices`, `when`: expression `row.region == site.tags.zone`"
        ),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("region"), "{}", out.stdout);
}

/// Opens a hub on a config text (relative SQLite paths in `dir`).
async fn open_hub(config: &str, dir: &std::path::Path) -> hubsync::flow::Hub {
    let config = hubsync::config::Config::parse(config, &dir.join("hubsync.toml"), dir, &|_| None)
        .expect("config");
    hubsync::flow::Hub::open(
        std::sync::Arc::new(config),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("hub")
}

/// One pass of `flow` over every site; every run must succeed. Returns the
/// pass's wall time.
async fn timed_pass(hub: &hubsync::flow::Hub, flow: &str) -> Duration {
    let flow = hub.config().flow(flow).expect("flow").clone();
    let sites: Vec<_> = hub.config().sites.iter().collect();
    let started = Instant::now();
    let reports = hub
        .sync_flow(
            &flow,
            &sites,
            hubsync::flow::SyncOptions::default(),
            &hubsync::flow::NoProgress,
        )
        .await;
    for report in &reports {
        assert_eq!(report.error, None, "site {}", report.site);
    }
    started.elapsed()
}

/// A push to N = 12 sites with K = 3 distinct `:site.zone` values: a pass
/// (the first, with no checkpoints, and the next) sends 3 reads to the
/// master and the 9 other sites share them; the same push with a parameter
/// that differs per site (`:site.id`) sends 12. Both deliver the same rows.
#[test]
fn sites_with_the_same_parameters_share_one_read_of_the_master() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let master = pg_create_db("routes_shared");
    psql(
        &master,
        "CREATE TABLE prices (sku bigint PRIMARY KEY, zone text NOT NULL, price numeric(10,2) NOT NULL, version bigint NOT NULL);
         INSERT INTO prices SELECT i, CASE WHEN i <= 2000 THEN 'A' WHEN i <= 4000 THEN 'B' ELSE 'C' END, 1.00, i
           FROM generate_series(1, 6000) AS i;",
    );
    let mut config = format!("[master]\nurl = \"{master}\"\n");
    for n in 1..=12 {
        let zone = ["A", "B", "C"][(n - 1) % 3];
        let site_table = "CREATE TABLE prices (sku INTEGER PRIMARY KEY, zone TEXT, price TEXT, version INTEGER);";
        sqlite_exec(
            &dir.path().join(format!("s{n}.db")),
            &format!(
                "{site_table}\n{}",
                site_table.replace("prices", "prices_apart")
            ),
        );
        config.push_str(&format!(
            "[[site]]\nid = \"s{n}\"\nurl = \"sqlite://s{n}.db\"\ntags = {{ zone = \"{zone}\" }}\n"
        ));
    }
    for (flow, target, extra) in [
        ("shared", "prices", ""),
        ("apart", "prices_apart", " AND :site.id = :site.id"),
    ] {
        config.push_str(&format!(
            "[[flow]]\nname = \"{flow}\"\ndirection = \"push\"\n  [[flow.stream]]\n  \
             query = \"SELECT sku, zone, price, version FROM prices WHERE zone = :site.zone{extra}\"\n  \
             target = \"{target}\"\n  primary_key = [\"sku\"]\n  cursor = \"version\"\n"
        ));
    }
    let hub = runtime.block_on(open_hub(&config, dir.path()));
    // Initial loads (no checkpoint yet) share too: 3 reads for 12 sites,
    // then 12 for the flow whose parameters differ per site.
    runtime.block_on(timed_pass(&hub, "shared"));
    runtime.block_on(timed_pass(&hub, "apart"));
    assert_eq!(hub.push_reads(), (15, 9));
    psql(
        &master,
        "UPDATE prices SET price = price + 1, version = version + 10000",
    );
    let shared_time = runtime.block_on(timed_pass(&hub, "shared"));
    assert_eq!(hub.push_reads(), (15 + 3, 9 + 9));
    let apart_time = runtime.block_on(timed_pass(&hub, "apart"));
    assert_eq!(hub.push_reads(), (15 + 3 + 12, 9 + 9));
    eprintln!(
        "12 sites, 3 parameter sets, 2,000 changed rows each: shared reads {:.0} ms, one read per site {:.0} ms",
        shared_time.as_secs_f64() * 1000.0,
        apart_time.as_secs_f64() * 1000.0
    );
    for n in [1, 5, 12] {
        let zone = ["A", "B", "C"][(n - 1) % 3];
        for table in ["prices", "prices_apart"] {
            assert_eq!(
                sqlite_query(
                    &dir.path().join(format!("s{n}.db")),
                    &format!(
                        "SELECT count(*), min(zone), max(zone), min(price), max(price), min(version) > 10000 FROM {table}"
                    )
                ),
                format!("2000|{zone}|{zone}|2.00|2.00|1"),
                "site s{n} table {table}"
            );
        }
    }
    runtime.block_on(hub.close());
}

/// `hubsync check` connects to the systems, describes each route's table
/// and compiles every `when` against the source's columns.
#[test]
fn check_validates_systems_route_tables_and_predicates() {
    let fleet = Fleet::new();
    sqlite_exec(
        &fleet.path("master.db"),
        "CREATE TABLE sales (store_id TEXT, id INTEGER, qty INTEGER, updated_at TEXT, PRIMARY KEY (store_id, id));",
    );
    sqlite_exec(
        &fleet.path("erp.db"),
        "CREATE TABLE returns (store_id TEXT, id INTEGER, qty INTEGER, PRIMARY KEY (store_id, id));
         CREATE TABLE keyless (store_id TEXT, id INTEGER, qty INTEGER);",
    );
    sqlite_exec(&fleet.path("s1.db"), &site_sales(&[(1, 3, 1)]));
    let config = |target: &str, when: &str| {
        format!(
            r#"[master]
url = "sqlite://master.db"
[[system]]
name = "erp"
url = "sqlite://erp.db"
[[site]]
id = "s1"
url = "sqlite://s1.db"
[[flow]]
name = "sales"
direction = "pull"
  [[flow.stream]]
  source = "sales"
  target = "sales"
  primary_key = ["id"]
  cursor = "updated_at"
  site_column = "store_id"
    [[flow.stream.route]]
    system = "erp"
    target = "{target}"
    columns = {{ id = "id", qty = "qty" }}
    when = "{when}"
"#
        )
    };
    fleet.write_config(&config("returns", "row.qty < 0"));
    let out = fleet.hubsync(&["check"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    fleet.write_config(&config("returns", "row.quantity < 0"));
    let out = fleet.hubsync(&["check"]);
    assert_ne!(out.code, 0);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("flow `sales`, stream `sales`, route to system `erp` table `returns`, `when`: expression `row.quantity < 0`"),
        "{text}"
    );
    fleet.write_config(&config("missing", "row.qty < 0"));
    let text = {
        let out = fleet.hubsync(&["check"]);
        assert_ne!(out.code, 0);
        format!("{}{}", out.stdout, out.stderr)
    };
    assert!(
        text.contains("system `erp` table `missing` does not exist"),
        "{text}"
    );
    fleet.write_config(&config("keyless", "row.qty < 0"));
    let text = {
        let out = fleet.hubsync(&["check"]);
        assert_ne!(out.code, 0);
        format!("{}{}", out.stdout, out.stderr)
    };
    assert!(
        text.contains("system `erp` table `keyless` has no primary key or unique index on exactly (store_id, id)"),
        "{text}"
    );
}

/// The other side of the order: a batch committed at the system whose
/// master write then fails (as a hub killed between the two commits would
/// leave it) is read again by the next run and upserted again into the
/// system, where it changes nothing, and reaches the master.
#[test]
fn a_batch_committed_at_the_system_but_not_the_master_is_redelivered_as_an_upsert() {
    let fleet = Fleet::new();
    let master = pg_create_db("routes_redeliver");
    psql(
        &master,
        "CREATE TABLE sales (store_id text, id bigint, qty bigint, updated_at text, PRIMARY KEY (store_id, id));
         CREATE TABLE fail (x int);
         INSERT INTO fail VALUES (1);
         CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
             IF NEW.id = 4 AND EXISTS (SELECT 1 FROM fail) THEN RAISE EXCEPTION 'master is down for sale 4'; END IF;
             RETURN NEW;
           END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON sales FOR EACH ROW EXECUTE FUNCTION refuse();",
    );
    sqlite_exec(
        &fleet.path("erp.db"),
        "CREATE TABLE returns (store_id TEXT, id INTEGER, qty INTEGER, updated_at TEXT, PRIMARY KEY (store_id, id));",
    );
    sqlite_exec(
        &fleet.path("s1.db"),
        &site_sales(&[(1, 1, 1), (2, 2, 2), (3, 3, 3), (4, -4, 4), (5, 5, 5)]),
    );
    fleet.write_config(&format!(
        r#"[hub]
batch_size = 2
[master]
url = "{master}"
[[system]]
name = "erp"
url = "sqlite://erp.db"
[[site]]
id = "s1"
url = "sqlite://s1.db"
[[flow]]
name = "sales"
direction = "pull"
  [[flow.stream]]
  source = "sales"
  target = "sales"
  primary_key = ["id"]
  cursor = "updated_at"
  cursor_lag = "0s"
  site_column = "store_id"
    [[flow.stream.route]]
    system = "erp"
    target = "returns"
"#
    ));
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("master is down for sale 4"),
        "{}",
        out.stdout
    );
    // Batch [3, 4] is at the system, not at the master; the checkpoint is
    // after batch [1, 2].
    assert_eq!(
        sqlite_query(&fleet.path("erp.db"), "SELECT id FROM returns ORDER BY id"),
        "1\n2\n3\n4"
    );
    assert_eq!(psql(&master, "SELECT id FROM sales ORDER BY id"), "1\n2");
    assert_eq!(
        psql(&master, "SELECT position FROM hubsync.checkpoints"),
        r#"[{"t":"text","v":"2026-03-01T10:00:02.000000Z"},{"t":"int","v":2}]"#
    );
    // A marker shows the system's rows 3 and 4 are not rewritten: an
    // unchanged row is skipped by the upsert.
    sqlite_exec(
        &fleet.path("erp.db"),
        "CREATE TABLE writes (id INTEGER);
         CREATE TRIGGER counted AFTER UPDATE ON returns BEGIN INSERT INTO writes VALUES (NEW.id); END;
         CREATE TRIGGER counted_insert AFTER INSERT ON returns BEGIN INSERT INTO writes VALUES (NEW.id); END;",
    );
    psql(&master, "DELETE FROM fail");
    fleet.sync_ok(&[]);
    assert_eq!(
        psql(&master, "SELECT id, qty FROM sales ORDER BY id"),
        "1|1\n2|2\n3|3\n4|-4\n5|5"
    );
    assert_eq!(
        sqlite_query(
            &fleet.path("erp.db"),
            "SELECT id, qty FROM returns ORDER BY id"
        ),
        "1|1\n2|2\n3|3\n4|-4\n5|5"
    );
    // Only sale 5 was written at the system by the second run.
    assert_eq!(
        sqlite_query(&fleet.path("erp.db"), "SELECT id FROM writes ORDER BY id"),
        "5"
    );
}

/// A stream's transforms shape the master's rows; its routes map source
/// columns and keep rows by their own `when` (a fresh-user trial found a
/// stream with `compute` and a route failing every run with "the stream's
/// expressions were not compiled before mapping", while `check` passed).
#[test]
fn a_stream_with_transforms_and_a_route_writes_both_targets() {
    let fleet = Fleet::new();
    let master = pg_create_db("routes_compute_master");
    psql(
        &master,
        "CREATE TABLE sales (store_id text, id bigint, doubled bigint, updated_at text, PRIMARY KEY (store_id, id))",
    );
    sqlite_exec(
        &fleet.path("erp.db"),
        "CREATE TABLE returns (store TEXT, sale_id INTEGER, quantity INTEGER, PRIMARY KEY (store, sale_id));",
    );
    sqlite_exec(
        &fleet.path("s1.db"),
        &site_sales(&[(1, 3, 1), (2, -1, 2), (3, 5, 3), (4, -4, 4)]),
    );
    fleet.write_config(&format!(
        r#"[master]
url = "{master}"
[[system]]
name = "erp"
url = "sqlite://erp.db"
[[site]]
id = "s1"
url = "sqlite://s1.db"
[[flow]]
name = "sales"
direction = "pull"
  [[flow.stream]]
  source = "sales"
  target = "sales"
  primary_key = ["id"]
  cursor = "updated_at"
  site_column = "store_id"
  columns = {{ id = "id", updated_at = "updated_at" }}
  filter = "row.qty != 5"
    [flow.stream.compute]
    doubled = "row.qty * 2"
    [[flow.stream.route]]
    system = "erp"
    target = "returns"
    columns = {{ sale_id = "id", quantity = "qty" }}
    primary_key = ["sale_id"]
    site_column = "store"
    when = "row.qty < 0"
"#
    ));
    let out = fleet.hubsync(&["check"]);
    assert_eq!(out.code, 0, "{out:?}");
    // The master, the system and the site (it said "3 of 2").
    assert!(
        out.stdout.contains("3 of 3 databases reachable"),
        "{}",
        out.stdout
    );
    fleet.sync_ok(&[]);
    // The master: every sale but the filtered one (qty 5), qty doubled.
    assert_eq!(
        psql(&master, "SELECT id, doubled FROM sales ORDER BY id"),
        "1|6\n2|-2\n4|-8"
    );
    // The ERP: the returns, with the source's quantity.
    assert_eq!(
        sqlite_query(
            &fleet.path("erp.db"),
            "SELECT store, sale_id, quantity FROM returns ORDER BY sale_id"
        ),
        "s1|2|-1\ns1|4|-4"
    );
}

/// The first seven cells (flow, site, status, rows read, written, deleted,
/// routed) of `site`'s row in `sync`'s summary table, which must have the
/// "rows routed" column.
fn summary_cells(stdout: &str, site: &str) -> Vec<String> {
    assert!(stdout.contains("rows routed"), "{stdout}");
    let line = stdout
        .lines()
        .find(|line| line.split_whitespace().nth(2) == Some(site))
        .unwrap_or_else(|| panic!("no summary row of {site}:\n{stdout}"));
    line.trim_matches(|c: char| c == '│' || c.is_whitespace())
        .split_whitespace()
        .take(7)
        .map(str::to_string)
        .collect()
}

/// `hubsync serve` on `127.0.0.1:0`; returns the child and the API's base
/// URL (stderr is drained in the background).
fn serve(fleet: &Fleet) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = fleet.spawn(&["serve"]);
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let base = loop {
        let line = lines.next().expect("serve exited").unwrap();
        if let Some(rest) = line.strip_prefix("hubsync API listening on ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    (child, base)
}

fn get_json(url: &str) -> serde_json::Value {
    let agent: ureq::Agent = ureq::Agent::config_builder().proxy(None).build().into();
    let text = (agent.get(url).call())
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .body_mut()
        .read_to_string()
        .unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The cells of `site`'s row in `status`'s last-runs table (flow, site,
/// then the rest split on whitespace).
fn status_row(stdout: &str, site: &str) -> Vec<String> {
    let line = (stdout.lines())
        .find(|line| line.split_whitespace().nth(2) == Some(site))
        .unwrap_or_else(|| panic!("no status row of {site}:\n{stdout}"));
    (line
        .trim_matches(|c: char| c == '│' || c.is_whitespace())
        .split_whitespace())
    .map(str::to_string)
    .collect()
}

/// Regression: `status`, `serve`'s API and the summary of `run` counted
/// only the static `[[site]]`s; the `[inventory]` query's sites (here
/// `i1`, `i2`, and `i5` whose run failed) were invisible. Now they show
/// like static ones, and a failed inventory query is a note, not silence.
#[test]
fn status_and_the_api_show_the_inventory_s_sites_like_static_ones() {
    let fleet = Fleet::new();
    sqlite_exec(
        &fleet.path("master.db"),
        "CREATE TABLE sales (store_id TEXT, id INTEGER, qty INTEGER, updated_at TEXT, PRIMARY KEY (store_id, id));
         CREATE TABLE stores (id TEXT PRIMARY KEY, file TEXT, region TEXT);
         INSERT INTO stores VALUES ('i1', 'i1.db', 'north'), ('i2', 'i2.db', 'south'), ('i5', 'i5.db', 'north');",
    );
    for site in ["a", "i1", "i2"] {
        sqlite_exec(
            &fleet.path(&format!("{site}.db")),
            &site_sales(&[(1, 3, 1)]),
        );
    }
    // i5 has no `sales` table: its run fails.
    sqlite_exec(&fleet.path("i5.db"), "CREATE TABLE other (x INTEGER)");
    fleet.write_config(
        r#"[master]
url = "sqlite://master.db"
[api]
listen = "127.0.0.1:0"
[[site]]
id = "a"
url = "sqlite://a.db"
[inventory]
query = "SELECT id, file, region FROM stores"
url = "sqlite://{file}"
[[flow]]
name = "sales"
direction = "pull"
  [[flow.stream]]
  source = "sales"
  target = "sales"
  primary_key = ["id"]
  cursor = "updated_at"
  site_column = "store_id"
"#,
    );
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);

    let status = fleet.hubsync(&["status"]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert_eq!(
        status.stdout.lines().next(),
        Some("Fleet: 4 sites, 4 flow/site pairs: 1 failed, 3 succeeded; 0 with a tripped circuit"),
        "{}",
        status.stdout
    );
    for (site, result) in [
        ("a", "succeeded"),
        ("i1", "succeeded"),
        ("i2", "succeeded"),
        ("i5", "failed"),
    ] {
        // flow, site, date, time, "UTC", "(0", "s", "ago)", result
        assert_eq!(status_row(&status.stdout, site)[8], result, "{site}");
    }
    // The tag filter knows the inventory's tags.
    let north = fleet.hubsync(&["status", "--tag", "region:north"]);
    assert!(north.stdout.contains("│ sales   i5 "), "{}", north.stdout);
    assert!(!north.stdout.contains("│ sales   i2 "), "{}", north.stdout);

    let (mut child, base) = serve(&fleet);
    let sites = get_json(&format!("{base}/api/v1/sites"));
    assert_eq!(
        sites,
        serde_json::json!({"sites": [
            {"id": "a", "dialect": "sqlite", "tags": {}},
            {"id": "i1", "dialect": "sqlite", "tags": {"region": "north"}},
            {"id": "i2", "dialect": "sqlite", "tags": {"region": "south"}},
            {"id": "i5", "dialect": "sqlite", "tags": {"region": "north"}},
        ], "inventory_error": null})
    );
    let api_status = get_json(&format!("{base}/api/v1/status?tag=region:north"));
    assert_eq!(
        api_status["summary"],
        serde_json::json!({"sites": 4, "pairs": 4, "by_state": {"failed": 1, "succeeded": 3}, "circuits_open": 0, "quarantined_rows": 0})
    );
    let pairs: Vec<(&str, &str)> = (api_status["pairs"].as_array().unwrap().iter())
        .map(|p| {
            (
                p["site"].as_str().unwrap(),
                p["last_run"]["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(pairs, [("i1", "succeeded"), ("i5", "failed")]);
    assert_eq!(api_status["inventory_error"], serde_json::Value::Null);

    // The inventory query fails: the API keeps its last good read and says
    // why; `status` shows the static sites with a note.
    sqlite_exec(
        &fleet.path("master.db"),
        "ALTER TABLE stores RENAME TO stores_old",
    );
    let api_status = get_json(&format!("{base}/api/v1/status"));
    assert_eq!(api_status["summary"]["sites"], 4);
    let error = api_status["inventory_error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("`inventory.query` on the master: ")
            && error.contains("no such table: stores"),
        "{api_status}"
    );
    let dashboard = fleet_dashboard(&base);
    assert!(
        dashboard.contains("The inventory could not be read: `inventory.query` on the master: "),
        "{dashboard}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let status = fleet.hubsync(&["status"]);
    let mut lines = status.stdout.lines();
    assert_eq!(
        lines.next(),
        Some("Fleet: 1 site, 1 flow/site pair: 1 succeeded; 0 with a tripped circuit")
    );
    let note = lines.next().unwrap_or_default();
    assert!(
        note.starts_with("Inventory: not read (`inventory.query` on the master: ")
            && note.contains("no such table: stores")
            && note.ends_with("); only the static sites show"),
        "{}",
        status.stdout
    );
}

fn fleet_dashboard(base: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder().proxy(None).build().into();
    (agent.get(&format!("{base}/")).call())
        .expect("GET /")
        .body_mut()
        .read_to_string()
        .unwrap()
}

/// Regression (fresh-user trial): after the run that quarantined rows,
/// every later run `succeeded` and `status` was all green with no word of
/// the rows still held in the quarantine. Now `status` and
/// `/api/v1/status` count them per pair and say how to list them.
#[test]
fn status_and_the_api_count_the_rows_still_in_quarantine() {
    let fleet = Fleet::new();
    // The master refuses a sale with qty <= 0 (a CHECK): s1's rows 2 and 3.
    sqlite_exec(
        &fleet.path("master.db"),
        "CREATE TABLE sales (store_id TEXT, id INTEGER, qty INTEGER CHECK (qty > 0), updated_at TEXT, PRIMARY KEY (store_id, id));",
    );
    sqlite_exec(
        &fleet.path("s1.db"),
        &site_sales(&[(1, 3, 1), (2, -1, 2), (3, -2, 3), (4, 6, 4)]),
    );
    sqlite_exec(&fleet.path("s2.db"), &site_sales(&[(1, 5, 1)]));
    fleet.write_config(
        r#"[master]
url = "sqlite://master.db"
[api]
listen = "127.0.0.1:0"
[[site]]
id = "s1"
url = "sqlite://s1.db"
[[site]]
id = "s2"
url = "sqlite://s2.db"
[[flow]]
name = "sales"
direction = "pull"
  [[flow.stream]]
  source = "sales"
  target = "sales"
  primary_key = ["id"]
  cursor = "updated_at"
  site_column = "store_id"
  on_error = "quarantine"
  cursor_lag = "0s"
"#,
    );
    let first = fleet.hubsync(&["sync"]);
    assert_eq!(first.code, 1, "{}\n{}", first.stdout, first.stderr);
    // The next run re-reads only the checkpoint's row 4 (no overlap:
    // `cursor_lag` 0), applied already: succeeded, the two rows still held.
    fleet.sync_ok(&[]);
    let status = fleet.hubsync(&["status"]);
    let lines: Vec<&str> = status.stdout.lines().take(2).collect();
    assert_eq!(
        lines,
        [
            "Fleet: 2 sites, 2 flow/site pairs: 2 succeeded; 0 with a tripped circuit",
            "Quarantine: 2 rows (sales/s1: 2); each is retried when it changes at the source; list them: SELECT * FROM hubsync_quarantine",
        ],
        "{}",
        status.stdout
    );
    let (mut child, base) = serve(&fleet);
    let api_status = get_json(&format!("{base}/api/v1/status"));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(api_status["summary"]["quarantined_rows"], 2);
    let per_pair: Vec<(&str, u64)> = (api_status["pairs"].as_array().unwrap().iter())
        .map(|p| {
            (
                p["site"].as_str().unwrap(),
                p["quarantined_rows"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(per_pair, [("s1", 2), ("s2", 0)]);
    // Without quarantined rows there is no quarantine line.
    sqlite_exec(&fleet.path("master.db"), "DELETE FROM hubsync_quarantine");
    let status = fleet.hubsync(&["status"]);
    assert!(!status.stdout.contains("Quarantine"), "{}", status.stdout);
}
