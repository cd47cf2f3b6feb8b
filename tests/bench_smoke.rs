//! `hubsync bench` at a smoke size: it must complete and report every
//! scenario with the row counts its data implies. No timing is asserted
//! (speed is judged by the benchmark's own same-run ratios, not by tests).

mod common;

#[test]
fn a_small_bench_completes_and_reports_every_scenario() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("bench.json");
    let prefix = format!("hubsync_smoke_{}", std::process::id());
    let mut cmd = common::hubsync();
    cmd.args(["bench", "--pg-url", &common::pg_admin_url()])
        .args(["--sites", "2", "--rows", "3000", "--noop-pg-sites", "3"])
        .args([
            "--noop-sqlite-sites",
            "4",
            "--push-rows",
            "500",
            "--wan-delay-ms",
            "5",
            "--late-rows",
            "20000",
            "--replica-sites",
            "6",
        ])
        .args(["--bulk-sites", "2", "--mysql-url", &common::my_admin_url()])
        .args(["--batch-size", "1000", "--prefix", &prefix, "--json"])
        .arg(&json);
    let out = common::run(&mut cmd);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written")).expect("json");
    let scenarios = report["scenarios"].as_array().expect("scenarios");
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "full_pull",
            "transformed_pull",
            "incremental_pull",
            "push_fan_out",
            "sqlite_push",
            "mysql_push",
            "shared_push_reads",
            "full_update",
            "sync_process",
            "wan_full_pull",
            "noop_cycle_postgres",
            "noop_cycle_postgres_cold",
            "noop_cycle_sqlite",
            "late_commit_scan",
            "replicas_1_cycle",
            "replicas_3_cycle",
            "replicas_3_failover"
        ]
    );
    let rows = |i: usize| scenarios[i]["rows"].as_u64().unwrap();
    // 2 sites x 3,000 rows.
    assert_eq!(rows(0), 6000);
    // Two transformed passes over the same 6,000 rows.
    assert_eq!(rows(1), 12000);
    // 1% updated + 1% inserted = 60 per site, plus the overlap re-read.
    assert!((120..6000).contains(&rows(2)), "{}", rows(2));
    // 500 prices to each of 2 sites.
    assert_eq!(rows(3), 1000);
    // 500 prices into each of 2 SQLite files, then into each of 2 MariaDB
    // databases in each of two hubsync passes (alternating with the
    // baseline's).
    assert_eq!(rows(4), 1000);
    assert_eq!(rows(5), 2 * 1000);
    // Shared reads: 500 / 4 = 125 changed prices per zone to each of 8
    // SQLite sites (4 x 2), over two shared passes.
    assert_eq!(rows(6), 2 * 8 * 125);
    // Every one of the 2 x 3,030 site rows changed (the late-commit read
    // may find some twice, never fewer).
    assert!((6060..12120).contains(&rows(7)), "{}", rows(7));
    // The whole-process scenario counts the rows at the sites: 2 x 3,030.
    assert_eq!(rows(8), 6060);
    // The WAN pass reads everything again, the 60 new rows included.
    assert_eq!(rows(9), 6060);
    // No-op cycles re-read only the cursor_lag overlap: each store's 100
    // rows are one second apart, so the last 6 (95 s .. 100 s, within 5 s
    // of the checkpoint) per store: 3 PostgreSQL stores, then 4 SQLite ones.
    assert_eq!(rows(10), 18);
    assert_eq!(rows(11), 18);
    assert_eq!(rows(12), 24);
    // 20,000 rows, every 200th changed: 100 rows, plus the overlap re-read
    // at the saved cursor value.
    assert!((100..200).contains(&rows(13)), "{}", rows(13));
    // Replicas: 6 SQLite sites x 100 rows per cycle (the bench itself
    // checks every row arrived once and no pair ran twice).
    for i in 14..=16 {
        assert_eq!(rows(i), 600);
    }
    for scenario in scenarios {
        assert!(scenario["hubsync_seconds"].as_f64().unwrap() > 0.0);
    }
    for i in [0, 1, 3, 4, 5, 6, 7, 8, 9, 13] {
        assert!(scenarios[i]["ratio"].as_f64().unwrap() > 0.0);
    }
    assert!(
        out.stdout.contains("full_pull: baseline = COPY binary"),
        "{}",
        out.stdout
    );
    // The bench drops its databases at the end.
    assert_eq!(
        common::psql(
            &common::pg_admin_url(),
            &format!("SELECT count(*) FROM pg_database WHERE datname LIKE '{prefix}%'"),
        ),
        "0"
    );
}
