//! `hubsync demo`: a retail fleet on SQLite, synced both ways, no server.
//!
//! Builds a master (products, zone prices, the sales it collects) and N
//! store databases with a point-of-sale schema and generated sales, writes
//! the `hubsync.toml` it uses, runs the pull (`sales`) and push (`catalog`)
//! flows, simulates new sales, a refund and a price change, syncs again to
//! show incremental work, verifies the master against the stores and prints
//! a summary. The stores keep prices in integer cents and local time; the
//! pull's transforms (`compute`, `filter`) turn them into the master's
//! exact decimal amounts and UTC instants, and leave voided sales out. Everything derives from `--seed`, so two runs with the same
//! seed build the same fleet.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use chrono::{DateTime, Duration, TimeZone, Utc};
use clap::Args;
use comfy_table::{Table, presets};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio_util::sync::CancellationToken;

use super::output::{FleetProgress, failures, seconds, thousands};
use super::plural;
use super::sync::sync_flows;
use super::{EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UsageError};
use crate::config::Config;
use crate::connector::{ConnectOptions, Connector};
use crate::dialect::UpsertSpec;
use crate::flow::{Hub, SiteReport, SyncOptions};
use crate::value::Value;

/// Arguments of `hubsync demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of store databases to build.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub sites: u32,
    /// Folder for the master, the stores and the generated hubsync.toml
    /// (rebuilt if it holds an earlier demo).
    #[arg(long, default_value = "hubsync-demo")]
    pub dir: PathBuf,
    /// Seed of the generated data; the same seed builds the same fleet.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// File that marks a folder as ours, so a rebuild never deletes user files.
const MARKER: &str = ".hubsync-demo";

/// Zones and regions the stores are spread over.
const ZONES: [&str; 3] = ["A", "B", "C"];
const REGIONS: [&str; 4] = ["north", "south", "east", "west"];
/// Each region's time zone (the stores' `timezone` tag): the stores keep
/// local time. None changes its clocks during the demo's days.
const TIMEZONES: [&str; 4] = [
    "Europe/Helsinki",
    "Europe/Lisbon",
    "Europe/Berlin",
    "Europe/London",
];

/// (category, product names) of the generated catalog.
const CATALOG: [(&str, &[&str]); 6] = [
    (
        "dairy",
        &[
            "Whole Milk 1L",
            "Skimmed Milk 1L",
            "Greek Yogurt 500g",
            "Butter 250g",
            "Cheddar 200g",
            "Mozzarella 125g",
        ],
    ),
    (
        "bakery",
        &[
            "Sourdough Loaf",
            "Baguette",
            "Croissant",
            "Rye Bread",
            "Cinnamon Roll",
            "Bagel 4-pack",
        ],
    ),
    (
        "produce",
        &[
            "Bananas 1kg",
            "Gala Apples 1kg",
            "Tomatoes 500g",
            "Avocado",
            "Carrots 1kg",
            "Baby Spinach 200g",
        ],
    ),
    (
        "pantry",
        &[
            "Basmati Rice 1kg",
            "Penne 500g",
            "Olive Oil 750ml",
            "Chickpeas 400g",
            "Peanut Butter 340g",
            "Oat Flakes 1kg",
        ],
    ),
    (
        "drinks",
        &[
            "Sparkling Water 1.5L",
            "Orange Juice 1L",
            "Ground Coffee 250g",
            "Green Tea 20 bags",
            "Cola 330ml",
            "Lemonade 1L",
        ],
    ),
    (
        "household",
        &[
            "Dish Soap 500ml",
            "Paper Towels 4-roll",
            "Laundry Pods 20",
            "Sponges 3-pack",
            "Trash Bags 30",
            "Hand Soap 300ml",
        ],
    ),
];

const SCHEMA_MASTER: &str = "
CREATE TABLE products (sku TEXT PRIMARY KEY, name TEXT NOT NULL, category TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE prices (sku TEXT NOT NULL, zone TEXT NOT NULL, price TEXT NOT NULL, updated_at TEXT NOT NULL,
                     PRIMARY KEY (sku, zone));
CREATE TABLE sales (store_id TEXT NOT NULL, id INTEGER NOT NULL, sku TEXT NOT NULL, qty INTEGER NOT NULL,
                    unit_price TEXT NOT NULL, amount TEXT NOT NULL, sold_at TEXT NOT NULL, region TEXT NOT NULL,
                    updated_at TEXT NOT NULL, PRIMARY KEY (store_id, id));
";

const SCHEMA_STORE: &str = "
CREATE TABLE sales (id INTEGER PRIMARY KEY, sku TEXT NOT NULL, qty INTEGER NOT NULL, unit_price_cents INTEGER NOT NULL,
                    status TEXT NOT NULL, sold_at DATETIME NOT NULL, updated_at TEXT NOT NULL);
CREATE INDEX sales_updated_at ON sales (updated_at);
CREATE TABLE products (sku TEXT PRIMARY KEY, name TEXT NOT NULL, category TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE prices (sku TEXT PRIMARY KEY, price TEXT NOT NULL, updated_at TEXT NOT NULL);
";

fn config_text(sites: u32) -> String {
    let mut text = String::from(
        "# Generated by `hubsync demo`. Paths are relative to this file's folder.\n\
         # Reference of every key: docs/hubsync.reference.toml in the hubsync repository.\n\n\
         [hub]\nmax_concurrent_sites = 8\nmaster_write_concurrency = 2\nbatch_size = 2000\n\n\
         [master]\nurl = \"sqlite://master.db\"\n\n",
    );
    for n in 1..=sites {
        let index = (n - 1) as usize;
        text.push_str(&format!(
            "[[site]]\nid = \"{}\"\nurl = \"sqlite://stores/{}.db\"\ntags = {{ region = \"{}\", price_zone = \"{}\", timezone = \"{}\" }}\n\n",
            store_id(n),
            store_id(n),
            REGIONS[index % REGIONS.len()],
            ZONES[index % ZONES.len()],
            TIMEZONES[index % TIMEZONES.len()]
        ));
    }
    text.push_str(
        "# Sales move from every store into the master, tagged with the store id.\n\
         # Stores keep prices in cents and local time; the master keeps exact\n\
         # decimal amounts (as text: SQLite has no exact NUMERIC) and UTC.\n\
         [[flow]]\nname = \"sales\"\ndirection = \"pull\"\nschedule = \"every 5m\"\n\
         \x20 [[flow.stream]]\n  source = \"sales\"\n  target = \"sales\"\n  primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n\
         \x20 filter = \"row.status != 'void'\"        # voided sales stay at the store\n\
         \x20 [flow.stream.compute]                       # master column = CEL expression over the store's row\n\
         \x20 unit_price = \"decimal(row.unit_price_cents) * decimal('0.01')\"   # 3700 -> 37.00: a product keeps 2 places\n\
         \x20 amount = \"decimal(row.unit_price_cents * row.qty) * decimal('0.01')\"\n\
         \x20 sold_at = \"timestamp_utc(row.sold_at, site.tags.timezone)\"\n\
         \x20 region = \"site.tags.region\"\n\n\
         # The catalog moves from the master to every store; each store gets its zone's prices.\n\
         [[flow]]\nname = \"catalog\"\ndirection = \"push\"\nschedule = \"0 2 * * *\"\n\
         \x20 [[flow.stream]]\n  source = \"products\"\n  target = \"products\"\n  primary_key = [\"sku\"]\n  cursor = \"updated_at\"\n\n\
         \x20 [[flow.stream]]\n  query = \"SELECT sku, price, updated_at FROM prices WHERE zone = :site.price_zone\"\n  target = \"prices\"\n  primary_key = [\"sku\"]\n  cursor = \"updated_at\"\n",
    );
    text
}

fn store_id(n: u32) -> String {
    format!("store-{n:03}")
}

fn ts(t: DateTime<Utc>) -> Value {
    Value::Text(t.format(crate::value::TIMESTAMPTZ_TEXT_FORMAT).to_string())
}

/// Prices in cents as exact decimal text: 249 -> "2.49".
fn money(cents: i64) -> Value {
    Value::Text(format!("{}.{:02}", cents / 100, cents % 100))
}

struct Catalog {
    skus: Vec<String>,
    /// Base price in cents per SKU, zone A; B and C add 3% and 6%.
    base_cents: Vec<i64>,
}

pub(super) async fn run(args: DemoArgs, cancel: CancellationToken) -> anyhow::Result<u8> {
    let dir = prepare_dir(&args.dir)?;
    let started = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let base = Utc
        .with_ymd_and_hms(2026, 11, 1, 8, 0, 0)
        .single()
        .expect("valid date");
    println!(
        "Building a retail fleet in {}: a master and {} (SQLite, seed {})",
        dir.display(),
        plural(u64::from(args.sites), "store"),
        args.seed
    );

    let catalog = build_master(&dir, &mut rng, base).await?;
    let mut store_rows = Vec::new();
    for n in 1..=args.sites {
        store_rows.push(build_store(&dir, &store_id(n), &catalog, &mut rng, base).await?);
    }
    let total_sales: u64 = store_rows.iter().sum();
    std::fs::write(dir.join("hubsync.toml"), config_text(args.sites))
        .context("cannot write hubsync.toml")?;
    println!(
        "  {}, {}, {} across the stores (built in {})",
        plural(catalog.skus.len() as u64, "product"),
        plural((catalog.skus.len() * ZONES.len()) as u64, "zone price"),
        plural(total_sales, "sale"),
        seconds(started.elapsed())
    );

    let config = Arc::new(Config::load(&dir.join("hubsync.toml"))?);
    let hub = Hub::open(config.clone(), cancel.clone()).await?;
    let flows: Vec<_> = config.flows.iter().collect();
    let sites: Vec<_> = config.sites.iter().collect();

    println!(
        "\n1. First sync: backfill every store's sales into the master, push the catalog to every store"
    );
    let progress = FleetProgress::bars_only();
    let pass_started = Instant::now();
    let first = sync_flows(&hub, &flows[..1], &sites, SyncOptions::default(), &progress).await;
    let pull_time = pass_started.elapsed();
    let first_push = sync_flows(
        &hub,
        &flows[1..],
        &sites,
        SyncOptions::default(),
        &FleetProgress::bars_only(),
    )
    .await;
    let pulled: u64 = first.iter().map(SiteReport::rows_written).sum();
    println!(
        "   pulled {} in {} ({} rows/s), pushed {}",
        plural(pulled, "sales row"),
        seconds(pull_time),
        thousands((pulled as f64 / pull_time.as_secs_f64().max(1e-6)) as u64),
        plural(
            first_push.iter().map(SiteReport::rows_written).sum(),
            "catalog row"
        )
    );
    println!("{}", transform_example(&dir).await?);
    if cancel.is_cancelled() {
        return Ok(EXIT_INTERRUPTED);
    }

    println!(
        "\n2. Life goes on: new sales and a refund at every store, a price change in zone A at the master"
    );
    let changes = simulate_day(&dir, args.sites, &catalog, &mut rng, base).await?;
    println!(
        "   {} ({} voided: they stay at the stores), {} of earlier sales, {}",
        plural(changes.new_sales, "new sale"),
        changes.new_voided,
        plural(changes.refunds, "refund"),
        plural(changes.price_changes, "price change")
    );
    println!(
        "   the second sync pulls the {} paid new sales and the {}",
        thousands(changes.new_sales - changes.new_voided),
        plural(changes.refunds, "refunded sale")
    );

    println!("\n3. Second sync: only what changed moves");
    let second = sync_flows(
        &hub,
        &flows,
        &sites,
        SyncOptions::default(),
        &FleetProgress::bars_only(),
    )
    .await;
    hub.close().await;

    let mut all = first.clone();
    all.extend(first_push.iter().cloned());
    all.extend(second.iter().cloned());
    print_summary(&config, &first, &first_push, &second);

    let verified = verify(&dir, args.sites).await?;
    println!("\n{verified}");
    let failed = failures(&all);
    let config_path = dir.join("hubsync.toml");
    println!(
        "\nFiles: {}\n  master:  {}\n  stores:  {}\n  config:  {}\nNext:\n  hubsync -c {} sync      # sync again (nothing changed: no rows move)\n  hubsync -c {} status    # checkpoints and last runs\n  hubsync -c {} run       # keep syncing on the flows' schedules",
        dir.display(),
        dir.join("master.db").display(),
        dir.join("stores").display(),
        config_path.display(),
        config_path.display(),
        config_path.display(),
        config_path.display()
    );
    if failed > 0 {
        eprintln!(
            "{} failed; see the table above",
            plural(failed as u64, "site run")
        );
        return Ok(EXIT_FAILED);
    }
    Ok(EXIT_OK)
}

/// Creates `dir`, or empties it if it holds an earlier demo; refuses a
/// folder with other content.
fn prepare_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    if dir.exists() {
        let is_ours = dir.join(MARKER).exists();
        let is_empty = std::fs::read_dir(dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !is_ours && !is_empty {
            return Err(UsageError(format!(
                "folder `{}` exists and is not a hubsync demo; choose another with `--dir PATH`",
                dir.display()
            ))
            .into());
        }
        for name in [
            "master.db",
            "master.db-wal",
            "master.db-shm",
            "hubsync.toml",
        ] {
            let _ = std::fs::remove_file(dir.join(name));
        }
        let _ = std::fs::remove_dir_all(dir.join("stores"));
    }
    std::fs::create_dir_all(dir.join("stores"))
        .with_context(|| format!("cannot create `{}`", dir.display()))?;
    std::fs::write(
        dir.join(MARKER),
        "built by `hubsync demo`; the next demo run rebuilds this folder\n",
    )?;
    Ok(dir.canonicalize()?)
}

async fn open_sqlite(path: &Path) -> anyhow::Result<Connector> {
    let url = crate::config::DbUrl::Sqlite {
        path: path.to_path_buf(),
    };
    let options = ConnectOptions {
        max_connections: 1,
        connect_timeout: std::time::Duration::from_secs(10),
        acquire_timeout: std::time::Duration::from_secs(60),
        statement_timeout: None,
        create_if_missing: true,
    };
    Ok(Connector::connect(&url, &options).await?)
}

async fn insert(
    conn: &Connector,
    table: &str,
    columns: &[&str],
    rows: &[Vec<Value>],
) -> anyhow::Result<()> {
    let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    let spec = UpsertSpec {
        table,
        columns: &columns,
        column_types: &[],
        key: &columns[..1],
    };
    let mut tx = conn.begin().await?;
    tx.upsert(&spec, rows).await?;
    tx.commit().await?;
    Ok(())
}

async fn build_master(
    dir: &Path,
    rng: &mut ChaCha8Rng,
    base: DateTime<Utc>,
) -> anyhow::Result<Catalog> {
    let master = open_sqlite(&dir.join("master.db")).await?;
    master.execute_script(SCHEMA_MASTER).await?;
    let mut skus = Vec::new();
    let mut base_cents = Vec::new();
    let mut products = Vec::new();
    let mut prices = Vec::new();
    for (c, (category, names)) in CATALOG.iter().enumerate() {
        for (p, name) in names.iter().enumerate() {
            let sku = format!(
                "{}-{:04}",
                &category[..3].to_uppercase(),
                1000 + c * 100 + p
            );
            let cents = rng.random_range(79..1999);
            products.push(vec![
                Value::Text(sku.clone()),
                Value::Text(name.to_string()),
                Value::Text(category.to_string()),
                ts(base - Duration::days(30)),
            ]);
            for (z, zone) in ZONES.iter().enumerate() {
                let zone_cents = cents * (100 + 3 * z as i64) / 100;
                prices.push(vec![
                    Value::Text(sku.clone()),
                    Value::Text(zone.to_string()),
                    money(zone_cents),
                    ts(base - Duration::days(30) + Duration::minutes(z as i64)),
                ]);
            }
            skus.push(sku);
            base_cents.push(cents);
        }
    }
    insert(
        &master,
        "products",
        &["sku", "name", "category", "updated_at"],
        &products,
    )
    .await?;
    let columns: Vec<String> = ["sku", "zone", "price", "updated_at"]
        .iter()
        .map(|c| c.to_string())
        .collect();
    let key = [columns[0].clone(), columns[1].clone()];
    let spec = UpsertSpec {
        table: "prices",
        columns: &columns,
        column_types: &[],
        key: &key,
    };
    let mut tx = master.begin().await?;
    tx.upsert(&spec, &prices).await?;
    tx.commit().await?;
    master.close().await;
    Ok(Catalog { skus, base_cents })
}

/// One sale row: a random SKU at the store's zone price in cents, 1-4
/// units (some weighed or multi-buy), sold at `at`, kept in the store's
/// local time (`zone_name`); one in fifty is voided at the till.
fn sale(
    id: i64,
    catalog: &Catalog,
    (zone, zone_name): (usize, &str),
    rng: &mut ChaCha8Rng,
    at: DateTime<Utc>,
) -> Vec<Value> {
    let item = rng.random_range(0..catalog.skus.len());
    let qty = if rng.random_bool(0.8) {
        1
    } else {
        rng.random_range(2..=4)
    };
    let cents = catalog.base_cents[item] * (100 + 3 * zone as i64) / 100;
    let status = if rng.random_bool(0.02) {
        "void"
    } else {
        "paid"
    };
    let tz: chrono_tz::Tz = zone_name.parse().expect("TIMEZONES are IANA names");
    let local = at.with_timezone(&tz).naive_local();
    vec![
        Value::Int(id),
        Value::Text(catalog.skus[item].clone()),
        Value::Int(qty),
        Value::Int(cents),
        Value::Text(status.to_string()),
        Value::Text(local.format("%Y-%m-%d %H:%M:%S").to_string()),
        ts(at),
    ]
}

const SALE_COLUMNS: [&str; 7] = [
    "id",
    "sku",
    "qty",
    "unit_price_cents",
    "status",
    "sold_at",
    "updated_at",
];

async fn build_store(
    dir: &Path,
    id: &str,
    catalog: &Catalog,
    rng: &mut ChaCha8Rng,
    base: DateTime<Utc>,
) -> anyhow::Result<u64> {
    let store = open_sqlite(&dir.join("stores").join(format!("{id}.db"))).await?;
    store.execute_script(SCHEMA_STORE).await?;
    let index = id
        .trim_start_matches("store-")
        .parse::<usize>()
        .unwrap_or(1)
        - 1;
    let count = rng.random_range(2_000..6_000);
    let mut rows = Vec::with_capacity(count);
    for n in 0..count {
        // Spread over 7 days of 12 opening hours, in order.
        let offset = Duration::seconds((n as i64) * 7 * 12 * 3600 / count as i64);
        let day = offset.num_hours() / 12;
        let at = base + Duration::days(day) + (offset - Duration::hours(day * 12));
        let zone = (index % ZONES.len(), TIMEZONES[index % TIMEZONES.len()]);
        rows.push(sale(n as i64 + 1, catalog, zone, rng, at));
    }
    insert(&store, "sales", &SALE_COLUMNS, &rows).await?;
    store.close().await;
    Ok(count as u64)
}

struct DayChanges {
    new_sales: u64,
    /// Of `new_sales`, those voided at the till (the pull's `filter`
    /// leaves them at the store).
    new_voided: u64,
    refunds: u64,
    price_changes: u64,
}

async fn simulate_day(
    dir: &Path,
    sites: u32,
    catalog: &Catalog,
    rng: &mut ChaCha8Rng,
    base: DateTime<Utc>,
) -> anyhow::Result<DayChanges> {
    let day = base + Duration::days(8);
    let mut changes = DayChanges {
        new_sales: 0,
        new_voided: 0,
        refunds: 0,
        price_changes: 0,
    };
    for n in 1..=sites {
        let store = open_sqlite(&dir.join("stores").join(format!("{}.db", store_id(n)))).await?;
        let last = store.query("SELECT max(id) FROM sales", &[]).await?;
        let last_id = match last.rows.first().and_then(|r| r.first()) {
            Some(Value::Int(i)) => *i,
            _ => 0,
        };
        let count = rng.random_range(50..250);
        let rows: Vec<Vec<Value>> = (0..count)
            .map(|i| {
                let at = day + Duration::seconds(i * 12 * 3600 / count);
                let index = n as usize - 1;
                let zone = (index % ZONES.len(), TIMEZONES[index % TIMEZONES.len()]);
                sale(last_id + 1 + i, catalog, zone, rng, at)
            })
            .collect();
        insert(&store, "sales", &SALE_COLUMNS, &rows).await?;
        changes.new_voided += (rows.iter())
            .filter(|row| matches!(&row[4], Value::Text(status) if status == "void"))
            .count() as u64;
        // A refund: an old paid sale's quantity set to 0, touching updated_at
        // (the first paid one from a random id on).
        let refunded = rng.random_range(1..=last_id.max(1));
        store
            .execute(
                "UPDATE sales SET qty = 0, updated_at = ?1 WHERE id = \
                 (SELECT min(id) FROM sales WHERE id >= ?2 AND status = 'paid')",
                &[ts(day + Duration::hours(13)), Value::Int(refunded)],
            )
            .await?;
        store.close().await;
        changes.new_sales += count as u64;
        changes.refunds += 1;
    }
    let master = open_sqlite(&dir.join("master.db")).await?;
    for (i, item) in (0i64..).zip(price_change_items(catalog.skus.len(), rng)) {
        let cents = changed_price(catalog.base_cents[item], rng.random_range(90..=110));
        changes.price_changes += master
            .execute(
                "UPDATE prices SET price = ?1, updated_at = ?2 WHERE sku = ?3 AND zone = 'A'",
                &[
                    money(cents),
                    ts(day + Duration::minutes(i)),
                    Value::Text(catalog.skus[item].clone()),
                ],
            )
            .await?;
    }
    master.close().await;
    Ok(changes)
}

/// How many zone-A prices the simulated day changes.
const PRICE_CHANGES: usize = 10;

/// Indexes of the SKUs whose price changes: [`PRICE_CHANGES`] distinct
/// ones (all of them in a smaller catalog), drawn from `rng` so the seed
/// decides them. Distinct, so the count printed is the count of rows changed.
fn price_change_items(catalog_len: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    rand::seq::index::sample(rng, catalog_len, PRICE_CHANGES.min(catalog_len)).into_vec()
}

/// `base_cents` scaled by `percent`, moved by a cent when rounding would
/// leave the price as it was, so every price change is a real change.
fn changed_price(base_cents: i64, percent: i64) -> i64 {
    let cents = base_cents * percent / 100;
    match cents == base_cents {
        false => cents,
        true if percent >= 100 => cents + 1,
        true => cents - 1,
    }
}

fn print_summary(
    config: &Config,
    first: &[SiteReport],
    first_push: &[SiteReport],
    second: &[SiteReport],
) {
    let mut table = Table::new();
    table.load_preset(presets::UTF8_BORDERS_ONLY);
    table.set_header([
        "site",
        "zone",
        "sync 1: pulled",
        "sync 1: pushed",
        "sync 2: pulled",
        "sync 2: pushed",
        "time",
        "result",
    ]);
    let find = |reports: &[SiteReport], site: &str| -> Option<SiteReport> {
        reports.iter().find(|r| r.site == site).cloned()
    };
    let (mut t1, mut t2, mut t3, mut t4) = (0, 0, 0, 0);
    for site in &config.sites {
        let pull1 = find(first, &site.id);
        let push1 = find(first_push, &site.id);
        let pull2 = second
            .iter()
            .find(|r| r.site == site.id && r.flow == "sales");
        let push2 = second
            .iter()
            .find(|r| r.site == site.id && r.flow == "catalog");
        let written = |r: Option<&SiteReport>| r.map_or(0, SiteReport::rows_written);
        let (a, b, c, d) = (
            written(pull1.as_ref()),
            written(push1.as_ref()),
            written(pull2),
            written(push2),
        );
        t1 += a;
        t2 += b;
        t3 += c;
        t4 += d;
        let time: std::time::Duration = [pull1.as_ref(), push1.as_ref(), pull2, push2]
            .iter()
            .flatten()
            .map(|r| r.duration)
            .sum();
        let errors: Vec<String> = [pull1.as_ref(), push1.as_ref(), pull2, push2]
            .iter()
            .flatten()
            .filter_map(|r| r.error.clone())
            .collect();
        table.add_row([
            site.id.clone(),
            site.tags.get("price_zone").cloned().unwrap_or_default(),
            thousands(a),
            thousands(b),
            thousands(c),
            thousands(d),
            seconds(time),
            if errors.is_empty() {
                "ok".to_string()
            } else {
                errors.join("; ")
            },
        ]);
    }
    table.add_row([
        "total".to_string(),
        String::new(),
        thousands(t1),
        thousands(t2),
        thousands(t3),
        thousands(t4),
        String::new(),
        String::new(),
    ]);
    println!("\nPer store (rows written at the target)\n{table}");
}

/// Compares the master's sales with the stores' and the stores' prices with
/// their zone's master prices; returns a readable verdict.
async fn verify(dir: &Path, sites: u32) -> anyhow::Result<String> {
    let master = open_sqlite(&dir.join("master.db")).await?;
    let mut store_total = 0i64;
    let mut mismatches = Vec::new();
    for n in 1..=sites {
        let id = store_id(n);
        let store = open_sqlite(&dir.join("stores").join(format!("{id}.db"))).await?;
        let digest =
            "SELECT count(*), coalesce(sum(qty), 0), coalesce(max(updated_at), '') FROM sales";
        // Voided sales stay at the store (the pull's `filter`).
        let at_store = store
            .query(&format!("{digest} WHERE status <> 'void'"), &[])
            .await?;
        let at_master = master
            .query(
                &format!("{digest} WHERE store_id = ?1"),
                &[Value::Text(id.clone())],
            )
            .await?;
        if at_store.rows != at_master.rows {
            mismatches.push(format!("store `{id}` sales differ from the master's copy"));
        }
        let store_cents = store
            .query(
                "SELECT coalesce(sum(unit_price_cents * qty), 0) FROM sales WHERE status <> 'void'",
                &[],
            )
            .await?;
        let master_amounts = master
            .query(
                "SELECT amount FROM sales WHERE store_id = ?1",
                &[Value::Text(id.clone())],
            )
            .await?;
        if store_cents.rows.first().and_then(|r| r.first())
            != Some(&Value::Int(cents_total(&master_amounts.rows)))
        {
            mismatches.push(format!(
                "store `{id}`: the master's amounts do not add up to the store's cents"
            ));
        }
        if let Some(Value::Int(count)) = at_store.rows.first().and_then(|r| r.first()) {
            store_total += count;
        }
        store.close().await;
    }
    master.close().await;
    if mismatches.is_empty() {
        Ok(format!(
            "Verified: the master holds exactly the {} of the {} that are not voided (voided sales stay at the \
             stores: the pull's `filter`); count, quantities, amounts and last change per store match",
            plural(store_total.max(0) as u64, "sale"),
            plural(u64::from(sites), "store")
        ))
    } else {
        Ok(format!(
            "Verification FAILED:\n  {}",
            mismatches.join("\n  ")
        ))
    }
}

/// One pulled sale as the store keeps it and as the master got it, and
/// how many voided sales the filter left out, to show the transforms.
async fn transform_example(dir: &Path) -> anyhow::Result<String> {
    let store = open_sqlite(&dir.join("stores").join(format!("{}.db", store_id(1)))).await?;
    let at_store = store
        .query(
            "SELECT id, unit_price_cents, qty, sold_at FROM sales WHERE status <> 'void' ORDER BY id LIMIT 1",
            &[],
        )
        .await?;
    let voided = store
        .query("SELECT count(*) FROM sales WHERE status = 'void'", &[])
        .await?;
    store.close().await;
    let master = open_sqlite(&dir.join("master.db")).await?;
    let (Some(row), Some(void_row)) = (at_store.rows.first(), voided.rows.first()) else {
        return Ok(String::new());
    };
    let at_master = master
        .query(
            "SELECT unit_price, amount, sold_at FROM sales WHERE store_id = ?1 AND id = ?2",
            &[Value::Text(store_id(1)), row[0].clone()],
        )
        .await?;
    master.close().await;
    let Some(got) = at_master.rows.first() else {
        return Ok(String::new());
    };
    Ok(format!(
        "   transforms: {} sale {}: {} cents x {} at {} ({} time) became unit_price {}, amount {}, sold_at {} (UTC); \
         its {} voided sales stayed at the store (`filter`)",
        store_id(1),
        row[0],
        row[1],
        row[2],
        row[3],
        TIMEZONES[0],
        got[0],
        got[1],
        got[2],
        void_row[0]
    ))
}

/// The sum, in cents, of exact decimal amounts with at most two places
/// (`"12.50"`, `"-0.05"`); a value of another form counts as 0, which the
/// comparison then reports.
fn cents_total(rows: &[Vec<Value>]) -> i64 {
    rows.iter()
        .filter_map(|row| match row.first() {
            Some(Value::Text(text)) => {
                let negative = text.starts_with('-');
                let magnitude = text.trim_start_matches('-');
                let (units, fraction) = magnitude.split_once('.').unwrap_or((magnitude, "0"));
                let cents = units.parse::<i64>().ok()? * 100
                    + format!("{fraction:0<2}").parse::<i64>().ok()?;
                Some(if negative { -cents } else { cents })
            }
            _ => None,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_add_up_in_cents() {
        let rows = |texts: &[&str]| -> Vec<Vec<Value>> {
            texts
                .iter()
                .map(|t| vec![Value::Text(t.to_string())])
                .collect()
        };
        // 19.99 + 0.5 + 3 - 0.05 - 2 = 1999 + 50 + 300 - 5 - 200 = 2144 cents.
        assert_eq!(
            cents_total(&rows(&["19.99", "0.5", "3", "-0.05", "-2"])),
            2144
        );
    }

    /// Regression: the demo printed "10 price changes" but repeated picks of
    /// one SKU changed fewer rows.
    #[test]
    fn price_changes_pick_distinct_skus_from_the_seed() {
        let catalog_len: usize = CATALOG.iter().map(|(_, names)| names.len()).sum();
        for seed in 0..200 {
            let items = price_change_items(catalog_len, &mut ChaCha8Rng::seed_from_u64(seed));
            let mut distinct = items.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), PRICE_CHANGES, "seed {seed}: {items:?}");
            assert!(items.iter().all(|&i| i < catalog_len));
            let again = price_change_items(catalog_len, &mut ChaCha8Rng::seed_from_u64(seed));
            assert_eq!(items, again, "seed {seed}");
        }
        assert_eq!(
            price_change_items(3, &mut ChaCha8Rng::seed_from_u64(1)).len(),
            3
        );
    }

    #[test]
    fn a_price_change_changes_the_price() {
        assert_eq!(changed_price(1000, 90), 900);
        assert_eq!(changed_price(1000, 100), 1001);
        assert_eq!(changed_price(79, 101), 80);
        assert_eq!(changed_price(79, 99), 78);
        for base in 79..1999 {
            for percent in 90..=110 {
                assert_ne!(changed_price(base, percent), base);
            }
        }
    }
}
