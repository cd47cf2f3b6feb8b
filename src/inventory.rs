//! The inventory: the list of sites a pass works. Static `[[site]]`s from
//! the config, plus, with `[inventory]`, one site per row of a master query
//! read again before every pass (so stores added or removed in the master
//! table are worked, or no longer worked, without a restart).
//!
//! Rules for a row of `inventory.query`: its `id` column is the site id
//! (text or integer); `inventory.url` with each `{column}` replaced by the
//! row's value is its URL; every other column not used in the URL is a tag
//! (a NULL leaves the tag out; `timezone` is parsed as for static sites).
//! A row is left out, with a warning naming it, when its id is NULL or
//! empty, its URL column is NULL, its URL does not parse, its `timezone` is
//! unknown, or its id is already taken: a static `[[site]]` always wins
//! over an inventory row of the same id, and the first row wins over a
//! later one.

use std::collections::{BTreeMap, HashSet};

use crate::config::routes::fill_url_template;
use crate::config::{Config, DbUrl, Inventory, Site, schedule};
use crate::connector::{Connector, ConnectorError};
use crate::value::{Batch, Value};

/// Why the inventory query could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The query failed at the master.
    #[error("`inventory.query` on the master: {0}")]
    Query(ConnectorError),
    /// The query returns no `id` column.
    #[error(
        "`inventory.query` returns no `id` column (it returns: {0}); select the site id as `id`"
    )]
    NoId(String),
    /// A `{column}` of `inventory.url` is not returned by the query.
    #[error("`inventory.url` uses `{{{0}}}`, which `inventory.query` does not return")]
    MissingUrlColumn(String),
}

/// The sites of one inventory read, and the rows left out.
#[derive(Clone, Debug, Default)]
pub struct InventoryRead {
    /// Static sites first (config order), then the query's (row order).
    pub sites: Vec<Site>,
    /// One message per row left out ("inventory row `s1`: ...").
    pub warnings: Vec<String>,
}

/// Reads the inventory: the config's static sites, plus the rows of
/// `inventory.query` on `master` when `[inventory]` is set.
///
/// Errors: [`InventoryError`] when the query fails or lacks a column it
/// needs; a bad row is only a warning (see the module docs).
pub async fn read_sites(
    config: &Config,
    master: &Connector,
) -> Result<InventoryRead, InventoryError> {
    let mut read = InventoryRead {
        sites: config.sites.clone(),
        warnings: Vec::new(),
    };
    let Some(inventory) = &config.inventory else {
        return Ok(read);
    };
    let batch = master
        .query(&inventory.query, &[])
        .await
        .map_err(InventoryError::Query)?;
    sites_from_rows(inventory, &batch, &mut read)?;
    Ok(read)
}

/// Adds one site per row of `batch` to `read` (see the module docs).
pub fn sites_from_rows(
    inventory: &Inventory,
    batch: &Batch,
    read: &mut InventoryRead,
) -> Result<(), InventoryError> {
    let id_index = batch
        .column_index("id")
        .ok_or_else(|| InventoryError::NoId(batch.columns.join(", ")))?;
    if let Some(missing) = inventory
        .url_columns
        .iter()
        .find(|c| batch.column_index(c).is_none())
    {
        return Err(InventoryError::MissingUrlColumn(missing.clone()));
    }
    let mut taken: HashSet<String> = read.sites.iter().map(|s| s.id.clone()).collect();
    let static_ids: HashSet<String> = taken.clone();
    for (row_number, row) in batch.rows.iter().enumerate() {
        let id = match text_of(&row[id_index]) {
            Some(id) if !id.trim().is_empty() => id,
            _ => {
                read.warnings.push(format!(
                    "inventory row {}: `id` is NULL or empty; the row is left out",
                    row_number + 1
                ));
                continue;
            }
        };
        if taken.contains(&id) {
            read.warnings.push(if static_ids.contains(&id) {
                format!(
                    "inventory row `{id}`: a `[[site]]` of the config has this id; the static site is used and the row left out"
                )
            } else {
                format!("inventory row `{id}`: an earlier row has this id; the row is left out")
            });
            continue;
        }
        match site_of_row(inventory, batch, row, &id) {
            Ok(site) => {
                taken.insert(id);
                read.sites.push(site);
            }
            Err(why) => read
                .warnings
                .push(format!("inventory row `{id}`: {why}; the row is left out")),
        }
    }
    Ok(())
}

/// The site of one inventory row whose id is `id`.
fn site_of_row(
    inventory: &Inventory,
    batch: &Batch,
    row: &[Value],
    id: &str,
) -> Result<Site, String> {
    let value_of = |name: &str| batch.column_index(name).and_then(|i| text_of(&row[i]));
    let url_text = fill_url_template(&inventory.url, &value_of)?;
    let url = DbUrl::parse(&url_text, inventory.password.clone(), &inventory.base_dir)
        .map_err(|e| format!("`url`: {e}"))?;
    let mut tags = BTreeMap::new();
    for (column, value) in batch.columns.iter().zip(row) {
        if column == "id" || inventory.url_columns.contains(column) {
            continue;
        }
        if let Some(text) = text_of(value) {
            tags.insert(column.clone(), text);
        }
    }
    let timezone = match tags.get("timezone") {
        Some(name) => {
            Some(schedule::parse_timezone(name).map_err(|e| format!("tag `timezone`: {e}"))?)
        }
        None => None,
    };
    Ok(Site {
        id: id.to_string(),
        url,
        statement_timeout: None,
        tags,
        timezone,
    })
}

/// A value as the text of an id, a URL part or a tag (`None` for NULL).
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::Text(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory() -> Inventory {
        Inventory {
            query: "SELECT ...".into(),
            url: "sqlite://stores/{file}".into(),
            password: None,
            url_columns: vec!["file".into()],
            base_dir: std::path::PathBuf::from("/srv/hub"),
        }
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn rows_become_sites_with_tags_and_bad_rows_are_named() {
        let static_site = Site {
            id: "s1".into(),
            url: DbUrl::Sqlite {
                path: "/srv/hub/s1.db".into(),
            },
            statement_timeout: None,
            tags: BTreeMap::new(),
            timezone: None,
        };
        let mut read = InventoryRead {
            sites: vec![static_site],
            warnings: Vec::new(),
        };
        let batch = Batch {
            columns: vec!["id".into(), "file".into(), "region".into()],
            rows: vec![
                vec![Value::Int(7), text("s7.db"), text("north")],
                vec![text("s1"), text("other.db"), text("south")],
                vec![text("s8"), Value::Null, text("south")],
                vec![text("s9"), text("s9.db"), Value::Null],
                vec![Value::Int(7), text("again.db"), text("east")],
                vec![Value::Null, text("x.db"), text("east")],
            ],
        };
        sites_from_rows(&inventory(), &batch, &mut read).unwrap();
        let ids: Vec<&str> = read.sites.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["s1", "7", "s9"]);
        let seven = &read.sites[1];
        assert_eq!(
            seven.url,
            DbUrl::Sqlite {
                path: "/srv/hub/stores/s7.db".into()
            }
        );
        assert_eq!(seven.tags.get("region").map(String::as_str), Some("north"));
        assert!(!seven.tags.contains_key("file"));
        assert!(read.sites[2].tags.is_empty());
        assert_eq!(
            read.warnings,
            [
                "inventory row `s1`: a `[[site]]` of the config has this id; the static site is used and the row left out",
                "inventory row `s8`: column `file` is NULL or missing; the row is left out",
                "inventory row `7`: an earlier row has this id; the row is left out",
                "inventory row 6: `id` is NULL or empty; the row is left out",
            ]
        );
    }

    #[test]
    fn a_query_without_id_or_url_column_is_an_error() {
        let mut read = InventoryRead::default();
        let no_id = Batch {
            columns: vec!["store".into(), "file".into()],
            rows: Vec::new(),
        };
        assert_eq!(
            sites_from_rows(&inventory(), &no_id, &mut read)
                .unwrap_err()
                .to_string(),
            "`inventory.query` returns no `id` column (it returns: store, file); select the site id as `id`"
        );
        let no_file = Batch {
            columns: vec!["id".into()],
            rows: Vec::new(),
        };
        assert_eq!(
            sites_from_rows(&inventory(), &no_file, &mut read)
                .unwrap_err()
                .to_string(),
            "`inventory.url` uses `{file}`, which `inventory.query` does not return"
        );
    }
}
