//! Data services: running a declared operation on the master or on sites.
//!
//! Only operations declared in `[[service]]` can run; there is no way to send
//! other SQL. A call names the service and operation, gives parameter values
//! (text from the CLI, JSON from the HTTP API) and, for site services, a
//! [`SiteSelector`]. Values are checked against the declared types before any
//! connection is opened, then bound as parameters (never spliced). Each site
//! runs in its own task, at most `hub.max_concurrent_sites` at once, with one
//! connection opened for the call and closed after it; a site that fails is
//! reported in its own [`CallResult`] beside the others' rows.
//!
//! Whether an operation returns rows is found by preparing it: a statement
//! with result columns (a `SELECT`, `... RETURNING`, a procedure with OUT
//! parameters) is a query, anything else is executed and reports rows
//! affected. Result columns of a type the connector does not decode
//! (PostgreSQL arrays, intervals, enums...) are read as their text form.
//! Limit: such an operation is wrapped in a `WITH`, which a `CALL` cannot
//! be (a procedure whose OUT parameters have such types fails, naming the
//! column).

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt as _;

use crate::config::{Config, Operation, Service, ServiceTarget, Site, SiteSelector};
use crate::connector::{ConnectOptions, Connector};
use crate::dialect::params::{NamedParam, bind_named_placeholders, select_with_text_columns};
use crate::value::Value;

/// A mistake in a call, found before anything runs. Messages name the
/// service, operation, parameter or site.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No such service.
    #[error("unknown service `{service}`; known services: {known}")]
    UnknownService {
        /// The name asked for.
        service: String,
        /// Declared services.
        known: String,
    },
    /// No such operation in the service.
    #[error("service `{service}`: unknown operation `{operation}`; known operations: {known}")]
    UnknownOperation {
        /// Service name.
        service: String,
        /// The name asked for.
        operation: String,
        /// Declared operations.
        known: String,
    },
    /// A parameter is missing, unknown or of the wrong type.
    #[error("service `{service}` operation `{operation}` param `{param}`: {message}")]
    BadParam {
        /// Service name.
        service: String,
        /// Operation name.
        operation: String,
        /// Parameter name.
        param: String,
        /// What is wrong.
        message: String,
    },
    /// The site selection does not fit the service or the inventory.
    #[error("service `{service}`: {message}")]
    BadSites {
        /// Service name.
        service: String,
        /// What is wrong.
        message: String,
    },
}

/// A parameter value as the caller gave it.
#[derive(Clone, Debug)]
pub enum ParamInput {
    /// Text (`--param k=v`), parsed by the declared type.
    Text(String),
    /// JSON (the HTTP API), checked against the declared type.
    Json(serde_json::Value),
}

/// Rows or a row count from one database.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallRows {
    /// Result column names (empty for a statement).
    pub columns: Vec<String>,
    /// Driver type name of each column (`INT4`, `NUMERIC`, `TEXT`...), as
    /// prepared; used to keep JSON types exact.
    pub column_types: Vec<String>,
    /// Result rows.
    pub rows: Vec<Vec<Value>>,
    /// Rows affected by a statement; `None` for a query.
    pub rows_affected: Option<u64>,
}

/// The outcome of a call at one place.
#[derive(Clone, Debug)]
pub struct CallResult {
    /// Site id, or `None` for the master.
    pub site: Option<String>,
    /// Rows, or the error (naming service, operation and site).
    pub outcome: Result<CallRows, String>,
}

/// A call resolved against the config: checked operation and values.
#[derive(Debug)]
pub struct PreparedCall<'c> {
    /// The service.
    pub service: &'c Service,
    /// The operation.
    pub operation: &'c Operation,
    /// Value per declared parameter (defaults and NULLs filled in).
    pub values: HashMap<String, Value>,
    /// The sites to run on (empty for a master service).
    pub sites: Vec<&'c Site>,
}

/// Resolves and checks a call: the service and operation exist, every given
/// parameter is declared and has its type, every required one is given,
/// and the site selection fits (`None` for a master service; required for
/// a site service).
///
/// Errors: [`ServiceError`] naming the bad name, parameter or site.
pub fn prepare<'c>(
    config: &'c Config,
    service_name: &str,
    operation_name: &str,
    inputs: &BTreeMap<String, ParamInput>,
    selector: Option<&SiteSelector>,
) -> Result<PreparedCall<'c>, ServiceError> {
    let service = config
        .service(service_name)
        .ok_or_else(|| ServiceError::UnknownService {
            service: service_name.to_string(),
            known: names(config.services.iter().map(|s| s.name.as_str())),
        })?;
    let operation =
        service
            .operation(operation_name)
            .ok_or_else(|| ServiceError::UnknownOperation {
                service: service.name.clone(),
                operation: operation_name.to_string(),
                known: names(service.operations.iter().map(|o| o.name.as_str())),
            })?;
    let bad_param = |param: &str, message: String| ServiceError::BadParam {
        service: service.name.clone(),
        operation: operation.name.clone(),
        param: param.to_string(),
        message,
    };
    for given in inputs.keys() {
        if !operation.params.iter().any(|p| &p.name == given) {
            return Err(bad_param(
                given,
                format!(
                    "not a parameter of this operation; its parameters: {}",
                    names(operation.params.iter().map(|p| p.name.as_str()))
                ),
            ));
        }
    }
    let mut values = HashMap::new();
    for param in &operation.params {
        let value = match inputs.get(&param.name) {
            Some(ParamInput::Text(text)) => param.param_type.parse_text(text),
            Some(ParamInput::Json(json)) => param.param_type.parse_json(json),
            None if param.required => Err(format!(
                "missing; it is required ({})",
                param.param_type.as_str()
            )),
            None => Ok(param.default.clone().unwrap_or(Value::Null)),
        }
        .map_err(|message| bad_param(&param.name, message))?;
        if param.required && value.is_null() {
            return Err(bad_param(
                &param.name,
                "is required and may not be null".into(),
            ));
        }
        values.insert(param.name.clone(), value);
    }
    let bad_sites = |message: String| ServiceError::BadSites {
        service: service.name.clone(),
        message,
    };
    let sites = match (service.on, selector) {
        (ServiceTarget::Master, None) => Vec::new(),
        (ServiceTarget::Master, Some(_)) => {
            return Err(bad_sites(
                "runs on the master (`on = \"master\"`); do not choose sites".into(),
            ));
        }
        (ServiceTarget::Site, None) => {
            return Err(bad_sites(
                "runs on sites (`on = \"site\"`); choose them by id, by tags, or all".into(),
            ));
        }
        (ServiceTarget::Site, Some(selector)) => {
            config.select_sites(selector).map_err(bad_sites)?
        }
    };
    Ok(PreparedCall {
        service,
        operation,
        values,
        sites,
    })
}

/// Runs a prepared call: on `master` for a master service, else on each
/// chosen site (results in site order). Never fails as a whole: each place's
/// error is in its [`CallResult`].
pub async fn execute(
    config: &Config,
    call: &PreparedCall<'_>,
    master: Option<&Connector>,
) -> Vec<CallResult> {
    if call.service.on == ServiceTarget::Master {
        let outcome = match master {
            Some(master) => run_on(master, call, None).await,
            None => match Connector::connect(&config.master, &options(config, None)).await {
                Ok(conn) => {
                    let outcome = run_on(&conn, call, None).await;
                    conn.close().await;
                    outcome
                }
                Err(e) => Err(e.to_string()),
            },
        };
        return vec![CallResult {
            site: None,
            outcome: outcome.map_err(|e| {
                format!(
                    "service `{}` operation `{}` master: {e}",
                    call.service.name, call.operation.name
                )
            }),
        }];
    }
    // A loop, not a closure: the futures must stay `Send` for axum.
    let mut runs = Vec::with_capacity(call.sites.len());
    for site in &call.sites {
        runs.push(run_site(config, call, site));
    }
    futures::stream::iter(runs)
        .buffered(config.hub.max_concurrent_sites)
        .collect()
        .await
}

async fn run_site(config: &Config, call: &PreparedCall<'_>, site: &Site) -> CallResult {
    let outcome = match Connector::connect(&site.url, &options(config, Some(site))).await {
        Ok(conn) => {
            crate::telemetry::site_connection_opened();
            let outcome = run_on(&conn, call, Some(site)).await;
            conn.close().await;
            crate::telemetry::site_connection_closed();
            outcome
        }
        Err(e) => Err(e.to_string()),
    };
    CallResult {
        site: Some(site.id.clone()),
        outcome: outcome.map_err(|e| {
            format!(
                "service `{}` operation `{}` site `{}`: {e}",
                call.service.name, call.operation.name, site.id
            )
        }),
    }
}

fn options(config: &Config, site: Option<&Site>) -> ConnectOptions {
    ConnectOptions {
        max_connections: 1,
        connect_timeout: config.hub.connect_timeout,
        acquire_timeout: config.hub.connect_timeout,
        statement_timeout: match site {
            Some(site) => site.statement_timeout(&config.hub),
            None => config.hub.statement_timeout,
        },
        create_if_missing: false,
    }
}

/// Binds and runs the operation on one database.
async fn run_on(
    conn: &Connector,
    call: &PreparedCall<'_>,
    site: Option<&Site>,
) -> Result<CallRows, String> {
    let operation = call.operation;
    let sample = |placeholder: &NamedParam| match placeholder {
        NamedParam::Param(name) => operation
            .params
            .iter()
            .find(|p| &p.name == name)
            .map_or(Value::Text(String::new()), |p| p.param_type.sample()),
        NamedParam::Site(_) => Value::Text(String::new()),
    };
    let bound = bind_named_placeholders(&operation.sql, conn.dialect(), &sample)?;
    let mut params = Vec::with_capacity(bound.params.len());
    for placeholder in &bound.params {
        params.push(match placeholder {
            NamedParam::Param(name) => call.values.get(name).cloned().unwrap_or(Value::Null),
            NamedParam::Site(attribute) => site
                .and_then(|s| s.attribute(attribute))
                .map_or(Value::Null, |v| Value::Text(v.to_string())),
        });
    }
    // Prepared under another text: preparing without arguments lets
    // PostgreSQL infer `$1::bigint`'s parameter as bigint, and the driver's
    // statement cache would then reuse that statement for the real call,
    // whose arguments travel as text ("insufficient data left in message").
    let described = conn
        .describe_query(&format!("/* hubsync: describe */ {}", bound.sql))
        .await
        .map_err(|e| e.to_string())?;
    if described.is_empty() {
        let affected = conn
            .execute(&bound.sql, &params)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(CallRows {
            rows_affected: Some(affected),
            ..CallRows::default()
        });
    }
    let (columns, mut column_types): (Vec<String>, Vec<String>) = described.into_iter().unzip();
    let text_columns: Vec<String> = columns
        .iter()
        .zip(&column_types)
        .filter(|(_, type_name)| !conn.decodes_natively(type_name))
        .map(|(name, _)| name.clone())
        .collect();
    let sql = if text_columns.is_empty() {
        bound.sql
    } else {
        for (name, type_name) in columns.iter().zip(column_types.iter_mut()) {
            if text_columns.contains(name) {
                *type_name = "TEXT".into();
            }
        }
        select_with_text_columns(conn.dialect(), &bound.sql, &columns, &text_columns)
    };
    let batch = conn.query(&sql, &params).await.map_err(|e| e.to_string())?;
    Ok(CallRows {
        columns,
        column_types,
        rows: batch.rows,
        rows_affected: None,
    })
}

/// For `hubsync check`: prepares (never runs) every operation where it
/// would run (the master, or every site), so a missing table or column, a
/// syntax error or an unreachable site shows before anyone calls it.
/// Returns one problem per failure, naming service, operation and place.
pub async fn check(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    let master_ops: Vec<(&Service, &Operation)> = config
        .services
        .iter()
        .filter(|s| s.on == ServiceTarget::Master)
        .flat_map(|s| s.operations.iter().map(move |o| (s, o)))
        .collect();
    if !master_ops.is_empty() {
        problems.extend(check_place(config, None, &master_ops).await);
    }
    let site_ops: Vec<(&Service, &Operation)> = config
        .services
        .iter()
        .filter(|s| s.on == ServiceTarget::Site)
        .flat_map(|s| s.operations.iter().map(move |o| (s, o)))
        .collect();
    if !site_ops.is_empty() {
        let mut checks = Vec::with_capacity(config.sites.len());
        for site in &config.sites {
            checks.push(check_place(config, Some(site), &site_ops));
        }
        let per_site: Vec<Vec<String>> = futures::stream::iter(checks)
            .buffered(config.hub.max_concurrent_sites)
            .collect()
            .await;
        problems.extend(per_site.into_iter().flatten());
    }
    problems
}

async fn check_place(
    config: &Config,
    site: Option<&Site>,
    operations: &[(&Service, &Operation)],
) -> Vec<String> {
    let (url, place) = match site {
        Some(site) => (&site.url, format!("site `{}`", site.id)),
        None => (&config.master, "master".to_string()),
    };
    let conn = match Connector::connect(url, &options(config, site)).await {
        Ok(conn) => conn,
        Err(e) => {
            let services: Vec<&str> = operations.iter().map(|(s, _)| s.name.as_str()).collect();
            let mut services = services;
            services.dedup();
            return vec![format!("service `{}` {place}: {e}", services.join("`, `"))];
        }
    };
    let mut problems = Vec::new();
    for (service, operation) in operations {
        let sample = |placeholder: &NamedParam| match placeholder {
            NamedParam::Param(name) => operation
                .params
                .iter()
                .find(|p| &p.name == name)
                .map_or(Value::Text(String::new()), |p| p.param_type.sample()),
            NamedParam::Site(_) => Value::Text(String::new()),
        };
        let outcome = match bind_named_placeholders(&operation.sql, conn.dialect(), &sample) {
            Ok(bound) => conn
                .describe_query(&format!("/* hubsync: describe */ {}", bound.sql))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            problems.push(format!(
                "service `{}` operation `{}` {place}: {e}",
                service.name, operation.name
            ));
        }
    }
    conn.close().await;
    problems
}

fn names<'n>(names: impl Iterator<Item = &'n str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}
