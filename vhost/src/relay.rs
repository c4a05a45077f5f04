//! Relay workers: one thread per configured core, pinned, each polling the port pairs given to
//! it. Pairs change through a generation counter: the control side swaps the list and waits
//! until the worker has seen it before it closes a removed port's devices.

use crate::cores::{CoreError, pin_current_thread};
use crate::dpdk::{Burst, Queue, relay_burst};
use prometheus_client::metrics::counter::Counter;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counters of one port, shared between its worker (writes) and the control side (reads).
#[derive(Debug, Clone, Default)]
pub struct PairCounters {
    pub rx_packets: Counter,
    pub rx_bytes: Counter,
    pub rx_dropped: Counter,
    pub tx_packets: Counter,
    pub tx_bytes: Counter,
    pub tx_dropped: Counter,
}

/// One pod attachment on the data path.
#[derive(Debug, Clone)]
pub struct Pair {
    pub name: String,
    pub pod: Queue,
    pub kernel: Queue,
    pub counters: PairCounters,
}

/// Polls without pause while packets flow; after this many empty rounds it starts to nap
/// for `idle_sleep` (when configured), like OVS's pmd-maxsleep.
const EMPTY_ROUNDS_BEFORE_NAP: u32 = 1024;

#[derive(Debug)]
struct Shared {
    pairs: Mutex<Vec<Pair>>,
    generation: AtomicU64,
    seen: AtomicU64,
    stop: AtomicBool,
}

/// A pinned relay thread.
#[derive(Debug)]
pub struct Worker {
    core: usize,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    /// Starts a thread pinned to `core`; `on_start` runs on it first (DPDK thread registration).
    /// Returns once the thread is pinned, or the pinning error.
    pub fn spawn(
        core: usize,
        idle_sleep: Duration,
        on_start: impl FnOnce() + Send + 'static,
    ) -> Result<Worker, CoreError> {
        let shared = Arc::new(Shared {
            pairs: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("relay-cpu{core}"))
            .spawn(move || {
                let pinned = pin_current_thread(core);
                let ok = pinned.is_ok();
                let _ = tx.send(pinned);
                if ok {
                    on_start();
                    run(&thread_shared, idle_sleep);
                }
            })
            .map_err(|e| CoreError::Pin {
                core,
                reason: format!("cannot start thread: {e}"),
            })?;
        match rx.recv() {
            Ok(Ok(())) => Ok(Worker {
                core,
                shared,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(CoreError::Pin {
                core,
                reason: "relay thread died while pinning".into(),
            }),
        }
    }

    pub fn core(&self) -> usize {
        self.core
    }

    pub fn pair_count(&self) -> usize {
        self.shared.pairs.lock().map(|p| p.len()).unwrap_or(0)
    }

    pub fn add(&self, pair: Pair) {
        self.update(|pairs| pairs.push(pair));
    }

    /// Removes the pair named `name` and returns once the worker no longer touches its queues
    /// (or `timeout` passed, which only happens if the thread is gone).
    pub fn remove(&self, name: &str, timeout: Duration) -> bool {
        let generation = self.update(|pairs| pairs.retain(|p| p.name != name));
        let deadline = Instant::now() + timeout;
        while self.shared.seen.load(Ordering::Acquire) < generation {
            if Instant::now() > deadline || self.thread.as_ref().is_none_or(|t| t.is_finished()) {
                return false;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        true
    }

    fn update(&self, change: impl FnOnce(&mut Vec<Pair>)) -> u64 {
        let mut pairs = match self.shared.pairs.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        change(&mut pairs);
        self.shared.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Stops and joins the thread; afterwards no queue is polled.
    pub fn stop(mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(shared: &Shared, idle_sleep: Duration) {
    let mut burst = Burst::default();
    let mut local: Vec<Pair> = Vec::new();
    let mut seen_generation = u64::MAX;
    let mut empty_rounds = 0u32;
    while !shared.stop.load(Ordering::Relaxed) {
        let generation = shared.generation.load(Ordering::Acquire);
        if generation != seen_generation {
            local = match shared.pairs.lock() {
                Ok(p) => p.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            seen_generation = generation;
            shared.seen.store(generation, Ordering::Release);
        }
        if local.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let mut moved = 0u32;
        for pair in &local {
            let up = relay_burst(pair.pod, pair.kernel, &mut burst);
            if up.received > 0 {
                let c = &pair.counters;
                c.rx_packets.inc_by(u64::from(up.received));
                c.rx_bytes.inc_by(up.bytes_received);
                if up.dropped() > 0 {
                    c.rx_dropped.inc_by(u64::from(up.dropped()));
                }
            }
            let down = relay_burst(pair.kernel, pair.pod, &mut burst);
            if down.received > 0 {
                let c = &pair.counters;
                c.tx_packets.inc_by(u64::from(down.sent));
                c.tx_bytes.inc_by(down.bytes_sent);
                if down.dropped() > 0 {
                    c.tx_dropped.inc_by(u64::from(down.dropped()));
                }
            }
            moved += u32::from(up.received) + u32::from(down.received);
        }
        if moved > 0 {
            empty_rounds = 0;
        } else if !idle_sleep.is_zero() {
            empty_rounds = empty_rounds.saturating_add(1);
            if empty_rounds >= EMPTY_ROUNDS_BEFORE_NAP {
                std::thread::sleep(idle_sleep);
            }
        }
    }
}
