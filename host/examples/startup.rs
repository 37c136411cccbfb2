//! Start-up costs of the adapter: component size, compile time, instantiate
//! (spawn) time, time to `ready` against a local stub connector, and time to
//! `ready` without the network (instantiate, `start`, socket reported open,
//! descriptor fed: `relay_host::bench::Harness`).
//!
//! `cargo run --release -p relay-host --example startup [-- RUNS]`
//!
//! Each figure is the median over RUNS (default 20) fresh adapters; compile
//! time is the median over 5 compilations.

use relay_host::bench::Harness;
use relay_host::{Adapter, AdapterConfig, Event, Plugin, State};
use relay_stub::{StubConfig, StubConnector};
use std::time::{Duration, Instant};

const WASM: &[u8] = include_bytes!(env!("RELAY_GUEST_WASM"));

/// The descriptor fed to the network-free start-ups.
const DESCRIPTOR_LINE: &str = concat!(
    r#"{"type":"descriptor","descriptor":{"contract_version":1,"platform":"discord","#,
    r#""label":"Bench","max_message_length":2000,"supports_draft_streaming":false,"#,
    r#""supports_edit":true,"supports_threads":false,"markdown_dialect":"plain","#,
    r#""len_unit":"chars"}}"#,
    "\n"
);

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(20);
    let mut compiles = Vec::new();
    let mut plugin = None;
    for _ in 0..5 {
        let t = Instant::now();
        plugin = Some(Plugin::from_bytes(WASM)?);
        compiles.push(t.elapsed());
    }
    let plugin = plugin.ok_or("no plugin")?;

    let stub = StubConnector::start(StubConfig::default()).await?;
    let (mut spawns, mut readies) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let (handle, mut events) = Adapter::spawn(&plugin, AdapterConfig::new(stub.url())).await?;
        spawns.push(t.elapsed());
        loop {
            match tokio::time::timeout(Duration::from_secs(10), events.next()).await? {
                Some(Event::State {
                    state: State::Ready,
                    ..
                }) => break,
                Some(_) => {}
                None => return Err("adapter ended before ready".into()),
            }
        }
        readies.push(t.elapsed());
        handle.shutdown().await?;
    }
    let (mut offline, mut offline_native) = (Vec::new(), Vec::new());
    let native = Plugin::native()?;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let harness = Harness::new(&plugin, DESCRIPTOR_LINE).await?;
        offline.push(t.elapsed());
        drop(harness);
        let t = Instant::now();
        let harness = Harness::new(&native, DESCRIPTOR_LINE).await?;
        offline_native.push(t.elapsed());
        drop(harness);
    }
    println!("component size:           {} bytes", WASM.len());
    println!(
        "compile (Component::new): {:?} (median of 5)",
        median(compiles)
    );
    println!(
        "spawn (instantiate+start): {:?} (median of {runs})",
        median(spawns)
    );
    println!(
        "spawn to ready (loopback): {:?} (median of {runs})",
        median(readies)
    );
    println!(
        "ready without network:    {:?} (median of {runs}; native core: {:?})",
        median(offline),
        median(offline_native)
    );
    Ok(())
}
