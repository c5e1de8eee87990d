//! Printing results as a table (default) or JSON (`-w json`), etcdctl style.

use serde::Serialize;
use serde_json::Value;

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
        Format::Json => println!("{}", serde_json::to_string_pretty(&value).expect("json")),
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
                        columns.push((format!("{key}.{nested_key}"), scalar(nested_value)));
                    }
                }
                _ => columns.push((key.clone(), scalar(inner))),
            }
        }
    }
    columns
}

fn print_rows(rows: &[Value]) {
    let flat: Vec<Vec<(String, String)>> = rows.iter().map(flatten).collect();
    let Some(first) = flat.first() else {
        println!("(none)");
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
    println!(
        "{}",
        line(headers.iter().map(|h| h.to_uppercase()).collect::<Vec<_>>().iter().map(String::as_str).collect())
    );
    for row in &flat {
        println!("{}", line(row.iter().map(|(_, cell)| cell.as_str()).collect()));
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
                        println!("{name}:");
                        print_rows(items);
                    }
                    _ => println!("{name}: {}", scalar(inner)),
                }
            }
        }
        other => println!("{}", scalar(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes_read_like_a_person_writes_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(24_536_678), "23.4 MiB");
        assert_eq!(human_bytes(5 << 40), "5.0 TiB");
    }
}
