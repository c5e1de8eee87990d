//! `collective bench messages`: sites sending events to each other through the collective while
//! each site receives (subscribed) and acknowledges its deliveries. Measures end-to-end
//! messages/s (delivered) and the delivery latency from send to receipt.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use collective_client::{MessageReader, MessageWriter};
use collective_proto::v1 as pb;
use collective_proto::v1::messages_client::MessagesClient;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use tokio_stream::StreamExt;

use super::client::Client;
use super::output::Format;

/// The benchmark's sites are numbered from here.
const FIRST_BENCH_SITE: u32 = 900;
/// Acknowledgements are sent in batches of at most this many ids.
const ACK_BATCH: usize = 256;

#[derive(Args, Debug)]
pub struct MessagesArgs {
    /// Sites sending to each other (each also receives).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=99))]
    pub sites: u32,
    /// Concurrent senders per site (each one send at a time).
    #[arg(long, default_value_t = 4)]
    pub senders: u32,
    /// Measured duration in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Warm-up seconds before measuring.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Bytes of the string element in every message.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Seed of the destinations.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

async fn create_sites(client: &Client, sites: u32) -> anyhow::Result<()> {
    for id in FIRST_BENCH_SITE..FIRST_BENCH_SITE + sites {
        super::bench::ensure_site(client, id, &format!("bench-{id}")).await?;
    }
    Ok(())
}

/// Runs the benchmark and prints its result.
pub async fn messages(client: &Client, args: MessagesArgs, format: Format) -> anyhow::Result<()> {
    create_sites(client, args.sites).await?;
    let endpoints = client.endpoints().to_vec();
    let mut channels = Vec::new();
    for index in 0..endpoints.len() {
        channels.push(client.dedicated(index).await?);
    }
    let started_us = now_us();
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));
    let delivery_latency = Arc::new(Mutex::new(histogram()));
    let send_latency = Arc::new(Mutex::new(histogram()));
    let errors = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let mut tasks = Vec::new();
    for (index, site) in (FIRST_BENCH_SITE..FIRST_BENCH_SITE + args.sites).enumerate() {
        let channel = channels[index % channels.len()].clone();
        let (measuring, stop, delivered, latency) =
            (measuring.clone(), stop.clone(), delivered.clone(), delivery_latency.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = MessagesClient::new(channel);
            let mut stream = client.subscribe(pb::SubscribeRequest { site, filters: vec![] }).await?.into_inner();
            let mut pending_acks = Vec::new();
            let mut last_ack = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let next = tokio::time::timeout(Duration::from_millis(50), stream.next()).await;
                if let Ok(Some(delivery)) = next {
                    let delivery = delivery?;
                    let sent_us = MessageReader::new(&delivery.elements).integer().unwrap_or(0);
                    // Deliveries left over from an earlier run are acknowledged, not measured.
                    if sent_us >= started_us && measuring.load(Ordering::Relaxed) {
                        delivered.fetch_add(1, Ordering::Relaxed);
                        let _ = latency.lock().expect("latency lock").record((now_us() - sent_us).max(1) as u64);
                    }
                    pending_acks.push(delivery.id);
                }
                if pending_acks.len() >= ACK_BATCH
                    || (!pending_acks.is_empty() && last_ack.elapsed() > Duration::from_millis(50))
                {
                    let ids = std::mem::take(&mut pending_acks);
                    client.ack(pb::AckRequest { site, ids }).await?;
                    last_ack = Instant::now();
                }
            }
            anyhow::Ok(())
        }));
    }
    let payload = "x".repeat(args.payload);
    for (index, site) in (FIRST_BENCH_SITE..FIRST_BENCH_SITE + args.sites).enumerate() {
        for sender in 0..args.senders {
            let channel = channels[(index + sender as usize) % channels.len()].clone();
            let (measuring, stop, latency, errors, payload) =
                (measuring.clone(), stop.clone(), send_latency.clone(), errors.clone(), payload.clone());
            let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed ^ u64::from(site) << 16 ^ u64::from(sender));
            let sites = args.sites;
            tasks.push(tokio::spawn(async move {
                let mut client = MessagesClient::new(channel);
                while !stop.load(Ordering::Relaxed) {
                    let mut to_site = FIRST_BENCH_SITE + rng.gen_range(0..sites - 1);
                    if to_site >= site {
                        to_site += 1;
                    }
                    let elements = MessageWriter::new().integer(now_us()).string(payload.as_str()).finish();
                    let request = pb::SendEventRequest {
                        from_site: site,
                        to_site,
                        object_id: "bench".into(),
                        event_id: "event".into(),
                        elements,
                    };
                    let begun = Instant::now();
                    let result = client.send_event(request).await;
                    if measuring.load(Ordering::Relaxed) {
                        match result {
                            Ok(_) => {
                                let _ = latency
                                    .lock()
                                    .expect("latency lock")
                                    .record(begun.elapsed().as_micros().max(1) as u64);
                            }
                            Err(status) => {
                                *errors
                                    .lock()
                                    .expect("errors lock")
                                    .entry(format!("{:?}", status.code()))
                                    .or_default() += 1
                            }
                        }
                    }
                }
                anyhow::Ok(())
            }));
        }
    }
    let elapsed = super::bench::measure_window(args.warmup, args.duration, &[], &measuring, &stop).await.elapsed;
    super::bench::join_workers(tasks).await;
    let delivered = delivered.load(Ordering::Relaxed);
    let delivery = delivery_latency.lock().expect("latency lock").clone();
    let send = send_latency.lock().expect("latency lock").clone();
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1_000.0;
    let result = serde_json::json!({
        "sites": args.sites,
        "senders_per_site": args.senders,
        "seconds": elapsed,
        "delivered": delivered,
        "delivered_per_second": delivered as f64 / elapsed,
        "sent": send.len(),
        "sent_per_second": send.len() as f64 / elapsed,
        "send_ms": {"p50": ms(&send, 0.5), "p99": ms(&send, 0.99), "max": send.max() as f64 / 1_000.0},
        "delivery_ms": {"p50": ms(&delivery, 0.5), "p99": ms(&delivery, 0.99), "max": delivery.max() as f64 / 1_000.0},
        "errors": *errors.lock().expect("errors lock"),
    });
    match format {
        Format::Json => crate::outln!("{}", serde_json::to_string_pretty(&result)?),
        Format::Table => crate::outln!(
            "{} sites x {} senders, {:.1} s: {:.0} messages/s delivered ({:.0}/s sent); send p50 {:.2} ms p99 {:.2} ms; \
             delivery p50 {:.2} ms p99 {:.2} ms; errors {}",
            args.sites,
            args.senders,
            elapsed,
            delivered as f64 / elapsed,
            send.len() as f64 / elapsed,
            ms(&send, 0.5),
            ms(&send, 0.99),
            ms(&delivery, 0.5),
            ms(&delivery, 0.99),
            serde_json::to_string(&result["errors"])?
        ),
    }
    Ok(())
}
