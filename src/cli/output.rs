//! Terminal output shared by subcommands: progress bars (or plain lines when
//! stderr is not a terminal) and summary tables.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use comfy_table::{Table, presets};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::flow::{Progress, SiteReport};
use crate::state::RunStatus;

/// Per flow: its bar, rows read and rows written so far.
type FlowBars = HashMap<String, (ProgressBar, u64, u64)>;

/// Progress for `sync` and `demo`: one bar per flow on a terminal (sites
/// done / total, rows moved), else one log line per finished site on stderr.
pub struct FleetProgress {
    bars: Option<(MultiProgress, Mutex<FlowBars>)>,
    /// Print a line per finished site when there are no bars.
    lines: bool,
}

impl FleetProgress {
    /// Bars if stderr is a terminal, plain lines otherwise.
    pub fn new() -> FleetProgress {
        let bars = std::io::stderr().is_terminal().then(|| {
            (
                MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                Mutex::new(HashMap::new()),
            )
        });
        FleetProgress { bars, lines: true }
    }

    /// Bars on a terminal, nothing otherwise (for `demo`, which prints its
    /// own summary).
    pub fn bars_only() -> FleetProgress {
        FleetProgress {
            lines: false,
            ..FleetProgress::new()
        }
    }

    /// Plain lines on stderr, one per finished site run, even on a terminal.
    pub fn new_lines() -> FleetProgress {
        FleetProgress {
            bars: None,
            lines: true,
        }
    }

    /// Adds a bar for `flow` over `sites` sites (terminal only).
    pub fn start_flow(&self, flow: &str, sites: usize) {
        if let Some((multi, bars)) = &self.bars {
            let bar = multi.add(ProgressBar::new(sites as u64));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>12} [{bar:30}] {pos}/{len} sites  {msg}  {elapsed}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(flow.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            bars.lock()
                .expect("progress lock")
                .insert(flow.to_string(), (bar, 0, 0));
        }
    }

    /// Finishes every bar.
    pub fn finish(&self) {
        if let Some((_, bars)) = &self.bars {
            for (bar, _, _) in bars.lock().expect("progress lock").values() {
                bar.finish();
            }
        }
    }
}

impl Progress for FleetProgress {
    fn site_started(&self, _flow: &str, _site: &str) {}

    fn batch_applied(&self, flow: &str, _site: &str, _stream: &str, read: u64, written: u64) {
        if let Some((_, bars)) = &self.bars
            && let Some((bar, total_read, total_written)) =
                bars.lock().expect("progress lock").get_mut(flow)
        {
            *total_read += read;
            *total_written += written;
            bar.set_message(format!(
                "{} rows read, {} written",
                thousands(*total_read),
                thousands(*total_written)
            ));
        }
    }

    fn site_finished(&self, report: &SiteReport) {
        match &self.bars {
            Some((_, bars)) => {
                if let Some((bar, _, _)) = bars.lock().expect("progress lock").get(&report.flow) {
                    bar.inc(1);
                    if let Some(error) = &report.error {
                        bar.println(format!("  failed: {error}"));
                    }
                }
            }
            None if self.lines => eprintln!("{}", site_line(report)),
            None => {}
        }
    }
}

/// One line describing a finished site run.
pub fn site_line(report: &SiteReport) -> String {
    if let (None, Some(note)) = (&report.error, &report.note) {
        return format!(
            "{}: flow `{}` site `{}`: {note}",
            report.status.as_str(),
            report.flow,
            report.site
        );
    }
    match &report.error {
        Some(error) => format!("{}: {error}", report.status.as_str()),
        None => format!(
            "flow `{}` site `{}`: {} rows read, {} written, {} deleted{} in {}",
            report.flow,
            report.site,
            report.rows_read(),
            report.rows_written(),
            report.rows_deleted(),
            match report.rows_routed() {
                0 => String::new(),
                routed => format!(", {routed} routed"),
            },
            seconds(report.duration)
        ),
    }
}

/// Most characters of an error shown in a table cell (the table stays under 160 columns); [`error_lines`] gives
/// the whole text.
const ERROR_CELL_CHARS: usize = 72;

/// A summary table of site reports: flow, site, status, rows read,
/// written and deleted, rows routed to `[[system]]`s (a column only when
/// some run routed rows), time, error (cut to about 72 characters; print
/// [`error_lines`] after it).
pub fn summary_table(reports: &[SiteReport]) -> Table {
    let routed = reports.iter().any(|r| r.rows_routed() > 0);
    let mut table = Table::new();
    table.load_preset(presets::UTF8_BORDERS_ONLY);
    let mut header = vec![
        "flow",
        "site",
        "status",
        "rows read",
        "rows written",
        "rows deleted",
    ];
    if routed {
        header.push("rows routed");
    }
    header.extend(["time", "error"]);
    table.set_header(header);
    for report in reports {
        let mut row = vec![
            report.flow.clone(),
            report.site.clone(),
            report.status.as_str().to_string(),
            thousands(report.rows_read()),
            thousands(report.rows_written()),
            thousands(report.rows_deleted()),
        ];
        if routed {
            row.push(thousands(report.rows_routed()));
        }
        row.push(seconds(report.duration));
        row.push(
            report
                .error
                .as_deref()
                .or(report.note.as_deref())
                .map(|error| error_cell(error, ERROR_CELL_CHARS))
                .unwrap_or_default(),
        );
        table.add_row(row);
    }
    table
}

/// One line per site report with an error, in full:
/// ``flow `f` site `s`: <error>``.
pub fn error_lines(reports: &[SiteReport]) -> Vec<String> {
    reports
        .iter()
        .filter_map(|report| {
            let error = report.error.as_ref()?;
            // Errors already start with their flow, stream and site.
            Some(error.clone())
        })
        .collect()
}

/// `error` on one line, cut to `max_chars` characters with `…` so a long
/// driver message does not make the table hundreds of columns wide.
fn error_cell(error: &str, max_chars: usize) -> String {
    let one_line = error.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max_chars {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(max_chars - 1).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

/// Counts of failed runs and of runs skipped for a reason other than the
/// flow's window (a circuit open, a run already going, an interrupt).
pub fn failures(reports: &[SiteReport]) -> usize {
    reports
        .iter()
        .filter(|r| r.status != RunStatus::Succeeded && r.note.is_none())
        .count()
}

/// `1234567` -> `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1.234 s` with millisecond precision.
pub fn seconds(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{ERROR_CELL_CHARS, error_cell, error_lines, summary_table, thousands};
    use crate::flow::SiteReport;
    use crate::state::RunStatus;

    fn report(site: &str, error: Option<String>) -> SiteReport {
        SiteReport {
            flow: "sales".into(),
            site: site.into(),
            run_id: None,
            status: if error.is_some() {
                RunStatus::Failed
            } else {
                RunStatus::Succeeded
            },
            streams: Vec::new(),
            error,
            error_kind: None,
            note: None,
            duration: Duration::from_millis(5),
        }
    }

    #[test]
    fn groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn short_errors_fit_their_cell() {
        assert_eq!(
            error_cell("site `s1`: timed out", 80),
            "site `s1`: timed out"
        );
        assert_eq!(error_cell("line one\n  line two", 80), "line one line two");
    }

    /// Regression: a long driver error made the `sync` table ~250 columns wide.
    #[test]
    fn long_errors_are_cut_with_an_ellipsis() {
        let long = format!("site `s3`: cannot connect: {}", "é".repeat(300));
        let cell = error_cell(&long, ERROR_CELL_CHARS);
        assert_eq!(cell.chars().count(), ERROR_CELL_CHARS);
        assert!(cell.ends_with('…'), "{cell}");
        assert!(cell.starts_with("site `s3`: cannot connect: é"), "{cell}");
        let exact = "x".repeat(ERROR_CELL_CHARS);
        assert_eq!(error_cell(&exact, ERROR_CELL_CHARS), exact);
    }

    #[test]
    fn failed_sites_keep_their_full_error_after_the_table() {
        let long = format!(
            "flow `sales` site `s2`: cannot connect: {}",
            "x".repeat(200)
        );
        let reports = [report("s1", None), report("s2", Some(long.clone()))];
        let table = summary_table(&reports).to_string();
        assert!(!table.contains(&long));
        assert!(
            table.lines().all(|line| line.chars().count() < 160),
            "{table}"
        );
        // The error already names its place; it is printed whole.
        assert_eq!(error_lines(&reports), [long]);
    }
}
