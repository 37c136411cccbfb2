//! The compiled relay component, shared by every adapter in the process: one
//! `Engine` (epoch interruption, a 1 ms epoch ticker on its own OS thread), the
//! component compiled once, and the linked `InstancePre`. Also the
//! `api-version` check every new instance passes before it is used.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store};

use crate::bindings::{AdapterPre, Api, Bindings, v0_1, v0_2};
use crate::error::PluginError;
use crate::store::HostState;
use crate::types::SUPPORTED_API_VERSIONS;

/// Epoch tick: the granularity of the per-call CPU budget and of yielding.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The relay component compiled for this process; cheap to clone.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    /// `None` for [`Plugin::native`].
    pre: Option<AdapterPre>,
    cache: CacheUse,
}

/// How a component is compiled ([`Plugin::from_bytes_with`] and friends).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PluginOptions {
    /// Keep wasmtime's compiled code in this directory and reuse it in the
    /// next process (a warm start skips the ~0.3 s compile). Created with
    /// mode 0700; a directory another user owns or others may write is
    /// refused (the compiled code would run in this process), and the
    /// component is compiled without a cache then. `None`: compile every
    /// time. [`Plugin::default_cache_dir`] is the per-user default the
    /// command line uses.
    pub cache_dir: Option<PathBuf>,
}

impl PluginOptions {
    /// Compile every time (no cache).
    pub fn new() -> Self {
        Self::default()
    }

    /// Use the compilation cache in `dir` (see [`PluginOptions::cache_dir`]).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }
}

/// What the compilation cache did when a [`Plugin`] was compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheUse {
    /// No cache configured (or [`Plugin::native`]).
    Off,
    /// The configured directory was not used, for this reason; the
    /// component was compiled without a cache.
    Refused(String),
    /// The compiled code came from the cache.
    Hit,
    /// Compiled, and stored for the next process.
    Miss,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").finish_non_exhaustive()
    }
}

/// The bytes of the component built into this crate (`component/guest`,
/// compiled by the build script): what [`Plugin::new`] runs and what
/// `relay-host component --out FILE` writes for other hosts.
#[cfg(feature = "embedded-component")]
pub const EMBEDDED_COMPONENT: &[u8] = include_bytes!(env!("RELAY_GUEST_WASM"));

impl Plugin {
    /// The component built into this crate (`component/guest`, compiled by the
    /// build script). Compiles it (tens of ms in release); keep the result and
    /// clone it, or use [`Plugin::shared`]. Needs the `embedded-component`
    /// feature (on by default).
    #[cfg(feature = "embedded-component")]
    pub fn new() -> Result<Self, PluginError> {
        Self::from_bytes(EMBEDDED_COMPONENT)
    }

    /// [`Plugin::new`] with options (a compilation cache).
    #[cfg(feature = "embedded-component")]
    pub fn new_with(options: &PluginOptions) -> Result<Self, PluginError> {
        Self::from_bytes_with(EMBEDDED_COMPONENT, options)
    }

    /// The per-user cache directory the command line uses by default:
    /// `$XDG_CACHE_HOME/relay-host`, else `$HOME/.cache/relay-host`; `None`
    /// when neither is set.
    pub fn default_cache_dir() -> Option<PathBuf> {
        crate::cache::default_dir()
    }

    /// The built-in component, compiled once per process on first use.
    /// Needs the `embedded-component` feature (on by default).
    #[cfg(feature = "embedded-component")]
    pub fn shared() -> Result<Self, PluginError> {
        static SHARED: std::sync::Mutex<Option<Plugin>> = std::sync::Mutex::new(None);
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(plugin) = shared.as_ref() {
            return Ok(plugin.clone());
        }
        let plugin = Self::new()?;
        *shared = Some(plugin.clone());
        Ok(plugin)
    }

    /// A component from a `.wasm` file (component binary format).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, PluginError> {
        Self::from_file_with(path, &PluginOptions::default())
    }

    /// [`Plugin::from_file`] with options (a compilation cache).
    pub fn from_file_with(
        path: impl AsRef<Path>,
        options: &PluginOptions,
    ) -> Result<Self, PluginError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| PluginError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes_with(&bytes, options)
    }

    /// A component from its bytes (component binary format, not precompiled).
    pub fn from_bytes(wasm: &[u8]) -> Result<Self, PluginError> {
        Self::from_bytes_with(wasm, &PluginOptions::default())
    }

    /// [`Plugin::from_bytes`] with options (a compilation cache).
    pub fn from_bytes_with(wasm: &[u8], options: &PluginOptions) -> Result<Self, PluginError> {
        Self::compile(wasm, true, options)
    }

    /// Benchmark support, not API: the built-in component compiled without
    /// epoch interruption, so without the per-call CPU budget (and its
    /// yields). `host/benches/component.rs` measures what the epoch checks
    /// cost; never run untrusted input on it.
    #[doc(hidden)]
    #[cfg(feature = "embedded-component")]
    pub fn without_epoch_interruption() -> Result<Self, PluginError> {
        Self::compile(EMBEDDED_COMPONENT, false, &PluginOptions::default())
    }

    fn compile(wasm: &[u8], epoch: bool, options: &PluginOptions) -> Result<Self, PluginError> {
        let mut config = Config::new();
        config.epoch_interruption(epoch);
        let (cache, mut used) = match &options.cache_dir {
            None => (None, CacheUse::Off),
            Some(dir) => match crate::cache::open(dir) {
                Ok(cache) => (Some(cache), CacheUse::Miss),
                Err(why) => {
                    tracing::warn!("{why}; compiling without a cache");
                    (None, CacheUse::Refused(why))
                }
            },
        };
        config.cache(cache.clone());
        // Profiling aid (docs/contributing.md): /tmp/perf-PID.map names the
        // guest's JIT code for `perf report`.
        if std::env::var_os("RELAY_WASM_PERFMAP").is_some_and(|v| v == "1") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        if epoch {
            spawn_epoch_ticker(&engine)?;
        }
        let component =
            Component::new(&engine, wasm).map_err(|e| PluginError::Invalid(format!("{e:#}")))?;
        if cache.is_some_and(|c| c.cache_hits() > 0) {
            used = CacheUse::Hit;
        }
        // The WIT version is read off the component's exports before it is
        // linked: each version links its own `host` imports and binds its
        // own exports, so a component built against an older, frozen
        // version keeps running.
        let api = Api::of(&component).ok_or_else(|| {
            PluginError::Invalid(format!(
                "the component exports no hermes:relay/adapter interface this host binds \
                 (it binds {})",
                SUPPORTED_API_VERSIONS.join(", ")
            ))
        })?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        api.add_to_linker(&mut linker)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(|pre| {
                Ok(match api {
                    Api::V0_1 => AdapterPre::V0_1(v0_1::RelayAdapterPre::new(pre)?),
                    Api::V0_2 => AdapterPre::V0_2(v0_2::RelayAdapterPre::new(pre)?),
                })
            })
            .map_err(|e| PluginError::Invalid(format!("{e:#}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                pre: Some(pre),
                cache: used,
            }),
        })
    }

    /// No component: adapters spawned from this plugin run the same
    /// relay-core state machine compiled into the host, driven by the same
    /// actor loop and the same import implementations, without the sandbox
    /// (no memory cap, no CPU budget, no trap recovery; a bug is a host
    /// bug). It exists to measure what the sandbox costs
    /// (`relay-host run --native`, `docs/benchmarks.md`); use the component
    /// in production.
    pub fn native() -> Result<Self, PluginError> {
        let engine =
            Engine::new(&Config::new()).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                pre: None,
                cache: CacheUse::Off,
            }),
        })
    }

    /// What the compilation cache did for this plugin.
    pub fn cache_use(&self) -> &CacheUse {
        &self.inner.cache
    }

    /// Whether this is [`Plugin::native`].
    pub fn is_native(&self) -> bool {
        self.inner.pre.is_none()
    }

    /// The engine every instance of this component runs on.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Instantiates into `store` and checks `api-version`.
    pub(crate) async fn instantiate(
        &self,
        store: &mut Store<HostState>,
    ) -> Result<Bindings, PluginError> {
        let Some(pre) = &self.inner.pre else {
            return Err(PluginError::Instantiate(
                "the native plugin has no component".to_owned(),
            ));
        };
        let instantiated = match pre {
            AdapterPre::V0_1(pre) => pre.instantiate_async(&mut *store).await.map(Bindings::V0_1),
            AdapterPre::V0_2(pre) => pre.instantiate_async(&mut *store).await.map(Bindings::V0_2),
        };
        let bindings = instantiated.map_err(|e| PluginError::Instantiate(format!("{e:#}")))?;
        crate::store::reset_budget(store);
        let (found, api) = match &bindings {
            Bindings::V0_1(b) => (
                b.hermes_relay_adapter().call_api_version(&mut *store).await,
                Api::V0_1,
            ),
            Bindings::V0_2(b) => (
                b.hermes_relay_adapter().call_api_version(&mut *store).await,
                Api::V0_2,
            ),
        };
        let found =
            found.map_err(|e| PluginError::Instantiate(format!("api-version trapped: {e:#}")))?;
        if !compatible(&found, api.major_minor()) {
            return Err(PluginError::IncompatibleVersion {
                found,
                exported: format!("{}.x", api.major_minor()),
            });
        }
        Ok(bindings)
    }

    /// The WIT version the component was linked as (`"0.1"`, `"0.2"`);
    /// `None` for [`Plugin::native`].
    pub fn api(&self) -> Option<&'static str> {
        self.inner.pre.as_ref().map(|pre| match pre {
            AdapterPre::V0_1(_) => Api::V0_1.major_minor(),
            AdapterPre::V0_2(_) => Api::V0_2.major_minor(),
        })
    }
}

/// Same major and minor (`0.1.x` talks to `0.1.y`).
fn compatible(found: &str, ours: &str) -> bool {
    let major_minor = |v: &str| {
        let mut parts = v.trim().split('.');
        match (parts.next(), parts.next()) {
            (Some(a), Some(b)) => Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)),
            _ => None,
        }
    };
    match (major_minor(found), major_minor(ours)) {
        (Some(f), Some(o)) => f == o,
        _ => false,
    }
}

/// Ticks the engine's epoch every millisecond on an OS thread (never a tokio
/// worker: a busy runtime must not stop the clock that interrupts the guest).
/// The thread ends once the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine) -> Result<(), PluginError> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("relay-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map(|_| ())
        .map_err(|e| PluginError::Engine(format!("cannot start the epoch ticker: {e}")))
}
