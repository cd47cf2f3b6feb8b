//! Connectivity and schema checks behind `hubsync check`.
//!
//! For every stream: the source (table or query) is readable at each place
//! it is read and returns the cursor, key and mapped columns; the target
//! table exists with every written column; and the target has a unique key
//! on exactly the conflict key ((site_column, primary key...) on the master
//! for a pull, the primary key at each site for a push), without which an
//! upsert cannot work.

use std::time::Duration;

use super::source::ResolvedSource;
use crate::config::{Config, Direction, Flow, Site, Source, Stream};
use crate::connector::{ConnectOptions, Connector, TableInfo};
use crate::dialect::Dialect;
use crate::mediate::MappingPlan;
use crate::value::Value;

/// One finding of `check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where: `master`, `site `s1``, `flow `f` stream `s` site `s1``.
    pub place: String,
    /// What is wrong and what to do.
    pub message: String,
    /// The site of a finding about one stream at one site (`place` then
    /// ends in ` site `<id>``); `None` for the master, a system, the
    /// inventory or a whole site. [`grouped_warnings`] prints identical
    /// warnings of several sites once.
    pub site: Option<String>,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.place, self.message)
    }
}

/// Result of a check: problems, and how many places answered.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    /// Every problem found (each makes `check` fail).
    pub problems: Vec<Problem>,
    /// Risks that do not stop a sync (e.g. a source without a unique key).
    pub warnings: Vec<Problem>,
    /// Databases that were reached (master included).
    pub reachable: usize,
    /// Databases checked: the master, every `[[system]]` and every site
    /// (`[[site]]`s and the sites `[inventory]` lists).
    pub databases: usize,
    /// Stream/site combinations whose tables and columns checked out.
    pub streams_ok: usize,
}

/// Sites named in a grouped warning; the rest are counted.
const GROUP_SITES_SHOWN: usize = 5;

/// `warnings` for printing, in order of first appearance, one line per
/// (place apart from the site, message): a warning found at several sites
/// (the same stream, the same text) is one line naming them, `flow `f`
/// stream `s` sites `s01`, `s02`, `s03`, `s04`, `s05` and 5 more (10):
/// ...` (at most [`GROUP_SITES_SHOWN`] names); one found at a single site,
/// or not about a site, reads as [`Problem`]'s `Display`. A trial's
/// `check` printed the same `cursor_lag` warning 24 times for 10 sites.
pub fn grouped_warnings(warnings: &[Problem]) -> Vec<String> {
    // (place without the site, message) -> sites, in first-seen order.
    let mut groups: Vec<((&str, &str), Vec<&str>)> = Vec::new();
    let mut lines: Vec<Result<usize, &Problem>> = Vec::new();
    for warning in warnings {
        let Some(site) = &warning.site else {
            lines.push(Err(warning));
            continue;
        };
        let suffix = format!(" site `{site}`");
        let base = warning
            .place
            .strip_suffix(&suffix)
            .unwrap_or(&warning.place);
        let key = (base, warning.message.as_str());
        match groups.iter().position(|(k, _)| *k == key) {
            Some(i) => groups[i].1.push(site),
            None => {
                lines.push(Ok(groups.len()));
                groups.push((key, vec![site]));
            }
        }
    }
    (lines.into_iter())
        .map(|line| match line {
            Err(warning) => warning.to_string(),
            Ok(i) => {
                let ((base, message), sites) = &groups[i];
                match sites.as_slice() {
                    [one] => format!("{base} site `{one}`: {message}"),
                    many => format!("{base} {}: {message}", sites_text(many)),
                }
            }
        })
        .collect()
}

/// `sites `s01`, `s02` (2)`, or with more than [`GROUP_SITES_SHOWN`]
/// `sites `s01`, ..., `s05` and 5 more (10)`.
fn sites_text(sites: &[&str]) -> String {
    let named: Vec<String> = (sites.iter().take(GROUP_SITES_SHOWN))
        .map(|s| format!("`{s}`"))
        .collect();
    let more = sites.len().saturating_sub(GROUP_SITES_SHOWN);
    let rest = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!("sites {}{rest} ({})", named.join(", "), sites.len())
}

/// Connects to the master and every site (at most `max_concurrent_sites` at
/// once) and checks every stream. Never fails: unreachable databases are
/// problems in the report.
pub async fn check(config: &Config) -> CheckReport {
    let mut report = CheckReport::default();
    let options = |create: bool| ConnectOptions {
        max_connections: 1,
        connect_timeout: config.hub.connect_timeout,
        acquire_timeout: config.hub.connect_timeout + Duration::from_secs(1),
        statement_timeout: config.hub.statement_timeout,
        create_if_missing: create,
    };
    let missing_sqlite = match &config.master {
        crate::config::DbUrl::Sqlite { path } if !path.exists() => Some(path.display().to_string()),
        _ => None,
    };
    let master = match Connector::connect(&config.master, &options(false)).await {
        // `sync` creates a missing SQLite master (trial 3: `check` called
        // it a problem where `sync` then succeeded): say so and check the
        // sites without it.
        Err(_) if let Some(path) = &missing_sqlite => {
            report.warnings.push(Problem {
                place: "master".into(),
                message: format!(
                    "SQLite file `{path}` does not exist yet: `hubsync sync` creates it (pulls need \
                     `create_target = true` or their tables created first); streams are checked \
                     against the master once it exists"
                ),
                site: None,
            });
            None
        }
        Ok(master) => {
            report.reachable += 1;
            Some(master)
        }
        Err(e) => {
            report.problems.push(Problem {
                place: "master".into(),
                message: e.to_string(),
                site: None,
            });
            None
        }
    };
    let systems = connect_systems(config, &options(false), &mut report).await;
    let sites = check_inventory(config, master.as_ref(), &mut report).await;
    report.databases = 1 + config.systems.len() + sites.len();
    let semaphore = tokio::sync::Semaphore::new(config.hub.max_concurrent_sites);
    let site_checks = sites.iter().map(|site| {
        let semaphore = &semaphore;
        let master = master.as_ref();
        let options = options(false);
        let systems = &systems;
        async move {
            let _slot = semaphore
                .acquire()
                .await
                .expect("semaphore is never closed");
            check_site(config, site, master, systems, &options).await
        }
    });
    for site_report in futures::future::join_all(site_checks).await {
        report.reachable += site_report.reachable;
        report.problems.extend(site_report.problems);
        report.warnings.extend(site_report.warnings);
        report.streams_ok += site_report.streams_ok;
    }
    if let Some(master) = master {
        master.close().await;
    }
    for (_, system) in systems {
        system.close().await;
    }
    report
}

/// Connects to every `[[system]]`; an unreachable one is a problem named
/// `system `erp``. Returns the reachable ones by name.
async fn connect_systems(
    config: &Config,
    options: &ConnectOptions,
    report: &mut CheckReport,
) -> Vec<(String, Connector)> {
    let mut systems = Vec::new();
    for system in &config.systems {
        match Connector::connect(&system.url, options).await {
            Ok(connector) => {
                report.reachable += 1;
                systems.push((system.name.clone(), connector));
            }
            Err(e) => report.problems.push(Problem {
                place: format!("system `{}`", system.name),
                message: e.to_string(),
                site: None,
            }),
        }
    }
    systems
}

/// The sites to check: the static ones, plus, with `[inventory]`, the rows
/// of its query now (a failed query is a problem, a row left out a
/// warning, both placed `inventory`).
async fn check_inventory(
    config: &Config,
    master: Option<&Connector>,
    report: &mut CheckReport,
) -> Vec<Site> {
    let (Some(_), Some(master)) = (&config.inventory, master) else {
        return config.sites.clone();
    };
    let place = || "inventory".to_string();
    match crate::inventory::read_sites(config, master).await {
        Ok(read) => {
            report
                .warnings
                .extend(read.warnings.into_iter().map(|message| Problem {
                    place: place(),
                    message,
                    site: None,
                }));
            read.sites
        }
        Err(e) => {
            report.problems.push(Problem {
                place: place(),
                message: e.to_string(),
                site: None,
            });
            config.sites.clone()
        }
    }
}

async fn check_site(
    config: &Config,
    site: &Site,
    master: Option<&Connector>,
    systems: &[(String, Connector)],
    options: &ConnectOptions,
) -> CheckReport {
    let mut report = CheckReport::default();
    let site_conn = match Connector::connect(&site.url, options).await {
        Ok(conn) => conn,
        Err(e) => {
            report.problems.push(Problem {
                place: format!("site `{}`", site.id),
                message: e.to_string(),
                site: None,
            });
            return report;
        }
    };
    report.reachable = 1;
    for flow in &config.flows {
        for stream in &flow.streams {
            let place = format!(
                "flow `{}` stream `{}` site `{}`",
                flow.name, stream.name, site.id
            );
            let (source, target) = match flow.direction {
                Direction::Pull => (Some(&site_conn), master),
                Direction::Push => (master, Some(&site_conn)),
            };
            let (Some(source), Some(target)) = (source, target) else {
                continue;
            };
            let mut findings = check_stream(config, flow, stream, site, source, target).await;
            if findings.problems.is_empty() {
                let routed = check_routes(flow, stream, site, source, systems).await;
                findings.problems.extend(routed);
            }
            if findings.problems.is_empty() {
                report.streams_ok += 1;
            }
            let at = |message: String| Problem {
                place: place.clone(),
                message,
                site: Some(site.id.clone()),
            };
            report
                .problems
                .extend(findings.problems.into_iter().map(at));
            report
                .warnings
                .extend(findings.warnings.into_iter().map(at));
        }
    }
    site_conn.close().await;
    report
}

/// Why a column of declared type `to` is narrower than `from` (see
/// `StreamCheck::narrowed_columns`), or `None`. Types are read as their
/// catalogs spell them (`numeric(14,4)`, `decimal(12,2)`, `character
/// varying(8)`, `varchar(8)`, `int(11)`, `integer`); anything else (no
/// modifiers, other types) is not compared.
fn narrowing(from: &str, to: &str) -> Option<String> {
    let parse = |spelled: &str| -> (String, Vec<u32>) {
        let lower = spelled.to_ascii_lowercase();
        let base = lower
            .split('(')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        (base, crate::dialect::types::type_modifiers(&lower))
    };
    let ((from_base, from_mods), (to_base, to_mods)) = (parse(from), parse(to));
    let decimal = |base: &str| matches!(base, "numeric" | "decimal");
    let integer =
        |base: &str| base.contains("int") && !base.contains("interval") && !base.contains("point");
    let text = |base: &str| matches!(base, "character varying" | "varchar" | "character" | "char");
    if decimal(&from_base) && from_mods.len() == 2 {
        let (from_scale, from_digits) = (from_mods[1], from_mods[0].saturating_sub(from_mods[1]));
        if integer(&to_base) && from_scale > 0 {
            return Some(format!(
                "a value with decimals does not fit (the source keeps {from_scale})"
            ));
        }
        if decimal(&to_base) && to_mods.len() == 2 {
            let (to_scale, to_digits) = (to_mods[1], to_mods[0].saturating_sub(to_mods[1]));
            if from_scale > to_scale {
                return Some(format!(
                    "a value with more than {to_scale} decimals does not fit (the source keeps {from_scale})"
                ));
            }
            if from_digits > to_digits {
                return Some(format!(
                    "a value with more than {to_digits} digits before the point does not fit (the source allows {from_digits})"
                ));
            }
        }
    }
    if text(&from_base)
        && text(&to_base)
        && let (Some(from_len), Some(to_len)) = (from_mods.first(), to_mods.first())
        && from_len > to_len
    {
        return Some(format!(
            "a text longer than {to_len} characters does not fit (the source allows {from_len})"
        ));
    }
    None
}

/// Problems and warnings of one stream at one site.
#[derive(Default)]
struct Findings {
    problems: Vec<String>,
    warnings: Vec<String>,
}

async fn check_stream(
    config: &Config,
    flow: &Flow,
    stream: &Stream,
    site: &Site,
    source: &Connector,
    target: &Connector,
) -> Findings {
    let mut check = StreamCheck::new(flow.direction, stream);
    // Prepare exactly the first page the sync will read.
    let resolved =
        match ResolvedSource::resolve(stream, site, source, None, config.hub.batch_size).await {
            Ok(resolved) => resolved,
            Err(e) => {
                let problem = format!("{} source: {e}", check.source_side);
                check.findings.problems.push(problem);
                return check.findings;
            }
        };
    let Some(target_info) = check.describe_target(target).await else {
        return check.findings;
    };
    let written = check.columns(&resolved.described, &target_info);
    let sides = crate::mediate::TransformSides {
        described: &resolved.described,
        source_dialect: source.dialect(),
        target: &target_info,
        target_dialect: target.dialect(),
    };
    check.transforms(site, flow, &sides);
    if source.dialect() == Dialect::Sqlite {
        check.sqlite_decimal_reads(source, &resolved).await;
    }
    let schema_problems = super::plan::schema_problems(
        stream,
        flow.direction,
        source.dialect(),
        &resolved.described,
        target.dialect(),
        &target_info,
    );
    for problem in schema_problems {
        let problem = format!("{} table `{}`: {problem}", check.target_side, stream.target);
        check.findings.problems.push(problem);
    }
    check.keys(target.dialect(), &target_info, &written);
    if target.dialect() != Dialect::Sqlite {
        // SQLite keeps any value whatever the declared type: nothing narrows.
        check.narrowed_columns(source, &written, &target_info).await;
    }
    if let Some(problem) =
        super::reconcile::predicate_key_problem(stream, flow.direction, source).await
    {
        check.findings.problems.push(problem);
    }
    check.privileges(target).await;
    check.source_warnings(source).await;
    check.findings
}

/// A stream's routes and predicates at one site: each route's table in its
/// system (exists, unique key on its conflict key, the columns it writes,
/// their types), each `when` compiled against the source's columns and the
/// site's tags. Problems only; a system already found unreachable is
/// skipped.
async fn check_routes(
    flow: &Flow,
    stream: &Stream,
    site: &Site,
    source: &Connector,
    systems: &[(String, Connector)],
) -> Vec<String> {
    if stream.routes.is_empty() && stream.when.is_none() {
        return Vec::new();
    }
    let mut problems = Vec::new();
    // The source resolves as `check_stream` proved; described again here.
    let Ok(resolved) = ResolvedSource::resolve(stream, site, source, None, 1).await else {
        return problems;
    };
    let stream_place = format!("flow `{}`, stream `{}`", flow.name, stream.name);
    if let Err(e) = super::route::compile_when(
        stream.when.as_deref(),
        &resolved.described,
        site,
        &format!("{stream_place}, `when`"),
    ) {
        problems.push(e.message);
    }
    let mut described = Vec::new();
    for route in &stream.routes {
        let place = super::route::route_place(route);
        let Some((_, system)) = systems.iter().find(|(name, _)| *name == route.system) else {
            return problems;
        };
        match system.describe_table(&route.stream.target).await {
            Ok(Some(info)) => {
                let key = MappingPlan::conflict_key_of(&route.stream, Direction::Pull);
                if !info.has_unique_key(&key) {
                    problems.push(format!(
                        "{place} has no primary key or unique index on exactly ({}); the route's upsert needs one",
                        key.join(", ")
                    ));
                }
                described.push(info);
            }
            Ok(None) => {
                problems.push(format!(
                    "{place} does not exist; create it with the columns the route writes"
                ));
                return problems;
            }
            Err(e) => {
                problems.push(format!("cannot describe {place}: {e}"));
                return problems;
            }
        }
    }
    let dialect_of = |name: &str| {
        systems
            .iter()
            .find(|(system, _)| system == name)
            .map_or(Dialect::Postgres, |(_, c)| c.dialect())
    };
    if let Err(e) = super::route::prepare_routes(
        &stream.routes,
        &described,
        source.dialect(),
        &resolved.described,
        &dialect_of,
        site,
        &stream_place,
    ) {
        problems.push(e.message);
    }
    problems
}

/// The checks of one stream at one site, step by step, collecting their
/// findings.
struct StreamCheck<'a> {
    direction: Direction,
    stream: &'a Stream,
    /// Which database the source and the target are, for messages:
    /// `site` / `master`.
    source_side: &'static str,
    target_side: &'static str,
    findings: Findings,
}

impl<'a> StreamCheck<'a> {
    fn new(direction: Direction, stream: &'a Stream) -> StreamCheck<'a> {
        let (source_side, target_side) = match direction {
            Direction::Pull => ("site", "master"),
            Direction::Push => ("master", "site"),
        };
        StreamCheck {
            direction,
            stream,
            source_side,
            target_side,
            findings: Findings::default(),
        }
    }

    /// The target table's description, or `None` with the finding that
    /// says why there is none (a warning when `create_target` will make it).
    async fn describe_target(&mut self, target: &Connector) -> Option<TableInfo> {
        let (target_side, table) = (self.target_side, &self.stream.target);
        let problem = match target.describe_table(table).await {
            Ok(Some(info)) => return Some(info),
            Ok(None) if self.stream.create_target => {
                self.findings.warnings.push(format!(
                    "{target_side} table `{table}` does not exist; the first run creates it (`create_target = true`)"
                ));
                return None;
            }
            Ok(None) => format!(
                "{target_side} table `{table}` does not exist; create it, or set `create_target = true`"
            ),
            Err(e) => format!("{target_side} table `{table}`: {e}"),
        };
        self.findings.problems.push(problem);
        None
    }

    /// Checks the columns the stream writes (its `columns`, else every
    /// source column but the site column, the soft-delete flag only where
    /// the target has it) and its `delete_column`; `described`: the
    /// source's (name, type) columns. Returns the written (target, source)
    /// pairs.
    fn columns(
        &mut self,
        described: &[(String, String)],
        target_info: &TableInfo,
    ) -> Vec<(String, String)> {
        let stream = self.stream;
        let source_columns: Vec<String> = described.iter().map(|(name, _)| name.clone()).collect();
        let written =
            MappingPlan::written_columns(stream, self.direction, &source_columns, target_info);
        if let Some(flag) = &stream.delete_column
            && !source_columns.contains(flag)
        {
            self.findings.problems.push(format!(
                "{} source has no column `{flag}` (the stream's `delete_column`); add it, or fix `delete_column`",
                self.source_side
            ));
        }
        for (target_column, _) in &written {
            if target_info.column(target_column).is_none() {
                self.findings.problems.push(format!(
                    "{} table `{}` has no column `{target_column}`; add it or map columns with `columns`",
                    self.target_side, stream.target
                ));
            }
        }
        self.required_columns(&written, target_info);
        written
    }

    /// Warns of written columns whose PostgreSQL or MySQL target type is
    /// narrower than the source table's declared type (trial 3: `check`
    /// said "0 problems" and every run then failed): a `numeric`/`decimal` with fewer decimals or
    /// integer digits, a decimal with decimals into an integer column, a
    /// `varchar`/`char` of fewer characters. Such values are refused at run
    /// time, never rounded or cut, so only a table whose rows all fit works;
    /// a warning, not a problem. A `query` source has no declared types to
    /// compare (its prepared columns carry no precision).
    async fn narrowed_columns(
        &mut self,
        source: &Connector,
        written: &[(String, String)],
        target_info: &TableInfo,
    ) {
        let crate::config::Source::Table(table) = &self.stream.source else {
            return;
        };
        let Ok(Some(source_info)) = source.describe_table(table).await else {
            return;
        };
        for (target_column, source_column) in written {
            let (Some(from), Some(to)) = (
                source_info.column(source_column),
                target_info.column(target_column),
            ) else {
                continue;
            };
            if let Some(why) = narrowing(&from.data_type, &to.data_type) {
                self.findings.warnings.push(format!(
                    "{} table `{}`: column `{}` is `{}` and the source's `{source_column}` is `{}`: {why}; \
                     values that do not fit are refused at run time (never rounded or cut)",
                    self.target_side, self.stream.target, to.name, to.data_type, from.data_type
                ));
            }
        }
    }

    /// Warns of target columns that are `NOT NULL` without a default and
    /// that the stream leaves out (neither mapped, computed nor the site
    /// column): every row would be refused, unless a trigger fills them
    /// (hence a warning, not a problem).
    fn required_columns(&mut self, written: &[(String, String)], target_info: &TableInfo) {
        let stream = self.stream;
        let site_column = stream
            .site_column
            .iter()
            .filter(|_| self.direction == Direction::Pull);
        let filled: Vec<&str> = (written.iter().map(|(target, _)| target.as_str()))
            .chain(stream.compute.iter().map(|(computed, _)| computed.as_str()))
            .chain(site_column.map(String::as_str))
            .filter_map(|name| target_info.column(name).map(|c| c.name.as_str()))
            .collect();
        for column in (target_info.columns.iter())
            .filter(|c| c.required && !filled.contains(&c.name.as_str()))
        {
            self.findings.warnings.push(format!(
                "{} table `{}`: column `{}` is NOT NULL without a default and the stream does not write it: every \
                 row will be refused unless a trigger fills it; write it (`columns`, `compute`) or give it a default",
                self.target_side, stream.target, column.name
            ));
        }
    }

    /// Compiles and type-checks the stream's `compute` and `filter`
    /// expressions against the source's columns and the target's
    /// (`sides`), as a run at `site` would: one problem per expression.
    fn transforms(&mut self, site: &Site, flow: &Flow, sides: &crate::mediate::TransformSides<'_>) {
        let scope = crate::mediate::expr::ExprScope {
            site_id: site.id.clone(),
            site_tags: site.tags.clone(),
            run_started_at: None,
            flow: flow.name.clone(),
        };
        if let Err(e) = crate::mediate::Transforms::compile(self.stream, sides, scope) {
            let problems = e.to_string();
            self.findings
                .problems
                .extend(problems.lines().map(str::to_string));
        }
    }

    /// Warns, for each expression of the stream (`compute`, `filter`,
    /// `when`, a route's `when`) reading a column of a SQLite `source`
    /// declared NUMERIC or DECIMAL (`NUMERIC(12,2)`: a `decimal` to
    /// [`Ty::of_sql`]; the declared type is found through the column's
    /// table, as the driver describes such a column as `NULL`): SQLite
    /// stores such a value with a fraction as a double
    /// (<https://sqlite.org/datatype3.html>, NUMERIC affinity), so the
    /// expression may refuse it or compute with a rounded value. One
    /// warning per (expression, column), naming both and what to do; a
    /// declared type that cannot be read gives none.
    ///
    /// [`Ty::of_sql`]: crate::mediate::expr::Ty::of_sql
    async fn sqlite_decimal_reads(&mut self, source: &Connector, resolved: &ResolvedSource) {
        use crate::mediate::expr::{Ty, referenced_columns};
        let stream = self.stream;
        let keyset = stream.keyset_source_columns();
        let probe = resolved.keyset_select(source.dialect(), &keyset, None, None, Some(1));
        let mut expressions: Vec<(String, &str)> = (stream.compute.iter())
            .map(|(column, text)| (format!("`compute.{column}`"), text.as_str()))
            .collect();
        expressions.extend(
            stream
                .filter
                .as_deref()
                .map(|t| ("`filter`".to_string(), t)),
        );
        expressions.extend(stream.when.as_deref().map(|t| ("`when`".to_string(), t)));
        for route in &stream.routes {
            if let Some(text) = &route.when {
                expressions.push((format!("route to `{}`: `when`", route.system), text));
            }
        }
        for (place, text) in expressions {
            for column in referenced_columns(text).unwrap_or_default() {
                let Ok(Some(type_name)) = source.declared_type(&probe, &column).await else {
                    continue;
                };
                if Ty::of_sql(&type_name) == Ty::Decimal {
                    self.findings.warnings.push(format!(
                        "{place}: expression `{text}` reads column `{column}`, declared `{type_name}` in SQLite, \
                         which stores such a value with a fraction as a double: the expression may refuse it \
                         or compute with a rounded value; declare the column TEXT (the exact digits) or \
                         INTEGER (cents, e.g. `amount_cents`), or cast it to one of those in the stream's `query`"
                    ));
                }
            }
        }
    }

    /// Checks the target's conflict key: its columns exist or are written,
    /// a unique key on exactly them exists, and (MySQL) no other unique key
    /// lets an incoming row update an unrelated one.
    fn keys(&mut self, dialect: Dialect, target_info: &TableInfo, written: &[(String, String)]) {
        let (target_side, table) = (self.target_side, &self.stream.target);
        let conflict_key = MappingPlan::conflict_key_of(self.stream, self.direction);
        for column in &conflict_key {
            if target_info.column(column).is_none() && !written.iter().any(|(t, _)| t == column) {
                self.findings.problems.push(format!(
                    "{target_side} table `{table}` has no key column `{column}`"
                ));
            }
        }
        if !target_info.has_unique_key(&conflict_key) {
            let problem =
                missing_key_message(dialect, target_side, table, &conflict_key, target_info);
            self.findings.problems.push(problem);
        }
        // MySQL's `ON DUPLICATE KEY UPDATE` fires on ANY unique key: a row
        // colliding on another one overwrites an unrelated target row.
        if dialect == Dialect::MySql {
            for other in extra_unique_keys(target_info, &conflict_key) {
                self.findings.warnings.push(format!(
                    "{target_side} table `{table}` has a unique key on ({}) besides the stream's key ({}); on MySQL an \
                     incoming row that collides on it updates that other row instead of failing; drop the key or \
                     make sure the source keeps it unique too",
                    other.join(", "),
                    conflict_key.join(", ")
                ));
            }
        }
    }

    /// Where the target's dialect says (PostgreSQL), the privileges the
    /// hub's login needs on the target table: SELECT, INSERT and UPDATE, and
    /// DELETE when rows are deleted (`delete_column`, `deletes = "detect"`).
    /// A failed question is no finding: the sync would say more.
    async fn privileges(&mut self, target: &Connector) {
        let Some(sql) = target.dialect().table_privileges_sql() else {
            return;
        };
        let name = Value::Text(target.dialect().quote_table(&self.stream.target));
        let Ok(batch) = target.query(sql, &[name]).await else {
            return;
        };
        let Some(row) = batch.rows.first() else {
            return;
        };
        let deletes = self.stream.delete_column.is_some()
            || self.stream.deletes == crate::config::Deletes::Detect;
        let missing: Vec<&str> = ["SELECT", "INSERT", "UPDATE", "DELETE"]
            .into_iter()
            .zip(row)
            .filter(|(privilege, _)| *privilege != "DELETE" || deletes)
            .filter(|(_, granted)| matches!(granted, Value::Bool(false)))
            .map(|(privilege, _)| privilege)
            .collect();
        if !missing.is_empty() {
            self.findings.problems.push(format!(
                "{} table `{}`: the hub's login lacks {} on it; grant it (`GRANT {} ON ... TO <login>`)",
                self.target_side,
                self.stream.target,
                missing.join(", "),
                missing.join(", ")
            ));
        }
    }

    /// Warnings about rows the source may lose: late commits, NULL cursors
    /// skipped, a source table without a unique key within the stream's key.
    async fn source_warnings(&mut self, source: &Connector) {
        let stream = self.stream;
        if let Some(gap) = late_commit_gap(self.direction, source.dialect(), stream) {
            self.findings.warnings.push(gap);
            if let Ok(Some(clock)) = source.visibility().await
                && clock.sees_other_logins == Some(false)
            {
                self.findings.warnings.push(format!(
                    "{} login cannot see other logins' open transactions, so the lag above is its only guard \
                     against theirs: grant it `pg_read_all_stats` (`GRANT pg_read_all_stats TO <the login>`)",
                    self.source_side
                ));
            }
        }
        if stream.null_cursors == crate::config::NullCursors::Skip {
            self.findings.warnings.push(format!(
                "rows whose cursor `{}` is NULL are never synced (`null_cursors = \"skip\"`)",
                stream.cursor
            ));
        }
        // A source key that is not unique loses rows: two rows with the same
        // key are one row at the target (the batch's unique-key check stops
        // the stream only when both are in one batch).
        let Source::Table(table) = &stream.source else {
            return;
        };
        let source_key: Vec<String> = (stream.primary_key.iter())
            .map(|k| stream.source_column(k).to_string())
            .collect();
        if let Ok(Some(info)) = source.describe_table(table).await
            && !(info.unique_keys.iter()).any(|k| k.iter().all(|c| source_key.contains(c)))
        {
            self.findings.warnings.push(format!(
                "{} table `{table}` has no unique key within ({}); if two rows share a key, the sync stops \
                 with an error naming it when both are read in one batch, and otherwise the one read later \
                 overwrites the earlier one at the target (both count as written)",
                self.source_side,
                source_key.join(", ")
            ));
        }
    }
}

/// Where a transaction that commits late with a cursor value older than
/// `cursor_lag` can be missed (see `crate::capture`): every source but a
/// PostgreSQL table read by a pull (caught by transaction id) and SQLite
/// (one writer at a time, so no commit overtakes another). The warning, or
/// `None`.
fn late_commit_gap(direction: Direction, source: Dialect, stream: &Stream) -> Option<String> {
    let why = match (direction, source, &stream.source) {
        (_, Dialect::Sqlite, _) => return None,
        (Direction::Pull, Dialect::Postgres, Source::Table(_)) => match stream.late_commits {
            crate::config::LateCommits::Xid => return None,
            crate::config::LateCommits::Lag => {
                "`late_commits = \"lag\"` turns off the re-read by transaction id"
            }
        },
        (Direction::Pull, Dialect::Postgres, Source::Query(_)) => {
            "a `query` source has no transaction ids to catch them by (read a table to get that)"
        }
        (Direction::Pull, Dialect::MySql, _) => {
            "MySQL/MariaDB sites expose no snapshot of open transactions to a reader"
        }
        (Direction::Push, Dialect::Postgres | Dialect::MySql, _) => {
            "pushes read the master by cursor only"
        }
    };
    Some(format!(
        "a transaction that stays open longer than `cursor_lag` ({}) and commits rows whose cursor `{}` is older \
         than that can be missed: {why}; raise `cursor_lag` above the longest transaction that writes the table \
         (a cursor stamped by `now()` or `ON UPDATE CURRENT_TIMESTAMP` takes the time of the statement or the \
         transaction's start, not of its commit; for an integer cursor `cursor_lag` is how long a gap in the \
         ids, an id taken by a transaction still open, is waited for)",
        humantime::format_duration(stream.cursor_lag),
        stream.cursor
    ))
}

/// Unique keys of `info` other than the one on exactly `key`'s columns.
fn extra_unique_keys(info: &TableInfo, key: &[String]) -> Vec<Vec<String>> {
    info.unique_keys
        .iter()
        .filter(|k| !(k.len() == key.len() && key.iter().all(|c| k.contains(c))))
        .cloned()
        .collect()
}

fn missing_key_message(
    dialect: Dialect,
    side: &str,
    table: &str,
    key: &[String],
    info: &TableInfo,
) -> String {
    let mut existing: Vec<String> = info
        .unique_keys
        .iter()
        .map(|k| format!("({})", k.join(", ")))
        .collect();
    existing.sort();
    existing.dedup();
    let last_part = table.rsplit('.').next().unwrap_or(table);
    let index_name = dialect.quote_ident(&format!("{last_part}_hubsync_key"));
    let columns: Vec<String> = key.iter().map(|k| dialect.quote_ident(k)).collect();
    format!(
        "{side} table `{table}` has no unique key on ({}) (its unique keys: {}); upserts need one: \
         CREATE UNIQUE INDEX {index_name} ON {} ({})",
        key.join(", "),
        if existing.is_empty() {
            "none".to_string()
        } else {
            existing.join(", ")
        },
        dialect.quote_table(table),
        columns.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrower_decimals_integers_and_texts_are_named() {
        // numeric(14,4) keeps 4 decimals and 10 integer digits.
        assert_eq!(
            narrowing("numeric(14,4)", "numeric(12,2)").as_deref(),
            Some("a value with more than 2 decimals does not fit (the source keeps 4)")
        );
        // decimal(12,2): 10 integer digits; decimal(8,2): 6.
        assert_eq!(
            narrowing("decimal(12,2)", "decimal(8,2)").as_deref(),
            Some(
                "a value with more than 6 digits before the point does not fit (the source allows 10)"
            )
        );
        assert_eq!(
            narrowing("numeric(12,2)", "integer").as_deref(),
            Some("a value with decimals does not fit (the source keeps 2)")
        );
        assert_eq!(
            narrowing("character varying(20)", "varchar(8)").as_deref(),
            Some("a text longer than 8 characters does not fit (the source allows 20)")
        );
        // Wider, equal, unbounded or other types: nothing to say.
        for (from, to) in [
            ("numeric(12,2)", "numeric(14,4)"),
            ("numeric(12,2)", "decimal(12,2)"),
            ("numeric(12,0)", "bigint"),
            ("numeric", "numeric(12,2)"),
            ("text", "varchar(8)"),
            ("varchar(8)", "text"),
            ("timestamp(6)", "timestamp(3)"),
            ("interval", "integer"),
        ] {
            assert_eq!(narrowing(from, to), None, "{from} -> {to}");
        }
    }
    use crate::connector::ColumnInfo;

    #[test]
    fn the_same_warning_at_several_sites_is_one_line_naming_them() {
        let at = |stream: &str, site: &str, message: &str| Problem {
            place: format!("flow `f` stream `{stream}` site `{site}`"),
            message: message.into(),
            site: Some(site.into()),
        };
        let mut warnings = vec![Problem {
            place: "inventory".into(),
            message: "row 3 left out".into(),
            site: None,
        }];
        for i in 1..=7 {
            let site = format!("s{i:02}");
            warnings.push(at("a", &site, "lag"));
            if i != 4 {
                warnings.push(at("b", &site, "lag"));
            }
        }
        // The same text at another stream, or another text, is its own line.
        warnings.push(at("a", "s03", "no key"));
        warnings.push(at("c", "s02", "lag"));
        warnings.push(at("b", "s09", "other"));
        assert_eq!(
            grouped_warnings(&warnings),
            [
                "inventory: row 3 left out",
                "flow `f` stream `a` sites `s01`, `s02`, `s03`, `s04`, `s05` and 2 more (7): lag",
                "flow `f` stream `b` sites `s01`, `s02`, `s03`, `s05`, `s06` and 1 more (6): lag",
                "flow `f` stream `a` site `s03`: no key",
                "flow `f` stream `c` site `s02`: lag",
                "flow `f` stream `b` site `s09`: other",
            ]
        );
        assert_eq!(
            grouped_warnings(&[at("a", "s1", "lag"), at("a", "s2", "lag")]),
            ["flow `f` stream `a` sites `s1`, `s2` (2): lag"]
        );
        assert!(grouped_warnings(&[]).is_empty());
    }

    /// The one stream of a pull flow: key `id`, site column `site`, and the
    /// extra stream keys of `extra` (TOML lines).
    fn pull_stream(extra: &str) -> Stream {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[master]\nurl = \"sqlite://master.db\"\n\
             [[site]]\nid = \"s1\"\nurl = \"sqlite://s1.db\"\n\
             [[flow]]\nname = \"f\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"t\"\n  \
             target = \"t\"\n  primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"site\"\n{extra}"
        );
        let config =
            Config::parse(&text, &dir.path().join("h.toml"), dir.path(), &|_| None).unwrap();
        config.flows[0].streams[0].clone()
    }

    fn table(columns: &[&str], unique_keys: &[&[&str]]) -> TableInfo {
        let text = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        TableInfo {
            columns: (columns.iter())
                .map(|name| ColumnInfo {
                    name: name.to_string(),
                    data_type: "text".into(),
                    cast_type: "text".into(),
                    required: false,
                })
                .collect(),
            unique_keys: unique_keys.iter().map(|k| text(k)).collect(),
            case_insensitive_names: false,
        }
    }

    fn described(names: &[&str]) -> Vec<(String, String)> {
        names
            .iter()
            .map(|n| (n.to_string(), "TEXT".to_string()))
            .collect()
    }

    #[test]
    fn written_columns_skip_the_site_column_and_a_flag_the_target_lacks() {
        let stream = pull_stream("  delete_column = \"gone\"\n");
        let mut check = StreamCheck::new(Direction::Pull, &stream);
        let target = table(&["site", "id", "updated_at"], &[&["site", "id"]]);
        let written = check.columns(
            &described(&["site", "id", "updated_at", "qty", "gone"]),
            &target,
        );
        let targets: Vec<&str> = written.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(targets, ["id", "updated_at", "qty"]);
        assert_eq!(
            check.findings.problems,
            ["master table `t` has no column `qty`; add it or map columns with `columns`"]
        );
    }

    #[test]
    fn a_delete_column_the_source_lacks_is_a_problem() {
        let stream = pull_stream("  delete_column = \"gone\"\n");
        let mut check = StreamCheck::new(Direction::Pull, &stream);
        let target = table(&["site", "id", "updated_at", "gone"], &[]);
        check.columns(&described(&["id", "updated_at"]), &target);
        assert_eq!(
            check.findings.problems,
            [
                "site source has no column `gone` (the stream's `delete_column`); add it, or fix `delete_column`"
            ]
        );
    }

    #[test]
    fn the_conflict_key_needs_a_unique_key_and_mysql_warns_of_others() {
        let stream = pull_stream("");
        let written = [("id".to_string(), "id".to_string())];
        let mut check = StreamCheck::new(Direction::Pull, &stream);
        check.keys(
            Dialect::Postgres,
            &table(&["site", "id"], &[&["id"]]),
            &written,
        );
        assert_eq!(
            check.findings.problems.len(),
            1,
            "{:?}",
            check.findings.problems
        );
        assert!(
            check.findings.problems[0].starts_with(
                "master table `t` has no unique key on (site, id) (its unique keys: (id)); upserts need one: \
                 CREATE UNIQUE INDEX \"t_hubsync_key\" ON \"t\" (\"site\", \"id\")"
            ),
            "{}",
            check.findings.problems[0]
        );
        assert!(check.findings.warnings.is_empty());

        let mut check = StreamCheck::new(Direction::Pull, &stream);
        let target = table(&["id", "sku"], &[&["id", "site"], &["sku"]]);
        check.keys(Dialect::MySql, &target, &written);
        // `site` is neither a target column nor written.
        assert_eq!(
            check.findings.problems,
            ["master table `t` has no key column `site`"]
        );
        assert_eq!(check.findings.warnings.len(), 1);
        assert!(
            check.findings.warnings[0].starts_with(
                "master table `t` has a unique key on (sku) besides the stream's key (site, id)"
            ),
            "{}",
            check.findings.warnings[0]
        );
    }
}
