//! Printing results as a table (default) or JSON (`-w json`), etcdctl style.

use std::io::Write;

use serde::Serialize;
use serde_json::Value;

/// `println!` for results: a closed standard output (`collective … | head`) ends the command
/// quietly with status 0, as for any Unix tool, instead of the panic `println!` gives.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))
    };
}

/// Writes one line of results to standard output (see [`outln!`]).
pub fn write_line(line: std::fmt::Arguments) {
    let mut out = std::io::stdout().lock();
    if let Err(error) = out.write_fmt(line).and_then(|()| out.write_all(b"\n")) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("Error: cannot write to standard output: {error}");
        std::process::exit(1);
    }
}

/// Whether standard error is a terminal someone watches (progress bars, colours).
pub fn stderr_is_terminal() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
}

/// What a progress bar counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Writes (or any other items).
    Writes,
    /// Bytes, shown in human units.
    Bytes,
}

/// A progress bar on standard error for long work: of `len` steps, or a spinner with a running
/// count when the length is unknown. Hidden when standard error is not a terminal, so logs,
/// pipes and CI output get no control codes (callers print plain lines there if they want).
pub fn progress(prefix: &str, len: Option<u64>, counted: Counted) -> indicatif::ProgressBar {
    if !stderr_is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let template = match (len.is_some(), counted) {
        // indicatif's `per_sec` prints every decimal of the rate: the time taken and left instead.
        (true, Counted::Writes) => "{prefix} [{bar:30}] {human_pos}/{human_len} in {elapsed}, {eta} left",
        (true, Counted::Bytes) => "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec:>12}, {eta} left",
        (false, Counted::Writes) => "{spinner} {prefix} {human_pos} in {elapsed}",
        (false, Counted::Bytes) => "{spinner} {prefix} {bytes} {bytes_per_sec:>12}",
    };
    let bar = match len {
        Some(len) => indicatif::ProgressBar::new(len),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let style = indicatif::ProgressStyle::with_template(template).expect("the templates are valid");
    bar.set_style(style.progress_chars("=> "));
    bar.set_prefix(prefix.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable table.
    Table,
    /// One JSON document.
    Json,
}

/// Prints `value` in the chosen format. A list under the key `list_key` becomes table rows.
pub fn print<T: Serialize>(format: Format, value: &T, list_key: Option<&str>) {
    let value = serde_json::to_value(value).expect("wire types serialize");
    match format {
        Format::Json => crate::outln!("{}", serde_json::to_string_pretty(&value).expect("json")),
        Format::Table => match list_key.and_then(|key| value.get(key)) {
            Some(Value::Array(rows)) => print_rows(rows),
            _ => print_object(&value, ""),
        },
    }
}

/// `bytes` for a person: `512 B`, `1.5 KiB`, `23.4 MiB`, `1.2 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Epoch milliseconds from 2001-09-09 on: anything smaller under a `_ms` key is a duration.
const EPOCH_MS_MIN: u64 = 1_000_000_000_000;

/// A table cell: times (`*_ms` holding epoch milliseconds) as RFC 3339 and sizes (`*_bytes`) in
/// human units; JSON output keeps the raw numbers.
fn cell(key: &str, value: &Value) -> String {
    match value.as_u64() {
        Some(ms) if key.ends_with("_ms") && ms >= EPOCH_MS_MIN => rfc3339(ms).unwrap_or_else(|| ms.to_string()),
        Some(bytes) if key.ends_with("_bytes") => human_bytes(bytes),
        _ => scalar(value),
    }
}

/// `ms` since the Unix epoch as RFC 3339 in UTC, to the millisecond.
fn rfc3339(ms: u64) -> Option<String> {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    at.format(&time::format_description::well_known::Rfc3339).ok()
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        Value::Array(items) => items.iter().map(scalar).collect::<Vec<_>>().join(","),
        Value::Object(map) => map.iter().map(|(k, v)| format!("{k}={}", scalar(v))).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Flattens nested objects one level (`presence.status_key`) for table columns.
fn flatten(value: &Value) -> Vec<(String, String)> {
    let mut columns = Vec::new();
    if let Value::Object(map) = value {
        for (key, inner) in map {
            match inner {
                Value::Object(nested)
                    if nested.values().all(|v| !v.is_object())
                        && !nested.is_empty()
                        && key != "skills"
                        && key != "required_skills" =>
                {
                    for (nested_key, nested_value) in nested {
                        columns.push((format!("{key}.{nested_key}"), cell(nested_key, nested_value)));
                    }
                }
                _ => columns.push((key.clone(), cell(key, inner))),
            }
        }
    }
    columns
}

fn print_rows(rows: &[Value]) {
    let flat: Vec<Vec<(String, String)>> = rows.iter().map(flatten).collect();
    let Some(first) = flat.first() else {
        crate::outln!("(none)");
        return;
    };
    let headers: Vec<&String> = first.iter().map(|(k, _)| k).collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &flat {
        for (index, (_, cell)) in row.iter().enumerate().take(widths.len()) {
            widths[index] = widths[index].max(cell.chars().count()).min(40);
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{:width$}", truncate(cell, *width), width = *width))
            .collect::<Vec<_>>()
            .join("  ")
    };
    crate::outln!(
        "{}",
        line(headers.iter().map(|h| h.to_uppercase()).collect::<Vec<_>>().iter().map(String::as_str).collect())
    );
    for row in &flat {
        crate::outln!("{}", line(row.iter().map(|(_, cell)| cell.as_str()).collect()));
    }
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        text.chars().take(width.saturating_sub(1)).chain(std::iter::once('…')).collect()
    }
}

fn print_object(value: &Value, prefix: &str) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                let name = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                match inner {
                    Value::Object(_) if key != "skills" && key != "required_skills" => print_object(inner, &name),
                    Value::Array(items) if items.iter().any(Value::is_object) => {
                        crate::outln!("{name}:");
                        print_rows(items);
                    }
                    _ => crate::outln!("{name}: {}", cell(key, inner)),
                }
            }
        }
        other => crate::outln!("{}", scalar(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::{cell, human_bytes};

    #[test]
    fn sizes_read_like_a_person_writes_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(24_536_678), "23.4 MiB");
        assert_eq!(human_bytes(5 << 40), "5.0 TiB");
    }

    #[test]
    fn table_cells_show_times_and_sizes_for_a_person() {
        let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
        assert_eq!(cell("since_ms", &json("1764892800123")), "2025-12-05T00:00:00.123Z");
        assert_eq!(cell("ttl_ms", &json("10000")), "10000", "a duration stays a number");
        assert_eq!(cell("db_size_bytes", &json("1536")), "1.5 KiB");
        assert_eq!(cell("username", &json("\"jo\"")), "jo");
    }
}
