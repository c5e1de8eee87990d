//! The fault schedule of a run, drawn from its seed, and the injector that applies and heals
//! faults as simulated time passes. One fault is active at a time; each heals before the next.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::history::Recorder;

/// Message latency outside a latency fault.
pub const BASE_LATENCY_MS: u64 = 10;

/// A fault, by node id (host `n<id>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The node cannot reach the other nodes, nor they it (clients still reach it).
    Partition(u64),
    /// Messages from the first node to the second are lost; the other way works.
    PartitionOneWay(u64, u64),
    /// Whoever leads is cut off from every other node.
    IsolateLeader,
    /// Messages between two nodes are held, then all delivered at once.
    Hold(u64, u64),
    /// Every message takes up to this many ms.
    Latency(u64),
    /// The link between two nodes breaks at random (per mille per ms), losing what is in flight.
    Loss(u64, u64, u32),
    /// The node crashes and restarts when the fault heals.
    Crash(u64),
    /// Whoever leads crashes and restarts when the fault heals.
    CrashLeader,
    /// A majority of the nodes crash at once and restart together.
    CrashMajority,
    /// The node crashes, its newest log file is cut or has bytes flipped, and it restarts
    /// when the fault heals: it must refuse to start, or start with all it acknowledged. At
    /// most one per run (a refused member stays down); later ones are plain crashes.
    DamageLog(u64),
}

/// A fault with its start and length.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Simulated ms it starts at.
    pub at_ms: u64,
    /// How long it lasts.
    pub duration_ms: u64,
    /// What it is.
    pub fault: Fault,
}

/// Draws the faults of a run between `from_ms` and `until_ms`.
pub fn schedule(rng: &mut StdRng, nodes: usize, from_ms: u64, until_ms: u64) -> (Vec<Planned>, u64) {
    let n = nodes as u64;
    let node = |rng: &mut StdRng| rng.gen_range(1..=n);
    let mut planned = Vec::new();
    let mut at = from_ms;
    loop {
        at += rng.gen_range(300..2_000);
        let duration_ms = rng.gen_range(300..4_000);
        if at + duration_ms >= until_ms {
            break;
        }
        let a = node(rng);
        let b = (a - 1 + rng.gen_range(1..n)) % n + 1;
        let fault = match rng.gen_range(0..100) {
            0..=14 => Fault::Partition(a),
            15..=24 => Fault::PartitionOneWay(a, b),
            25..=39 => Fault::IsolateLeader,
            40..=49 => Fault::Hold(a, b),
            50..=57 => Fault::Latency(rng.gen_range(50..600)),
            58..=67 => Fault::Loss(a, b, rng.gen_range(1..20)),
            68..=79 => Fault::Crash(a),
            80..=91 => Fault::CrashLeader,
            92..=95 => Fault::DamageLog(a),
            _ => Fault::CrashMajority,
        };
        planned.push(Planned { at_ms: at, duration_ms, fault });
        at += duration_ms;
    }
    (planned, rng.gen())
}

fn host(id: u64) -> String {
    format!("n{id}")
}

/// The newest file of `dir` with extension `extension` that holds more than 64 bytes, with the
/// length of what was written in it (trailing zeros are preallocated space, not written).
fn newest_written(dir: &std::path::Path, extension: &str) -> Option<(std::path::PathBuf, Vec<u8>, usize)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files.into_iter().rev().find_map(|path| {
        let bytes = std::fs::read(&path).ok()?;
        let written = bytes.iter().rposition(|byte| *byte != 0).map_or(0, |last| last + 1);
        (written > 64).then_some((path, bytes, written))
    })
}

/// Damages a data directory's newest log: most often the newest Raft log segment, else
/// RocksDB's newest write-ahead log (the vote, the metadata). Cuts what was written to half, or
/// flips 32 bytes in its second half (as a disk or a careless operator might).
fn damage_newest_log(dir: &std::path::Path, rng: &mut StdRng) {
    let segment = newest_written(&dir.join(collective::store::LOG_DIR), "seg");
    let wal = newest_written(dir, "log");
    let chosen = if rng.gen_bool(0.75) { segment.or(wal) } else { wal.or(segment) };
    let Some((path, mut bytes, written)) = chosen else { return };
    if rng.gen_bool(0.5) {
        bytes.truncate(written / 2);
    } else {
        let at = rng.gen_range(written / 2..written - 32);
        for byte in &mut bytes[at..at + 32] {
            *byte ^= 0x5a;
        }
    }
    let _ = std::fs::write(&path, bytes);
}

/// What healing a fault takes.
#[derive(Debug)]
enum Undo {
    Repair(String, String),
    RepairOneWay(String, String),
    Release(String, String),
    Latency,
    Loss(String, String),
    Restart(Vec<String>),
}

/// A node whose log a `DamageLog` fault damaged.
#[derive(Debug, Clone)]
pub struct Damage {
    /// Its host.
    pub host: String,
    /// When (simulated ms).
    pub at_ms: u64,
    /// The last index it had acknowledged before the damage (its `raft-acknowledged` marker).
    pub acknowledged: Option<u64>,
}

/// Applies the schedule as time passes.
pub struct Injector {
    planned: std::vec::IntoIter<Planned>,
    next: Option<Planned>,
    active: Option<(u64, Vec<Undo>)>,
    hosts: Vec<String>,
    rng: StdRng,
    /// Where the nodes' data directories are (`<root>/<host>`).
    data_root: std::path::PathBuf,
    /// The damage done by `DamageLog`, if any.
    pub damaged: Option<Damage>,
}

impl Injector {
    /// An injector for `schedule` (as `schedule` returned it) over the node hosts.
    pub fn new((planned, seed): (Vec<Planned>, u64), hosts: Vec<String>, data_root: std::path::PathBuf) -> Injector {
        let mut planned = planned.into_iter();
        let next = planned.next();
        Injector { planned, next, active: None, hosts, rng: StdRng::seed_from_u64(seed), data_root, damaged: None }
    }

    /// Heals the active fault when its time is up and starts the next one when due.
    pub fn tick(&mut self, sim: &mut turmoil::Sim<'_>, now_ms: u64, leader: Option<u64>, recorder: &mut Recorder) {
        if self.active.as_ref().is_some_and(|(until, _)| now_ms >= *until) {
            self.heal(sim, now_ms, recorder);
        }
        if self.active.is_some() || self.next.as_ref().is_none_or(|next| now_ms < next.at_ms) {
            return;
        }
        let Some(planned) = self.next.take() else { return };
        self.next = self.planned.next();
        let undo = self.apply(sim, &planned.fault, leader, now_ms);
        let description = match &undo {
            Some(_) => format!("{:?} for {} ms", planned.fault, planned.duration_ms),
            None => format!("{:?} skipped (no leader known)", planned.fault),
        };
        recorder.fault(now_ms, description);
        if let Some(undo) = undo {
            self.active = Some((now_ms + planned.duration_ms, undo));
        }
    }

    fn others(&self, id: u64) -> Vec<String> {
        self.hosts.iter().filter(|h| **h != host(id)).cloned().collect()
    }

    fn apply(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        fault: &Fault,
        leader: Option<u64>,
        now_ms: u64,
    ) -> Option<Vec<Undo>> {
        let isolate = |sim: &mut turmoil::Sim<'_>, id: u64, others: Vec<String>| {
            others
                .into_iter()
                .map(|other| {
                    sim.partition(host(id), other.as_str());
                    Undo::Repair(host(id), other)
                })
                .collect::<Vec<_>>()
        };
        Some(match *fault {
            Fault::Partition(id) => isolate(sim, id, self.others(id)),
            Fault::IsolateLeader => {
                let id = leader?;
                isolate(sim, id, self.others(id))
            }
            Fault::PartitionOneWay(from, to) => {
                sim.partition_oneway(host(from), host(to));
                vec![Undo::RepairOneWay(host(from), host(to))]
            }
            Fault::Hold(a, b) => {
                sim.hold(host(a), host(b));
                vec![Undo::Release(host(a), host(b))]
            }
            Fault::Latency(ms) => {
                sim.set_max_message_latency(Duration::from_millis(ms));
                vec![Undo::Latency]
            }
            Fault::Loss(a, b, per_mille) => {
                sim.set_link_fail_rate(host(a), host(b), f64::from(per_mille) / 1_000.0);
                vec![Undo::Loss(host(a), host(b))]
            }
            Fault::Crash(id) => {
                sim.crash(host(id));
                vec![Undo::Restart(vec![host(id)])]
            }
            Fault::CrashLeader => {
                let id = leader?;
                sim.crash(host(id));
                vec![Undo::Restart(vec![host(id)])]
            }
            Fault::DamageLog(id) => {
                sim.crash(host(id));
                if self.damaged.is_none() {
                    let dir = self.data_root.join(host(id));
                    let acknowledged = collective::store::acknowledged_index(&dir);
                    damage_newest_log(&dir, &mut self.rng);
                    self.damaged = Some(Damage { host: host(id), at_ms: now_ms, acknowledged });
                }
                vec![Undo::Restart(vec![host(id)])]
            }
            Fault::CrashMajority => {
                let mut victims = self.hosts.clone();
                let majority = victims.len() / 2 + 1;
                while victims.len() > majority {
                    let index = self.rng.gen_range(0..victims.len());
                    victims.remove(index);
                }
                for victim in &victims {
                    sim.crash(victim.as_str());
                }
                vec![Undo::Restart(victims)]
            }
        })
    }

    fn heal(&mut self, sim: &mut turmoil::Sim<'_>, now_ms: u64, recorder: &mut Recorder) {
        let Some((_, undo)) = self.active.take() else { return };
        for step in undo {
            match step {
                Undo::Repair(a, b) => sim.repair(a.as_str(), b.as_str()),
                Undo::RepairOneWay(a, b) => sim.repair_oneway(a.as_str(), b.as_str()),
                Undo::Release(a, b) => sim.release(a.as_str(), b.as_str()),
                Undo::Latency => sim.set_max_message_latency(Duration::from_millis(BASE_LATENCY_MS)),
                Undo::Loss(a, b) => sim.set_link_fail_rate(a.as_str(), b.as_str(), 0.0),
                Undo::Restart(hosts) => {
                    for host in hosts {
                        sim.bounce(host.as_str());
                    }
                }
            }
        }
        recorder.trace(("healed", now_ms));
    }

    /// Heals the active fault and makes sure every node runs (the liveness phase starts).
    pub fn heal_all(&mut self, sim: &mut turmoil::Sim<'_>, now_ms: u64, recorder: &mut Recorder) {
        self.heal(sim, now_ms, recorder);
        self.next = None;
        for host in &self.hosts {
            if !sim.is_host_running(host.as_str()) {
                sim.bounce(host.as_str());
            }
        }
    }
}
