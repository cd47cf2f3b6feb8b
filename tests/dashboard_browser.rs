//! The dashboard in a real browser: Debian's `chromium`, headless, loads
//! `GET /` from a `hubsync run` daemon after its first scheduled pass over a SQLite fleet (one
//! site unreachable), signs in with `/?token=` (the token goes to a cookie),
//! and the test checks the rendered DOM and saves a screenshot under the
//! test output (`$CARGO_TARGET_TMPDIR/dashboard.png`).
//!
//! Chromium is installed by `scripts/test.sh` when missing; without it this
//! test fails and says how to install it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Fleet, sqlite_exec, sqlite_query};

const TOKEN: &str = "dashboard-read-token-0123";

/// Headless flags that work as root on these machines (see TESTING.md).
fn chromium(profile: &std::path::Path) -> Command {
    let binary = "/usr/bin/chromium";
    assert!(
        std::path::Path::new(binary).exists(),
        "{binary} not found: install Debian's `chromium` package (scripts/test.sh does it)"
    );
    let mut command = Command::new(binary);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .stdin(Stdio::null());
    command
}

#[test]
fn dashboard_renders_the_fleet_in_chromium() {
    let fleet = Fleet::new();
    sqlite_exec(
        &fleet.path("master.db"),
        "CREATE TABLE sales (store_id TEXT, id INTEGER, qty INTEGER, updated_at TEXT, PRIMARY KEY (store_id, id));",
    );
    for (site, rows) in [("store-001", 3), ("store-002", 5), ("store-003", 2)] {
        let values: Vec<String> = (1..=rows)
            .map(|id| format!("({id}, {id}, '2026-01-01T00:00:0{id}.000000Z')"))
            .collect();
        sqlite_exec(
            &fleet.path(&format!("{site}.db")),
            &format!(
                "CREATE TABLE sales (id INTEGER PRIMARY KEY, qty INTEGER, updated_at TEXT);
                 INSERT INTO sales VALUES {};",
                values.join(", ")
            ),
        );
    }
    fleet.write_config(&format!(
        r#"[hub]
connect_retries = 0
[master]
url = "sqlite://master.db"
[[site]]
id = "store-001"
url = "sqlite://store-001.db"
[[site]]
id = "store-002"
url = "sqlite://store-002.db"
[[site]]
id = "store-003"
url = "sqlite://store-003.db"
[[site]]
id = "store-404"
url = "sqlite://gone/store-404.db"
[[flow]]
name = "sales"
direction = "pull"
schedule = "every 1h"   # one pass at start-up, none while the page is checked
  [[flow.stream]]
  source = "sales"
  target = "sales"
  primary_key = ["id"]
  cursor = "updated_at"
  site_column = "store_id"
[api]
listen = "127.0.0.1:0"
[[api.token]]
name = "wallboard"
token = "{TOKEN}"
role = "read"
"#
    ));
    let mut daemon = fleet.spawn(&["run"]);
    let stderr = daemon.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("hubsync run ended before its API started")
            .expect("read stderr");
        if let Some(rest) = line.strip_prefix("hubsync API listening on http://") {
            break format!("http://{}", rest.split_whitespace().next().unwrap());
        }
    };
    // Keep draining the daemon's output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});

    // Wait for the first pass to end: 10 rows from three stores, four
    // finished runs, store-404's failed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sqlite_query(&fleet.path("master.db"), "SELECT count(*) FROM sales") != "10"
        || sqlite_query(
            &fleet.path("master.db"),
            "SELECT count(*) FROM hubsync_runs WHERE site = 'store-404' AND status = 'failed'",
        ) == "0"
        || sqlite_query(
            &fleet.path("master.db"),
            "SELECT count(*) FROM hubsync_runs WHERE status <> 'running'",
        ) != "4"
    {
        assert!(Instant::now() < deadline, "the first pass did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }

    let profile = tempfile::tempdir().expect("profile dir");
    let url = format!("{base}/?token={TOKEN}");
    let output = chromium(profile.path())
        .args(["--virtual-time-budget=3000", "--dump-dom", &url])
        .output()
        .expect("run chromium");
    assert!(output.status.success(), "chromium failed: {output:?}");
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();

    // Signed in through the cookie: the dashboard, not the token form.
    assert!(dom.contains("<title>hubsync fleet</title>"), "{dom}");
    assert!(
        !dom.contains("name=\"token\""),
        "the token form was shown:\n{dom}"
    );
    assert!(dom.contains(r#"<b id="count-sites">4</b>"#), "{dom}");
    assert!(dom.contains(r#"<b id="count-failing">1</b>"#), "{dom}");
    for site in ["store-001", "store-002", "store-003"] {
        assert!(
            dom.contains(&format!(
                r#"data-flow="sales" data-site="{site}" data-status="succeeded""#
            )),
            "grid cell of {site}:\n{dom}"
        );
    }
    assert!(
        dom.contains(r#"data-flow="sales" data-site="store-404" data-status="failed""#),
        "{dom}"
    );
    // The failing list names the site and its last error.
    let failing = dom
        .split(r#"<table id="failing">"#)
        .nth(1)
        .and_then(|rest| rest.split("</table>").next())
        .unwrap_or_else(|| panic!("no failing table:\n{dom}"));
    assert!(failing.contains(r#"data-site="store-404""#), "{failing}");
    assert!(
        failing.contains("flow `sales` site `store-404`: cannot connect to sqlite://")
            && failing.contains("store-404.db: the database file does not exist"),
        "{failing}"
    );
    assert!(!failing.contains("store-001"), "{failing}");
    // The chart counts the 10 rows written in this hour.
    assert!(dom.contains(r#"data-total="10""#), "{dom}");

    // Without a token the browser gets the token form.
    let anonymous = chromium(profile.path().join("anonymous").as_path())
        .args(["--dump-dom", &format!("{base}/")])
        .output()
        .expect("run chromium");
    let anonymous_dom = String::from_utf8_lossy(&anonymous.stdout);
    assert!(anonymous_dom.contains(r#"name="token""#), "{anonymous_dom}");

    let shot_dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let shot = shot_dir.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let output = chromium(profile.path())
        .args(["--window-size=1280,860", "--virtual-time-budget=3000"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .expect("run chromium");
    assert!(output.status.success(), "chromium failed: {output:?}");
    let png = std::fs::read(&shot).expect("screenshot written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG file");
    assert!(png.len() > 10_000, "a real page, not a blank image");
    eprintln!("dashboard screenshot: {}", shot.display());

    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let status = daemon.wait().expect("wait for hubsync run");
    assert_eq!(status.code(), Some(0));
}
