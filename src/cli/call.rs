//! `hubsync call`: run a declared data service operation from the shell.
//!
//! Results from sites carry a `site` column; a site that fails is reported
//! on stderr (and in the JSON `errors`) while the others' rows are printed.
//! Exit code 1 if any place failed, 2 for a bad service, operation,
//! parameter or site selection.

use std::collections::BTreeMap;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use comfy_table::{Table, presets};
use serde::Serialize;

use super::{EXIT_FAILED, EXIT_OK, UsageError};
use crate::api::json::{JsonCell, JsonRow, value_json};
use crate::config::{Config, SiteSelector};
use crate::service::{self, CallResult, ParamInput};

/// Arguments of `hubsync call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// Service name (a `[[service]]`).
    pub service: String,
    /// Operation name (a `[[service.operation]]`).
    pub operation: String,
    /// Run at this site (repeatable).
    #[arg(long = "site", value_name = "ID", conflicts_with_all = ["tags", "all_sites"])]
    pub site: Vec<String>,
    /// Run at the sites having this tag value (repeatable: all must match).
    #[arg(
        long = "sites",
        value_name = "TAG=VALUE",
        id = "tags",
        conflicts_with = "all_sites"
    )]
    pub tags: Vec<String>,
    /// Run at every site.
    #[arg(long)]
    pub all_sites: bool,
    /// A parameter value, parsed by its declared type (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Output formats of `hubsync call`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table (rows), or rows affected per place.
    Table,
    /// `{"rows": [...], "errors": [...]}` with exact JSON types.
    Json,
    /// CSV with a header line; NULL is an empty field.
    Csv,
}

pub(super) async fn run(config: Arc<Config>, args: CallArgs) -> anyhow::Result<u8> {
    let mut inputs = BTreeMap::new();
    for param in &args.params {
        let (name, value) = param
            .split_once('=')
            .ok_or_else(|| UsageError(format!("`--param {param}`: write `--param NAME=VALUE`")))?;
        if inputs
            .insert(name.to_string(), ParamInput::Text(value.to_string()))
            .is_some()
        {
            return Err(UsageError(format!(
                "`--param {name}` is given twice; give each parameter once"
            ))
            .into());
        }
    }
    let selector = if !args.site.is_empty() {
        Some(SiteSelector::Ids(args.site.clone()))
    } else if !args.tags.is_empty() {
        let mut tags = BTreeMap::new();
        for pair in &args.tags {
            let (tag, value) = pair.split_once('=').ok_or_else(|| {
                UsageError(format!(
                    "`--sites {pair}`: write `--sites TAG=VALUE`, e.g. `--sites region=north`"
                ))
            })?;
            tags.insert(tag.to_string(), value.to_string());
        }
        Some(SiteSelector::Tags(tags))
    } else if args.all_sites {
        Some(SiteSelector::All)
    } else {
        None
    };
    let call = service::prepare(
        &config,
        &args.service,
        &args.operation,
        &inputs,
        selector.as_ref(),
    )
    .map_err(|e| {
        let hint = match e {
            service::ServiceError::BadSites { .. } if selector.is_none() => {
                "; use `--site ID`, `--sites TAG=VALUE` or `--all-sites`"
            }
            _ => "",
        };
        UsageError(format!("{e}{hint}"))
    })?;
    let results = service::execute(&config, &call, None).await;
    let failed = results.iter().filter(|r| r.outcome.is_err()).count();
    let on_sites = !call.sites.is_empty();
    match args.format {
        Format::Table => print_table(&results, on_sites),
        Format::Json => print_json(&results)?,
        Format::Csv => print_csv(&results, on_sites)?,
    }
    for result in &results {
        if let Err(error) = &result.outcome {
            eprintln!("error: {error}");
        }
    }
    if on_sites && failed > 0 {
        eprintln!(
            "{} of {} failed",
            super::plural(failed as u64, "site"),
            results.len()
        );
    }
    Ok(if failed > 0 { EXIT_FAILED } else { EXIT_OK })
}

/// Union of the result columns, in first-seen order, with `site` first
/// when the call ran on sites; `rows affected` for statements.
fn header(results: &[CallResult], on_sites: bool) -> Vec<String> {
    let mut columns: Vec<String> = Vec::new();
    if on_sites {
        columns.push("site".into());
    }
    let mut any_statement = false;
    for result in results {
        if let Ok(rows) = &result.outcome {
            any_statement |= rows.rows_affected.is_some();
            for column in &rows.columns {
                if !columns.contains(column) {
                    columns.push(column.clone());
                }
            }
        }
    }
    if any_statement {
        columns.push("rows_affected".into());
    }
    columns
}

/// Every output row as (column, text) cells; NULL is `None`.
fn text_rows(results: &[CallResult], on_sites: bool) -> Vec<Vec<(String, Option<String>)>> {
    let mut out = Vec::new();
    for result in results {
        let Ok(rows) = &result.outcome else { continue };
        let site_cell = || ("site".to_string(), result.site.clone());
        if let Some(affected) = rows.rows_affected {
            let mut row = Vec::new();
            if on_sites {
                row.push(site_cell());
            }
            row.push(("rows_affected".into(), Some(affected.to_string())));
            out.push(row);
            continue;
        }
        for values in &rows.rows {
            let mut row = Vec::new();
            if on_sites {
                row.push(site_cell());
            }
            for ((value, column), type_name) in
                values.iter().zip(&rows.columns).zip(&rows.column_types)
            {
                row.push((column.clone(), cell_text(value_json(value, type_name))));
            }
            out.push(row);
        }
    }
    out
}

fn cell_text(cell: JsonCell) -> Option<String> {
    match cell {
        JsonCell::Plain(serde_json::Value::Null) => None,
        JsonCell::Plain(serde_json::Value::String(s)) => Some(s),
        JsonCell::Plain(other) => Some(other.to_string()),
        JsonCell::Raw(raw) => Some(raw.get().to_string()),
    }
}

fn lookup<'r>(row: &'r [(String, Option<String>)], column: &str) -> Option<&'r Option<String>> {
    row.iter().find(|(c, _)| c == column).map(|(_, v)| v)
}

fn print_table(results: &[CallResult], on_sites: bool) {
    let columns = header(results, on_sites);
    let rows = text_rows(results, on_sites);
    if columns.is_empty() || (columns.len() == 1 && on_sites) {
        return;
    }
    let mut table = Table::new();
    table.load_preset(presets::UTF8_BORDERS_ONLY);
    table.set_header(columns.clone());
    for row in &rows {
        table.add_row(columns.iter().map(|c| match lookup(row, c) {
            Some(Some(text)) => text.clone(),
            Some(None) => "NULL".to_string(),
            None => String::new(),
        }));
    }
    println!("{table}");
    println!("({})", super::plural(rows.len() as u64, "row"));
}

#[derive(Serialize)]
struct JsonOutput {
    rows: Vec<JsonRow>,
    errors: Vec<JsonError>,
}

#[derive(Serialize)]
struct JsonError {
    site: Option<String>,
    error: String,
}

fn print_json(results: &[CallResult]) -> anyhow::Result<()> {
    let mut output = JsonOutput {
        rows: Vec::new(),
        errors: Vec::new(),
    };
    for result in results {
        let site_cell = || {
            result.site.as_ref().map(|site| {
                (
                    "site".to_string(),
                    JsonCell::Plain(serde_json::Value::String(site.clone())),
                )
            })
        };
        match &result.outcome {
            Err(error) => output.errors.push(JsonError {
                site: result.site.clone(),
                error: error.clone(),
            }),
            Ok(rows) => {
                if let Some(affected) = rows.rows_affected {
                    let mut row: Vec<_> = site_cell().into_iter().collect();
                    row.push((
                        "rows_affected".into(),
                        JsonCell::Plain(serde_json::Value::from(affected)),
                    ));
                    output.rows.push(JsonRow(row));
                    continue;
                }
                for values in &rows.rows {
                    let mut row: Vec<_> = site_cell().into_iter().collect();
                    for ((value, column), type_name) in
                        values.iter().zip(&rows.columns).zip(&rows.column_types)
                    {
                        row.push((column.clone(), value_json(value, type_name)));
                    }
                    output.rows.push(JsonRow(row));
                }
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}

fn print_csv(results: &[CallResult], on_sites: bool) -> anyhow::Result<()> {
    let columns = header(results, on_sites);
    let mut writer = csv::Writer::from_writer(std::io::stdout());
    writer.write_record(&columns)?;
    for row in text_rows(results, on_sites) {
        writer.write_record(
            columns
                .iter()
                .map(|c| lookup(&row, c).and_then(|v| v.clone()).unwrap_or_default()),
        )?;
    }
    writer.flush()?;
    Ok(())
}
