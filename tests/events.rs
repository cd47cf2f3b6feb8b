//! Follow-up events (`[[flow.on]]`, `after`) end to end: the real `hubsync`
//! binary, a real HTTP receiver (Python's `http.server`, which checks each
//! Standard Webhooks signature with Python's own `hmac`, independently of
//! hubsync's code), SQLite and PostgreSQL masters, and SIGKILL between an
//! event's commit and its delivery.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Fleet, psql, sqlite_exec, sqlite_query};

/// The signing secret's bytes, base64: `whsec_` + this is the config value.
const SECRET_B64: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The receiver: logs every request as one JSON line (headers, body, and
/// whether the signature is what Python's `hmac` computes), then answers
/// 500 while `<dir>/fail` exists, holds the request 20 s (then 200) while
/// `<dir>/hang` exists, else 200.
const RECEIVER: &str = r#"
import base64, hashlib, hmac, json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

folder, secret = sys.argv[1], base64.b64decode(sys.argv[2])

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        wid, ts = self.headers["webhook-id"], self.headers["webhook-timestamp"]
        expected = "v1," + base64.b64encode(
            hmac.new(secret, f"{wid}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
        entry = {"id": wid, "ts": ts, "idem": self.headers["idempotency-key"],
                 "valid": hmac.compare_digest(expected, self.headers.get("webhook-signature", "")),
                 "body": json.loads(body)}
        with open(os.path.join(folder, "received.jsonl"), "a") as log:
            log.write(json.dumps(entry) + "\n")
        if os.path.exists(os.path.join(folder, "fail")):
            self.send_response(500); self.end_headers(); self.wfile.write(b"receiver down"); return
        if os.path.exists(os.path.join(folder, "hang")):
            time.sleep(20)
        self.send_response(200); self.end_headers()
    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// A running receiver; killed on drop.
struct Receiver {
    child: Child,
    port: u16,
    folder: PathBuf,
}

impl Receiver {
    fn start(folder: &Path) -> Receiver {
        let script = folder.join("receiver.py");
        std::fs::write(&script, RECEIVER).unwrap();
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(folder)
            .arg(SECRET_B64)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 is needed for the webhook receiver (Debian package `python3`)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Receiver {
            child,
            port: line.trim().parse().expect("receiver port"),
            folder: folder.to_path_buf(),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook?token=t", self.port)
    }

    /// Every request so far, in arrival order.
    fn received(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.folder.join("received.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Requests per webhook id.
    fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for entry in self.received() {
            *counts
                .entry(entry["id"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
        counts
    }

    fn set(&self, mode: &str, on: bool) {
        let path = self.folder.join(mode);
        if on {
            std::fs::write(path, "").unwrap();
        } else {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three sales rows at each SQLite site (ids 1..3).
fn make_site(path: &Path) {
    sqlite_exec(
        path,
        "CREATE TABLE received (event_id TEXT PRIMARY KEY, rows_written INTEGER NOT NULL);
         CREATE TABLE sales (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL, updated_at TEXT NOT NULL);
         INSERT INTO sales VALUES (1, 10, '2026-01-01 10:00:00'), (2, 20, '2026-01-01 10:00:01'),
                                  (3, 30, '2026-01-01 10:00:02');",
    );
}

/// Flow `sales` (pull, 2-row batches) with a `rows_changed` and a `success`
/// webhook; flow `totals` chained after it, with a master service handler.
fn config(master_url: &str, receiver: &Receiver, schedule: &str, timeout: &str) -> String {
    format!(
        r#"
[hub]
batch_size = 2

[master]
url = "{master_url}"

[[site]]
id = "s1"
url = "sqlite://s1.db"

[[site]]
id = "s2"
url = "sqlite://s2.db"

[[service]]
name = "audit"
on = "master"
  [[service.operation]]
  name = "note"
  sql = "INSERT INTO audit (event_id, site, rows_written) VALUES (:event_id, :site_id, :rows_written)"
  params = [{{ name = "event_id", type = "text" }}, {{ name = "site_id", type = "text" }},
            {{ name = "rows_written", type = "int" }}]

[[service]]
name = "store"
on = "site"
  [[service.operation]]
  name = "received"
  sql = "INSERT INTO received (event_id, rows_written) VALUES (:event_id, :rows_written)"
  params = [{{ name = "event_id", type = "text" }}, {{ name = "rows_written", type = "int" }}]

[[flow]]
name = "sales"
direction = "pull"
{schedule}
  [[flow.stream]]
  source = "sales"
  target = "sales"
  primary_key = ["id"]
  cursor = "updated_at"
  site_column = "site"
  cursor_lag = "0s"
  [[flow.on]]
  event = "rows_changed"
  name = "changed"
  webhook = "{url}"
  secret = "whsec_{SECRET_B64}"
  timeout = "{timeout}"
  max_attempts = 2
  [[flow.on]]
  event = "success"
  webhook = "{url}"
  secret = "whsec_{SECRET_B64}"
  timeout = "{timeout}"
  [[flow.on]]
  event = "success"
  name = "tell-store"
  service = "store"
  operation = "received"

[[flow]]
name = "totals"
direction = "pull"
after = "sales"
  [[flow.stream]]
  source = "sales"
  target = "sales_copy"
  primary_key = ["id"]
  cursor = "updated_at"
  site_column = "site"
  [[flow.on]]
  event = "success"
  service = "audit"
  operation = "note"
"#,
        url = receiver.url()
    )
}

const MASTER_TABLES: &str = "
CREATE TABLE sales (site TEXT NOT NULL, id INTEGER NOT NULL, amount INTEGER NOT NULL, updated_at TEXT NOT NULL,
                    PRIMARY KEY (site, id));
CREATE TABLE sales_copy (site TEXT NOT NULL, id INTEGER NOT NULL, amount INTEGER NOT NULL, updated_at TEXT NOT NULL,
                         PRIMARY KEY (site, id));
CREATE TABLE audit (event_id TEXT PRIMARY KEY, site TEXT NOT NULL, rows_written BIGINT NOT NULL);";

/// Every request was signed as Python's `hmac` computes it, and carried
/// its event id as `webhook-id`, `idempotency-key` and `data.event_id`.
fn assert_signed(receiver: &Receiver) {
    for entry in receiver.received() {
        assert_eq!(entry["valid"], true, "bad signature: {entry}");
        assert_eq!(entry["id"], entry["idem"], "{entry}");
        assert_eq!(entry["id"], entry["body"]["data"]["event_id"], "{entry}");
    }
}

#[test]
fn sqlite_master_events_are_signed_delivered_once_and_chain_flows_and_services() {
    let fleet = Fleet::new();
    let receiver = Receiver::start(fleet.dir.path());
    make_site(&fleet.path("s1.db"));
    make_site(&fleet.path("s2.db"));
    sqlite_exec(&fleet.path("master.db"), MASTER_TABLES);
    fleet.write_config(&config("sqlite://master.db", &receiver, "", "5s"));
    let out = fleet.sync_ok(&[]);
    assert!(
        out.stderr
            .contains("follow-up events: 12 delivered, 0 to retry later"),
        "{}",
        out.stderr
    );
    // Per site: 3 rows in batches of 2 -> two `rows_changed` (2 and 1 rows),
    // one `success` webhook, one site service call and one chained `totals`
    // run, whose success ran the master service: 2 x 5 + 2 = 12 events.
    let received = receiver.received();
    let mut seen: Vec<(String, String, i64)> = received
        .iter()
        .map(|e| {
            let data = &e["body"]["data"];
            (
                data["site"].as_str().unwrap().to_string(),
                e["body"]["type"].as_str().unwrap().to_string(),
                data["rows_written"].as_i64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    let expected: Vec<(String, String, i64)> = [
        ("s1", "flow.rows_changed", 1),
        ("s1", "flow.rows_changed", 2),
        ("s1", "flow.success", 3),
        ("s2", "flow.rows_changed", 1),
        ("s2", "flow.rows_changed", 2),
        ("s2", "flow.success", 3),
    ]
    .iter()
    .map(|(s, t, n)| (s.to_string(), t.to_string(), *n))
    .collect();
    assert_eq!(seen, expected);
    assert_signed(&receiver);
    let master = fleet.path("master.db");
    // The chained flow ran at both sites, and its success handler wrote the
    // audit rows with the event's own id, site and counts.
    assert_eq!(
        sqlite_query(
            &master,
            "SELECT site, count(*) FROM sales_copy GROUP BY site ORDER BY site"
        ),
        "s1|3\ns2|3"
    );
    assert_eq!(
        sqlite_query(
            &master,
            "SELECT a.site, a.rows_written FROM audit a JOIN hubsync_outbox o ON o.event_id = a.event_id \
             WHERE o.flow = 'totals' AND o.handler = 'on[0]' ORDER BY a.site"
        ),
        "s1|3\ns2|3"
    );
    // The site service ran at each event's own site.
    for site in ["s1", "s2"] {
        assert_eq!(
            sqlite_query(
                &fleet.path(&format!("{site}.db")),
                "SELECT event_id, rows_written FROM received"
            ),
            sqlite_query(
                &master,
                &format!(
                    "SELECT event_id, 3 FROM hubsync_outbox WHERE handler = 'tell-store' AND site = '{site}'"
                )
            )
        );
    }
    assert_eq!(
        sqlite_query(
            &master,
            "SELECT state, count(*) FROM hubsync_outbox GROUP BY state"
        ),
        "delivered|12"
    );
    // Nothing new: no `rows_changed`, one new `success` per site; nothing
    // delivered before is sent again.
    let before = receiver.counts();
    fleet.sync_ok(&["--flow", "sales"]);
    let after = receiver.counts();
    assert_eq!(after.len(), before.len() + 2);
    assert!(after.values().all(|n| *n == 1), "{after:?}");
}

#[test]
fn an_event_whose_handler_this_hub_lacks_is_left_for_one_that_has_it() {
    let fleet = Fleet::new();
    let receiver = Receiver::start(fleet.dir.path());
    make_site(&fleet.path("s1.db"));
    sqlite_exec(&fleet.path("s1.db"), "DELETE FROM sales WHERE id > 1");
    sqlite_exec(&fleet.path("master.db"), MASTER_TABLES);
    let text = config("sqlite://master.db", &receiver, "", "5s")
        .replace("[[site]]\nid = \"s2\"\nurl = \"sqlite://s2.db\"\n", "");
    let with_handler =
        text[..text.find("  [[flow.on]]\n  event = \"success\"").unwrap()].to_string();
    let without = with_handler[..with_handler.find("  [[flow.on]]").unwrap()].to_string();
    fleet.write_config(&with_handler);
    receiver.set("fail", true);
    fleet.sync_ok(&[]);
    // An older hub's config, without the handler, tries the due event: it
    // stays pending, with the reason, for a hub that has the handler.
    std::thread::sleep(Duration::from_millis(2100));
    fleet.write_config(&without);
    let out = fleet.hubsync(&["events", "deliver"]);
    assert_eq!(
        out.stdout.trim(),
        "0 delivered, 1 to retry later, 0 now dead letters",
        "{}",
        out.stderr
    );
    let master = fleet.path("master.db");
    assert_eq!(
        sqlite_query(&master, "SELECT state FROM hubsync_outbox"),
        "pending"
    );
    fleet.write_config(&with_handler);
    receiver.set("fail", false);
    std::thread::sleep(Duration::from_millis(4100));
    let out = fleet.hubsync(&["events", "deliver"]);
    assert_eq!(
        out.stdout.trim(),
        "1 delivered, 0 to retry later, 0 now dead letters",
        "{}",
        out.stderr
    );
    assert_eq!(
        sqlite_query(&master, "SELECT state FROM hubsync_outbox"),
        "delivered"
    );
}

#[test]
fn failed_webhooks_become_dead_letters_and_replay_delivers_them() {
    let fleet = Fleet::new();
    let receiver = Receiver::start(fleet.dir.path());
    make_site(&fleet.path("s1.db"));
    sqlite_exec(&fleet.path("s1.db"), "DELETE FROM sales WHERE id > 1");
    sqlite_exec(&fleet.path("master.db"), MASTER_TABLES);
    let text = config("sqlite://master.db", &receiver, "", "5s")
        .replace("[[site]]\nid = \"s2\"\nurl = \"sqlite://s2.db\"\n", "");
    // Only the `rows_changed` handler (2 attempts) stays.
    let text = text[..text.find("  [[flow.on]]\n  event = \"success\"").unwrap()].to_string();
    fleet.write_config(&text);
    receiver.set("fail", true);
    let out = fleet.sync_ok(&[]);
    assert!(
        out.stderr
            .contains("follow-up events: 0 delivered, 1 to retry later"),
        "{}",
        out.stderr
    );
    // The retry is due 1 to 2 s later (backoff with jitter).
    std::thread::sleep(Duration::from_millis(2100));
    let out = fleet.hubsync(&["events", "deliver"]);
    assert_eq!(
        out.stdout.trim(),
        "0 delivered, 0 to retry later, 1 now dead letters"
    );
    assert_eq!(out.code, 1);
    let master = fleet.path("master.db");
    let id = sqlite_query(&master, "SELECT event_id FROM hubsync_outbox");
    let out = fleet.hubsync(&["events"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains(&id), "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!(
            "webhook http://127.0.0.1:{}/hook: HTTP 500 Internal Server Error: receiver down",
            receiver.port
        )),
        "the error is kept, without the URL's query: {}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("outbox: 0 pending, 0 delivered, 1 dead"),
        "{}",
        out.stdout
    );
    let out = fleet.hubsync(&["status"]);
    assert!(
        out.stdout
            .contains("Follow-up events: 0 pending, 1 dead letters"),
        "{}",
        out.stdout
    );
    let out = fleet.hubsync(&["events", "list", "--state", "lost"]);
    assert_eq!(out.code, 2);
    assert_eq!(
        out.stderr.trim(),
        "error: `--state lost`: use `pending`, `delivered`, `dead` or `all`"
    );
    // An unknown id is a usage error.
    let out = fleet.hubsync(&["events", "replay", "nope"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("no dead or delivered event with id nope"),
        "{}",
        out.stderr
    );
    // Regression (fresh-user trial): good ids before a bogus one were
    // re-queued, then the command failed. Now every id is checked first:
    // nothing is re-queued, the unknown ids are all named.
    let out = fleet.hubsync(&["events", "replay", &id, "bogus1", &id, "bogus2"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        out.stderr.trim(),
        "error: no dead or delivered event with id bogus1, bogus2; nothing was replayed; see `hubsync events list --state all`"
    );
    assert_eq!(out.stdout, "");
    assert_eq!(
        sqlite_query(&master, "SELECT state, attempts FROM hubsync_outbox"),
        "dead|2"
    );
    receiver.set("fail", false);
    // An id given twice is replayed once.
    let out = fleet.hubsync(&["events", "replay", &id, &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout.trim(),
        format!("event {id}: pending again; `hubsync run` or `hubsync events deliver` delivers it")
    );
    let out = fleet.hubsync(&["events", "deliver"]);
    assert_eq!(
        out.stdout.trim(),
        "1 delivered, 0 to retry later, 0 now dead letters"
    );
    // Two failed attempts and the replay: one id, three requests.
    assert_eq!(receiver.counts().get(&id), Some(&3));
    assert_signed(&receiver);
    assert_eq!(
        sqlite_query(&master, "SELECT state, attempts FROM hubsync_outbox"),
        "delivered|1"
    );
}

/// `hubsync run` is killed with SIGKILL while webhooks are in flight and
/// later events are committed but not yet attempted. After a restart every
/// committed event is delivered; only those in flight at the kill are
/// received twice (same id); none delivered is sent again.
fn sigkill_between_commit_and_delivery(
    fleet: &Fleet,
    master_url: &str,
    outbox: &dyn Fn(&str) -> String,
) {
    let receiver = Receiver::start(fleet.dir.path());
    make_site(&fleet.path("s1.db"));
    make_site(&fleet.path("s2.db"));
    fleet.write_config(&config(
        master_url,
        &receiver,
        "schedule = \"every 1s\"",
        "5s",
    ));
    receiver.set("hang", true);
    let mut daemon = fleet.spawn(&["run"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.received().is_empty() {
        assert!(Instant::now() < deadline, "no webhook arrived within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let later passes commit events the busy worker has not attempted.
    std::thread::sleep(Duration::from_millis(2500));
    daemon.kill().unwrap(); // SIGKILL
    daemon.wait().unwrap();
    let in_flight: BTreeSet<String> = receiver.counts().into_keys().collect();
    let committed: BTreeSet<String> = outbox(
        "SELECT event_id FROM {outbox} WHERE flow = 'sales' AND handler IN ('changed', 'on[1]')",
    )
    .lines()
    .map(str::to_string)
    .collect();
    // Webhook events: none delivered (chained runs and services were).
    assert_eq!(
        outbox(
            "SELECT count(*) FROM {outbox} WHERE flow = 'sales' AND handler IN ('changed', 'on[1]') \
             AND state = 'delivered'"
        ),
        "0"
    );
    assert!(in_flight.is_subset(&committed));
    let never_tried: BTreeSet<String> = committed.difference(&in_flight).cloned().collect();
    assert!(
        !never_tried.is_empty(),
        "no event was committed after the worker got stuck"
    );
    eprintln!(
        "at the kill: {} webhook events committed, {} in flight, {} never tried",
        committed.len(),
        in_flight.len(),
        never_tried.len()
    );
    // Restart: the hanging receiver is fixed; claims of the dead hub end
    // after their lease (5 s timeout + 10 s).
    receiver.set("hang", false);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = fleet.hubsync(&["events", "deliver"]);
        assert!(out.code == 0 || out.code == 1, "{out:?}");
        if outbox("SELECT count(*) FROM {outbox} WHERE state <> 'delivered'") == "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "events not delivered within 60 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let counts = receiver.counts();
    for id in &committed {
        let expected = if in_flight.contains(id) { 2 } else { 1 };
        assert_eq!(counts.get(id), Some(&expected), "event {id}");
    }
    // Another delivery pass sends nothing delivered again.
    let out = fleet.hubsync(&["events", "deliver"]);
    assert_eq!(
        out.stdout.trim(),
        "0 delivered, 0 to retry later, 0 now dead letters"
    );
    assert_eq!(receiver.counts(), counts);
    assert_signed(&receiver);
    // Each site's rows arrived once, with its two `rows_changed` events
    // among the committed ones (the later passes wrote nothing).
    assert_eq!(
        outbox(
            "SELECT site, count(*) FROM {outbox} WHERE event = 'rows_changed' GROUP BY site ORDER BY site"
        ),
        "s1|2\ns2|2"
    );
}

#[test]
fn sqlite_master_sigkill_between_commit_and_delivery_loses_and_doubles_nothing() {
    let fleet = Fleet::new();
    let master = fleet.path("master.db");
    sqlite_exec(&master, MASTER_TABLES);
    sigkill_between_commit_and_delivery(&fleet, "sqlite://master.db", &|sql| {
        sqlite_query(&master, &sql.replace("{outbox}", "hubsync_outbox"))
    });
}

#[test]
fn postgres_master_sigkill_between_commit_and_delivery_loses_and_doubles_nothing() {
    let url = common::pg_create_db("events_kill");
    psql(&url, MASTER_TABLES);
    sigkill_between_commit_and_delivery(&Fleet::new(), &url, &|sql| {
        psql(&url, &sql.replace("{outbox}", "hubsync.outbox"))
    });
}

/// `hubsync serve` on port 0 with a `read` and an `operate` token; returns
/// the child and its base URL.
fn serve(fleet: &Fleet) -> (Child, String) {
    let mut child = fleet.spawn(&["serve"]);
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let base = loop {
        let line = lines.next().expect("serve exited").unwrap();
        if let Some(rest) = line.strip_prefix("hubsync API listening on ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining stderr so the server never blocks on it.
    std::thread::spawn(move || lines.for_each(drop));
    (child, base)
}

fn http(method: &str, url: &str, token: &str) -> (u16, serde_json::Value) {
    let (status, text) = http_text(method, url, token);
    (status, serde_json::from_str(&text).unwrap())
}

fn http_text(method: &str, url: &str, token: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .into();
    let auth = format!("Bearer {token}");
    let mut response = match method {
        "GET" => agent.get(url).header("Authorization", &auth).call(),
        _ => agent.post(url).header("Authorization", &auth).send(""),
    }
    .unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

#[test]
fn the_api_lists_dead_letters_and_replays_them_for_the_serve_worker() {
    const READ: &str = "read-token-0123456789";
    const OPERATE: &str = "operate-token-0123456789";
    let fleet = Fleet::new();
    let receiver = Receiver::start(fleet.dir.path());
    make_site(&fleet.path("s1.db"));
    sqlite_exec(&fleet.path("master.db"), MASTER_TABLES);
    let text = config("sqlite://master.db", &receiver, "", "5s")
        .replace("[[site]]\nid = \"s2\"\nurl = \"sqlite://s2.db\"\n", "");
    // Only the `success` handler, one attempt.
    let start = text
        .find("  [[flow.on]]\n  event = \"rows_changed\"")
        .unwrap();
    let end = text.find("  [[flow.on]]\n  event = \"success\"").unwrap();
    let mut text = format!("{}{}", &text[..start], &text[end..]);
    text = text[..text
        .find("  [[flow.on]]\n  event = \"success\"\n  name = \"tell-store\"")
        .unwrap()]
        .to_string();
    text = text.replace(
        "timeout = \"5s\"\n",
        "timeout = \"5s\"\n  max_attempts = 1\n",
    );
    text.push_str(&format!(
        "[api]\nlisten = \"127.0.0.1:0\"\n[[api.token]]\nname = \"viewer\"\ntoken = \"{READ}\"\nrole = \"read\"\n\
         [[api.token]]\nname = \"ops\"\ntoken = \"{OPERATE}\"\nrole = \"operate\"\n"
    ));
    fleet.write_config(&text);
    receiver.set("fail", true);
    let out = fleet.sync_ok(&[]);
    assert!(
        out.stderr.contains(
            "0 delivered, 0 to retry later (`hubsync run` delivers them), 1 dead letters"
        ),
        "{}",
        out.stderr
    );
    let (mut child, base) = serve(&fleet);
    let (status, body) = http("GET", &format!("{base}/api/v1/events"), READ);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["counts"],
        serde_json::json!({"pending": 0, "delivered": 0, "dead": 1})
    );
    let event = &body["events"][0];
    assert_eq!(
        (event["flow"].as_str(), event["event"].as_str()),
        (Some("sales"), Some("success"))
    );
    assert_eq!(
        (event["state"].as_str(), event["attempts"].as_i64()),
        (Some("dead"), Some(1))
    );
    assert!(
        event["last_error"]
            .as_str()
            .unwrap()
            .ends_with("HTTP 500 Internal Server Error: receiver down"),
        "{event}"
    );
    let id = event["event_id"].as_str().unwrap().to_string();
    let (_, status_body) = http("GET", &format!("{base}/api/v1/status"), READ);
    assert_eq!(status_body["events"]["dead"], 1);
    let (_, metrics) = http_text("GET", &format!("{base}/metrics"), READ);
    assert!(
        metrics.contains("hubsync_outbox_events{state=\"dead\"} 1\n"),
        "{metrics}"
    );
    let (_, dashboard) = http_text("GET", &format!("{base}/"), READ);
    assert!(
        dashboard.contains(r#"<b id="count-dead-events">1</b>"#),
        "{dashboard}"
    );
    let (status, body) = http("GET", &format!("{base}/api/v1/events?state=gone"), READ);
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["message"],
        "query param `state`: unknown state `gone`; use pending, delivered, dead or all"
    );
    let replay = format!("{base}/api/v1/events/{id}/replay");
    assert_eq!(http("POST", &replay, READ).0, 403);
    let (status, body) = http(
        "POST",
        &format!("{base}/api/v1/events/nope/replay"),
        OPERATE,
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    receiver.set("fail", false);
    let (status, body) = http("POST", &replay, OPERATE);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"event_id": id, "state": "pending"})
    );
    // The serve's worker polls every second.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = http(
            "GET",
            &format!("{base}/api/v1/events?state=delivered"),
            READ,
        );
        if body["events"].as_array().unwrap().len() == 1 {
            assert_eq!(body["events"][0]["event_id"], id.as_str());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replayed event was not delivered: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(receiver.counts().get(&id), Some(&2));
    assert_signed(&receiver);
    let (_, metrics) = http_text("GET", &format!("{base}/metrics"), READ);
    assert!(
        metrics.contains(
            "hubsync_event_deliveries_total{flow=\"sales\",handler=\"on[0]\",outcome=\"delivered\"} 1\n"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("hubsync_outbox_events{state=\"dead\"} 0\n"),
        "{metrics}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn mysql_master_sigkill_between_commit_and_delivery_loses_and_doubles_nothing() {
    let url = common::my_create_db("events_kill");
    common::mysql(
        &url,
        "CREATE TABLE sales (site VARCHAR(32) NOT NULL, id BIGINT NOT NULL, amount BIGINT NOT NULL,
                             updated_at VARCHAR(32) NOT NULL, PRIMARY KEY (site, id));
         CREATE TABLE sales_copy (site VARCHAR(32) NOT NULL, id BIGINT NOT NULL, amount BIGINT NOT NULL,
                                  updated_at VARCHAR(32) NOT NULL, PRIMARY KEY (site, id));
         CREATE TABLE audit (event_id VARCHAR(64) PRIMARY KEY, site VARCHAR(32) NOT NULL, rows_written BIGINT NOT NULL);",
    );
    sigkill_between_commit_and_delivery(&Fleet::new(), &url, &|sql| {
        common::mysql(&url, &sql.replace("{outbox}", "hubsync_outbox")).replace('\t', "|")
    });
}
