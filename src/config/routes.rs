//! Sub-systems, routes and the dynamic inventory in the config:
//! `[[system]]` (named databases besides the master), `[[flow.stream.route]]`
//! (extra targets of a pull stream, each with its own mapping and an
//! optional `when` predicate) and `[inventory]` (sites read from a master
//! query each pass). Pure validation: nothing here connects.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Direction, Stream, url::DbUrl};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSystem {
    name: String,
    url: String,
    password: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    system: String,
    target: String,
    columns: Option<BTreeMap<String, String>>,
    primary_key: Option<Vec<String>>,
    site_column: Option<String>,
    when: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInventory {
    query: String,
    url: String,
    password: Option<String>,
}

/// A named database besides the master (`[[system]]`: an ERP, a data
/// warehouse...) that pull streams route rows to. Any dialect.
#[derive(Clone, Debug)]
pub struct System {
    /// Unique name, used by `route.system`.
    pub name: String,
    /// How to reach it.
    pub url: DbUrl,
}

/// An extra target of a pull stream (`[[flow.stream.route]]`): the rows the
/// stream reads at each site are also upserted into `stream.target` of
/// system `system`, mapped by `stream.columns`, before the master write and
/// checkpoint of the same batch.
#[derive(Clone, Debug)]
pub struct Route {
    /// The `[[system]]` written.
    pub system: String,
    /// A CEL predicate over the source row (`row`, `site`, `run`); a row is
    /// routed when it is true. `None`: every row.
    pub when: Option<String>,
    /// The pull stream as this route writes it: the parent stream with the
    /// route's `target`, `columns`, `primary_key` and `site_column` (each
    /// defaulting to the parent's; the cursor, soft deletes and value rules
    /// are the parent's), so the mapping plan is built exactly as for the
    /// master.
    pub stream: Stream,
}

/// `[inventory]`: sites read from the master each pass.
///
/// Each row of `query` (run on the master) is one site: its `id` column is
/// the site id; `url` with every `{column}` replaced by that column's value
/// is its URL (`${VAR}` was already taken from the environment at load);
/// every other column not used in `url` is a tag (NULL: no tag).
#[derive(Clone, Debug)]
pub struct Inventory {
    /// The SELECT run on the master; it must return an `id` column.
    pub query: String,
    /// The URL template (`postgres://u:p@{host}/{db}`, `sqlite://{path}`).
    pub url: String,
    /// A `password` given apart from the URL (applies to every site).
    pub password: Option<String>,
    /// Columns named by `{column}` in `url`, in order of first use.
    pub url_columns: Vec<String>,
    /// Where relative SQLite paths resolve (the config file's folder).
    pub base_dir: PathBuf,
}

/// The `{column}` names of a URL template, in order of first use.
///
/// Errors: a `{` without its `}`, or an empty or non-identifier name
/// (letters, digits, `_`).
pub fn url_template_columns(template: &str) -> Result<Vec<String>, String> {
    let mut columns: Vec<String> = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let tail = &rest[open + 1..];
        let close = tail
            .find('}')
            .ok_or_else(|| format!("`{{` without `}}` in `{}`", &rest[open..]))?;
        let name = &tail[..close];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!(
                "`{{{name}}}` is not a column name; write `{{column}}` with a column of `query`"
            ));
        }
        if !columns.iter().any(|c| c == name) {
            columns.push(name.to_string());
        }
        rest = &tail[close + 1..];
    }
    Ok(columns)
}

/// Fills a URL template's `{column}`s from `value_of`; `None` for a column
/// that has no value (NULL or absent), naming it.
pub fn fill_url_template(
    template: &str,
    value_of: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let tail = &rest[open + 1..];
        let close = tail.find('}').unwrap_or(tail.len());
        let name = &tail[..close];
        let value = value_of(name).ok_or_else(|| format!("column `{name}` is NULL or missing"))?;
        out.push_str(&value);
        rest = tail.get(close + 1..).unwrap_or("");
    }
    out.push_str(rest);
    Ok(out)
}

pub(super) fn validate_systems(
    raw: Vec<RawSystem>,
    base_dir: &Path,
    problems: &mut Vec<String>,
) -> Vec<System> {
    let mut systems = Vec::new();
    let mut names = HashSet::new();
    for raw_system in raw {
        let place = format!("system `{}`", raw_system.name);
        if raw_system.name.trim().is_empty() {
            problems.push("a `[[system]]` has an empty `name`".into());
            continue;
        }
        if raw_system.name == "master" {
            problems.push(format!(
                "{place}: `master` is the `[master]` database; give the system another name"
            ));
        }
        if !names.insert(raw_system.name.clone()) {
            problems.push(format!("{place}: duplicate system name"));
        }
        match DbUrl::parse(&raw_system.url, raw_system.password, base_dir) {
            Ok(url) => systems.push(System {
                name: raw_system.name,
                url,
            }),
            Err(e) => problems.push(format!("{place}: `url`: {e}")),
        }
    }
    systems
}

/// Validates a stream's routes against the systems and the parent stream
/// (already built: `parent`).
pub(super) fn validate_routes(
    raw: Vec<RawRoute>,
    parent: &Stream,
    direction: Direction,
    systems: &[System],
    place: &str,
    problems: &mut Vec<String>,
) -> Vec<Route> {
    if !raw.is_empty() && direction == Direction::Push {
        problems.push(format!(
            "{place}: `route` applies to pull streams only; a push selects rows per site with `:site.<tag>` in `query` or `when`"
        ));
        return Vec::new();
    }
    let mut routes = Vec::new();
    let mut seen = HashSet::new();
    for (index, raw_route) in raw.into_iter().enumerate() {
        let route_place = format!("{place} route[{index}] (system `{}`)", raw_route.system);
        if !seen.insert((raw_route.system.clone(), raw_route.target.clone())) {
            problems.push(format!(
                "{route_place}: table `{}` is already a route of this stream",
                raw_route.target
            ));
        }
        routes.extend(validate_route(
            raw_route,
            parent,
            systems,
            &route_place,
            problems,
        ));
    }
    routes
}

/// One route (see [`validate_routes`]); `None` when it has a problem.
fn validate_route(
    raw_route: RawRoute,
    parent: &Stream,
    systems: &[System],
    route_place: &str,
    problems: &mut Vec<String>,
) -> Option<Route> {
    let before = problems.len();
    if !systems.iter().any(|s| s.name == raw_route.system) {
        let known: Vec<&str> = systems.iter().map(|s| s.name.as_str()).collect();
        problems.push(format!(
            "{route_place}: no `[[system]]` named `{}`; systems: {}",
            raw_route.system,
            if known.is_empty() {
                "none (add one)".to_string()
            } else {
                known.join(", ")
            }
        ));
    }
    if raw_route.target.trim().is_empty() {
        problems.push(format!(
            "{route_place}: `target` is empty; name the system's table"
        ));
    }
    if raw_route
        .when
        .as_deref()
        .is_some_and(|w| w.trim().is_empty())
    {
        problems.push(format!(
            "{route_place}: `when` is empty; write a CEL predicate, e.g. `row.qty < 0`, or remove it"
        ));
    } else if let Some(when) = &raw_route.when
        && let Err(e) = crate::mediate::expr::referenced_columns(when)
    {
        problems.push(format!("{route_place}: `when`: expression `{when}`: {e}"));
    }
    let columns = raw_route
        .columns
        .map(|map| map.into_iter().collect::<Vec<(String, String)>>())
        .or_else(|| parent.columns.clone());
    let primary_key = raw_route
        .primary_key
        .unwrap_or_else(|| parent.primary_key.clone());
    if let Some(pairs) = &columns {
        check_route_columns(pairs, &primary_key, route_place, problems);
    }
    if let Some(site_column) = &raw_route.site_column
        && (site_column.trim().is_empty() || primary_key.contains(site_column))
    {
        problems.push(format!(
            "{route_place}: `site_column` `{site_column}` must name the system column that receives the site id, outside `primary_key` (it is added to the key)"
        ));
    }
    if problems.len() > before {
        return None;
    }
    let stream = Stream {
        target: raw_route.target,
        columns,
        primary_key,
        site_column: raw_route.site_column.or_else(|| parent.site_column.clone()),
        routes: Vec::new(),
        // The stream's transforms shape the master's rows only: a route
        // maps source columns with its own `columns` and keeps rows with its
        // own `when` (a fresh-user trial found a stream with `compute` and
        // a route failing every run).
        compute: Vec::new(),
        filter: None,
        ..parent.clone()
    };
    Some(Route {
        system: raw_route.system,
        when: raw_route.when,
        stream,
    })
}

/// A route's `columns`: every key column mapped. (Any source column may
/// be mapped: a stream with routes of their own `columns` reads every
/// column, see `Stream::select_columns`.)
fn check_route_columns(
    pairs: &[(String, String)],
    primary_key: &[String],
    route_place: &str,
    problems: &mut Vec<String>,
) {
    for key in primary_key {
        if !pairs.iter().any(|(target, _)| target == key) {
            problems.push(format!(
                "{route_place}: primary key column `{key}` is not in `columns`; map it, or set the route's `primary_key`"
            ));
        }
    }
}

/// A stream's `when`: a push's per-site row predicate (see
/// [`Stream::when`]); refused on a pull, whose routes carry their own.
pub(super) fn validate_push_when(
    when: Option<String>,
    direction: Direction,
    place: &str,
    problems: &mut Vec<String>,
) -> Option<String> {
    let when = when?;
    if direction == Direction::Pull {
        problems.push(format!(
            "{place}: `when` selects the rows each site receives on push streams; on a pull, give each `[[flow.stream.route]]` its own `when`"
        ));
        return None;
    }
    if when.trim().is_empty() {
        problems.push(format!(
            "{place}: `when` is empty; write a CEL predicate, e.g. `row.zone == site.tags.price_zone`, or remove it"
        ));
        return None;
    }
    // Its syntax now, like `filter`'s (its names are checked per site).
    if let Err(e) = crate::mediate::expr::referenced_columns(&when) {
        problems.push(format!("{place}: `when`: expression `{when}`: {e}"));
        return None;
    }
    Some(when)
}

pub(super) fn validate_inventory(
    raw: RawInventory,
    base_dir: &Path,
    problems: &mut Vec<String>,
) -> Option<Inventory> {
    if raw.query.trim().is_empty() {
        problems.push(
            "`inventory.query` is empty; write the SELECT that lists the sites, e.g. `SELECT id, host, db, region FROM stores WHERE active`"
                .into(),
        );
        return None;
    }
    let url_columns = match url_template_columns(&raw.url) {
        Ok(columns) => columns,
        Err(e) => {
            problems.push(format!("`inventory.url`: {e}"));
            return None;
        }
    };
    if url_columns.is_empty() {
        // The same database for every site: surely a mistake.
        problems.push(
            "`inventory.url` uses no `{column}` of the query, so every site would be the same database; \
             write e.g. `postgres://u@{host}/{db}`"
                .into(),
        );
        return None;
    }
    Some(Inventory {
        query: raw.query,
        url: raw.url,
        password: raw.password,
        url_columns,
        base_dir: base_dir.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(text: &str) -> Vec<String> {
        let dir = std::path::Path::new("/srv/hub");
        match super::super::Config::parse(text, &dir.join("h.toml"), dir, &|_| None) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems,
        }
    }

    #[test]
    fn routes_systems_and_inventory_are_validated_with_their_places() {
        let text = r#"
[master]
url = "sqlite://m.db"
[[system]]
name = "master"
url = "sqlite://erp.db"
[inventory]
query = "SELECT id FROM stores"
url = "sqlite://stores.db"
[[flow]]
name = "up"
direction = "pull"
  [[flow.stream]]
  source = "sales"
  target = "sales"
  primary_key = ["id"]
  cursor = "u"
  site_column = "store_id"
  columns = { id = "id", qty = "qty", u = "u" }
  when = "row.qty > 0"
    [[flow.stream.route]]
    system = "erp"
    target = "returns"
    [[flow.stream.route]]
    system = "master"
    target = "returns"
    columns = { sale_id = "id", price = "price" }
[[flow]]
name = "down"
direction = "push"
  [[flow.stream]]
  source = "prices"
  target = "prices"
  primary_key = ["sku"]
  cursor = "u"
    [[flow.stream.route]]
    system = "master"
    target = "prices"
"#;
        // Every problem at once, each with its place.
        assert_eq!(
            problems_of(text),
            [
                "system `master`: `master` is the `[master]` database; give the system another name",
                "`inventory.url` uses no `{column}` of the query, so every site would be the same database; write e.g. `postgres://u@{host}/{db}`",
                "flow `up` stream `sales`: `when` selects the rows each site receives on push streams; on a pull, give each `[[flow.stream.route]]` its own `when`",
                "flow `up` stream `sales` route[0] (system `erp`): no `[[system]]` named `erp`; systems: master",
                "flow `up` stream `sales` route[1] (system `master`): primary key column `id` is not in `columns`; map it, or set the route's `primary_key`",
                "flow `down` stream `prices`: `route` applies to pull streams only; a push selects rows per site with `:site.<tag>` in `query` or `when`",
            ]
        );
    }

    /// Found by a trial: a `when` that is no CEL was found only per site at
    /// run time (exit 1), while the same text in `filter` was a config
    /// error (exit 2). Both are refused when the config loads now.
    #[test]
    fn a_when_that_is_no_cel_is_a_config_problem() {
        let text = r#"
[master]
url = "sqlite://m.db"
[[site]]
id = "s1"
url = "sqlite://s1.db"
[[flow]]
name = "down"
direction = "push"
  [[flow.stream]]
  source = "prices"
  target = "prices"
  primary_key = ["sku"]
  cursor = "u"
  when = "row.tier == "
"#;
        let problems = problems_of(text);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(
                "flow `down` stream `prices`: `when`: expression `row.tier == `: not valid CEL:"
            ),
            "{problems:?}"
        );
    }

    #[test]
    fn a_url_template_names_its_columns_once_and_fills_them() {
        let template = "postgres://u:p@{host}/{db}?application_name={db}";
        assert_eq!(url_template_columns(template).unwrap(), ["host", "db"]);
        let filled = fill_url_template(template, &|name| match name {
            "host" => Some("10.0.0.7".into()),
            "db" => Some("store7".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            filled,
            "postgres://u:p@10.0.0.7/store7?application_name=store7"
        );
        assert_eq!(
            fill_url_template("sqlite://{file}", &|_| None).unwrap_err(),
            "column `file` is NULL or missing"
        );
        assert!(url_template_columns("sqlite://{file").is_err());
        assert!(url_template_columns("sqlite://{a b}").is_err());
    }
}
