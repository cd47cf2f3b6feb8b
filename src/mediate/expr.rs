//! Row expressions: computed columns, row filters and route predicates,
//! written in CEL (<https://github.com/google/cel-spec>), parsed by the
//! `cel` crate's parser and compiled here, once per (flow, stream), into a
//! tree whose column references are resolved to positions in the source
//! row and whose types are checked against the source's described columns.
//! Nothing here does I/O.
//!
//! Variables: `row.<column>` (or `row["odd name"]`), `site.id`,
//! `site.tags.<tag>` (or `site.tags["tag"]`), `run.started_at` (an instant)
//! and `run.flow`.
//!
//! Types: `int` (64-bit), `double`, `decimal` (exact, see below), `string`,
//! `bool`, `bytes`, `timestamp` (an instant, UTC), `local` (a date-time
//! without zone), `date`, `null`, and `dyn` for a column whose SQL type
//! says nothing (JSON, UUID, an untyped SQLite column): a `dyn` value is
//! checked when the row is evaluated.
//!
//! Exact decimals: a `NUMERIC`/`DECIMAL` column is a `decimal`, never a
//! double; `decimal(x)` turns an int or a decimal text into one exactly,
//! and `decimal op int` / `int op decimal` compute in decimal, so
//! `decimal(row.amount_cents) / 100` is exact (1999 -> `19.99`). Decimals
//! follow `rust_decimal`: 28-29 significant digits (a 96-bit integer and a
//! scale); a value, sum or product that needs more fails its row rather
//! than being rounded (`dropped_only_zeros`), while a division whose
//! quotient does not end within them is rounded half to even at the last
//! digit (use `round(x, n)`, half away from zero as PostgreSQL's `round`,
//! to choose a scale). A double never turns into a decimal.
//!
//! NULL: `row.x == null` tests for it; any other operation on a NULL (a
//! sum, a comparison by order, a function argument) fails the row with a
//! message naming the column where the NULL came straight from one.

use std::borrow::Cow;
use std::fmt;

use cel::common::ast::{CallExpr, Expr as CelExpr, IdedExpr, LiteralValue};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone as _, Utc};
use rust_decimal::Decimal;

use crate::mediate::MapError;
use crate::value::Value;

/// A compiled expression: its text, the place it was declared (for
/// messages) and its checked tree.
#[derive(Debug, Clone)]
pub(crate) struct Expr {
    text: String,
    root: Node,
    ty: Ty,
    tags: Vec<String>,
}

/// What an expression sees besides the row, fixed for one (run, site).
#[derive(Debug, Clone, Default)]
pub(crate) struct ExprScope {
    /// `site.id`.
    pub(crate) site_id: String,
    /// `site.tags`.
    pub(crate) site_tags: std::collections::BTreeMap<String, String>,
    /// `run.started_at`.
    pub(crate) run_started_at: Option<DateTime<Utc>>,
    /// `run.flow`.
    pub(crate) flow: String,
}

/// Why a row's expression could not be evaluated (a division by zero, a
/// NULL where a number is needed, a text that is no decimal); the message
/// names the expression and, where it can, the column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expression `{expression}`: {reason}")]
pub(crate) struct EvalError {
    /// The expression's text.
    pub(crate) expression: String,
    /// What went wrong.
    pub(crate) reason: String,
}

/// The static type of an expression (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    Null,
    Bool,
    Int,
    Double,
    Decimal,
    String,
    Bytes,
    Timestamp,
    Local,
    Date,
    Dyn,
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Ty::Null => "null",
            Ty::Bool => "bool",
            Ty::Int => "int",
            Ty::Double => "double",
            Ty::Decimal => "decimal",
            Ty::String => "string",
            Ty::Bytes => "bytes",
            Ty::Timestamp => "timestamp",
            Ty::Local => "local date-time",
            Ty::Date => "date",
            Ty::Dyn => "dyn",
        };
        f.write_str(name)
    }
}

impl Ty {
    /// The expression type of a column of SQL type `sql_type` as a
    /// connector describes it (PostgreSQL, MySQL or SQLite spelling).
    pub(crate) fn of_sql(sql_type: &str) -> Ty {
        let t = sql_type.to_ascii_lowercase();
        let t = t.trim();
        let starts = |p: &str| t.starts_with(p);
        if t == "tinyint(1)" || starts("bool") {
            Ty::Bool
        } else if t.contains("int") || starts("serial") || starts("bigserial") {
            Ty::Int
        } else if starts("numeric") || starts("decimal") || starts("money") {
            Ty::Decimal
        } else if starts("real") || starts("double") || starts("float") {
            Ty::Double
        } else if t.contains("char") || starts("text") || t.contains("clob") || starts("tinytext") {
            Ty::String
        } else if starts("bytea") || t.contains("blob") || t.contains("binary") {
            Ty::Bytes
        } else if t.contains("without time zone") || starts("datetime") {
            Ty::Local
        } else if starts("timestamp") {
            // PostgreSQL `timestamp with time zone`, MySQL `TIMESTAMP`: both
            // instants (the rule of `MappingPlan::apply_site_zone`).
            Ty::Timestamp
        } else if t == "date" {
            Ty::Date
        } else {
            Ty::Dyn
        }
    }

    /// Whether a value of this type can be written to a column of type
    /// `column` (itself from [`Ty::of_sql`]) without guessing: the same
    /// type; an int into a decimal or double; a local date-time and an
    /// instant into each other (the site's `timezone` fix converts them);
    /// anything into or out of `dyn`, and NULL into anything. Text never
    /// goes into a number, bool or date-time column, a double never into
    /// a decimal or an int (it is inexact), a decimal never into an int.
    pub(crate) fn fits(self, column: Ty) -> bool {
        use Ty::*;
        self == column
            || matches!(self, Null | Dyn)
            || column == Dyn
            || matches!(
                (self, column),
                (Int, Decimal | Double)
                    | (Decimal, Double)
                    | (Local, Timestamp)
                    | (Timestamp, Local)
            )
            || (column == String && !matches!(self, Bytes))
    }

    /// The expression type of a source column of (described) type
    /// `type_name` read from a `dialect` database: by the dialect's type
    /// map ([`crate::dialect::types::source_logical`]) for PostgreSQL and
    /// MySQL (whose `TIMESTAMP` is an instant, PostgreSQL's a local time),
    /// by the declared type ([`Ty::of_sql`]) for SQLite, whose date-times
    /// and decimals are text the declared type tells how to read.
    pub(crate) fn of_source(dialect: crate::dialect::Dialect, type_name: &str) -> Ty {
        use crate::dialect::types::source_logical;
        match dialect {
            crate::dialect::Dialect::Sqlite => Ty::of_sql(type_name),
            _ => Ty::of_logical(source_logical(dialect, type_name)),
        }
    }

    /// The expression type of a target column of declared type
    /// `data_type` in `dialect` ([`crate::dialect::types::target_logical`];
    /// `dyn` where the target accepts many kinds, as SQLite does).
    pub(crate) fn of_target(dialect: crate::dialect::Dialect, data_type: &str) -> Ty {
        Ty::of_logical(crate::dialect::types::target_logical(dialect, data_type))
    }

    fn of_logical(logical: crate::dialect::types::Logical) -> Ty {
        use crate::dialect::types::Logical;
        match logical {
            Logical::Bool => Ty::Bool,
            Logical::Int16 | Logical::Int32 | Logical::Int64 => Ty::Int,
            Logical::Decimal => Ty::Decimal,
            Logical::Float => Ty::Double,
            Logical::Text => Ty::String,
            Logical::Bytes => Ty::Bytes,
            Logical::Date => Ty::Date,
            Logical::Timestamp => Ty::Local,
            Logical::TimestampTz => Ty::Timestamp,
            Logical::Time | Logical::Json | Logical::Uuid | Logical::Other => Ty::Dyn,
        }
    }

    fn numeric(self) -> bool {
        matches!(self, Ty::Int | Ty::Decimal | Ty::Double | Ty::Dyn)
    }
}

/// A literal constant of the tree.
#[derive(Debug, Clone)]
enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(String),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl BinOp {
    fn of(name: &str) -> Option<BinOp> {
        use cel::common::ast::operators as op;
        Some(match name {
            op::ADD => BinOp::Add,
            op::SUBSTRACT => BinOp::Sub,
            op::MULTIPLY => BinOp::Mul,
            op::DIVIDE => BinOp::Div,
            op::MODULO => BinOp::Rem,
            op::EQUALS => BinOp::Eq,
            op::NOT_EQUALS => BinOp::Ne,
            op::LESS => BinOp::Lt,
            op::LESS_EQUALS => BinOp::Le,
            op::GREATER => BinOp::Gt,
            op::GREATER_EQUALS => BinOp::Ge,
            _ => return None,
        })
    }

    fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
        }
    }

    fn arithmetic(self) -> bool {
        matches!(
            self,
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem
        )
    }
}

/// The functions an expression may call (see [`Func::of`] for the names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Decimal,
    Int,
    Double,
    String,
    Round,
    Timestamp,
    TimestampUtc,
    LocalTime,
    Size,
    StartsWith,
    EndsWith,
    Contains,
    LowerAscii,
    UpperAscii,
    Trim,
}

impl Func {
    /// (function, number of arguments including a method's receiver).
    fn of(name: &str, method: bool) -> Option<(Func, usize)> {
        Some(match (name, method) {
            ("decimal", false) => (Func::Decimal, 1),
            ("int", false) => (Func::Int, 1),
            ("double", false) => (Func::Double, 1),
            ("string", false) => (Func::String, 1),
            ("round", false) => (Func::Round, 2),
            ("timestamp", false) => (Func::Timestamp, 1),
            ("timestamp_utc", false) => (Func::TimestampUtc, 2),
            ("local_time", false) => (Func::LocalTime, 2),
            ("size", _) => (Func::Size, 1),
            ("startsWith", true) => (Func::StartsWith, 2),
            ("endsWith", true) => (Func::EndsWith, 2),
            ("contains", true) => (Func::Contains, 2),
            ("lowerAscii", true) => (Func::LowerAscii, 1),
            ("upperAscii", true) => (Func::UpperAscii, 1),
            ("trim", true) => (Func::Trim, 1),
            _ => return None,
        })
    }

    /// The result type for argument types `args`, or why they do not fit.
    fn check(self, args: &[Ty]) -> Result<Ty, String> {
        use Ty::*;
        let fits = |at: usize, allowed: &[Ty]| {
            args[at] == Dyn || args[at] == Null || allowed.contains(&args[at])
        };
        let (ok, result) = match self {
            Func::Decimal => (fits(0, &[Int, Decimal, String]), Decimal),
            Func::Int => (fits(0, &[Int, Decimal, Double, String, Timestamp]), Int),
            Func::Double => (fits(0, &[Int, Decimal, Double, String]), Double),
            Func::String => (true, String),
            Func::Round => (fits(0, &[Decimal, Int]) && fits(1, &[Int]), Decimal),
            Func::Timestamp => (fits(0, &[String, Timestamp]), Timestamp),
            Func::TimestampUtc => (fits(0, &[Local, String]) && fits(1, &[String]), Timestamp),
            Func::LocalTime => (fits(0, &[Timestamp, String]) && fits(1, &[String]), Local),
            Func::Size => (fits(0, &[String, Bytes]), Int),
            Func::StartsWith | Func::EndsWith | Func::Contains => {
                (fits(0, &[String]) && fits(1, &[String]), Bool)
            }
            Func::LowerAscii | Func::UpperAscii | Func::Trim => (fits(0, &[String]), String),
        };
        if ok {
            Ok(result)
        } else {
            let shown: Vec<std::string::String> = args.iter().map(|t| t.to_string()).collect();
            let hint = if self == Func::Decimal && args[0] == Double {
                "; a double is inexact and never becomes a decimal: read the column as NUMERIC or text"
            } else {
                ""
            };
            Err(format!(
                "`{}` does not take ({}){hint}",
                self.name(),
                shown.join(", ")
            ))
        }
    }

    fn name(self) -> &'static str {
        match self {
            Func::Decimal => "decimal",
            Func::Int => "int",
            Func::Double => "double",
            Func::String => "string",
            Func::Round => "round",
            Func::Timestamp => "timestamp",
            Func::TimestampUtc => "timestamp_utc",
            Func::LocalTime => "local_time",
            Func::Size => "size",
            Func::StartsWith => "startsWith",
            Func::EndsWith => "endsWith",
            Func::Contains => "contains",
            Func::LowerAscii => "lowerAscii",
            Func::UpperAscii => "upperAscii",
            Func::Trim => "trim",
        }
    }
}

/// A node of the compiled tree.
#[derive(Debug, Clone)]
enum Node {
    Lit(Lit),
    /// `row.<name>`: position in the source row, name, declared type.
    Column(usize, String, Ty),
    SiteId,
    SiteTag(String),
    RunStartedAt,
    RunFlow,
    Not(Box<Node>),
    Neg(Box<Node>),
    Binary(BinOp, Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Cond(Box<Node>, Box<Node>, Box<Node>),
    In(Box<Node>, Vec<Node>),
    Call(Func, Vec<Node>),
    /// A subtree that reads no row value, evaluated once in the scope of
    /// a (run, site) by [`Expr::bound`].
    Const(Val<'static>),
    /// A constant time zone argument (name, zone), parsed once by
    /// [`Expr::bound`].
    Zone(String, chrono_tz::Tz),
}

/// The names the compiler resolves against: the source's columns and
/// their expression types.
struct Compiler<'a> {
    columns: &'a [(String, Ty)],
    tags: Vec<String>,
}

impl Expr {
    /// Parses `text` as CEL and checks it against `columns`, the source's
    /// described (name, SQL type) pairs in the order its rows carry them;
    /// `place` ("flow `f`, stream `s`, compute `amount`") starts every
    /// message.
    ///
    /// Errors ([`MapError::Plan`]): a syntax error; an unknown variable,
    /// column, function or tag form; an operation whose operand types
    /// cannot fit (`row.status + 1` on a text column, a double into
    /// `decimal`); each names the place, the expression and the column.
    // The shared entry point of route predicates (branch `routes`).
    #[allow(dead_code)]
    pub(crate) fn compile(
        text: &str,
        columns: &[(String, String)],
        place: &str,
    ) -> Result<Expr, MapError> {
        let typed: Vec<(String, Ty)> = columns
            .iter()
            .map(|(name, sql_type)| (name.clone(), Ty::of_sql(sql_type)))
            .collect();
        Expr::compile_typed(text, &typed, place)
    }

    /// [`Expr::compile`] with the columns' expression types given (see
    /// [`Ty::of_source`], which knows each dialect's type names).
    pub(crate) fn compile_typed(
        text: &str,
        columns: &[(String, Ty)],
        place: &str,
    ) -> Result<Expr, MapError> {
        let fail = |why: String| MapError::Plan(format!("{place}: expression `{text}`: {why}"));
        let parsed = cel::parser::Parser::new()
            .parse(text)
            .map_err(|e| fail(format!("not valid CEL: {}", one_line(&e.to_string()))))?;
        let mut compiler = Compiler {
            columns,
            tags: Vec::new(),
        };
        let (root, ty) = compiler.node(&parsed).map_err(fail)?;
        Ok(Expr {
            text: text.to_string(),
            root,
            ty,
            tags: compiler.tags,
        })
    }

    /// The expression's text, as written.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The result's static type.
    pub(crate) fn ty(&self) -> Ty {
        self.ty
    }

    /// The site tags the expression reads (`site.tags.<tag>`), so a caller
    /// can refuse a site without them before reading a row.
    pub(crate) fn tags(&self) -> &[String] {
        &self.tags
    }

    /// Evaluates the expression on `row` (values in the order of the
    /// `columns` it was compiled against) in `scope`, into a value to
    /// write: a decimal becomes [`Value::Numeric`] (its text, scale kept),
    /// an instant [`Value::TimestampTz`], a local date-time
    /// [`Value::Timestamp`].
    ///
    /// Errors: [`EvalError`] (division by zero, overflow, a NULL operand,
    /// a text that does not parse, a missing site tag).
    pub(crate) fn eval(&self, row: &[Value], scope: &ExprScope) -> Result<Value, EvalError> {
        let context = Eval { row, scope };
        context
            .node(&self.root)
            .map(Val::into_value)
            .map_err(|reason| self.error(reason))
    }

    /// Evaluates a predicate (a filter, a route): `true` keeps the row.
    ///
    /// Errors: as [`Expr::eval`]; a result that is not a bool (a NULL
    /// included) is an error.
    pub(crate) fn test(&self, row: &[Value], scope: &ExprScope) -> Result<bool, EvalError> {
        let context = Eval { row, scope };
        match context.node(&self.root).map_err(|r| self.error(r))? {
            Val::Bool(b) => Ok(b),
            other => Err(self.error(format!(
                "a condition must give a bool, this one gave {} `{}`",
                other.kind(),
                other.clone().into_value()
            ))),
        }
    }

    /// This expression bound to `scope`, for evaluating many rows in it
    /// (one stream run at one site): every subtree that reads no row
    /// value (`site.id`, `site.tags.x`, `run.*`, literals and operations
    /// on them only) is evaluated once, and a constant time zone argument
    /// of `timestamp_utc`/`local_time` parsed once. A subtree whose
    /// evaluation fails (a missing tag, a division by zero) is kept as it
    /// is, so a row fails with the same message as before; so is
    /// `run.started_at` without a run start (the clock at each row).
    ///
    /// The result must be evaluated with `scope` only: the folded values
    /// are `scope`'s.
    pub(crate) fn bound(&self, scope: &ExprScope) -> Expr {
        Expr {
            text: self.text.clone(),
            root: fold(self.root.clone(), scope),
            ty: self.ty,
            tags: self.tags.clone(),
        }
    }

    fn error(&self, reason: String) -> EvalError {
        EvalError {
            expression: self.text.clone(),
            reason,
        }
    }
}

/// `node` with its row-free subtrees evaluated in `scope` (see
/// [`Expr::bound`]), children first.
fn fold(node: Node, scope: &ExprScope) -> Node {
    let each = |inner: Box<Node>| Box::new(fold(*inner, scope));
    let node = match node {
        Node::Not(inner) => Node::Not(each(inner)),
        Node::Neg(inner) => Node::Neg(each(inner)),
        Node::Binary(op, left, right) => Node::Binary(op, each(left), each(right)),
        Node::And(left, right) => Node::And(each(left), each(right)),
        Node::Or(left, right) => Node::Or(each(left), each(right)),
        Node::Cond(test, then, otherwise) => Node::Cond(each(test), each(then), each(otherwise)),
        Node::In(needle, items) => Node::In(
            each(needle),
            items.into_iter().map(|item| fold(item, scope)).collect(),
        ),
        Node::Call(func, args) => {
            let mut args: Vec<Node> = args.into_iter().map(|arg| fold(arg, scope)).collect();
            if matches!(func, Func::TimestampUtc | Func::LocalTime)
                && let Some(Node::Const(Val::Str(name))) = args.get(1)
                && let Ok(zone) = name.parse::<chrono_tz::Tz>()
            {
                args[1] = Node::Zone(name.to_string(), zone);
            }
            Node::Call(func, args)
        }
        leaf => leaf,
    };
    if !foldable(&node, scope) {
        return node;
    }
    match (Eval { row: &[], scope }).node(&node) {
        Ok(value) => Node::Const(value.into_static()),
        Err(_) => node,
    }
}

/// Whether `node` (its children folded) reads no row value and is worth
/// evaluating once: a `site`/`run` variable, or an operation whose
/// operands are all constants.
fn foldable(node: &Node, scope: &ExprScope) -> bool {
    let constant = |n: &Node| matches!(n, Node::Lit(_) | Node::Const(_) | Node::Zone(..));
    match node {
        Node::Lit(_) | Node::Const(_) | Node::Zone(..) | Node::Column(..) => false,
        Node::SiteId | Node::SiteTag(_) | Node::RunFlow => true,
        Node::RunStartedAt => scope.run_started_at.is_some(),
        Node::Not(inner) | Node::Neg(inner) => constant(inner),
        Node::Binary(_, left, right) | Node::And(left, right) | Node::Or(left, right) => {
            constant(left) && constant(right)
        }
        Node::Cond(test, then, otherwise) => {
            constant(test) && constant(then) && constant(otherwise)
        }
        Node::In(needle, items) => constant(needle) && items.iter().all(constant),
        Node::Call(_, args) => args.iter().all(constant),
    }
}

/// The source columns `text` reads (`row.<name>`, `row["name"]`), in
/// first-use order, from its syntax alone: what a stream must select.
/// Pure (no columns needed), so the config can check syntax at load time.
///
/// Errors: the CEL syntax error, on one line.
pub(crate) fn referenced_columns(text: &str) -> Result<Vec<String>, String> {
    let parsed = cel::parser::Parser::new()
        .parse(text)
        .map_err(|e| format!("not valid CEL: {}", one_line(&e.to_string())))?;
    let mut found = Vec::new();
    collect_columns(&parsed, &mut found);
    Ok(found)
}

fn collect_columns(expr: &IdedExpr, found: &mut Vec<String>) {
    let mut add = |name: &str| {
        if !found.iter().any(|f| f == name) {
            found.push(name.to_string());
        }
    };
    match &expr.expr {
        CelExpr::Select(select) if is_ident(&select.operand, "row") => add(&select.field),
        CelExpr::Select(select) => collect_columns(&select.operand, found),
        CelExpr::Call(call) => {
            if call.func_name == cel::common::ast::operators::INDEX
                && is_ident(&call.args[0], "row")
                && let CelExpr::Literal(LiteralValue::String(key)) = &call.args[1].expr
            {
                add(key.inner());
                return;
            }
            for arg in call.target.iter().map(|t| &**t).chain(call.args.iter()) {
                collect_columns(arg, found);
            }
        }
        CelExpr::List(list) => {
            for element in &list.elements {
                collect_columns(element, found);
            }
        }
        _ => {}
    }
}

/// The site tags `text` reads, as `site.tags.NAME` or `site.tags["NAME"]`
/// (`has(site.tags.NAME)` too), in order of first use; `Ok(None)` when it
/// uses `site.tags` (or `site`) any other way, whole or with a computed key,
/// or inside a map, struct or comprehension, so that every tag counts.
///
/// Errors: `text` is no CEL (the parser's message, on one line).
pub(crate) fn referenced_tags(text: &str) -> Result<Option<Vec<String>>, String> {
    let parsed = cel::parser::Parser::new()
        .parse(text)
        .map_err(|e| format!("not valid CEL: {}", one_line(&e.to_string())))?;
    let mut found = Vec::new();
    Ok(collect_tags(&parsed, &mut found).then_some(found))
}

/// `site.tags` as the operand of a field selection or an index.
fn is_site_tags(expr: &IdedExpr) -> bool {
    matches!(&expr.expr, CelExpr::Select(select) if select.field == "tags" && is_ident(&select.operand, "site"))
}

/// Adds the tags `expr` reads to `found`; false when it reads them in a way
/// that names no tag (see [`referenced_tags`]).
fn collect_tags(expr: &IdedExpr, found: &mut Vec<String>) -> bool {
    let mut add = |name: &str| {
        if !found.iter().any(|f| f == name) {
            found.push(name.to_string());
        }
        true
    };
    match &expr.expr {
        CelExpr::Select(select) if is_site_tags(&select.operand) => add(&select.field),
        // `site.id` names no tag; `site.tags` alone is the whole map.
        CelExpr::Select(select) if is_ident(&select.operand, "site") => select.field != "tags",
        CelExpr::Select(select) => collect_tags(&select.operand, found),
        CelExpr::Call(call) => {
            if call.func_name == cel::common::ast::operators::INDEX && is_site_tags(&call.args[0]) {
                return match &call.args[1].expr {
                    CelExpr::Literal(LiteralValue::String(key)) => add(key.inner()),
                    _ => false,
                };
            }
            (call.target.iter().map(|t| &**t).chain(call.args.iter()))
                .all(|arg| collect_tags(arg, found))
        }
        CelExpr::List(list) => list.elements.iter().all(|e| collect_tags(e, found)),
        CelExpr::Ident(name) => name != "site",
        CelExpr::Literal(_) | CelExpr::Unspecified => true,
        CelExpr::Map(_) | CelExpr::Struct(_) | CelExpr::Comprehension(_) => false,
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Compiler<'_> {
    fn node(&mut self, expr: &IdedExpr) -> Result<(Node, Ty), String> {
        match &expr.expr {
            CelExpr::Literal(lit) => literal(lit),
            CelExpr::Ident(name) => Err(unknown_variable(name)),
            CelExpr::Select(select) => {
                if select.test {
                    return Err("`has()` is not supported; test `row.x == null`".into());
                }
                self.select(&select.operand, &select.field)
            }
            CelExpr::Call(call) => self.call(call),
            CelExpr::List(_) => Err("a list is only allowed on the right of `in`".into()),
            CelExpr::Comprehension(_) => {
                Err("macros over lists (all, exists, map, filter) are not supported".into())
            }
            CelExpr::Map(_) | CelExpr::Struct(_) => {
                Err("maps and messages are not supported; an expression gives one value".into())
            }
            CelExpr::Unspecified => Err("empty expression".into()),
        }
    }

    /// `operand.field`: a column, `site.id`, `site.tags.x`, `run.*`.
    fn select(&mut self, operand: &IdedExpr, field: &str) -> Result<(Node, Ty), String> {
        match &operand.expr {
            CelExpr::Ident(root) if root == "row" => self.column(field),
            CelExpr::Ident(root) if root == "site" => match field {
                "id" => Ok((Node::SiteId, Ty::String)),
                _ => Err(format!(
                    "`site.{field}` is unknown; a site has `site.id` and `site.tags.<tag>`"
                )),
            },
            CelExpr::Ident(root) if root == "run" => match field {
                "started_at" => Ok((Node::RunStartedAt, Ty::Timestamp)),
                "flow" => Ok((Node::RunFlow, Ty::String)),
                _ => Err(format!(
                    "`run.{field}` is unknown; a run has `run.started_at` and `run.flow`"
                )),
            },
            CelExpr::Select(inner) if is_ident(&inner.operand, "site") && inner.field == "tags" => {
                Ok(self.tag(field))
            }
            CelExpr::Ident(root) => Err(unknown_variable(root)),
            _ => Err(format!(
                "`.{field}` selects from something that has no fields"
            )),
        }
    }

    fn column(&mut self, name: &str) -> Result<(Node, Ty), String> {
        match self.columns.iter().position(|(c, _)| c == name) {
            Some(at) => {
                let ty = self.columns[at].1;
                Ok((Node::Column(at, name.to_string(), ty), ty))
            }
            None => {
                let names: Vec<String> = self.columns.iter().map(|(c, _)| c.clone()).collect();
                Err(format!(
                    "column `{name}` not found; the source returns: {}",
                    crate::mediate::quoted_list(&names)
                ))
            }
        }
    }

    fn tag(&mut self, name: &str) -> (Node, Ty) {
        if !self.tags.iter().any(|t| t == name) {
            self.tags.push(name.to_string());
        }
        (Node::SiteTag(name.to_string()), Ty::String)
    }

    fn call(&mut self, call: &CallExpr) -> Result<(Node, Ty), String> {
        use cel::common::ast::operators as op;
        let name = call.func_name.as_str();
        if let Some(binary) = BinOp::of(name) {
            let (left, left_ty) = self.node(&call.args[0])?;
            let (right, right_ty) = self.node(&call.args[1])?;
            let ty = binary_type(binary, left_ty, right_ty)?;
            return Ok((Node::Binary(binary, left.into(), right.into()), ty));
        }
        match name {
            op::LOGICAL_AND | op::LOGICAL_OR => {
                let (left, left_ty) = self.node(&call.args[0])?;
                let (right, right_ty) = self.node(&call.args[1])?;
                want_bool(left_ty, name)?;
                want_bool(right_ty, name)?;
                let node = if name == op::LOGICAL_AND {
                    Node::And(left.into(), right.into())
                } else {
                    Node::Or(left.into(), right.into())
                };
                Ok((node, Ty::Bool))
            }
            op::LOGICAL_NOT => {
                let (inner, ty) = self.node(&call.args[0])?;
                want_bool(ty, "!")?;
                Ok((Node::Not(inner.into()), Ty::Bool))
            }
            op::NEGATE => {
                let (inner, ty) = self.node(&call.args[0])?;
                if !matches!(ty, Ty::Int | Ty::Decimal | Ty::Double | Ty::Dyn) {
                    return Err(format!("`-` needs a number, not a {ty}"));
                }
                Ok((Node::Neg(inner.into()), ty))
            }
            op::CONDITIONAL => self.conditional(call),
            op::IN => self.member_of(call),
            op::INDEX => self.index(call),
            _ => self.function(call),
        }
    }

    fn conditional(&mut self, call: &CallExpr) -> Result<(Node, Ty), String> {
        let (test, test_ty) = self.node(&call.args[0])?;
        want_bool(test_ty, "? :")?;
        let (then, then_ty) = self.node(&call.args[1])?;
        let (otherwise, otherwise_ty) = self.node(&call.args[2])?;
        let ty = match (then_ty, otherwise_ty) {
            (a, b) if a == b => a,
            (Ty::Null, other) | (other, Ty::Null) => other,
            (Ty::Dyn, _) | (_, Ty::Dyn) => Ty::Dyn,
            (Ty::Int, Ty::Decimal) | (Ty::Decimal, Ty::Int) => Ty::Decimal,
            (a, b) => {
                return Err(format!(
                    "the branches of `? :` give a {a} and a {b}; convert one"
                ));
            }
        };
        let node = Node::Cond(test.into(), then.into(), otherwise.into());
        Ok((node, ty))
    }

    /// `x in [a, b, ...]` with a list literal.
    fn member_of(&mut self, call: &CallExpr) -> Result<(Node, Ty), String> {
        let (needle, needle_ty) = self.node(&call.args[0])?;
        let CelExpr::List(list) = &call.args[1].expr else {
            return Err(
                "`in` needs a list literal on its right, e.g. `row.status in ['a', 'b']`".into(),
            );
        };
        let mut items = Vec::with_capacity(list.elements.len());
        for element in &list.elements {
            let (item, item_ty) = self.node(element)?;
            binary_type(BinOp::Eq, needle_ty, item_ty)?;
            items.push(item);
        }
        Ok((Node::In(needle.into(), items), Ty::Bool))
    }

    /// `row["name"]`, `site.tags["name"]`.
    fn index(&mut self, call: &CallExpr) -> Result<(Node, Ty), String> {
        let CelExpr::Literal(LiteralValue::String(key)) = &call.args[1].expr else {
            return Err("`[...]` takes a string literal: `row[\"column name\"]`".into());
        };
        let key: &str = key.inner();
        match &call.args[0].expr {
            CelExpr::Ident(root) if root == "row" => self.column(key),
            CelExpr::Select(inner) if is_ident(&inner.operand, "site") && inner.field == "tags" => {
                Ok(self.tag(key))
            }
            _ => Err("`[...]` applies to `row` and `site.tags` only".into()),
        }
    }

    fn function(&mut self, call: &CallExpr) -> Result<(Node, Ty), String> {
        let method = call.target.is_some();
        let Some((func, arity)) = Func::of(&call.func_name, method) else {
            return Err(format!(
                "unknown function `{}`; see the expression functions in README's Mediation section",
                call.func_name
            ));
        };
        let mut args = Vec::new();
        let mut types = Vec::new();
        for arg in call.target.iter().map(|t| &**t).chain(call.args.iter()) {
            let (node, ty) = self.node(arg)?;
            args.push(node);
            types.push(ty);
        }
        if args.len() != arity {
            return Err(format!(
                "`{}` takes {arity} argument(s), {} given",
                func.name(),
                args.len()
            ));
        }
        let ty = func.check(&types)?;
        Ok((Node::Call(func, args), ty))
    }
}

fn is_ident(expr: &IdedExpr, name: &str) -> bool {
    matches!(&expr.expr, CelExpr::Ident(n) if n == name)
}

fn unknown_variable(name: &str) -> String {
    format!("unknown variable `{name}`; an expression sees `row`, `site` and `run`")
}

fn want_bool(ty: Ty, operator: &str) -> Result<(), String> {
    if matches!(ty, Ty::Bool | Ty::Dyn) {
        Ok(())
    } else {
        Err(format!("`{operator}` needs a bool, not a {ty}"))
    }
}

fn literal(lit: &LiteralValue) -> Result<(Node, Ty), String> {
    Ok(match lit {
        LiteralValue::Boolean(b) => (Node::Lit(Lit::Bool(*b.inner())), Ty::Bool),
        LiteralValue::Int(i) => (Node::Lit(Lit::Int(*i.inner())), Ty::Int),
        LiteralValue::UInt(u) => {
            let i =
                i64::try_from(*u.inner()).map_err(|_| format!("`{}u` is too large", u.inner()))?;
            (Node::Lit(Lit::Int(i)), Ty::Int)
        }
        LiteralValue::Double(d) => (Node::Lit(Lit::Double(*d.inner())), Ty::Double),
        LiteralValue::String(s) => (Node::Lit(Lit::Str(s.inner().to_string())), Ty::String),
        LiteralValue::Bytes(b) => (Node::Lit(Lit::Bytes(b.inner().to_vec())), Ty::Bytes),
        LiteralValue::Null => (Node::Lit(Lit::Null), Ty::Null),
    })
}

/// The result type of `left op right`, or why the operands do not fit.
fn binary_type(op: BinOp, left: Ty, right: Ty) -> Result<Ty, String> {
    use Ty::*;
    let refuse = || {
        Err(format!(
            "`{}` does not apply to a {left} and a {right}{}",
            op.symbol(),
            if matches!((left, right), (Double, Decimal) | (Decimal, Double)) {
                "; doubles are inexact and never mix with decimals"
            } else if matches!((left, right), (Double, Int) | (Int, Double)) {
                "; convert with `double()`"
            } else {
                ""
            }
        ))
    };
    if op.arithmetic() {
        return match (left, right) {
            (Null, _) | (_, Null) => Err(format!("`{}` on a null literal", op.symbol())),
            (Dyn, other) | (other, Dyn) if other.numeric() || other == String => Ok(Dyn),
            (Int, Int) => Ok(Int),
            (Decimal, Decimal) | (Int, Decimal) | (Decimal, Int) => Ok(Decimal),
            (Double, Double) if op != BinOp::Rem => Ok(Double),
            (String, String) if op == BinOp::Add => Ok(String),
            _ => refuse(),
        };
    }
    let comparable = left == right
        || left == Dyn
        || right == Dyn
        || (left.numeric() && right.numeric())
        || (matches!(op, BinOp::Eq | BinOp::Ne) && (left == Null || right == Null));
    if comparable { Ok(Bool) } else { refuse() }
}

/// A value during evaluation, borrowing text and bytes from the row.
#[derive(Debug, Clone)]
enum Val<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    Decimal(Decimal),
    Str(Cow<'a, str>),
    Bytes(Cow<'a, [u8]>),
    Timestamp(DateTime<Utc>),
    Local(NaiveDateTime),
    Date(NaiveDate),
    /// A value expressions do not compute with (JSON, UUID, time of day),
    /// carried as read.
    Other(Cow<'a, Value>),
}

impl<'a> Val<'a> {
    fn kind(&self) -> &'static str {
        match self {
            Val::Null => "null",
            Val::Bool(_) => "bool",
            Val::Int(_) => "int",
            Val::Double(_) => "double",
            Val::Decimal(_) => "decimal",
            Val::Str(_) => "string",
            Val::Bytes(_) => "bytes",
            Val::Timestamp(_) => "timestamp",
            Val::Local(_) => "local date-time",
            Val::Date(_) => "date",
            Val::Other(v) => v.kind(),
        }
    }

    /// The value with no borrow left (a folded constant's).
    fn into_static(self) -> Val<'static> {
        match self {
            Val::Null => Val::Null,
            Val::Bool(b) => Val::Bool(b),
            Val::Int(i) => Val::Int(i),
            Val::Double(d) => Val::Double(d),
            Val::Decimal(d) => Val::Decimal(d),
            Val::Str(s) => Val::Str(Cow::Owned(s.into_owned())),
            Val::Bytes(b) => Val::Bytes(Cow::Owned(b.into_owned())),
            Val::Timestamp(t) => Val::Timestamp(t),
            Val::Local(t) => Val::Local(t),
            Val::Date(d) => Val::Date(d),
            Val::Other(v) => Val::Other(Cow::Owned(v.into_owned())),
        }
    }

    /// The value borrowing its text and bytes from `self` (a folded
    /// constant read at each row without copying).
    fn borrowed(&self) -> Val<'_> {
        match self {
            Val::Str(s) => Val::Str(Cow::Borrowed(s.as_ref())),
            Val::Bytes(b) => Val::Bytes(Cow::Borrowed(b.as_ref())),
            Val::Other(v) => Val::Other(Cow::Borrowed(v.as_ref())),
            other => other.clone(),
        }
    }

    fn into_value(self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(b),
            Val::Int(i) => Value::Int(i),
            Val::Double(d) => Value::Float(d),
            Val::Decimal(d) => Value::Numeric(decimal_text(&d)),
            Val::Str(s) => Value::Text(s.into_owned()),
            Val::Bytes(b) => Value::Bytes(b.into_owned()),
            Val::Timestamp(t) => Value::TimestampTz(t),
            Val::Local(t) => Value::Timestamp(t),
            Val::Date(d) => Value::Date(d),
            Val::Other(v) => v.into_owned(),
        }
    }

    /// A source row's value as the column's declared type `ty` asks
    /// (SQLite keeps decimals and date-times as text; a SQLite or MySQL
    /// boolean is an integer).
    fn of_column(value: &'a Value, ty: Ty) -> Result<Val<'a>, String> {
        Ok(match (value, ty) {
            (Value::Null, _) => Val::Null,
            (Value::Int(i), Ty::Decimal) => Val::Decimal(Decimal::from(*i)),
            (Value::Int(i), Ty::Bool) => Val::Bool(*i != 0),
            (Value::Text(t), Ty::Decimal) | (Value::Numeric(t), _) => {
                Val::Decimal(parse_decimal(t)?)
            }
            (Value::Text(t), Ty::Timestamp) => Val::Timestamp(parse_instant(t)?),
            (Value::Text(t), Ty::Local) => Val::Local(parse_local(t)?),
            (Value::Text(t), Ty::Date) => Val::Date(
                NaiveDate::parse_from_str(t.trim(), "%Y-%m-%d")
                    .map_err(|_| format!("`{t}` is not a date (YYYY-MM-DD)"))?,
            ),
            (Value::Bool(b), _) => Val::Bool(*b),
            (Value::Int(i), _) => Val::Int(*i),
            (Value::Float(f), _) => Val::Double(*f),
            (Value::Text(t), _) => Val::Str(Cow::Borrowed(t)),
            (Value::Bytes(b), _) => Val::Bytes(Cow::Borrowed(b)),
            (Value::Timestamp(t), _) => Val::Local(*t),
            (Value::TimestampTz(t), _) => Val::Timestamp(*t),
            (Value::Date(d), _) => Val::Date(*d),
            (other, _) => Val::Other(Cow::Borrowed(other)),
        })
    }
}

/// `value` as text exactly as its `Display` writes it (`-0.05`, `19.99`,
/// `1000.00`, `0`; a negative zero keeps its sign, as `rust_decimal`'s
/// `to_str_internal` does), in one allocation of the exact size and
/// without the formatting machinery: each computed decimal of a row goes
/// through here.
fn decimal_text(value: &Decimal) -> String {
    const WIDTH: usize = 40; // 2^96 has 29 digits; a scale is at most 28
    let mut digits = [b'0'; WIDTH];
    let mut start = WIDTH;
    let mantissa = value.mantissa().unsigned_abs();
    if let Ok(mut small) = u64::try_from(mantissa) {
        while small > 0 {
            start -= 1;
            digits[start] = b'0' + (small % 10) as u8;
            small /= 10;
        }
    } else {
        let mut large = mantissa;
        while large > 0 {
            start -= 1;
            digits[start] = b'0' + (large % 10) as u8;
            large /= 10;
        }
    }
    let scale = value.scale() as usize;
    // Leading zeros of the fraction ([b'0'; WIDTH] holds them already).
    start = start.min(WIDTH - scale);
    let whole = WIDTH - scale;
    let mut text = String::with_capacity(WIDTH - start + 3);
    if value.is_sign_negative() {
        text.push('-');
    }
    // ASCII digits only: the conversion cannot fail.
    fn ascii(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap_or_default()
    }
    if whole == start {
        text.push('0');
    } else {
        text.push_str(ascii(&digits[start..whole]));
    }
    if scale > 0 {
        text.push('.');
        text.push_str(ascii(&digits[whole..]));
    }
    text
}

/// Parses decimal text exactly (`-12.50` keeps its scale); `NaN` and
/// infinities, and numbers past 28 significant digits, are refused.
pub(crate) fn parse_decimal(text: &str) -> Result<Decimal, String> {
    // Untrimmed first: a stored decimal has no spaces, and `trim` looks
    // at Unicode whitespace; the result is the same either way. The
    // library also takes `1_000`, which no database writes: refused below.
    if !text.contains('_')
        && let Ok(exact) = Decimal::from_str_exact(text)
    {
        return Ok(exact);
    }
    let trimmed = text.trim();
    let (mantissa, exponent) = match trimmed.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, Some(exponent)),
        None => (trimmed, None),
    };
    let number = |t: &str, point: bool| {
        let t = t.strip_prefix(['-', '+']).unwrap_or(t);
        let digits = t.bytes().filter(u8::is_ascii_digit).count();
        digits > 0
            && t.bytes()
                .all(|b| b.is_ascii_digit() || (point && b == b'.'))
            && t.bytes().filter(|b| *b == b'.').count() <= 1
    };
    if !number(mantissa, true) || !exponent.is_none_or(|e| number(e, false)) {
        return Err(format!("`{text}` is not a decimal number"));
    }
    // Never `Decimal::from_str`: past 28-29 significant digits it rounds
    // silently (a trial saw 9999999999999999999.9999999999 become
    // 10000000000000000000). Trailing zeros of a fraction carry no digit
    // of the value (`…567.5000000000` from a DECIMAL(40,10) column);
    // scientific notation only where its mantissa has few enough digits to
    // be kept exactly.
    let without_zeros = match exponent {
        None if mantissa.contains('.') => mantissa.trim_end_matches('0').trim_end_matches('.'),
        _ => mantissa,
    };
    let exact = match exponent {
        None => Decimal::from_str_exact(trimmed)
            .or_else(|_| Decimal::from_str_exact(without_zeros))
            .ok(),
        Some(_) => {
            let digits = mantissa
                .bytes()
                .filter(u8::is_ascii_digit)
                .skip_while(|d| *d == b'0')
                .count();
            (digits <= 28)
                .then(|| Decimal::from_scientific(trimmed).ok())
                .flatten()
        }
    };
    exact.ok_or_else(|| {
        format!(
            "`{text}` has more significant digits than an expression keeps exactly (28-29); it would be rounded"
        )
    })
}

/// Parses an instant: RFC 3339, or `YYYY-MM-DD HH:MM:SS[.f]` with an
/// offset, or without one as UTC (SQLite's convention for its date-time
/// text).
fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    let t = text.trim();
    DateTime::parse_from_rfc3339(t)
        .or_else(|_| DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .map(|d| d.with_timezone(&Utc))
        .or_else(|_| {
            parse_local(t.strip_suffix('Z').unwrap_or(t))
                .map(|n| n.and_utc())
                .map_err(|_| ())
        })
        .map_err(|_| format!("`{text}` is not an instant (RFC 3339, e.g. `2026-03-29T01:30:00Z`)"))
}

/// Parses a local date-time `YYYY-MM-DD HH:MM[:SS[.f]]` (or with `T`).
fn parse_local(text: &str) -> Result<NaiveDateTime, String> {
    let t = text.trim();
    [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
    .or_else(|| {
        NaiveDate::parse_from_str(t, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    })
    .ok_or_else(|| format!("`{text}` is not a date-time (YYYY-MM-DD HH:MM:SS)"))
}

/// Evaluation of a tree against one row.
struct Eval<'a> {
    row: &'a [Value],
    scope: &'a ExprScope,
}

impl<'a> Eval<'a> {
    /// The value of `node`. The arms a bound expression meets at every
    /// row (columns, constants, operators, calls) are here; the others
    /// are in [`Eval::rare`], out of line, so that this recursive function
    /// stays small.
    fn node(&self, node: &'a Node) -> Result<Val<'a>, String> {
        Ok(match node {
            Node::Column(at, name, ty) => Val::of_column(&self.row[*at], *ty)
                .map_err(|why| format!("column `{name}`: {why}"))?,
            Node::Const(value) => value.borrowed(),
            Node::Lit(lit) => match lit {
                Lit::Null => Val::Null,
                Lit::Bool(b) => Val::Bool(*b),
                Lit::Int(i) => Val::Int(*i),
                Lit::Double(d) => Val::Double(*d),
                Lit::Str(s) => Val::Str(Cow::Borrowed(s)),
                Lit::Bytes(b) => Val::Bytes(Cow::Borrowed(b)),
            },
            Node::Binary(op, left, right) => {
                let l = self.node(left)?;
                let r = self.node(right)?;
                binary(*op, l, r, left, right)?
            }
            Node::And(left, right) => {
                Val::Bool(self.boolean(left, "&&")? && self.boolean(right, "&&")?)
            }
            Node::Call(func, args) => {
                // At most two arguments: no vector per call and row.
                let first = self.node(&args[0])?;
                let second = match args.get(1) {
                    Some(arg) => self.node(arg)?,
                    None => Val::Null,
                };
                call(*func, first, &second, args)?
            }
            _ => self.rare(node)?,
        })
    }

    /// [`Eval::node`]'s other arms.
    #[inline(never)]
    fn rare(&self, node: &'a Node) -> Result<Val<'a>, String> {
        Ok(match node {
            Node::Zone(name, _) => Val::Str(Cow::Borrowed(name)),
            Node::SiteId => Val::Str(Cow::Borrowed(&self.scope.site_id)),
            Node::SiteTag(tag) => match self.scope.site_tags.get(tag) {
                Some(value) => Val::Str(Cow::Borrowed(value)),
                None => {
                    return Err(format!(
                        "site `{}` has no tag `{tag}`; add it to the site's tags",
                        self.scope.site_id
                    ));
                }
            },
            Node::RunStartedAt => {
                Val::Timestamp(self.scope.run_started_at.unwrap_or_else(Utc::now))
            }
            Node::RunFlow => Val::Str(Cow::Borrowed(&self.scope.flow)),
            Node::Not(inner) => Val::Bool(!self.boolean(inner, "!")?),
            Node::Neg(inner) => negate(self.node(inner)?, inner)?,
            Node::Or(left, right) => {
                Val::Bool(self.boolean(left, "||")? || self.boolean(right, "||")?)
            }
            Node::Cond(test, then, otherwise) => {
                if self.boolean(test, "? :")? {
                    self.node(then)?
                } else {
                    self.node(otherwise)?
                }
            }
            Node::In(needle, items) => {
                let needle_value = self.node(needle)?;
                let mut found = false;
                for item in items {
                    if equal(&needle_value, &self.node(item)?) {
                        found = true;
                        break;
                    }
                }
                Val::Bool(found)
            }
            // The hot arms are `node`'s.
            Node::Column(..)
            | Node::Const(_)
            | Node::Lit(_)
            | Node::Binary(..)
            | Node::And(..)
            | Node::Call(..) => self.node(node)?,
        })
    }

    fn boolean(&self, node: &'a Node, operator: &str) -> Result<bool, String> {
        match self.node(node)? {
            Val::Bool(b) => Ok(b),
            other => Err(format!(
                "`{operator}` needs a bool, {} gave {}",
                describe(node),
                other.kind()
            )),
        }
    }
}

/// How a node is named in a run-time message: a column by its name.
fn describe(node: &Node) -> String {
    match node {
        Node::Column(_, name, _) => format!("`row.{name}`"),
        Node::SiteTag(tag) => format!("`site.tags.{tag}`"),
        _ => "an operand".to_string(),
    }
}

fn null_operand(node: &Node, what: &str) -> String {
    match node {
        Node::Column(_, name, _) => format!("column `{name}` is NULL where {what} is needed"),
        _ => format!("a NULL where {what} is needed"),
    }
}

fn negate<'a>(value: Val<'a>, node: &Node) -> Result<Val<'a>, String> {
    Ok(match value {
        Val::Int(i) => Val::Int(i.checked_neg().ok_or("integer overflow in `-`")?),
        Val::Decimal(d) => Val::Decimal(-d),
        Val::Double(d) => Val::Double(-d),
        Val::Null => return Err(null_operand(node, "a number")),
        other => return Err(format!("`-` needs a number, not a {}", other.kind())),
    })
}

/// A numeric operand as a decimal, exactly (an int or a decimal).
fn as_decimal(value: &Val<'_>) -> Option<Decimal> {
    match value {
        Val::Int(i) => Some(Decimal::from(*i)),
        Val::Decimal(d) => Some(*d),
        _ => None,
    }
}

fn binary<'a>(
    op: BinOp,
    left: Val<'a>,
    right: Val<'a>,
    left_node: &Node,
    right_node: &Node,
) -> Result<Val<'a>, String> {
    if matches!(op, BinOp::Eq | BinOp::Ne) {
        let same = equal(&left, &right);
        return Ok(Val::Bool(if op == BinOp::Eq { same } else { !same }));
    }
    let what = if op.arithmetic() {
        "a number"
    } else {
        "a value"
    };
    if matches!(left, Val::Null) {
        return Err(null_operand(left_node, what));
    }
    if matches!(right, Val::Null) {
        return Err(null_operand(right_node, what));
    }
    if op.arithmetic() {
        return arithmetic(op, left, right);
    }
    let order = compare(&left, &right).ok_or_else(|| {
        format!(
            "`{}` cannot order a {} and a {}",
            op.symbol(),
            left.kind(),
            right.kind()
        )
    })?;
    use std::cmp::Ordering::*;
    Ok(Val::Bool(match op {
        BinOp::Lt => order == Less,
        BinOp::Le => order != Greater,
        BinOp::Gt => order == Greater,
        _ => order != Less,
    }))
}

fn arithmetic<'a>(op: BinOp, left: Val<'a>, right: Val<'a>) -> Result<Val<'a>, String> {
    let symbol = op.symbol();
    let overflow = || format!("overflow in `{symbol}`");
    match (&left, &right) {
        (Val::Int(a), Val::Int(b)) => {
            let (a, b) = (*a, *b);
            if matches!(op, BinOp::Div | BinOp::Rem) && b == 0 {
                return Err(format!("division by zero in `{symbol}`"));
            }
            let result = match op {
                BinOp::Add => a.checked_add(b),
                BinOp::Sub => a.checked_sub(b),
                BinOp::Mul => a.checked_mul(b),
                BinOp::Div => a.checked_div(b),
                _ => a.checked_rem(b),
            };
            return result.map(Val::Int).ok_or_else(overflow);
        }
        (Val::Double(a), Val::Double(b)) => {
            return Ok(Val::Double(match op {
                BinOp::Add => a + b,
                BinOp::Sub => a - b,
                BinOp::Mul => a * b,
                BinOp::Div => a / b,
                _ => a % b,
            }));
        }
        (Val::Str(a), Val::Str(b)) if op == BinOp::Add => {
            let mut joined = String::with_capacity(a.len() + b.len());
            joined.push_str(a);
            joined.push_str(b);
            return Ok(Val::Str(Cow::Owned(joined)));
        }
        _ => {}
    }
    let (Some(a), Some(b)) = (as_decimal(&left), as_decimal(&right)) else {
        return Err(format!(
            "`{symbol}` does not apply to a {} and a {}",
            left.kind(),
            right.kind()
        ));
    };
    if matches!(op, BinOp::Div | BinOp::Rem) && b.is_zero() {
        return Err(format!("division by zero in `{symbol}`"));
    }
    let result = match op {
        BinOp::Add => a.checked_add(b),
        BinOp::Sub => a.checked_sub(b),
        BinOp::Mul => a.checked_mul(b),
        BinOp::Div => a.checked_div(b),
        _ => a.checked_rem(b),
    };
    let mut result = result.ok_or_else(overflow)?;
    if matches!(op, BinOp::Add | BinOp::Sub | BinOp::Mul) {
        // The exact result's scale: PostgreSQL's for `numeric` (the larger
        // scale for a sum, the sum of the scales for a product).
        let exact_scale = match op {
            BinOp::Mul => a.scale() + b.scale(),
            _ => a.scale().max(b.scale()),
        };
        let exactly_zero = match op {
            BinOp::Mul => a.is_zero() || b.is_zero(),
            BinOp::Add => a == -b,
            _ => a == b,
        };
        if exactly_zero {
            // `rust_decimal` drops the scale of a zero result (0 * 0.01,
            // 0.00 + 0); PostgreSQL keeps it, and so does a TEXT column.
            result = Decimal::ZERO;
            result.set_scale(exact_scale.min(28)).ok();
        } else if result.is_zero()
            || (result.scale() < exact_scale
                && !dropped_only_zeros(op, a, b, exact_scale - result.scale()))
        {
            return Err(format!(
                "the exact result of `{symbol}` needs more than the 28-29 significant digits a decimal keeps \
                 ({a} {symbol} {b}); it would be rounded"
            ));
        }
    }
    Ok(Val::Decimal(result))
}

/// Whether `rust_decimal`, which keeps a sum or product within 96 bits by
/// dropping its last `dropped` digits (rounding), dropped only zeros, so the
/// result it returned is exact. Worked on the mantissas modulo 10^dropped:
/// the exact result's mantissa at its full scale is `a_m * b_m` (product)
/// or `a_m * 10^(s - a_s) +- b_m * 10^(s - b_s)` (sum, `s` the larger
/// scale); it ends in `dropped` zeros iff it is 0 modulo 10^dropped. More
/// than 19 dropped digits (10^dropped past u64) counts as not exact.
fn dropped_only_zeros(op: BinOp, a: Decimal, b: Decimal, dropped: u32) -> bool {
    if dropped > 19 {
        return false;
    }
    let modulus = 10u128.pow(dropped);
    let residue = |mantissa: i128| mantissa.rem_euclid(modulus as i128) as u128;
    let (a_m, b_m) = (residue(a.mantissa()), residue(b.mantissa()));
    let rest = match op {
        BinOp::Mul => (a_m * b_m) % modulus,
        _ => {
            let scale = a.scale().max(b.scale());
            let lift = |m: u128, from: u32| {
                let factor = 10u128.checked_pow(scale - from).map_or(0, |f| f % modulus);
                (m * factor) % modulus
            };
            let (a_l, b_l) = (lift(a_m, a.scale()), lift(b_m, b.scale()));
            if op == BinOp::Add {
                (a_l + b_l) % modulus
            } else {
                (a_l + modulus - b_l) % modulus
            }
        }
    };
    rest == 0
}

/// CEL equality: NULL equals only NULL; numbers compare exactly across
/// int and decimal; values of different types are not equal.
fn equal(left: &Val<'_>, right: &Val<'_>) -> bool {
    match (left, right) {
        (Val::Null, Val::Null) => true,
        (Val::Null, _) | (_, Val::Null) => false,
        (Val::Other(a), Val::Other(b)) => a == b,
        // The common cases without ordering (text compares its length first).
        (Val::Str(a), Val::Str(b)) => a == b,
        (Val::Int(a), Val::Int(b)) => a == b,
        _ => compare(left, right) == Some(std::cmp::Ordering::Equal),
    }
}

fn compare(left: &Val<'_>, right: &Val<'_>) -> Option<std::cmp::Ordering> {
    match (left, right) {
        (Val::Int(a), Val::Int(b)) => Some(a.cmp(b)),
        (Val::Bool(a), Val::Bool(b)) => Some(a.cmp(b)),
        (Val::Double(a), Val::Double(b)) => a.partial_cmp(b),
        (Val::Double(a), Val::Int(b)) => a.partial_cmp(&(*b as f64)),
        (Val::Int(a), Val::Double(b)) => (*a as f64).partial_cmp(b),
        (Val::Str(a), Val::Str(b)) => Some(a.as_ref().cmp(b.as_ref())),
        (Val::Bytes(a), Val::Bytes(b)) => Some(a.as_ref().cmp(b.as_ref())),
        (Val::Timestamp(a), Val::Timestamp(b)) => Some(a.cmp(b)),
        (Val::Local(a), Val::Local(b)) => Some(a.cmp(b)),
        (Val::Date(a), Val::Date(b)) => Some(a.cmp(b)),
        _ => Some(as_decimal(left)?.cmp(&as_decimal(right)?)),
    }
}

fn text_arg<'a, 'v>(value: &'v Val<'a>, node: &Node, func: Func) -> Result<&'v str, String> {
    match value {
        Val::Str(s) => Ok(s),
        Val::Null => Err(null_operand(
            node,
            &format!("a string for `{}`", func.name()),
        )),
        other => Err(format!(
            "`{}` needs a string, not a {}",
            func.name(),
            other.kind()
        )),
    }
}

fn zone_arg(value: &Val<'_>, node: &Node, func: Func) -> Result<chrono_tz::Tz, String> {
    if let Node::Zone(_, zone) = node {
        return Ok(*zone);
    }
    let name = text_arg(value, node, func)?;
    name.parse::<chrono_tz::Tz>()
        .map_err(|_| format!("`{name}` is not an IANA time zone (e.g. `Europe/Paris`)"))
}

/// Calls `func` on its (at most two) evaluated arguments; `second` is
/// NULL for a one-argument function, `nodes` the argument nodes.
fn call<'a>(
    func: Func,
    first: Val<'a>,
    second: &Val<'a>,
    nodes: &[Node],
) -> Result<Val<'a>, String> {
    if let Val::Null = first
        && func != Func::String
    {
        return Err(null_operand(
            &nodes[0],
            &format!("a value for `{}`", func.name()),
        ));
    }
    Ok(match func {
        Func::Decimal => Val::Decimal(match first {
            Val::Str(s) => parse_decimal(&s)?,
            other => as_decimal(&other).ok_or_else(|| {
                format!(
                    "`decimal` needs an int, a decimal or a text, not a {}",
                    other.kind()
                )
            })?,
        }),
        Func::Int => Val::Int(to_int(first)?),
        Func::Double => Val::Double(match first {
            Val::Int(i) => i as f64,
            Val::Double(d) => d,
            Val::Decimal(d) => d
                .to_string()
                .parse()
                .map_err(|_| "decimal out of range".to_string())?,
            Val::Str(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("`{s}` is not a number"))?,
            other => return Err(format!("`double` does not take a {}", other.kind())),
        }),
        Func::String => Val::Str(Cow::Owned(match first {
            Val::Str(s) => s.into_owned(),
            Val::Null => return Ok(Val::Null),
            Val::Decimal(d) => d.to_string(),
            other => other.into_value().to_string(),
        })),
        Func::Round => round(first, second)?,
        Func::Timestamp | Func::TimestampUtc | Func::LocalTime => {
            time_call(func, first, second, nodes)?
        }
        _ => string_call(func, first, second, nodes)?,
    })
}

/// `round(x, places)`: half away from zero, as PostgreSQL's `round`.
fn round(first: Val<'_>, places: &Val<'_>) -> Result<Val<'static>, String> {
    let places = match places {
        Val::Int(p) if (0..=28).contains(p) => *p as u32,
        other => {
            return Err(format!(
                "`round` needs 0 to 28 places, not {}",
                other.clone().into_value()
            ));
        }
    };
    let value = as_decimal(&first)
        .ok_or_else(|| format!("`round` needs a decimal, not a {}", first.kind()))?;
    Ok(Val::Decimal(value.round_dp_with_strategy(
        places,
        rust_decimal::RoundingStrategy::MidpointAwayFromZero,
    )))
}

/// `timestamp`, `timestamp_utc` and `local_time` (see the module docs).
fn time_call<'a>(
    func: Func,
    first: Val<'a>,
    second: &Val<'a>,
    nodes: &[Node],
) -> Result<Val<'a>, String> {
    Ok(match func {
        Func::Timestamp => match first {
            Val::Timestamp(t) => Val::Timestamp(t),
            Val::Str(s) => Val::Timestamp(parse_instant(&s)?),
            other => return Err(format!("`timestamp` does not take a {}", other.kind())),
        },
        Func::TimestampUtc => {
            let zone = zone_arg(second, &nodes[1], func)?;
            let local = match first {
                Val::Local(t) => t,
                Val::Str(s) => parse_local(&s)?,
                other => {
                    return Err(format!(
                        "`timestamp_utc` needs a local date-time, not a {}",
                        other.kind()
                    ));
                }
            };
            let instant = zone.from_local_datetime(&local).earliest().ok_or_else(|| {
                format!("local time `{local}` does not exist in time zone `{zone}` (the clocks went forward over it)")
            })?;
            Val::Timestamp(instant.with_timezone(&Utc))
        }
        Func::LocalTime => {
            let zone = zone_arg(second, &nodes[1], func)?;
            let instant = match first {
                Val::Timestamp(t) => t,
                Val::Str(s) => parse_instant(&s)?,
                other => {
                    return Err(format!(
                        "`local_time` needs an instant, not a {}",
                        other.kind()
                    ));
                }
            };
            Val::Local(instant.with_timezone(&zone).naive_local())
        }
        _ => unreachable!("only date-time functions come here"),
    })
}

fn to_int(value: Val<'_>) -> Result<i64, String> {
    use rust_decimal::prelude::ToPrimitive as _;
    match value {
        Val::Int(i) => Ok(i),
        Val::Decimal(d) => d
            .trunc()
            .to_i64()
            .ok_or_else(|| format!("`{d}` is out of int range")),
        Val::Double(d) if d.is_finite() && d.abs() < 9.2e18 => Ok(d.trunc() as i64),
        Val::Str(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an integer")),
        Val::Timestamp(t) => Ok(t.timestamp()),
        other => Err(format!("`int` does not take this {}", other.kind())),
    }
}

fn string_call<'a>(
    func: Func,
    first: Val<'a>,
    second: &Val<'a>,
    nodes: &[Node],
) -> Result<Val<'a>, String> {
    if func == Func::Size {
        return Ok(Val::Int(match &first {
            Val::Str(s) => s.chars().count() as i64,
            Val::Bytes(b) => b.len() as i64,
            other => return Err(format!("`size` does not take a {}", other.kind())),
        }));
    }
    let text = text_arg(&first, &nodes[0], func)?;
    Ok(match func {
        Func::StartsWith => Val::Bool(text.starts_with(text_arg(second, &nodes[1], func)?)),
        Func::EndsWith => Val::Bool(text.ends_with(text_arg(second, &nodes[1], func)?)),
        Func::Contains => Val::Bool(text.contains(text_arg(second, &nodes[1], func)?)),
        Func::LowerAscii => Val::Str(Cow::Owned(text.to_ascii_lowercase())),
        Func::UpperAscii => Val::Str(Cow::Owned(text.to_ascii_uppercase())),
        _ => Val::Str(Cow::Owned(text.trim().to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_names_are_read_from_expressions_or_all_tags_are_taken() {
        let tags = |text: &str| referenced_tags(text).unwrap();
        assert_eq!(
            tags("row.tier == 'all' || row.tier == site.tags.tier && site.tags['zone'] != \"x\""),
            Some(vec!["tier".to_string(), "zone".to_string()])
        );
        assert_eq!(
            tags("site.tags[\"region\"] + '-' + row.sku"),
            Some(vec!["region".to_string()])
        );
        assert_eq!(tags("row.qty > 0"), Some(vec![]));
        // The whole map, or a computed key: every tag counts.
        assert_eq!(tags("'gold' in site.tags"), None);
        assert_eq!(tags("site.tags[row.key] == 'x'"), None);
    }

    fn sales_columns() -> Vec<(String, String)> {
        [
            ("id", "INTEGER"),
            ("amount_cents", "INTEGER"),
            ("status", "TEXT"),
            ("sold_at", "DATETIME"),
            ("price", "NUMERIC(12,2)"),
            ("ratio", "REAL"),
        ]
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
    }

    fn scope() -> ExprScope {
        ExprScope {
            site_id: "store-001".into(),
            site_tags: [
                ("region".to_string(), "north".to_string()),
                ("timezone".to_string(), "Europe/Paris".to_string()),
            ]
            .into_iter()
            .collect(),
            run_started_at: Some(DateTime::from_timestamp(1_700_000_000, 0).unwrap()),
            flow: "sales".into(),
        }
    }

    fn row(cents: Value, status: &str, sold_at: &str) -> Vec<Value> {
        vec![
            Value::Int(1),
            cents,
            Value::Text(status.into()),
            Value::Text(sold_at.into()),
            Value::Numeric("12.50".into()),
            Value::Float(0.5),
        ]
    }

    fn eval(text: &str, row: &[Value]) -> Result<Value, EvalError> {
        Expr::compile(text, &sales_columns(), "flow `f`, stream `s`, compute `c`")
            .unwrap()
            .eval(row, &scope())
    }

    fn compile_error(text: &str) -> String {
        match Expr::compile(text, &sales_columns(), "flow `f`, stream `s`, compute `c`") {
            Err(MapError::Plan(message)) => message,
            other => panic!("`{text}` compiled: {other:?}"),
        }
    }

    /// Reported by a trial: a 29- or 30-digit value was rounded silently
    /// by an expression as plain as `row.x`. Such values are refused; 28
    /// digits, and 29 within the 96-bit range, are kept exactly.
    #[test]
    fn decimals_past_the_exact_range_are_refused_not_rounded() {
        for refused in [
            "9999999999999999999.9999999999",
            "-99999999999999999999.9999999999",
            "79228162514264337593543950336",
            "1.00000000000000000000000000001",
            "1.2345678901234567890123456789e3",
        ] {
            let error = parse_decimal(refused).expect_err(refused);
            assert!(error.contains("would be rounded"), "{error}");
        }
        for not_a_number in ["NaN", "1,5", "", "1_000", "1.2.3", "--1", "e5", "1e"] {
            let error = parse_decimal(not_a_number).expect_err(not_a_number);
            assert!(error.ends_with("is not a decimal number"), "{error}");
        }
        for (kept, display) in [
            (
                "999999999999999999.9999999999",
                "999999999999999999.9999999999",
            ),
            (
                "79228162514264337593543950335",
                "79228162514264337593543950335",
            ),
            ("-0.0500000000", "-0.0500000000"),
            ("1.5e3", "1500"),
            // 28 significant digits, 10 trailing zeros (a DECIMAL(40,10)).
            (
                "123456789012345678901234567.5000000000",
                "123456789012345678901234567.5",
            ),
            (" 12.50 ", "12.50"),
        ] {
            assert_eq!(parse_decimal(kept).unwrap().to_string(), display, "{kept}");
        }
    }

    /// Reported by a trial: sums and products past 28 digits were rounded
    /// silently. An inexact result now fails the row; exact ones (trailing
    /// zeros dropped, zeros of any scale) are kept. Results by hand.
    #[test]
    fn sums_and_products_that_would_be_rounded_fail_the_row() {
        let decimal = |text: &str| Value::Numeric(text.into());
        let check = |expression: &str, x: &str, y: &str| {
            let columns = vec![
                ("x".to_string(), "NUMERIC".to_string()),
                ("y".to_string(), "NUMERIC".to_string()),
            ];
            let compiled =
                Expr::compile(expression, &columns, "flow `f`, stream `s`, compute `c`").unwrap();
            compiled.eval(&[decimal(x), decimal(y)], &scope())
        };
        for (expression, x, y) in [
            ("row.x * row.y", "1.0000000000000000000000000001", "0.01"),
            ("row.x * row.y", "-0.000000000000000000000000001", "0.01"),
            ("row.x * row.y", "0.0000000000000000000000000001", "0.01"),
            (
                "row.x * row.y",
                "12345678901234.5678",
                "12345678901234.5678",
            ),
            (
                "row.x + row.y",
                "12345678901234567890.123456789",
                "0.0000000001",
            ),
            (
                "row.x - row.y",
                "12345678901234567890.123456789",
                "0.0000000001",
            ),
        ] {
            let error = check(expression, x, y).expect_err(&format!("{x} {expression} {y}"));
            assert!(error.to_string().contains("would be rounded"), "{error}");
        }
        for (expression, x, y, exact) in [
            ("row.x * row.y", "3700", "0.01", "37.00"),
            ("row.x * row.y", "0", "0.01", "0.00"),
            ("row.x + row.y", "0.00", "0", "0.00"),
            (
                "row.x - row.y",
                "1.5000000000000000000000",
                "1.5",
                "0.0000000000000000000000",
            ),
            (
                "row.x + row.y",
                "79228162514264337593543950334",
                "1",
                "79228162514264337593543950335",
            ),
            (
                "row.x * row.y",
                "1234567890123456.78",
                "1000000000",
                "1234567890123456780000000.00",
            ),
            ("row.x * row.y", "-0.05", "-0.05", "0.0025"),
            // Scale 29 does not fit: a trailing zero is dropped, exactly.
            (
                "row.x * row.y",
                "1.0000000000000000000000000000",
                "2.0",
                "2.0000000000000000000000000000",
            ),
        ] {
            assert_eq!(
                check(expression, x, y).unwrap(),
                decimal(exact),
                "{x} {expression} {y}"
            );
        }
    }

    /// A product keeps the sum of its factors' scales, zero too (the demo's
    /// amounts: 0 cents became `0`, not `0.00`, beside `4.22`).
    #[test]
    fn a_product_keeps_its_scale_even_when_zero() {
        for (cents, text) in [(0, "0.00"), (3700, "37.00"), (-5, "-0.05"), (422, "4.22")] {
            let row = row(Value::Int(cents), "paid", "2026-03-29 01:30:00");
            let value = eval("decimal(row.amount_cents) * decimal('0.01')", &row).unwrap();
            assert_eq!(value, Value::Numeric(text.into()), "{cents}");
        }
    }

    #[test]
    fn cents_become_an_exact_decimal() {
        let amount = "decimal(row.amount_cents) / 100";
        let r = |cents: i64| row(Value::Int(cents), "ok", "2026-01-01 00:00:00");
        // 1999 / 100 = 19.99; -5 / 100 = -0.05; 0 / 100 = 0; 100 / 100 = 1.
        assert_eq!(eval(amount, &r(1999)), Ok(Value::Numeric("19.99".into())));
        assert_eq!(eval(amount, &r(-5)), Ok(Value::Numeric("-0.05".into())));
        assert_eq!(eval(amount, &r(0)), Ok(Value::Numeric("0".into())));
        assert_eq!(eval(amount, &r(100)), Ok(Value::Numeric("1".into())));
        // An int divides as an int (CEL), truncating: 1999 / 100 = 19.
        assert_eq!(eval("row.amount_cents / 100", &r(1999)), Ok(Value::Int(19)));
        // 12.50 + 1999 cents = 12.50 + 19.99 = 32.49, exactly.
        assert_eq!(
            eval("row.price + decimal(row.amount_cents) / 100", &r(1999)),
            Ok(Value::Numeric("32.49".into()))
        );
        // 0.1 + 0.2 is 0.3 in decimal (it is 0.30000000000000004 in f64).
        assert_eq!(
            eval("decimal('0.1') + decimal('0.2')", &r(0)),
            Ok(Value::Numeric("0.3".into()))
        );
        // 10 / 3 = 3.333...; round(_, 2) = 3.33; 2.345 rounds away from zero to 2.35.
        assert_eq!(
            eval("round(decimal(10) / 3, 2)", &r(0)),
            Ok(Value::Numeric("3.33".into()))
        );
        assert_eq!(
            eval("round(decimal('2.345'), 2)", &r(0)),
            Ok(Value::Numeric("2.35".into()))
        );
        assert_eq!(
            eval("round(decimal('-2.345'), 2)", &r(0)),
            Ok(Value::Numeric("-2.35".into()))
        );
    }

    #[test]
    fn local_time_becomes_utc_across_the_dst_change() {
        let utc = "timestamp_utc(row.sold_at, site.tags.timezone)";
        let at = |local: &str| eval(utc, &row(Value::Int(0), "ok", local));
        let instant = |text: &str| {
            Ok(Value::TimestampTz(
                DateTime::parse_from_rfc3339(text).unwrap().to_utc(),
            ))
        };
        // Paris is UTC+1 in winter, UTC+2 from 2026-03-29 02:00 local (clocks go 02:00 -> 03:00).
        assert_eq!(at("2026-03-29 01:30:00"), instant("2026-03-29T00:30:00Z"));
        assert_eq!(at("2026-03-29 03:30:00"), instant("2026-03-29T01:30:00Z"));
        // 02:30 that day does not exist.
        let missing = at("2026-03-29 02:30:00").unwrap_err();
        assert!(
            missing
                .reason
                .contains("does not exist in time zone `Europe/Paris`"),
            "{missing}"
        );
        // 2026-10-25: 02:30 happens twice (03:00 -> 02:00); the first (still UTC+2) is taken.
        assert_eq!(at("2026-10-25 02:30:00"), instant("2026-10-25T00:30:00Z"));
        assert_eq!(at("2026-10-25 03:30:00"), instant("2026-10-25T02:30:00Z"));
        // And back: 2026-07-01 10:00 UTC is 12:00 in Paris.
        assert_eq!(
            eval(
                "local_time(timestamp('2026-07-01T10:00:00Z'), 'Europe/Paris')",
                &row(Value::Int(0), "ok", "x")
            ),
            Ok(Value::Timestamp(
                NaiveDateTime::parse_from_str("2026-07-01 12:00:00", "%Y-%m-%d %H:%M:%S").unwrap()
            ))
        );
    }

    #[test]
    fn site_run_constants_and_filters() {
        let r = row(Value::Int(5), "void", "2026-01-01 00:00:00");
        assert_eq!(
            eval("site.tags.region", &r),
            Ok(Value::Text("north".into()))
        );
        assert_eq!(
            eval("site.id + '/' + run.flow", &r),
            Ok(Value::Text("store-001/sales".into()))
        );
        assert_eq!(eval("'pos'", &r), Ok(Value::Text("pos".into())));
        assert_eq!(
            eval("run.started_at", &r),
            Ok(Value::TimestampTz(
                DateTime::from_timestamp(1_700_000_000, 0).unwrap()
            ))
        );
        let filter = Expr::compile(
            "row.status != 'void' && row.amount_cents > 0",
            &sales_columns(),
            "p",
        )
        .unwrap();
        assert_eq!(filter.test(&r, &scope()), Ok(false));
        let kept = row(Value::Int(5), "paid", "2026-01-01 00:00:00");
        assert_eq!(filter.test(&kept, &scope()), Ok(true));
        let listed =
            Expr::compile("row.status in ['void', 'test']", &sales_columns(), "p").unwrap();
        assert_eq!(listed.test(&r, &scope()), Ok(true));
        assert_eq!(listed.test(&kept, &scope()), Ok(false));
        let nullable = "row.amount_cents == null ? decimal(0) : decimal(row.amount_cents) / 100";
        let null_row = row(Value::Null, "ok", "2026-01-01 00:00:00");
        assert_eq!(eval(nullable, &null_row), Ok(Value::Numeric("0".into())));
        assert_eq!(eval(nullable, &kept), Ok(Value::Numeric("0.05".into())));
        assert_eq!(filter.tags(), &[] as &[String]);
        assert_eq!(
            Expr::compile("site.tags['region']", &sales_columns(), "p")
                .unwrap()
                .tags(),
            ["region"]
        );
    }

    #[test]
    fn a_failing_row_says_why() {
        let r = row(Value::Null, "ok", "2026-01-01 00:00:00");
        assert_eq!(
            eval("decimal(row.amount_cents) / 100", &r)
                .unwrap_err()
                .to_string(),
            "expression `decimal(row.amount_cents) / 100`: column `amount_cents` is NULL where a value for `decimal` is needed"
        );
        assert_eq!(
            eval("row.amount_cents + 1", &r).unwrap_err().reason,
            "column `amount_cents` is NULL where a number is needed"
        );
        let zero = row(Value::Int(0), "ok", "2026-01-01 00:00:00");
        assert_eq!(
            eval("100 / row.amount_cents", &zero).unwrap_err().reason,
            "division by zero in `/`"
        );
        assert_eq!(
            eval("decimal(1) / decimal(row.amount_cents)", &zero)
                .unwrap_err()
                .reason,
            "division by zero in `/`"
        );
        assert_eq!(
            eval("9223372036854775807 + 1", &zero).unwrap_err().reason,
            "overflow in `+`"
        );
        let not_bool = Expr::compile("row.status", &sales_columns(), "p").unwrap();
        assert_eq!(
            not_bool.test(&zero, &scope()).unwrap_err().reason,
            "a condition must give a bool, this one gave string `ok`"
        );
        let no_tag = Expr::compile("site.tags.price_zone", &sales_columns(), "p").unwrap();
        assert_eq!(
            no_tag.eval(&zero, &scope()).unwrap_err().reason,
            "site `store-001` has no tag `price_zone`; add it to the site's tags"
        );
    }

    #[test]
    fn check_time_errors_name_the_place_the_expression_and_the_column() {
        assert_eq!(
            compile_error("decimal(row.amount_cent) / 100"),
            "flow `f`, stream `s`, compute `c`: expression `decimal(row.amount_cent) / 100`: column `amount_cent` not \
             found; the source returns: `id`, `amount_cents`, `status`, `sold_at`, `price`, `ratio`"
        );
        assert!(compile_error("frobnicate(row.id)").contains("unknown function `frobnicate`"));
        assert!(
            compile_error("row.status + 1").ends_with("`+` does not apply to a string and a int")
        );
        assert!(
            compile_error("decimal(row.ratio)")
                .contains("`decimal` does not take (double); a double is inexact")
        );
        assert!(
            compile_error("row.price * row.ratio")
                .contains("doubles are inexact and never mix with decimals")
        );
        assert!(
            compile_error("row.status == 1").contains("`==` does not apply to a string and a int")
        );
        assert!(compile_error("table.id").contains("unknown variable `table`"));
        assert!(compile_error("site.name").contains("`site.name` is unknown"));
        assert!(compile_error("row.id +").contains("not valid CEL"));
        assert!(
            compile_error("row.id > 1 ? 'a' : 2")
                .contains("the branches of `? :` give a string and a int")
        );
        assert!(compile_error("!row.id").contains("`!` needs a bool, not a int"));
    }

    #[test]
    fn referenced_columns_are_found_from_the_syntax() {
        assert_eq!(
            referenced_columns("row.a + row['b c'] > 0 ? row.a : size(row.d.trim())"),
            Ok(vec!["a".to_string(), "b c".to_string(), "d".to_string()])
        );
        assert_eq!(referenced_columns("site.tags.region"), Ok(vec![]));
        assert!(
            referenced_columns("row.a +")
                .unwrap_err()
                .starts_with("not valid CEL: ")
        );
    }

    #[test]
    fn sql_types_map_to_expression_types() {
        assert_eq!(Ty::of_sql("numeric(12,2)"), Ty::Decimal);
        assert_eq!(Ty::of_sql("bigint"), Ty::Int);
        assert_eq!(Ty::of_sql("timestamp with time zone"), Ty::Timestamp);
        assert_eq!(Ty::of_sql("timestamp without time zone"), Ty::Local);
        assert_eq!(Ty::of_sql("DATETIME"), Ty::Local);
        assert_eq!(Ty::of_sql("character varying(20)"), Ty::String);
        assert_eq!(Ty::of_sql("jsonb"), Ty::Dyn);
        assert_eq!(Ty::of_sql("double precision"), Ty::Double);
    }

    fn other_site() -> ExprScope {
        ExprScope {
            site_id: "store-002".into(),
            site_tags: [
                ("region".to_string(), "south".to_string()),
                ("timezone".to_string(), "America/New_York".to_string()),
            ]
            .into_iter()
            .collect(),
            ..scope()
        }
    }

    #[test]
    fn decimals_are_written_as_their_display_writes_them() {
        let d = |mantissa: i128, scale: u32| Decimal::from_i128_with_scale(mantissa, scale);
        // Worked out by hand: mantissa 1999 at scale 2 = 19.99; -5 at 2 =
        // -0.05; 100000 at 2 = 1000.00; 7 at 0 = 7; 0 at 3 = 0.000; 1 at
        // 28 = 0. and 27 zeros then 1.
        assert_eq!(decimal_text(&d(1999, 2)), "19.99");
        assert_eq!(decimal_text(&d(-5, 2)), "-0.05");
        assert_eq!(decimal_text(&d(100_000, 2)), "1000.00");
        assert_eq!(decimal_text(&d(7, 0)), "7");
        assert_eq!(decimal_text(&d(0, 3)), "0.000");
        assert_eq!(decimal_text(&d(1, 28)), format!("0.{}1", "0".repeat(27)));
        // A negative zero keeps its sign, as Display writes it.
        assert_eq!(decimal_text(&-d(0, 2)), "-0.00");
        // Past u64 (2^64 = 18446744073709551616) and the extremes.
        assert_eq!(
            decimal_text(&d(18_446_744_073_709_551_616, 4)),
            "1844674407370955.1616"
        );
        let mut values = vec![Decimal::MAX, Decimal::MIN, d(0, 0), -d(0, 0), d(-1, 28)];
        for scale in 0..=28 {
            for mantissa in [1, -1, 9, 10, 12_345, -99_999, i64::MAX as i128, 1 << 80] {
                values.push(d(mantissa, scale));
            }
        }
        for value in values {
            assert_eq!(decimal_text(&value), value.to_string(), "{value:?}");
        }
    }

    #[test]
    fn bound_expressions_fold_site_constants_once_per_site() {
        let columns = sales_columns();
        let sku = Expr::compile("site.tags.region + '-' + row.status", &columns, "p").unwrap();
        let north = sku.bound(&scope());
        let south = sku.bound(&other_site());
        // `site.tags.region + '-'` is one constant, `row.status` stays a column.
        assert!(matches!(
            &north.root,
            Node::Binary(BinOp::Add, left, right)
                if matches!(**left, Node::Const(Val::Str(ref s)) if s == "north-")
                    && matches!(**right, Node::Column(2, _, _))
        ));
        let r = row(Value::Int(5), "paid", "2026-03-29 01:30:00");
        // Each site's binding gives its own tag, evaluated with its own scope.
        assert_eq!(
            north.eval(&r, &scope()),
            Ok(Value::Text("north-paid".into()))
        );
        assert_eq!(
            south.eval(&r, &other_site()),
            Ok(Value::Text("south-paid".into()))
        );
        // 2026-03-29 01:30 in Paris (UTC+1, before 02:00) = 00:30Z; in New
        // York (UTC-4 since 2026-03-08) = 05:30Z. The zone is parsed once.
        let utc = Expr::compile(
            "timestamp_utc(row.sold_at, site.tags.timezone)",
            &columns,
            "p",
        )
        .unwrap();
        let paris = utc.bound(&scope());
        assert!(matches!(&paris.root, Node::Call(Func::TimestampUtc, args)
            if matches!(args[1], Node::Zone(ref name, chrono_tz::Europe::Paris) if name == "Europe/Paris")));
        let instant = |hour: u32| {
            Value::TimestampTz(
                NaiveDate::from_ymd_opt(2026, 3, 29)
                    .unwrap()
                    .and_hms_opt(hour, 30, 0)
                    .unwrap()
                    .and_utc(),
            )
        };
        assert_eq!(paris.eval(&r, &scope()), Ok(instant(0)));
        assert_eq!(
            utc.bound(&other_site()).eval(&r, &other_site()),
            Ok(instant(5))
        );
        // `site.id + '/' + run.flow` and `run.started_at` fold whole.
        let whole = Expr::compile("site.id + '/' + run.flow", &columns, "p")
            .unwrap()
            .bound(&other_site());
        assert!(matches!(whole.root, Node::Const(_)));
        assert_eq!(
            whole.eval(&r, &other_site()),
            Ok(Value::Text("store-002/sales".into()))
        );
    }

    #[test]
    fn a_constant_that_fails_is_kept_and_fails_each_row_as_before() {
        let columns = sales_columns();
        let r = row(Value::Int(5), "paid", "2026-03-29 01:30:00");
        let mut no_zone = scope();
        no_zone
            .site_tags
            .insert("timezone".into(), "Mars/Base".into());
        no_zone.run_started_at = None;
        for text in [
            "site.tags.missing + row.status",
            "row.amount_cents + 1 / 0",
            "timestamp_utc(row.sold_at, site.tags.timezone)",
        ] {
            let compiled = Expr::compile(text, &columns, "p").unwrap();
            let before = compiled.eval(&r, &no_zone);
            assert!(before.is_err(), "{text}");
            assert_eq!(
                compiled.bound(&no_zone).eval(&r, &no_zone),
                before,
                "{text}"
            );
        }
        assert_eq!(
            Expr::compile("site.tags.missing + row.status", &columns, "p")
                .unwrap()
                .bound(&no_zone)
                .eval(&r, &no_zone)
                .unwrap_err()
                .reason,
            "site `store-001` has no tag `missing`; add it to the site's tags"
        );
        // Without a run start, `run.started_at` reads the clock at each row:
        // not folded.
        let started = Expr::compile("run.started_at", &columns, "p")
            .unwrap()
            .bound(&no_zone);
        assert!(matches!(started.root, Node::RunStartedAt));
    }
}
