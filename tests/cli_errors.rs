//! Bad config and bad usage: exit code 2 and a message that names the place.
//! Each expected message is the exact text a user sees.

mod common;

use common::Fleet;

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
