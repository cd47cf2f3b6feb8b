//! The HTTP API against a real `hubsync serve` on a free loopback port, with
//! a PostgreSQL master and SQLite sites (plus one missing site file, which is
//! unreachable): every route, auth, bad parameters, duplicate sync requests,
//! data services with exact JSON types, metrics after a known sync, the
//! OpenAPI document and run history retention.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{PsqlSession, pg_create_db, psql, sqlite_exec};
use serde_json::{Value, json};

const OPERATE: &str = "operate-token-0123456789";
const READ: &str = "read-token-0123456789abc";

/// A fleet on disk: PostgreSQL master `sales` table, SQLite sites `s1`
/// (2 sales, region north) and `s2` (3 sales, region south), and `s3`
/// (region north) whose file does not exist.
struct Fleet {
    dir: tempfile::TempDir,
    master: String,
}

impl Fleet {
    fn new() -> Fleet {
        Fleet::named("api")
    }

    /// [`Fleet::new`] with a master database named after `prefix`.
    fn named(prefix: &str) -> Fleet {
        let dir = tempfile::tempdir().expect("temp dir");
        let master = pg_create_db(prefix);
        psql(
            &master,
            "CREATE TABLE sales (store_id text, id bigint, qty int, updated_at timestamptz, PRIMARY KEY (store_id, id));",
        );
        sqlite_exec(
            &dir.path().join("s1.db"),
            "CREATE TABLE sales (id INTEGER PRIMARY KEY, qty INTEGER, updated_at TEXT);
             INSERT INTO sales VALUES (1, 5, '2026-01-01T00:00:00.000000Z'), (2, 7, '2026-01-01T00:00:01.000000Z');",
        );
        sqlite_exec(
            &dir.path().join("s2.db"),
            "CREATE TABLE sales (id INTEGER PRIMARY KEY, qty INTEGER, updated_at TEXT);
             INSERT INTO sales VALUES (1, 1, '2026-01-01T00:00:00.000000Z'), (2, 2, '2026-01-01T00:00:00.000000Z'),
                                      (3, 4, '2026-01-02T00:00:00.000000Z');",
        );
        Fleet { dir, master }
    }

    /// Writes the config: the fleet, `extra_sites`, flow `sales` (pull, no
    /// schedule), `[api]` with the two tokens (or none), and `extra`.
    fn write_config(&self, with_tokens: bool, extra_sites: &str, extra: &str) {
        let tokens = if with_tokens {
            format!(
                "[[api.token]]\nname = \"ops\"\ntoken = \"{OPERATE}\"\nrole = \"operate\"\n\
                 [[api.token]]\nname = \"viewer\"\ntoken = \"{READ}\"\nrole = \"read\"\n"
            )
        } else {
            String::new()
        };
        let text = format!(
            r#"[hub]
connect_retries = 0
[master]
url = "{master}"
[[site]]
id = "s1"
url = "sqlite://s1.db"
tags = {{ region = "north" }}
[[site]]
id = "s2"
url = "sqlite://s2.db"
tags = {{ region = "south" }}
[[site]]
id = "s3"
url = "sqlite://missing.db"
tags = {{ region = "north" }}
{extra_sites}
[[flow]]
name = "sales"
direction = "pull"
  [[flow.stream]]
  source = "sales"
  target = "sales"
  primary_key = ["id"]
  cursor = "updated_at"
  site_column = "store_id"
[api]
listen = "127.0.0.1:0"
{tokens}
{extra}
"#,
            master = self.master
        );
        std::fs::write(self.dir.path().join("hubsync.toml"), text).expect("write config");
    }

    fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("hubsync.toml")
    }

    /// Starts `hubsync <command>` and waits for its API address.
    fn serve(&self, command: &str) -> Server {
        let mut child = common::hubsync()
            .arg("-c")
            .arg(self.config_path())
            .arg(command)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hubsync");
        let stderr = child.stderr.take().expect("stderr");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sender = Some(sender);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("hubsync API listening on http://") {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    if let Some(sender) = sender.take() {
                        let _ = sender.send(Ok(addr));
                    }
                } else if let Some(sender) = &sender {
                    let _ = sender.send(Err(line));
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(left) {
                Ok(Ok(addr)) => {
                    return Server {
                        child,
                        base: format!("http://{addr}"),
                    };
                }
                Ok(Err(line)) => seen.push(line),
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "hubsync {command} did not start its API:\n{}",
                        seen.join("\n")
                    );
                }
            }
        }
    }
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Sends SIGTERM and returns the exit code.
    fn terminate(mut self) -> Option<i32> {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        self.child.wait().expect("wait").code()
    }

    /// Sends a request; returns the status and the body parsed as JSON (or
    /// as a JSON string when it is not JSON).
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let (status, text) = self.call_text(method, path, token, body);
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    fn call_text(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            // Loopback only: never through a proxy from the environment.
            .proxy(None)
            .build()
            .into();
        let url = format!("{}{path}", self.base);
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut response = match method {
            "GET" => {
                let mut request = agent.get(&url);
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.call()
            }
            "POST" => {
                let mut request = agent.post(&url).header("Content-Type", "application/json");
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.send(body.unwrap_or(""))
            }
            "DELETE" => {
                let mut request = agent.delete(&url);
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.call()
            }
            other => panic!("method {other}"),
        }
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().expect("body");
        (status, text)
    }

    fn get(&self, path: &str) -> Value {
        let (status, body) = self.call("GET", path, Some(READ), None);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Polls `/api/v1/runs?status=running` until no run is running.
    fn wait_idle(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let body = self.get("/api/v1/runs?status=running");
            if body["runs"].as_array().unwrap().is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "runs still running: {body}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn error(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

#[test]
fn routes_auth_and_bad_parameters() {
    let fleet = Fleet::new();
    fleet.write_config(true, "", "");
    let server = fleet.serve("serve");

    // /health needs no token.
    assert_eq!(
        server.call("GET", "/health", None, None),
        (200, json!({"status": "ok", "master": "ok"}))
    );
    // Nor do the orchestrator's probes: alive, and ready (master answers,
    // state schema current: version 11 is this build's).
    assert_eq!(
        server.call("GET", "/healthz", None, None),
        (200, json!({"status": "ok"}))
    );
    assert_eq!(
        server.call("GET", "/readyz", None, None),
        (
            200,
            json!({"status": "ready", "master": "ok", "schema": "current", "schema_version": 11})
        )
    );
    // A master whose schema an older hub left behind is not ready.
    psql(
        &fleet.master,
        "DELETE FROM hubsync.schema_version WHERE version = 11",
    );
    assert_eq!(
        server.call("GET", "/readyz", None, None),
        (
            503,
            json!({"status": "not_ready", "master": "ok", "schema": "behind", "schema_version": 11})
        )
    );
    psql(
        &fleet.master,
        "INSERT INTO hubsync.schema_version VALUES (11)",
    );
    // No token, wrong token, wrong role.
    assert_eq!(
        server.call("GET", "/api/v1/sites", None, None),
        (
            401,
            error(
                "unauthorized",
                "missing token; send `Authorization: Bearer <token>` with a token from `[[api.token]]`"
            )
        )
    );
    assert_eq!(
        server.call("GET", "/api/v1/sites", Some("wrong-token-0123456789"), None),
        (
            401,
            error(
                "unauthorized",
                "unknown token; use a token from `[[api.token]]`"
            )
        )
    );
    assert_eq!(
        server.call("POST", "/api/v1/flows/sales/sync", Some(READ), Some("{}")),
        (
            403,
            error(
                "forbidden",
                "token `viewer` has role `read`; POST /api/v1/flows/sales/sync needs role `operate`"
            )
        )
    );
    assert_eq!(
        server.call("GET", "/metrics", None, None).0,
        401,
        "metrics need a token too"
    );

    // Fleet description.
    assert_eq!(
        server.get("/api/v1/sites"),
        json!({"sites": [
            {"id": "s1", "dialect": "sqlite", "tags": {"region": "north"}},
            {"id": "s2", "dialect": "sqlite", "tags": {"region": "south"}},
            {"id": "s3", "dialect": "sqlite", "tags": {"region": "north"}},
        ], "inventory_error": null})
    );
    assert_eq!(
        server.get("/api/v1/flows"),
        json!({"flows": [{"name": "sales", "direction": "pull", "schedule": null,
                          "streams": [{"name": "sales", "target": "sales"}]}]})
    );
    assert_eq!(
        server.get("/api/v1/runs"),
        json!({"runs": [], "next_cursor": null})
    );

    // Bad parameters name the parameter.
    let bad = |path: &str, message: &str| {
        assert_eq!(
            server.call("GET", path, Some(READ), None),
            (400, error("bad_request", message)),
            "{path}"
        );
    };
    bad(
        "/api/v1/runs?status=done",
        "query param `status`: unknown status `done`; use running, succeeded, failed, skipped or partial",
    );
    bad(
        "/api/v1/runs?limit=0",
        "query param `limit`: `0` is not a whole number from 1 to 1000",
    );
    bad(
        "/api/v1/runs?limit=ten",
        "query param `limit`: `ten` is not a whole number from 1 to 1000",
    );
    bad(
        "/api/v1/runs?cursor=xyz",
        "query param `cursor`: not a `next_cursor` returned by this API",
    );
    bad(
        "/api/v1/runs?sort=asc",
        "unknown query param `sort`; use flow, site, status, limit or cursor",
    );
    let post = |path: &str, body: &str| server.call("POST", path, Some(OPERATE), Some(body));
    assert_eq!(
        post("/api/v1/flows/nope/sync", "{}"),
        (
            404,
            error("not_found", "unknown flow `nope`; known flows: sales")
        )
    );
    assert_eq!(
        post(
            "/api/v1/flows/sales/sync",
            r#"{"sites": ["s1"], "tags": {"region": "north"}}"#
        ),
        (
            400,
            error("bad_request", "body: give `sites` or `tags`, not both")
        )
    );
    assert_eq!(
        post("/api/v1/flows/sales/sync", r#"{"sites": ["s9"]}"#),
        (
            400,
            error(
                "bad_request",
                "body: `sites`: unknown site `s9`; known sites: s1, s2, s3"
            )
        )
    );
    assert_eq!(
        post(
            "/api/v1/flows/sales/sync",
            r#"{"tags": {"region": "east"}}"#
        ),
        (
            400,
            error("bad_request", "body: `tags`: no site has tags region=east")
        )
    );
    let (status, body) = post("/api/v1/flows/sales/sync", r#"{"sites": "s1"}"#);
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("body: invalid type: string \"s1\", expected a sequence"),
        "{body}"
    );
    assert_eq!(
        server.call("GET", "/api/v1/nothing", Some(READ), None),
        (
            404,
            error("not_found", "no such route; see /api/v1/openapi.json")
        )
    );
    assert_eq!(
        server.call("DELETE", "/api/v1/sites", Some(OPERATE), None),
        (
            405,
            error(
                "method_not_allowed",
                "this route does not take this method; see /api/v1/openapi.json"
            )
        )
    );

    // A sync of every site: 202 with one run per site, in inventory order.
    let (status, body) = post("/api/v1/flows/sales/sync", "{}");
    assert_eq!(status, 202, "{body}");
    let runs = body["runs"].as_array().unwrap();
    let sites: Vec<&str> = runs.iter().map(|r| r["site"].as_str().unwrap()).collect();
    assert_eq!(sites, ["s1", "s2", "s3"]);
    for run in runs {
        assert_eq!(run["status"], "started", "{body}");
        assert_eq!(run["run_id"].as_str().unwrap().len(), 36, "{body}");
    }
    server.wait_idle();
    assert_eq!(
        psql(&fleet.master, "SELECT count(*), sum(qty) FROM sales"),
        "5|19"
    );

    // History: newest first, filters, paging with a cursor.
    let all = server.get("/api/v1/runs");
    let all = all["runs"].as_array().unwrap();
    assert_eq!(all.len(), 3);
    for pair in all.windows(2) {
        assert!(pair[0]["started_at"].as_str() >= pair[1]["started_at"].as_str());
    }
    let s1 = server.get("/api/v1/runs?site=s1");
    assert_eq!(s1["runs"].as_array().unwrap().len(), 1);
    assert_eq!(s1["runs"][0]["status"], "succeeded");
    assert_eq!(s1["runs"][0]["rows_read"], 2);
    assert_eq!(s1["runs"][0]["rows_written"], 2);
    assert_eq!(s1["runs"][0]["run_id"], runs[0]["run_id"]);
    let s2 = server.get("/api/v1/runs?site=s2&flow=sales&status=succeeded");
    assert_eq!(s2["runs"][0]["rows_written"], 3);
    let failed = server.get("/api/v1/runs?status=failed");
    assert_eq!(failed["runs"].as_array().unwrap().len(), 1);
    assert_eq!(failed["runs"][0]["site"], "s3");
    let error_text = failed["runs"][0]["error"].as_str().unwrap();
    assert!(
        error_text.starts_with("flow `sales` site `s3`: cannot connect to sqlite://")
            && error_text.ends_with("missing.db: the database file does not exist"),
        "{error_text}"
    );
    assert_eq!(failed["runs"][0]["error_kind"], "connection");
    assert_eq!(s1["runs"][0]["error_kind"], serde_json::Value::Null);
    let mut paged = Vec::new();
    let mut path = "/api/v1/runs?limit=1".to_string();
    loop {
        let page = server.get(&path);
        paged.extend(
            page["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["run_id"].clone()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/runs?limit=1&cursor={cursor}"),
            None => break,
        }
        assert!(paged.len() <= 3, "paging does not end");
    }
    let expected: Vec<Value> = all.iter().map(|r| r["run_id"].clone()).collect();
    assert_eq!(
        paged, expected,
        "pages of one cover every run once, newest first"
    );

    // Status: checkpoint, lag, circuit, last run per pair.
    let status = server.get("/api/v1/status");
    let pairs = status["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 3);
    assert_eq!(pairs[0]["site"], "s1");
    assert_eq!(pairs[0]["last_run"]["status"], "succeeded");
    assert_eq!(
        pairs[0]["checkpoints"][0]["position"],
        "(2026-01-01T00:00:01.000000Z, 2)"
    );
    assert!(pairs[0]["lag_seconds"].as_i64().unwrap() < 60);
    assert_eq!(
        pairs[0]["circuit"],
        json!({"open": false, "failures": 0, "until": null})
    );
    assert_eq!(
        pairs[1]["checkpoints"][0]["position"],
        "(2026-01-02T00:00:00.000000Z, 3)"
    );
    assert_eq!(pairs[2]["last_run"]["status"], "failed");
    assert_eq!(pairs[2]["lag_seconds"], Value::Null);
    assert_eq!(pairs[2]["checkpoints"], json!([]));
    assert_eq!(pairs[2]["circuit"]["failures"], 1);
    // Large fleets: summary counts, filters and paging.
    assert_eq!(status["summary"]["pairs"], 3);
    assert_eq!(status["summary"]["sites"], 3);
    assert_eq!(
        status["summary"]["by_state"],
        json!({"failed": 1, "succeeded": 2})
    );
    let failed = server.get("/api/v1/status?state=failed");
    assert_eq!(
        (failed["total"].clone(), failed["pairs"][0]["site"].clone()),
        (json!(1), json!("s3"))
    );
    let north = server.get("/api/v1/status?tag=region:north&limit=1");
    assert_eq!(north["total"], 2);
    assert_eq!(north["pairs"].as_array().unwrap().len(), 1);
    assert_eq!(north["pairs"][0]["site"], "s1");
    assert_eq!(north["next_offset"], 1);
    let second = server.get("/api/v1/status?tag=region:north&limit=1&offset=1");
    assert_eq!(
        (
            second["pairs"][0]["site"].clone(),
            second["next_offset"].clone()
        ),
        (json!("s3"), Value::Null)
    );
    assert_eq!(server.get("/api/v1/status?q=S2")["pairs"][0]["site"], "s2");
    // The dashboard filters its grid the same way, and pages it.
    let (code, html) = server.call_text("GET", "/?q=s2&state=&tag=", Some(READ), None);
    assert_eq!(code, 200);
    assert!(html.contains(r#"<tr data-site="s2">"#), "{html}");
    assert!(!html.contains(r#"<tr data-site="s1">"#), "{html}");
    assert!(html.contains("sites 1–1 of 1 matching"), "{html}");
    let (_, html) = server.call_text("GET", "/?tag=region%3Anorth&limit=1", Some(READ), None);
    assert!(html.contains(r#"<tr data-site="s1">"#), "{html}");
    assert!(!html.contains(r#"<tr data-site="s3">"#), "{html}");
    assert!(
        html.contains(r#"<a id="next-page" href="/?tag=region%3Anorth&amp;limit=1&amp;offset=1">"#),
        "{html}"
    );

    // The dashboard (PostgreSQL master): grid, failing site, the hour's 5 rows.
    let (status, html) = server.call_text("GET", "/", Some(READ), None);
    assert_eq!(status, 200);
    assert!(
        html.contains(r#"data-flow="sales" data-site="s1" data-status="succeeded""#),
        "{html}"
    );
    assert!(
        html.contains(r#"data-flow="sales" data-site="s3" data-status="failed""#),
        "{html}"
    );
    assert!(html.contains(r#"data-total="5""#), "{html}");
    assert!(!html.contains("<script"), "no scripts: {html}");
    // Without a token: the token form (401); `/?token=` keeps it in a cookie.
    let (status, html) = server.call_text("GET", "/", None, None);
    assert_eq!(status, 401);
    assert!(html.contains(r#"name="token""#), "{html}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .build()
        .into();
    let response = agent
        .get(format!("{}/?token={READ}", server.base))
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 303);
    assert_eq!(
        response
            .headers()
            .get("set-cookie")
            .unwrap()
            .to_str()
            .unwrap(),
        format!("hubsync_token={READ}; Path=/; HttpOnly; SameSite=Strict")
    );
    let (status, _) = {
        let mut response = agent
            .get(format!("{}/api/v1/sites", server.base))
            .header("Cookie", format!("hubsync_token={READ}"))
            .call()
            .unwrap();
        (
            response.status().as_u16(),
            response.body_mut().read_to_string().unwrap(),
        )
    };
    assert_eq!(status, 200, "the cookie is a token for GET routes");
    let response = agent
        .post(format!("{}/api/v1/flows/sales/sync", server.base))
        .header("Cookie", format!("hubsync_token={OPERATE}"))
        .send("{}")
        .unwrap();
    assert_eq!(response.status().as_u16(), 401, "never for POST routes");
}

/// A PostgreSQL site whose table is locked: its run starts, then waits.
/// With one site slot, a second request for it answers `already_running`
/// at once, and a request for another site waits for the slot (`queued`).
#[test]
fn a_running_pair_is_not_started_twice() {
    let fleet = Fleet::new();
    let site = pg_create_db("api_site");
    psql(
        &site,
        "CREATE TABLE sales (id bigint PRIMARY KEY, qty int, updated_at timestamptz);
         INSERT INTO sales VALUES (1, 3, '2026-01-01T00:00:00Z');",
    );
    fleet.write_config(
        true,
        &format!("[[site]]\nid = \"pg1\"\nurl = \"{site}\"\ntags = {{ region = \"east\" }}\n"),
        "",
    );
    let text = std::fs::read_to_string(fleet.config_path()).unwrap();
    std::fs::write(
        fleet.config_path(),
        text.replace("[hub]\n", "[hub]\nmax_concurrent_sites = 1\n"),
    )
    .unwrap();
    let server = fleet.serve("serve");
    let lock = PsqlSession::start(&site, "BEGIN; LOCK TABLE sales IN ACCESS EXCLUSIVE MODE;");
    let deadline = Instant::now() + Duration::from_secs(10);
    while psql(
        &site,
        "SELECT count(*) FROM pg_locks WHERE relation = 'sales'::regclass AND mode = 'AccessExclusiveLock' AND granted",
    ) != "1"
    {
        assert!(Instant::now() < deadline, "the lock was not taken");
        std::thread::sleep(Duration::from_millis(50));
    }
    let body = r#"{"tags": {"region": "east"}}"#;
    let (status, first) = server.call(
        "POST",
        "/api/v1/flows/sales/sync",
        Some(OPERATE),
        Some(body),
    );
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["runs"][0]["site"], "pg1");
    assert_eq!(first["runs"][0]["status"], "started");
    let run_id = first["runs"][0]["run_id"].clone();
    let (status, second) = server.call(
        "POST",
        "/api/v1/flows/sales/sync",
        Some(OPERATE),
        Some(body),
    );
    assert_eq!(status, 202, "{second}");
    assert_eq!(
        second,
        json!({"flow": "sales", "runs": [
            {"site": "pg1", "status": "already_running", "run_id": run_id, "error": null}
        ]})
    );
    // The only site slot is held by pg1's run: s1 waits (5 s), then is queued.
    let (status, third) = server.call(
        "POST",
        "/api/v1/flows/sales/sync",
        Some(OPERATE),
        Some(r#"{"sites": ["s1"]}"#),
    );
    assert_eq!(status, 202, "{third}");
    assert_eq!(
        third,
        json!({"flow": "sales", "runs": [
            {"site": "s1", "status": "queued", "run_id": null, "error": null}
        ]})
    );
    assert!(lock.finish("COMMIT;"));
    // The queued run starts once pg1's run frees the slot.
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.get("/api/v1/runs?site=s1&status=succeeded")["runs"]
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the queued run never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    server.wait_idle();
    let runs = server.get("/api/v1/runs?site=pg1");
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(runs["runs"][0]["run_id"], run_id);
    assert_eq!(runs["runs"][0]["status"], "succeeded");
    assert_eq!(
        psql(
            &fleet.master,
            "SELECT string_agg(store_id || ':' || id || ':' || qty, ',' ORDER BY store_id, id) FROM sales"
        ),
        "pg1:1:3,s1:1:5,s1:2:7"
    );
    // SIGTERM stops `serve` cleanly.
    assert_eq!(server.terminate(), Some(0));
}

/// Data services: typed params, errors naming the param, site selection,
/// an unreachable site beside the others' rows, statements, and exact JSON
/// types from a PostgreSQL master.
#[test]
fn services_keep_types_and_report_each_site() {
    let fleet = Fleet::new();
    psql(
        &fleet.master,
        "CREATE TABLE kinds (id int4, big bigint, amount numeric(38,10), ratio float8, at timestamptz,
                             local timestamp, day date, raw bytea, doc jsonb, note text, flag boolean);
         INSERT INTO kinds VALUES
           (1, 9223372036854775807, 1234567890123456789012345678.0123456789, 'NaN', '2026-01-02 10:00:00.25+01',
            '2026-01-02 09:00:00', '2026-01-02', '\\x00ff10', '{\"n\": 12345678901234567890123}', '', true),
           (2, -9223372036854775808, -0.5, 'Infinity', NULL, NULL, NULL, NULL, NULL, NULL, false),
           (3, 0, 0, '-Infinity', NULL, NULL, NULL, NULL, NULL, 'x', NULL);
         CREATE TABLE eod (day date, note text);
         CREATE TYPE mood AS ENUM ('calm', 'busy');
         CREATE TABLE odd (n int4, span interval, tags text[], mood mood);
         INSERT INTO odd VALUES (1, '1 day 02:00:00', '{a,\"b c\"}', 'busy');
         CREATE PROCEDURE end_of_day(d date, n text) LANGUAGE sql AS $$ INSERT INTO eod VALUES (d, n) $$;",
    );
    fleet.write_config(
        true,
        "",
        r#"
[[service]]
name = "hq"
on = "master"
  [[service.operation]]
  name = "kinds"
  sql = "SELECT * FROM kinds WHERE id >= :from_id ORDER BY id"
  params = [{ name = "from_id", type = "int", default = 1 }]
  [[service.operation]]
  name = "echo"
  sql = "SELECT :amount AS amount, :at AS at, :note AS note"
  params = [{ name = "amount", type = "numeric" }, { name = "at", type = "timestamptz" }, { name = "note", type = "text" }]
  [[service.operation]]
  name = "odd"
  sql = "UPDATE odd SET n = n + 1 RETURNING n, span, tags, mood"
  [[service.operation]]
  name = "close_day"
  sql = "CALL end_of_day(:day, :note)"
  params = [{ name = "day", type = "date", required = true }, { name = "note", type = "text", default = "closed" }]
[[service]]
name = "stock"
on = "site"
  [[service.operation]]
  name = "sale"
  sql = "SELECT id, qty, :site.region AS region FROM sales WHERE id = :id"
  params = [{ name = "id", type = "int", required = true }]
  [[service.operation]]
  name = "by_note"
  sql = "SELECT count(*) AS n FROM sales WHERE CAST(id AS TEXT) = :note"
  params = [{ name = "note", type = "text", required = true }]
  [[service.operation]]
  name = "restock"
  sql = "UPDATE sales SET qty = qty + :add WHERE id <= :upto"
  params = [{ name = "add", type = "int", required = true }, { name = "upto", type = "int", required = true }]
"#,
    );
    let server = fleet.serve("serve");
    let post = |path: &str, body: &str| server.call("POST", path, Some(OPERATE), Some(body));

    let (status, body) = post("/api/v1/services/hq/kinds", "{}");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["failed"], 0);
    assert_eq!(body["results"][0]["site"], Value::Null);
    assert_eq!(
        body["results"][0]["columns"],
        json!([
            "id", "big", "amount", "ratio", "at", "local", "day", "raw", "doc", "note", "flag"
        ])
    );
    assert_eq!(
        body["results"][0]["rows"],
        json!([
            {"id": 1, "big": "9223372036854775807", "amount": "1234567890123456789012345678.0123456789",
             "ratio": "NaN", "at": "2026-01-02T09:00:00.250Z", "local": "2026-01-02T09:00:00",
             "day": "2026-01-02", "raw": "AP8Q", "doc": {"n": 12345678901234567890123_f64}, "note": "", "flag": true},
            {"id": 2, "big": "-9223372036854775808", "amount": "-0.5000000000", "ratio": "Infinity",
             "at": null, "local": null, "day": null, "raw": null, "doc": null, "note": null, "flag": false},
            {"id": 3, "big": "0", "amount": "0.0000000000", "ratio": "-Infinity",
             "at": null, "local": null, "day": null, "raw": null, "doc": null, "note": "x", "flag": null},
        ])
    );
    // The JSON column keeps its number's digits exactly in the raw text.
    let (_, raw_text) = server.call_text(
        "POST",
        "/api/v1/services/hq/kinds",
        Some(OPERATE),
        Some("{}"),
    );
    assert!(
        raw_text.contains(r#""doc":{"n": 12345678901234567890123}"#),
        "{raw_text}"
    );
    // Regression: a call on a master connection that had prepared the
    // statement before failed with "insufficient data left in message"; ten
    // calls reuse the pool's connections.
    for _ in 0..10 {
        let (status, body) = post(
            "/api/v1/services/hq/kinds",
            r#"{"params": {"from_id": "3"}}"#,
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["failed"], 0, "{body}");
        assert_eq!(
            body["results"][0]["rows"].as_array().unwrap().len(),
            1,
            "{body}"
        );
    }
    let (status, body) = post(
        "/api/v1/services/hq/echo",
        r#"{"params": {"amount": "12345678901234567890.123456789", "at": "2026-03-01T12:00:00+02:00", "note": "it's"}}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"][0]["rows"],
        json!([{"amount": "12345678901234567890.123456789", "at": "2026-03-01T10:00:00Z", "note": "it's"}])
    );

    // Types the driver does not decode (interval, array, enum) come back as
    // their PostgreSQL text, even from an UPDATE ... RETURNING.
    let (status, body) = post("/api/v1/services/hq/odd", "{}");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"][0]["rows"],
        json!([{"n": 2, "span": "1 day 02:00:00", "tags": "{a,\"b c\"}", "mood": "busy"}])
    );
    assert_eq!(psql(&fleet.master, "SELECT n FROM odd"), "2");

    // A stored procedure: a statement, its default param filled in.
    let (status, body) = post(
        "/api/v1/services/hq/close_day",
        r#"{"params": {"day": "2026-01-05"}}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["rows_affected"], 0, "{body}");
    assert_eq!(
        psql(&fleet.master, "SELECT day, note FROM eod"),
        "2026-01-05|closed"
    );

    // Bad calls name the service, operation and param.
    let bad = |path: &str, body: &str, status: u16, code: &str, message: &str| {
        assert_eq!(
            post(path, body),
            (status, error(code, message)),
            "{path} {body}"
        );
    };
    bad(
        "/api/v1/services/stock/sale",
        r#"{"all_sites": true}"#,
        400,
        "bad_request",
        "service `stock` operation `sale` param `id`: missing; it is required (int)",
    );
    bad(
        "/api/v1/services/stock/sale",
        r#"{"params": {"id": 1.5}, "all_sites": true}"#,
        400,
        "bad_request",
        "service `stock` operation `sale` param `id`: expected a 64-bit integer, got `1.5`",
    );
    bad(
        "/api/v1/services/stock/sale",
        r#"{"params": {"id": true}, "all_sites": true}"#,
        400,
        "bad_request",
        "service `stock` operation `sale` param `id`: expected an `int` value, got a boolean",
    );
    bad(
        "/api/v1/services/stock/sale",
        r#"{"params": {"id": 1, "sku": "x"}, "all_sites": true}"#,
        400,
        "bad_request",
        "service `stock` operation `sale` param `sku`: not a parameter of this operation; its parameters: id",
    );
    bad(
        "/api/v1/services/stock/sale",
        r#"{"params": {"id": 1}}"#,
        400,
        "bad_request",
        "service `stock`: runs on sites (`on = \"site\"`); choose them by id, by tags, or all",
    );
    bad(
        "/api/v1/services/stock/sale",
        r#"{"params": {"id": 1}, "sites": ["s1"], "all_sites": true}"#,
        400,
        "bad_request",
        "body: give one of `sites`, `tags` or `all_sites`",
    );
    bad(
        "/api/v1/services/hq/kinds",
        r#"{"sites": ["s1"]}"#,
        400,
        "bad_request",
        "service `hq`: runs on the master (`on = \"master\"`); do not choose sites",
    );
    bad(
        "/api/v1/services/nope/x",
        "{}",
        404,
        "not_found",
        "unknown service `nope`; known services: hq, stock",
    );
    bad(
        "/api/v1/services/hq/drop_all",
        "{}",
        404,
        "not_found",
        "service `hq`: unknown operation `drop_all`; known operations: kinds, echo, odd, close_day",
    );
    assert_eq!(
        server
            .call("POST", "/api/v1/services/hq/kinds", Some(READ), Some("{}"))
            .0,
        403
    );

    // Sites by tag: s1 answers, s3 (unreachable) is reported beside it.
    let (status, body) = post(
        "/api/v1/services/stock/sale",
        r#"{"params": {"id": "2"}, "tags": {"region": "north"}}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["failed"], 1);
    assert_eq!(
        body["results"][0],
        json!({"site": "s1", "ok": true, "columns": ["id", "qty", "region"],
               "rows": [{"id": "2", "qty": "7", "region": "north"}], "rows_affected": null, "error": null})
    );
    assert_eq!(body["results"][1]["site"], "s3");
    assert_eq!(body["results"][1]["ok"], false);
    let message = body["results"][1]["error"].as_str().unwrap();
    assert!(
        message
            .starts_with("service `stock` operation `sale` site `s3`: cannot connect to sqlite://")
            && message.ends_with("missing.db: the database file does not exist"),
        "{message}"
    );

    // A value is bound, never spliced: this text matches no id and drops nothing.
    let (status, body) = post(
        "/api/v1/services/stock/by_note",
        r#"{"params": {"note": "1' OR '1'='1"}, "sites": ["s2"]}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["rows"], json!([{"n": "0"}]));

    // A statement answers rows affected per site.
    let (status, body) = post(
        "/api/v1/services/stock/restock",
        r#"{"params": {"add": 10, "upto": 2}, "sites": ["s2", "s1"]}"#,
    );
    assert_eq!(status, 200, "{body}");
    let affected: Vec<(Value, Value)> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["site"].clone(), r["rows_affected"].clone()))
        .collect();
    assert_eq!(affected, [(json!("s2"), json!(2)), (json!("s1"), json!(2))]);
    assert_eq!(
        common::sqlite_query(
            &fleet.dir.path().join("s2.db"),
            "SELECT group_concat(qty) FROM (SELECT qty FROM sales ORDER BY id)"
        ),
        "11,12,4"
    );
}

/// `GET /metrics` after a known sync: s1 read 2 rows, s2 3, s3 failed.
#[test]
fn metrics_count_a_known_sync() {
    let fleet = Fleet::new();
    fleet.write_config(true, "", "");
    // One failure opens a circuit (for a minute).
    let text = std::fs::read_to_string(fleet.config_path()).unwrap();
    std::fs::write(
        fleet.config_path(),
        text.replace("[hub]\n", "[hub]\ncircuit_breaker_failures = 1\n"),
    )
    .unwrap();
    let server = fleet.serve("serve");
    let (status, _) = server.call(
        "POST",
        "/api/v1/flows/sales/sync",
        Some(OPERATE),
        Some("{}"),
    );
    assert_eq!(status, 202);
    server.wait_idle();
    let (status, text) = server.call_text("GET", "/metrics", Some(READ), None);
    assert_eq!(status, 200, "{text}");
    let samples = parse_prometheus(&text);
    let value = |series: &str| {
        *samples
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
    };
    assert_eq!(
        value(r#"hubsync_rows_read_total{flow="sales",site="s1"}"#),
        2.0
    );
    assert_eq!(
        value(r#"hubsync_rows_read_total{flow="sales",site="s2"}"#),
        3.0
    );
    assert_eq!(
        value(r#"hubsync_rows_written_total{flow="sales",site="s1"}"#),
        2.0
    );
    assert_eq!(
        value(r#"hubsync_rows_written_total{flow="sales",site="s2"}"#),
        3.0
    );
    assert_eq!(
        value(r#"hubsync_rows_read_total{flow="sales",site="s3"}"#),
        0.0
    );
    assert_eq!(
        value(r#"hubsync_runs_total{flow="sales",site="s1",status="succeeded"}"#),
        1.0
    );
    assert_eq!(
        value(r#"hubsync_runs_total{flow="sales",site="s2",status="succeeded"}"#),
        1.0
    );
    assert_eq!(
        value(r#"hubsync_runs_total{flow="sales",site="s3",status="failed"}"#),
        1.0
    );
    assert_eq!(
        value(r#"hubsync_run_duration_seconds_count{flow="sales"}"#),
        3.0
    );
    assert_eq!(
        value(r#"hubsync_run_duration_seconds_bucket{flow="sales",le="+Inf"}"#),
        3.0
    );
    assert_eq!(
        value(r#"hubsync_circuit_open{flow="sales",site="s3"}"#),
        1.0
    );
    assert_eq!(
        value(r#"hubsync_circuit_open{flow="sales",site="s1"}"#),
        0.0
    );
    assert_eq!(value("hubsync_site_connections_open"), 0.0);
    // Two sites pulled into the master, one batch each, 4 write slots.
    let high_water = value("hubsync_master_writes_high_water");
    assert!((1.0..=2.0).contains(&high_water), "{high_water}");
    let age = value(r#"hubsync_last_success_age_seconds{flow="sales",site="s1"}"#);
    assert!((0.0..60.0).contains(&age), "{age}");
    assert!(!samples.contains_key(r#"hubsync_last_success_age_seconds{flow="sales",site="s3"}"#));
    // s2's newest cursor is 2026-01-02T00:00:00Z: its age is now minus that.
    let cursor_age =
        value(r#"hubsync_checkpoint_cursor_age_seconds{flow="sales",stream="sales",site="s2"}"#);
    let expected = (chrono::Utc::now()
        - chrono::DateTime::parse_from_rfc3339("2026-01-02T00:00:00Z")
            .unwrap()
            .to_utc())
    .num_seconds() as f64;
    assert!(
        (cursor_age - expected).abs() < 60.0,
        "{cursor_age} vs {expected}"
    );

    // s3's circuit is open: a new sync request skips it and says why.
    let (status, body) = server.call(
        "POST",
        "/api/v1/flows/sales/sync",
        Some(OPERATE),
        Some(r#"{"sites": ["s3"]}"#),
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["runs"][0]["status"], "skipped", "{body}");
    assert_eq!(body["runs"][0]["run_id"], Value::Null, "{body}");
    let why = body["runs"][0]["error"].as_str().unwrap();
    assert!(
        why.starts_with(
            "flow `sales` site `s3`: circuit open after 1 consecutive failed runs; skipped until "
        ),
        "{why}"
    );
    let status = server.get("/api/v1/status");
    assert_eq!(status["pairs"][2]["circuit"]["open"], true, "{status}");
    assert_eq!(status["pairs"][2]["circuit"]["failures"], 1, "{status}");
}

/// `name{labels} value` lines of the Prometheus text format.
fn parse_prometheus(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            (series.to_string(), value.parse::<f64>().expect("a number"))
        })
        .collect()
}

#[test]
fn openapi_document_lists_every_route() {
    let fleet = Fleet::new();
    fleet.write_config(false, "", "");
    let server = fleet.serve("serve");
    // No token configured: the API is open (loopback only).
    let doc = server.get("/api/v1/openapi.json");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let mut paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/api/v1/events",
            "/api/v1/events/{event_id}/replay",
            "/api/v1/flows",
            "/api/v1/flows/{flow}/sync",
            "/api/v1/openapi.json",
            "/api/v1/runs",
            "/api/v1/services/{service}/{operation}",
            "/api/v1/sites",
            "/api/v1/status",
            "/health",
            "/healthz",
            "/metrics",
            "/readyz",
        ]
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let run_params: Vec<&str> = doc["paths"]["/api/v1/runs"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(run_params, ["flow", "site", "status", "limit", "cursor"]);
    assert!(doc["components"]["schemas"]["CallResponse"].is_object());
}

#[test]
fn a_non_loopback_listen_without_tokens_is_refused() {
    let fleet = Fleet::new();
    fleet.write_config(false, "", "");
    let text = std::fs::read_to_string(fleet.config_path()).unwrap();
    std::fs::write(
        fleet.config_path(),
        text.replace("127.0.0.1:0", "0.0.0.0:7070"),
    )
    .unwrap();
    let out = common::run(
        common::hubsync()
            .arg("-c")
            .arg(fleet.config_path())
            .arg("serve"),
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        format!(
            "error: config `{}`: `api.listen` `0.0.0.0:7070` is not a loopback address and no `[[api.token]]` is configured: \
             anyone on the network could start syncs and call services; add a token or listen on `127.0.0.1`",
            fleet.config_path().display()
        )
    );
}

/// Finished runs older than `run_history_days` are deleted when the daemon
/// starts; newer ones and running ones stay. Delivered follow-up events
/// of the same age go too.
#[test]
fn old_run_history_is_pruned() {
    let fleet = Fleet::new();
    fleet.write_config(false, "", "");
    let text = std::fs::read_to_string(fleet.config_path()).unwrap();
    std::fs::write(
        fleet.config_path(),
        text.replace("[hub]\n", "[hub]\nrun_history_days = 7\n"),
    )
    .unwrap();
    // A sync creates the state tables and three runs of today.
    let out = common::run(
        common::hubsync()
            .arg("-c")
            .arg(fleet.config_path())
            .args(["sync", "--site", "s1"]),
    );
    assert_eq!(out.code, 0, "{out:?}");
    psql(
        &fleet.master,
        "INSERT INTO hubsync.runs (run_id, flow, site, started_at, finished_at, status) VALUES
           ('old-done', 'sales', 's1', now() - interval '8 days', now() - interval '8 days', 'succeeded'),
           ('old-failed', 'sales', 's2', now() - interval '30 days', now() - interval '30 days', 'failed'),
           ('recent', 'sales', 's2', now() - interval '6 days', now() - interval '6 days', 'succeeded');
         INSERT INTO hubsync.outbox (event_id, flow, site, event, handler, payload, created_at, state, next_attempt_at) VALUES
           ('old-delivered', 'sales', 's1', 'success', 'on[0]', '{}', now() - interval '8 days', 'delivered', now()),
           ('old-dead', 'sales', 's1', 'success', 'on[0]', '{}', now() - interval '30 days', 'dead', now()),
           ('new-delivered', 'sales', 's1', 'success', 'on[0]', '{}', now() - interval '6 days', 'delivered', now());",
    );
    let server = fleet.serve("serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ids = psql(
            &fleet.master,
            "SELECT string_agg(run_id, ',' ORDER BY started_at) FROM hubsync.runs WHERE run_id LIKE '%e%t%' OR run_id LIKE 'old%'",
        );
        let events = psql(
            &fleet.master,
            "SELECT string_agg(event_id, ',' ORDER BY event_id) FROM hubsync.outbox",
        );
        if ids == "recent" && events == "new-delivered,old-dead" {
            break;
        }
        // Delivered follow-up events go with the history; dead letters stay.
        assert!(
            Instant::now() < deadline,
            "old runs or delivered events not pruned: {ids} / {events}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        psql(&fleet.master, "SELECT count(*) FROM hubsync.runs"),
        "2"
    );
    drop(server);
}

/// `hubsync call`: the `site` column, every format, a failing site reported
/// on stderr beside the others' rows (exit 1), usage errors (exit 2).
#[test]
fn hubsync_call_prints_rows_per_site_in_every_format() {
    let fleet = Fleet::new();
    fleet.write_config(
        false,
        "",
        r#"
[[service]]
name = "stock"
on = "site"
  [[service.operation]]
  name = "sales"
  sql = "SELECT id, qty FROM sales WHERE qty >= :min_qty ORDER BY id"
  params = [{ name = "min_qty", type = "int", default = 0 }]
  [[service.operation]]
  name = "bump"
  sql = "UPDATE sales SET qty = qty + 1 WHERE id = :id"
  params = [{ name = "id", type = "int", required = true }]
[[service]]
name = "typo"
on = "site"
  [[service.operation]]
  name = "stock"
  sql = "SELECT qty FROM stok"
"#,
    );
    let call = |args: &[&str]| {
        common::run(
            common::hubsync()
                .arg("-c")
                .arg(fleet.config_path())
                .arg("call")
                .args(args),
        )
    };
    let out = call(&[
        "stock",
        "sales",
        "--all-sites",
        "--param",
        "min_qty=2",
        "--format",
        "csv",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stdout, "site,id,qty\ns1,1,5\ns1,2,7\ns2,2,2\ns2,3,4\n");
    let stderr: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(stderr.len(), 2, "{}", out.stderr);
    assert!(
        stderr[0].starts_with(
            "error: service `stock` operation `sales` site `s3`: cannot connect to sqlite://"
        ),
        "{}",
        stderr[0]
    );
    assert_eq!(stderr[1], "1 site of 3 failed");

    let out = call(&[
        "stock",
        "sales",
        "--sites",
        "region=south",
        "--format",
        "json",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let json: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        json,
        json!({"rows": [
            {"site": "s2", "id": "1", "qty": "1"},
            {"site": "s2", "id": "2", "qty": "2"},
            {"site": "s2", "id": "3", "qty": "4"},
        ], "errors": []})
    );

    let out = call(&["stock", "sales", "--site", "s1"]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().map(str::trim).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["│", "site", "id", "qty", "│"]),
        "{}",
        out.stdout
    );
    assert!(
        lines
            .iter()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["│", "s1", "2", "7", "│"]),
        "{}",
        out.stdout
    );
    assert_eq!(lines.last(), Some(&"(2 rows)"));

    let out = call(&[
        "stock", "bump", "--site", "s2", "--site", "s1", "--param", "id=1", "--format", "csv",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "site,rows_affected\ns2,1\ns1,1\n");
    assert_eq!(
        common::sqlite_query(
            &fleet.dir.path().join("s1.db"),
            "SELECT qty FROM sales WHERE id = 1"
        ),
        "6"
    );

    let usage = |args: &[&str], message: &str| {
        let out = call(args);
        assert_eq!(out.code, 2, "{out:?}");
        assert_eq!(out.stderr.trim(), format!("error: {message}"));
    };
    usage(
        &["stock", "bump", "--all-sites"],
        "service `stock` operation `bump` param `id`: missing; it is required (int)",
    );
    usage(
        &["stock", "bump", "--all-sites", "--param", "id=x"],
        "service `stock` operation `bump` param `id`: expected a 64-bit integer, got `x`",
    );
    usage(
        &["stock", "bump", "--param", "id=1"],
        "service `stock`: runs on sites (`on = \"site\"`); choose them by id, by tags, or all; use `--site ID`, `--sites TAG=VALUE` or `--all-sites`",
    );
    usage(
        &["stock", "bump", "--site", "s9", "--param", "id=1"],
        "service `stock`: unknown site `s9`; known sites: s1, s2, s3",
    );
    usage(
        &["stock", "bump", "--all-sites", "--param", "id"],
        "`--param id`: write `--param NAME=VALUE`",
    );
    usage(
        &["stock", "nope", "--all-sites"],
        "service `stock`: unknown operation `nope`; known operations: sales, bump",
    );

    // `hubsync check` prepares every operation at every site (nothing runs).
    let out = common::run(
        common::hubsync()
            .arg("-c")
            .arg(fleet.config_path())
            .arg("check"),
    );
    assert_eq!(out.code, 1, "{out:?}");
    let service_problems: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("problem: service "))
        .collect();
    assert_eq!(service_problems.len(), 3, "{}", out.stdout);
    for (line, site) in service_problems.iter().zip(["s1", "s2"]) {
        assert!(
            line.starts_with(&format!(
                "problem: service `typo` operation `stock` site `{site}`: no such table: stok"
            )),
            "{line}"
        );
    }
    assert!(
        service_problems[2]
            .starts_with("problem: service `stock`, `typo` site `s3`: cannot connect to sqlite://"),
        "{}",
        service_problems[2]
    );
    assert_eq!(
        common::sqlite_query(
            &fleet.dir.path().join("s1.db"),
            "SELECT qty FROM sales WHERE id = 1"
        ),
        "6",
        "check never runs an operation"
    );
}

/// The seconds `N` in a dead run's "no heartbeat for N s".
fn silent_seconds(error: &str) -> u64 {
    let rest = error
        .split_once("no heartbeat for ")
        .unwrap_or_else(|| panic!("no heartbeat age in `{error}`"))
        .1;
    rest.split_once(" s").unwrap().0.parse().unwrap()
}

/// Regression (fresh-user trial): a hub killed mid-run (`kill -9`) left its
/// run `running` in `status` and the API until the pair ran again. A
/// `running` row whose heartbeat is 30 s old or more shows as the next run
/// will record it: `failed`, kind `interrupted`, with the heartbeat's age;
/// a live one (heartbeat 2 s ago) still shows `running`. Nothing is written.
#[test]
fn a_dead_hubs_run_shows_as_interrupted_not_running() {
    let fleet = Fleet::named("fx_dead_run");
    fleet.write_config(false, "", "");
    let out = common::run(
        common::hubsync()
            .arg("-c")
            .arg(fleet.config_path())
            .args(["sync", "--site", "s1"]),
    );
    assert_eq!(out.code, 0, "{out:?}");
    // s2: its hub died 66 s ago, 70 s into the run; s3: alive.
    psql(
        &fleet.master,
        "INSERT INTO hubsync.runs (run_id, flow, site, started_at, heartbeat_at, holder, rows_read, status) VALUES
           ('dead-run', 'sales', 's2', now() - interval '136 seconds', now() - interval '66 seconds', 'elsewhere/1', 2, 'running'),
           ('live-run', 'sales', 's3', now() - interval '5 seconds', now() - interval '2 seconds', 'elsewhere/2', 0, 'running');",
    );
    let out = common::run(
        common::hubsync()
            .arg("-c")
            .arg(fleet.config_path())
            .arg("status"),
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(
            "Fleet: 3 sites, 3 flow/site pairs: 1 failed, 1 running, 1 succeeded; 0 with a tripped circuit"
        ),
        "{}",
        out.stdout
    );
    let s2_line = (out.stdout.lines())
        .find(|l| l.contains(" s2 "))
        .unwrap_or_else(|| panic!("no s2 row: {}", out.stdout));
    assert!(s2_line.contains(" failed "), "{s2_line}");
    assert!(
        s2_line.contains(
            "s (a live run records one every 10 s): its hub stopped before this run finished \
             (its rows are counted up to its last committed batch); the next run of this pair records it as failed"
        ),
        "{s2_line}"
    );
    // The test's own seconds between the insert and the read.
    assert!((66..80).contains(&silent_seconds(s2_line)), "{s2_line}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains(" s3 ") && l.contains(" running ")),
        "{}",
        out.stdout
    );

    let server = fleet.serve("serve");
    let status = server.get("/api/v1/status");
    assert_eq!(
        status["summary"]["by_state"],
        json!({"failed": 1, "running": 1, "succeeded": 1})
    );
    let dead = &status["pairs"][1]["last_run"];
    assert_eq!(
        (
            &dead["run_id"],
            &dead["status"],
            &dead["error_kind"],
            &dead["rows_read"]
        ),
        (
            &json!("dead-run"),
            &json!("failed"),
            &json!("interrupted"),
            &json!(2)
        )
    );
    let error = dead["error"].as_str().unwrap();
    assert!(
        error.starts_with("interrupted: no heartbeat for "),
        "{error}"
    );
    assert!((66..80).contains(&silent_seconds(error)), "{error}");
    // Ended at its last heartbeat, 70 s after its start.
    let at =
        |field: &str| chrono::DateTime::parse_from_rfc3339(dead[field].as_str().unwrap()).unwrap();
    assert_eq!((at("finished_at") - at("started_at")).num_seconds(), 70);
    assert_eq!(status["pairs"][2]["last_run"]["status"], "running");
    // The run history filters by the status shown.
    let running = server.get("/api/v1/runs?status=running");
    assert_eq!(running["runs"].as_array().unwrap().len(), 1);
    assert_eq!(running["runs"][0]["run_id"], "live-run");
    let failed = server.get("/api/v1/runs?status=failed");
    assert_eq!(failed["runs"].as_array().unwrap().len(), 1);
    assert_eq!(failed["runs"][0]["run_id"], "dead-run");
    // The dashboard lists it among the failing pairs, with why.
    let (code, page) = server.call_text("GET", "/", Some(READ), None);
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("interrupted: no heartbeat for "), "{page}");
    drop(server);
    // Read side only: the stored row is untouched.
    assert_eq!(
        psql(
            &fleet.master,
            "SELECT status, finished_at IS NULL FROM hubsync.runs WHERE run_id = 'dead-run'"
        ),
        "running|t"
    );
}
