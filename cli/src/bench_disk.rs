//! `collective bench disk`: what an append and its `fdatasync` cost in a directory, as the Raft
//! log's syncer pays them (`node/src/store/log_store.rs`), into a file that grows with each write
//! (RocksDB's WAL) and into one written in full beforehand. Needs no cluster: run it on the
//! directory a member keeps its data in, before deploying, as one runs `fio` for etcd.
//!
//! The two differ on filesystems that must also write the inode when a write changes the file's
//! size (ext4 without a journal here: data, then inode, then the flush); `docs/performance.md`.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;

use super::output::Format;

/// Most bytes one mode writes (`--count` × `--size`): the file written in full beforehand is
/// that large.
pub const DISK_BYTES_MAX: u64 = 1 << 30;

#[derive(Args, Debug)]
pub struct DiskArgs {
    /// The directory to measure (where a member's --data-dir is, or will be); a temporary file
    /// is written there and removed.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Writes per mode, each followed by an fdatasync.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub count: u64,
    /// Bytes per write (a lone presence change's log entry is a few hundred).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=16 << 20))]
    pub size: u64,
}

/// Removes the measured file however the measurement ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `count` writes of `size` bytes, each followed by `fdatasync`, into a new file at `path`;
/// with `written_before`, into a file first filled with zeros to its final size and synced.
/// Latencies in µs.
fn measure(path: &Path, count: u64, size: u64, written_before: bool) -> std::io::Result<Histogram<u64>> {
    let mut file: File = OpenOptions::new().write(true).create_new(true).open(path)?;
    let _scratch = Scratch(path.to_path_buf());
    if written_before {
        let zeros = vec![0u8; (1 << 20).min(count * size) as usize];
        let mut left = count * size;
        while left > 0 {
            let chunk = left.min(zeros.len() as u64) as usize;
            file.write_all(&zeros[..chunk])?;
            left -= chunk as u64;
        }
        file.sync_all()?;
        file.seek(SeekFrom::Start(0))?;
    }
    let record = vec![0xa5u8; size as usize];
    let mut histogram = super::bench::histogram();
    for _ in 0..count {
        let started = Instant::now();
        file.write_all(&record)?;
        file.sync_data()?;
        histogram.saturating_record(started.elapsed().as_micros().max(1) as u64);
    }
    Ok(histogram)
}

pub async fn disk(args: DiskArgs, format: Format) -> anyhow::Result<()> {
    let bytes = args.count * args.size;
    if bytes > DISK_BYTES_MAX {
        anyhow::bail!(
            "--count {} × --size {} is {bytes} bytes; at most {DISK_BYTES_MAX} bytes per mode",
            args.count,
            args.size
        );
    }
    if !args.dir.is_dir() {
        anyhow::bail!("--dir {}: not a directory", args.dir.display());
    }
    let path = args.dir.join(format!(".collective-bench-disk-{}", std::process::id()));
    let (count, size) = (args.count, args.size);
    let modes = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(&'static str, Histogram<u64>)>> {
        let mut modes = Vec::new();
        for (mode, written_before) in [("append", false), ("written-before", true)] {
            let histogram = measure(&path, count, size, written_before)
                .with_context(|| format!("--dir: writing and syncing {}", path.display()))?;
            modes.push((mode, histogram));
        }
        Ok(modes)
    })
    .await??;
    let ms = |histogram: &Histogram<u64>, q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    let rows: Vec<serde_json::Value> = modes
        .iter()
        .map(|(mode, h)| {
            serde_json::json!({
                "mode": mode,
                "writes": h.len(),
                "bytes_per_write": size,
                "mean_ms": h.mean() / 1000.0,
                "p50_ms": ms(h, 0.5), "p99_ms": ms(h, 0.99), "p999_ms": ms(h, 0.999),
                "max_ms": h.max() as f64 / 1000.0,
            })
        })
        .collect();
    match format {
        Format::Json => {
            let report = serde_json::json!({ "dir": args.dir.display().to_string(), "modes": rows });
            crate::outln!("{}", serde_json::to_string_pretty(&report)?);
        }
        Format::Table => {
            crate::outln!("mode            writes   bytes  mean ms  p50 ms  p99 ms  p999 ms  max ms");
            for (mode, h) in &modes {
                crate::outln!(
                    "{:<14}  {:<7}  {:<5}  {:<7.3}  {:<6.3}  {:<6.3}  {:<7.3}  {:<6.3}",
                    mode,
                    h.len(),
                    size,
                    h.mean() / 1000.0,
                    ms(h, 0.5),
                    ms(h, 0.99),
                    ms(h, 0.999),
                    h.max() as f64 / 1000.0
                );
            }
        }
    }
    Ok(())
}
