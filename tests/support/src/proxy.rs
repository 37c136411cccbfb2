//! A fault-injecting TCP proxy for tests, between the adapter and the stub
//! connector (it speaks no WebSocket: faults hit the byte stream, as a real
//! network would). Per test, scripted through [`FaultProxy`]'s methods; for
//! soaks, drawn from a seeded [`FaultPlan`].
//!
//! | fault | what the adapter sees |
//! | --- | --- |
//! | [`FaultProxy::drop_all`] `Fin` / `Rst` | the connection ends (clean FIN, or a reset) |
//! | [`FaultProxy::stall`] | a half-open link: bytes stop in one or both directions, nothing closes |
//! | [`FaultProxy::set_fragment`] | every write cut into 1-byte writes |
//! | [`FaultProxy::set_delay`] | every chunk held this long first |
//! | [`FaultProxy::cut_after`] | the connection dies after N more bytes one way (mid-frame) |
//! | [`FaultProxy::refuse_next`] | the next N connections are reset at once |
//! | [`FaultProxy::delay_accept`] | new connections wait this long before reaching the connector |

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How [`FaultProxy::drop_all`] ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// An orderly close (FIN both ways).
    Fin,
    /// A reset (linger 0): the peer sees "connection reset".
    Rst,
}

/// Which way bytes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Adapter to connector.
    Up,
    /// Connector to adapter.
    Down,
}

/// The knobs every pump reads; changed through [`FaultProxy`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Knobs {
    stall_up: bool,
    stall_down: bool,
    fragment: bool,
    delay: Duration,
    /// Bytes left before the connection is cut, per direction.
    cut_up: Option<usize>,
    cut_down: Option<usize>,
    /// Bumped by `drop_all`: connections older than it end.
    generation: u64,
    drop_kind: Option<Drop>,
}

/// Counts of what the proxy did (for a soak's report).
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Connections accepted.
    pub accepted: AtomicUsize,
    /// Connections refused (reset at once).
    pub refused: AtomicUsize,
    /// Connections ended by `drop_all` or a cut.
    pub killed: AtomicUsize,
    /// Bytes forwarded up and down.
    pub bytes_up: AtomicU64,
    /// Bytes forwarded down.
    pub bytes_down: AtomicU64,
}

struct Shared {
    upstream: SocketAddr,
    knobs: watch::Sender<Knobs>,
    refuse: AtomicUsize,
    accept_delay: Mutex<Duration>,
    stats: ProxyStats,
}

/// A running proxy; stops accepting when dropped (open connections end
/// with their peers).
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::ops::Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Listens on 127.0.0.1 (any port) and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            knobs: watch::Sender::new(Knobs::default()),
            refuse: AtomicUsize::new(0),
            accept_delay: Mutex::new(Duration::ZERO),
            stats: ProxyStats::default(),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(FaultProxy { addr, shared, task })
    }

    /// The proxy's `ws://127.0.0.1:PORT/relay`, the adapter's connector URL.
    pub fn url(&self) -> String {
        format!("ws://{}/relay", self.addr)
    }

    /// Ends every open connection, as `how`.
    pub fn drop_all(&self, how: Drop) {
        self.shared.knobs.send_modify(|k| {
            k.generation += 1;
            k.drop_kind = Some(how);
        });
    }

    /// Stops (or resumes) forwarding one way on every connection, without
    /// closing anything: the reader stops reading, so TCP backpressure
    /// reaches the sender. New connections inherit the stall only while it
    /// lasts.
    pub fn stall(&self, direction: Direction, stalled: bool) {
        self.shared.knobs.send_modify(|k| match direction {
            Direction::Up => k.stall_up = stalled,
            Direction::Down => k.stall_down = stalled,
        });
    }

    /// Cuts every write into 1-byte writes (or stops doing so).
    pub fn set_fragment(&self, on: bool) {
        self.shared.knobs.send_modify(|k| k.fragment = on);
    }

    /// Holds every chunk this long before writing it (zero: none).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.knobs.send_modify(|k| k.delay = delay);
    }

    /// After `bytes` more bytes one way, ends the connection (a cut in the
    /// middle of whatever frame is in flight).
    pub fn cut_after(&self, direction: Direction, bytes: usize) {
        self.shared.knobs.send_modify(|k| match direction {
            Direction::Up => k.cut_up = Some(bytes),
            Direction::Down => k.cut_down = Some(bytes),
        });
    }

    /// Resets the next `n` connections as soon as they are accepted.
    pub fn refuse_next(&self, n: usize) {
        self.shared.refuse.store(n, Ordering::SeqCst);
    }

    /// New connections wait `delay` before the proxy dials the connector.
    pub fn delay_accept(&self, delay: Duration) {
        *self
            .shared
            .accept_delay
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = delay;
    }

    /// Back to a transparent proxy (open connections stay open).
    pub fn heal(&self) {
        self.shared.knobs.send_modify(|k| {
            let generation = k.generation;
            let drop_kind = k.drop_kind;
            *k = Knobs {
                generation,
                drop_kind,
                ..Knobs::default()
            };
        });
        self.refuse_next(0);
        self.delay_accept(Duration::ZERO);
    }

    /// What the proxy did so far.
    pub fn stats(&self) -> &ProxyStats {
        &self.shared.stats
    }

    /// Applies one planned fault (see [`FaultPlan`]).
    pub fn apply(&self, fault: &Fault) {
        match *fault {
            Fault::Drop(how) => self.drop_all(how),
            Fault::Stall(direction) => self.stall(direction, true),
            Fault::Fragment => self.set_fragment(true),
            Fault::Delay(d) => self.set_delay(d),
            Fault::Cut(direction, bytes) => self.cut_after(direction, bytes),
            Fault::Refuse(n) => self.refuse_next(n),
            Fault::DelayAccept(d) => self.delay_accept(d),
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((client, _)) = listener.accept().await {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            if shared
                .refuse
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                let _ = client.set_zero_linger();
                return;
            }
            let delay = *shared
                .accept_delay
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let Ok(server) = TcpStream::connect(shared.upstream).await else {
                let _ = client.set_zero_linger();
                return;
            };
            shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            serve(client, server, shared).await;
        });
    }
}

/// Pumps both ways until either side ends or a fault kills the connection.
/// The pumps borrow the sockets (dropping a borrowed half closes nothing),
/// so a reset is a reset: linger 0 is set on both sockets before they are
/// dropped, and no FIN goes out first.
async fn serve(mut client: TcpStream, mut server: TcpStream, shared: Arc<Shared>) {
    let generation = shared.knobs.borrow().generation;
    let killed = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let up = pump(
            client_read,
            server_write,
            Direction::Up,
            generation,
            &shared,
        );
        let down = pump(
            server_read,
            client_write,
            Direction::Down,
            generation,
            &shared,
        );
        tokio::pin!(up, down);
        // The first pump to end decides.
        tokio::select! {
            ended = &mut up => ended,
            ended = &mut down => ended,
        }
    };
    match killed {
        Ended::Killed(how) => {
            shared.stats.killed.fetch_add(1, Ordering::Relaxed);
            if how == Drop::Rst {
                let _ = client.set_zero_linger();
                let _ = server.set_zero_linger();
            }
        }
        Ended::Closed => {
            // One side closed: pass the close on, then let both go.
            let _ = client.shutdown().await;
            let _ = server.shutdown().await;
        }
    }
}

/// Why a pump stopped.
enum Ended {
    /// Its source closed or failed.
    Closed,
    /// A fault ended the connection, this way.
    Killed(Drop),
}

async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    direction: Direction,
    generation: u64,
    shared: &Shared,
) -> Ended {
    let mut knobs = shared.knobs.subscribe();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // A stall reads nothing: backpressure, not loss.
        let current = loop {
            let k = knobs.borrow_and_update().clone();
            if k.generation != generation {
                return Ended::Killed(k.drop_kind.unwrap_or(Drop::Fin));
            }
            let stalled = match direction {
                Direction::Up => k.stall_up,
                Direction::Down => k.stall_down,
            };
            if !stalled {
                break k;
            }
            if knobs.changed().await.is_err() {
                return Ended::Closed;
            }
        };
        // Knobs first: a stall set before bytes arrive must hold them even
        // when this task is polled late and both branches are ready (an
        // unbiased select would forward them half the time).
        let n = tokio::select! {
            biased;
            // A knob changed while waiting: look again (a kill, a stall).
            _ = knobs.changed() => continue,
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return Ended::Closed,
                Ok(n) => n,
            },
        };
        if !current.delay.is_zero() {
            tokio::time::sleep(current.delay).await;
        }
        // A cut forwards what is left of its budget, then kills.
        let left = match direction {
            Direction::Up => current.cut_up,
            Direction::Down => current.cut_down,
        };
        let (send, cut) = match left {
            Some(left) if n >= left => (left, true),
            Some(left) => {
                shared.knobs.send_modify(|k| match direction {
                    Direction::Up => k.cut_up = Some(left - n),
                    Direction::Down => k.cut_down = Some(left - n),
                });
                (n, false)
            }
            None => (n, false),
        };
        let written = if current.fragment {
            write_bytewise(&mut to, &buf[..send]).await
        } else {
            to.write_all(&buf[..send]).await
        };
        if written.is_err() {
            return Ended::Closed;
        }
        let counter = match direction {
            Direction::Up => &shared.stats.bytes_up,
            Direction::Down => &shared.stats.bytes_down,
        };
        counter.fetch_add(send as u64, Ordering::Relaxed);
        if cut {
            shared.knobs.send_modify(|k| match direction {
                Direction::Up => k.cut_up = None,
                Direction::Down => k.cut_down = None,
            });
            return Ended::Killed(Drop::Rst);
        }
    }
}

async fn write_bytewise(to: &mut WriteHalf<'_>, bytes: &[u8]) -> std::io::Result<()> {
    for byte in bytes {
        to.write_all(std::slice::from_ref(byte)).await?;
        to.flush().await?;
    }
    Ok(())
}

// ---------------------------------------------------------------- plans

/// One fault of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// [`FaultProxy::drop_all`].
    Drop(Drop),
    /// [`FaultProxy::stall`] (until the plan heals it).
    Stall(Direction),
    /// [`FaultProxy::set_fragment`].
    Fragment,
    /// [`FaultProxy::set_delay`].
    Delay(Duration),
    /// [`FaultProxy::cut_after`].
    Cut(Direction, usize),
    /// [`FaultProxy::refuse_next`].
    Refuse(usize),
    /// [`FaultProxy::delay_accept`].
    DelayAccept(Duration),
}

impl Fault {
    /// A short name for counting faults by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Drop(Drop::Fin) => "drop_fin",
            Fault::Drop(Drop::Rst) => "drop_rst",
            Fault::Stall(Direction::Up) => "stall_up",
            Fault::Stall(Direction::Down) => "stall_down",
            Fault::Fragment => "fragment",
            Fault::Delay(_) => "delay",
            Fault::Cut(..) => "cut_mid_frame",
            Fault::Refuse(_) => "refuse",
            Fault::DelayAccept(_) => "delay_accept",
        }
    }
}

/// A seeded, reproducible source of faults (SplitMix64: no dependency, the
/// same sequence on every machine for the same seed).
#[derive(Debug, Clone)]
pub struct FaultPlan {
    state: u64,
}

impl FaultPlan {
    /// The plan of `seed`.
    pub fn new(seed: u64) -> FaultPlan {
        FaultPlan { state: seed }
    }

    /// The next pseudo-random number.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// The next network fault.
    pub fn fault(&mut self) -> Fault {
        let direction = if self.chance(50) {
            Direction::Up
        } else {
            Direction::Down
        };
        match self.below(7) {
            0 => Fault::Drop(Drop::Fin),
            1 => Fault::Drop(Drop::Rst),
            2 => Fault::Stall(direction),
            3 => Fault::Fragment,
            4 => Fault::Delay(Duration::from_millis(1 + self.below(20))),
            5 => Fault::Cut(direction, 1 + self.below(300) as usize),
            _ => {
                if self.chance(50) {
                    Fault::Refuse(1 + self.below(2) as usize)
                } else {
                    Fault::DelayAccept(Duration::from_millis(10 + self.below(200)))
                }
            }
        }
    }
}
