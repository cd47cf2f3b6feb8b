//! Bad config and bad usage: exit code 2 and a message that names the place.
//! Each expected message is the exact text a user sees.

mod common;

use common::{Fleet, sqlite_exec};

const GOOD_HEAD: &str = r#"
[master]
url = "sqlite://master.db"

[[site]]
id = "s1"
url = "sqlite://s1.db"
"#;

const GOOD_FLOW: &str = r#"
[[flow]]
name = "sales"
direction = "pull"
  [[flow.stream]]
  source = "sales"
  target = "sales"
  primary_key = ["id"]
  cursor = "updated_at"
  site_column = "store_id"
"#;

fn sync_with(config: &str) -> common::Out {
    let fleet = Fleet::new();
    fleet.write_config(config);
    let out = fleet.hubsync(&["sync"]);
    assert!(out.stdout.is_empty(), "nothing should run: {}", out.stdout);
    out
}

fn config_path_in(out: &common::Out) -> String {
    // The message starts with the config path, which is a temp dir.
    out.stderr.split('`').nth(1).unwrap_or_default().to_string()
}

#[test]
fn unknown_key_names_the_key_and_line() {
    let out = sync_with(&format!("{GOOD_HEAD}{GOOD_FLOW}\n[hub]\nmax_sites = 4\n"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("unknown field `max_sites`"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("line 20, column 1"), "{}", out.stderr);
}

#[test]
fn missing_environment_variable_is_named() {
    let out = sync_with(&format!(
        "{}{GOOD_FLOW}",
        GOOD_HEAD.replace(
            "sqlite://s1.db",
            "postgres://hub@db/${HUBSYNC_TEST_UNSET_VARIABLE}"
        )
    ));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        out.stderr.trim(),
        format!(
            "error: config `{}`: `site[0].url`: environment variable `HUBSYNC_TEST_UNSET_VARIABLE` is not set; export it or remove `${{HUBSYNC_TEST_UNSET_VARIABLE}}`",
            config_path_in(&out)
        )
    );
}

#[test]
fn unknown_direction_is_explained() {
    let out = sync_with(&format!(
        "{GOOD_HEAD}{}",
        GOOD_FLOW.replace("\"pull\"", "\"both\"")
    ));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        out.stderr.trim(),
        format!(
            "error: config `{}`: flow `sales`: unknown direction `both`; use `pull` (sites -> master) or `push` (master -> sites)",
            config_path_in(&out)
        )
    );
}

#[test]
fn stream_without_primary_key_and_other_problems_are_all_listed() {
    let config = format!(
        "{GOOD_HEAD}{}\n[hub]\nbatch_size = 0\n",
        GOOD_FLOW
            .replace("  primary_key = [\"id\"]\n", "")
            .replace("every", "")
    );
    let out = sync_with(&config);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        out.stderr.trim(),
        format!(
            "error: config `{}`: 2 problems:\n  - `hub.batch_size` must be at least 1\n  - flow `sales` stream `sales`: no `primary_key`; list the target's key columns, e.g. `primary_key = [\"id\"]`",
            config_path_in(&out)
        )
    );
}

#[test]
fn missing_config_file_says_what_to_do() {
    let fleet = Fleet::new();
    let out = fleet.hubsync(&["status"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot read the file"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("run `hubsync demo` to get an example"),
        "{}",
        out.stderr
    );
}

#[test]
fn unknown_flow_or_site_on_the_command_line_is_a_usage_error() {
    let fleet = Fleet::new();
    fleet.write_config(&format!("{GOOD_HEAD}{GOOD_FLOW}"));
    let out = fleet.hubsync(&["sync", "--flow", "nope"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        out.stderr.trim(),
        "error: no flow `nope` in the config; flows: sales"
    );
    let out = fleet.hubsync(&["sync", "--site", "s9"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        out.stderr.trim(),
        "error: no site `s9` in the config; sites: s1"
    );
    let out = fleet.hubsync(&["sync", "--bogus"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    // Regression (fresh-user trial): `status --flow nope` printed the
    // fleet and an empty table. It is refused like `sync` and `reset`.
    for command in ["status", "reset"] {
        let out = fleet.hubsync(&[command, "--flow", "nope"]);
        assert_eq!(out.code, 2, "{command}: {}", out.stderr);
        assert_eq!(
            out.stderr.trim(),
            "error: no flow `nope` in the config; flows: sales",
            "{command}"
        );
        assert!(out.stdout.is_empty(), "{command}: {}", out.stdout);
    }
}

#[test]
fn unreachable_master_exits_1_with_its_redacted_url() {
    let fleet = Fleet::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    fleet.write_config(&format!(
        "[hub]\nconnect_timeout = \"2s\"\n{}{GOOD_FLOW}",
        GOOD_HEAD.replace(
            "sqlite://master.db",
            &format!("postgres://hub:topsecret@127.0.0.1:{port}/hq")
        )
    ));
    let out = fleet.hubsync(&["sync"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with(&format!(
            "error: master: cannot connect to postgres://hub:***@127.0.0.1:{port}/hq: "
        )),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("topsecret"));
}

/// Regression: `status` with a mistyped SQLite master path used to create an
/// empty master and report every pair as "never" run.
#[test]
fn status_does_not_create_a_missing_sqlite_master() {
    let fleet = Fleet::new();
    fleet.write_config(
        &format!("{GOOD_HEAD}{GOOD_FLOW}").replace("sqlite://master.db", "sqlite://typo.db"),
    );
    let out = fleet.hubsync(&["status"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        out.stderr.trim(),
        format!(
            "error: master: cannot connect to sqlite://{}: the database file does not exist",
            fleet.path("typo.db").display()
        )
    );
    assert!(!fleet.path("typo.db").exists());
}

/// Regression (fresh-user trial 3): `check` called a SQLite master that
/// does not exist yet a problem (exit 1) where `sync` creates it. It is a
/// warning now; the site is still reached, and no file is created.
#[test]
fn check_warns_that_sync_creates_a_missing_sqlite_master() {
    let fleet = Fleet::new();
    fleet.write_config(&format!("{GOOD_HEAD}{GOOD_FLOW}"));
    sqlite_exec(
        &fleet.path("s1.db"),
        "CREATE TABLE sales (id INTEGER PRIMARY KEY, updated_at TEXT);",
    );
    let out = fleet.hubsync(&["check"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "SQLite file `{}` does not exist yet: `hubsync sync` creates it",
            fleet.path("master.db").display()
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("1 of 2 databases reachable; 0 stream/site pairs ok; 0 problems, 1 warning"),
        "{}",
        out.stdout
    );
    assert!(!fleet.path("master.db").exists());
}

/// Regression: `primary_key = ["id", "id"]` passed validation.
#[test]
fn repeated_primary_key_column_is_named() {
    let out = sync_with(&format!(
        "{GOOD_HEAD}{}",
        GOOD_FLOW.replace("[\"id\"]", "[\"id\", \"id\"]")
    ));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        out.stderr.trim(),
        format!(
            "error: config `{}`: flow `sales` stream `sales`: `primary_key` lists `id` more than once; list each key column once",
            config_path_in(&out)
        )
    );
}

/// Regression: a blank `cursor` and an empty `target` passed validation.
#[test]
fn blank_cursor_and_target_are_named() {
    let out = sync_with(&format!(
        "{GOOD_HEAD}{}",
        GOOD_FLOW
            .replace("cursor = \"updated_at\"", "cursor = \"  \"")
            .replace("target = \"sales\"", "target = \"\"\n  name = \"sales\"")
    ));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        out.stderr.trim(),
        format!(
            "error: config `{}`: 2 problems:\n  - flow `sales` stream `sales`: `target` is empty; name the table to write, e.g. `target = \"sales\"`\n  - flow `sales` stream `sales`: `cursor` is empty; name the column whose increasing value marks progress, e.g. `cursor = \"updated_at\"`",
            config_path_in(&out)
        )
    );
}

/// Regression: with `-c hubsync.toml` run from the config's folder, a missing
/// site file was shown as `sqlite://./s1.db`.
#[test]
fn relative_config_path_shows_absolute_sqlite_paths() {
    let fleet = Fleet::new();
    fleet.write_config(&format!("{GOOD_HEAD}{GOOD_FLOW}"));
    common::sqlite_exec(
        &fleet.path("master.db"),
        "CREATE TABLE sales (store_id TEXT NOT NULL, id INTEGER NOT NULL, updated_at TEXT NOT NULL,
                             PRIMARY KEY (store_id, id));",
    );
    let out = common::run(common::hubsync().current_dir(fleet.dir.path()).args([
        "-c",
        "hubsync.toml",
        "check",
    ]));
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let site_db = fleet.path("s1.db");
    assert!(site_db.is_absolute());
    let expected = format!(
        "problem: site `s1`: cannot connect to sqlite://{}: the database file does not exist",
        site_db.display()
    );
    assert!(
        out.stdout.lines().any(|line| line == expected),
        "expected the line\n{expected}\nin\n{}",
        out.stdout
    );
    assert!(!out.stdout.contains("sqlite://./"), "{}", out.stdout);
}

/// SQLite stores ±Infinity as REAL: a pulled infinity arrives as infinity,
/// not NULL or an error (NaN, which SQLite cannot hold, is refused before
/// binding; see `connector::sqlite` unit tests).
#[test]
fn infinity_round_trips_through_sqlite() {
    let fleet = Fleet::new();
    fleet.write_config(&format!("{GOOD_HEAD}{GOOD_FLOW}"));
    common::sqlite_exec(
        &fleet.path("master.db"),
        "CREATE TABLE sales (store_id TEXT NOT NULL, id INTEGER NOT NULL, ratio REAL,
                             updated_at TEXT NOT NULL, PRIMARY KEY (store_id, id));",
    );
    common::sqlite_exec(
        &fleet.path("s1.db"),
        "CREATE TABLE sales (id INTEGER PRIMARY KEY, ratio REAL, updated_at TEXT NOT NULL);
         INSERT INTO sales VALUES
           (1, 9e999, '2026-01-02T09:00:00.000000Z'),
           (2, -9e999, '2026-01-02T09:01:00.000000Z'),
           (3, 0.5, '2026-01-02T09:02:00.000000Z');",
    );
    fleet.sync_ok(&[]);
    assert_eq!(
        common::sqlite_query(
            &fleet.path("master.db"),
            "SELECT store_id, id, ratio, typeof(ratio) FROM sales ORDER BY id"
        ),
        "s1|1|Infinity|real\ns1|2|-Infinity|real\ns1|3|0.5|real"
    );
}

#[test]
fn bad_delete_options_are_all_named() {
    let out = sync_with(&format!(
        "{GOOD_HEAD}{}",
        GOOD_FLOW.replace(
            "site_column = \"store_id\"",
            "site_column = \"store_id\"\n  delete_column = \"updated_at\"\n  deletes = \"yes\"\n  deletes_window = \"30d\""
        )
    ));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        out.stderr.trim(),
        format!(
            "error: config `{}`: 3 problems:\n  \
             - flow `sales` stream `sales`: `delete_column` `updated_at` is also the `cursor`; the cursor must be the column that changes when a row is deleted (e.g. `updated_at`)\n  \
             - flow `sales` stream `sales`: unknown `deletes` `yes`; use `ignore` (the default) or `detect`\n  \
             - flow `sales` stream `sales`: `deletes_window` applies only with `deletes = \"detect\"`",
            config_path_in(&out)
        )
    );
}

/// Regression (fresh-user trial): `deletes = "detect"` on one of two streams
/// writing one target deleted the other stream's rows every run.
#[test]
fn detect_deletes_on_a_shared_target_is_refused() {
    let second = GOOD_FLOW
        .replace("name = \"sales\"", "name = \"returns\"")
        .replace("source = \"sales\"", "source = \"returns\"");
    let out = sync_with(&format!(
        "{GOOD_HEAD}{}{second}",
        GOOD_FLOW.replace(
            "site_column = \"store_id\"",
            "site_column = \"store_id\"\n  deletes = \"detect\""
        )
    ));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        out.stderr.trim(),
        format!(
            "error: config `{}`: flow `sales` stream `sales`: `deletes = \"detect\"` deletes the target rows its own source lacks, \
             but flow `returns` stream `sales` also writes `sales`: its rows would be deleted every run; \
             detect deletes only on a target one stream writes",
            config_path_in(&out)
        )
    );
}

/// Regression (fresh-user trial): a service `sql` of two statements ran
/// both on a SQLite site.
#[test]
fn a_service_with_several_statements_is_refused() {
    let out = sync_with(&format!(
        "{GOOD_HEAD}{GOOD_FLOW}
[[service]]
name = \"stock\"
on = \"site\"
  [[service.operation]]
  name = \"read\"
  sql = \"SELECT sku FROM stock; DELETE FROM stock\"
"
    ));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "`sql` holds several statements (a `;` followed by more SQL); an operation runs one statement"
        ),
        "{}",
        out.stderr
    );
}

/// Regression (fresh-user trial): `--param sku=A --param sku=B` silently
/// used the last value.
#[test]
fn a_call_parameter_given_twice_is_a_usage_error() {
    let fleet = Fleet::new();
    fleet.write_config(&format!(
        "{GOOD_HEAD}{GOOD_FLOW}
[[service]]
name = \"stock\"
on = \"site\"
  [[service.operation]]
  name = \"read\"
  sql = \"SELECT qty FROM stock WHERE sku = :sku\"
  params = [{{ name = \"sku\", type = \"text\" }}]
"
    ));
    let out = fleet.hubsync(&[
        "call", "stock", "read", "--site", "s1", "--param", "sku=A", "--param", "sku=B",
    ]);
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        out.stderr.trim(),
        "error: `--param sku` is given twice; give each parameter once"
    );
}

#[test]
fn bench_refuses_zero_sizes_and_an_unwritable_json_path_before_building_anything() {
    // Port 1: nothing listens; a refused connection would mean the check
    // came too late.
    let url = "postgres://nobody@127.0.0.1:1/postgres";
    for args in [
        vec!["--batch-size", "0"],
        vec!["--parallelism", "0"],
        vec!["--json", "/nonexistent-dir/bench.json"],
    ] {
        let mut cmd = common::hubsync();
        cmd.args(["bench", "--pg-url", url]).args(&args);
        let out = common::run(&mut cmd);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        let expected = if args[0] == "--json" {
            "`--json /nonexistent-dir/bench.json`: cannot write it"
        } else {
            "`--parallelism` and `--batch-size` must be at least 1"
        };
        assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("connect"), "{}", out.stderr);
    }
}

/// Regression (fresh-user trial): a webhook `secret` without `whsec_` was
/// accepted and deliveries were signed with bytes a Standard Webhooks
/// verifier rejects. `check` (and so `sync`) refuse the config.
#[test]
fn a_webhook_secret_without_whsec_is_refused() {
    let fleet = Fleet::new();
    fleet.write_config(&format!(
        "{GOOD_HEAD}{GOOD_FLOW}  [[flow.on]]\n  name = \"erp\"\n  event = \"success\"\n  \
         webhook = \"https://erp.example/hooks\"\n  secret = \"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n"
    ));
    for command in ["check", "sync"] {
        let out = fleet.hubsync(&[command]);
        assert_eq!(out.code, 2, "{command}: {}", out.stderr);
        assert!(
            out.stderr.contains(
                "flow `sales` handler `erp`: `secret` does not start with `whsec_`; a Standard Webhooks secret is `whsec_` + base64 of 24-64 random bytes; make one with `echo whsec_$(head -c 32 /dev/urandom | base64)`"
            ),
            "{command}: {}",
            out.stderr
        );
        assert!(
            !out.stderr.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            "{}",
            out.stderr
        );
    }
}
