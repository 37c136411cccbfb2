//! The effective configuration of `run` / `config check`: flags, then the
//! environment (the reference gateway's variable names), then the `--config`
//! TOML file, then the library defaults. The secret only ever comes from the
//! environment. The media client's settings are in [`media`].

mod media;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use relay_host::{AdapterConfig, Identity, Plugin, Secret};
use serde::Deserialize;
use serde_json::{Value, json};

use super::args::{Agent, RunArgs};

/// Default name of the secret's environment variable.
pub const DEFAULT_SECRET_ENV: &str = "GATEWAY_RELAY_SECRET";
/// Connector base URL.
pub const ENV_URL: &str = "GATEWAY_RELAY_URL";
/// Gateway id.
pub const ENV_ID: &str = "GATEWAY_RELAY_ID";
/// Comma list of platforms.
pub const ENV_PLATFORMS: &str = "GATEWAY_RELAY_PLATFORMS";
/// JSON object `{"<platform>":{"botId":"..."}}`.
pub const ENV_BOT_IDS: &str = "GATEWAY_RELAY_BOT_IDS";
/// Address of the Prometheus metrics listener.
pub const ENV_METRICS_LISTEN: &str = "RELAY_METRICS_LISTEN";
/// The compilation cache directory.
pub const ENV_CACHE_DIR: &str = "RELAY_CACHE_DIR";
/// PEM file of extra CA certificates for wss:// (`--ca-file`).
pub const ENV_CA_FILE: &str = "GATEWAY_RELAY_CA_FILE";
pub use media::ENV_MEDIA_DIR;

/// A usage or configuration error (exit 2). The text never contains the secret.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(message.into()))
}

/// Everything `run` needs, resolved and validated.
#[derive(Debug)]
pub struct Settings {
    /// The adapter configuration (secret included, `Debug` redacts it).
    pub config: AdapterConfig,
    /// The URL the component will dial (§1.2 normalisation).
    pub dial_url: String,
    /// The variable the secret was (or would have been) read from.
    pub secret_env: String,
    /// `--component`, or `None` for the built-in component.
    pub component: Option<PathBuf>,
    /// `--native`: relay-core in the host instead of the component.
    pub native: bool,
    /// The compilation cache directory; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// How messages are answered.
    pub agent: Agent,
    /// Where to serve `GET /metrics` (Prometheus text format), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// The file `config.command_manifest` was read from, if any.
    pub command_manifest_file: Option<PathBuf>,
    /// Things worth a warning on stderr (never containing the secret).
    pub warnings: Vec<String>,
}

/// The `--config` file. Every key is optional; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    connector: Option<String>,
    gateway_id: Option<String>,
    platforms: Option<Vec<String>>,
    bot_ids: Option<BTreeMap<String, String>>,
    metrics_listen: Option<String>,
    ca_file: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    /// Only here to refuse it with a clear message (never read).
    secret: Option<toml::Value>,
    token_ttl_secs: Option<i64>,
    handshake_timeout_ms: Option<u64>,
    outbound_timeout_ms: Option<u64>,
    reconnect: Option<bool>,
    reconnect_initial_ms: Option<u64>,
    reconnect_max_ms: Option<u64>,
    reconnect_jitter: Option<f64>,
    stable_connection_ms: Option<u64>,
    dormant_redial_ms: Option<u64>,
    redial_hold_max_ms: Option<u64>,
    going_idle_timeout_ms: Option<u64>,
    drain_grace_ms: Option<u64>,
    max_pending: Option<u32>,
    admission_timeout_ms: Option<u64>,
    max_undelivered: Option<u32>,
    seen_capacity: Option<u32>,
    route_capacity: Option<u32>,
    max_line_bytes: Option<u32>,
    authorization_is_upstream: Option<bool>,
    memory_bytes: Option<u64>,
    call_budget_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    ping_interval_ms: Option<u64>,
    ping_timeout_ms: Option<u64>,
    restart_initial_ms: Option<u64>,
    restart_max_ms: Option<u64>,
    restart_reset_after_ms: Option<u64>,
    restart_budget: Option<u32>,
    restart_window_ms: Option<u64>,
    /// The egress knobs (`[platform_extra.slack]` tables, or flat keys).
    platform_extra: Option<toml::Table>,
    prompt_nonce: Option<String>,
    /// A JSON file holding the Discord command manifest (an array).
    command_manifest_file: Option<PathBuf>,
    /// The media client's directory; the `media_*` keys need it.
    media_dir: Option<PathBuf>,
    media_allow_private_addresses: Option<bool>,
    media_max_bytes: Option<u64>,
    media_timeout_ms: Option<u64>,
    media_retention_ms: Option<u64>,
    media_max_files: Option<u32>,
    media_max_total_bytes: Option<u64>,
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let shown = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return err(format!("--config {shown}: cannot read: {e}")),
    };
    let file: FileConfig = match toml::from_str(&text) {
        Ok(file) => file,
        Err(e) => {
            // The message only: toml's Display quotes the offending source
            // line, which could be a secret someone put there.
            let at = e
                .span()
                .map(|span| {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!(" (line {line}, column {col})")
                })
                .unwrap_or_default();
            return err(format!("--config {shown}: {}{at}", e.message().trim_end()));
        }
    };
    if file.secret.is_some() {
        return err(format!(
            "--config {shown}: `secret` is not allowed in a config file; put the secret in \
             the environment ({DEFAULT_SECRET_ENV}, or the variable named by --secret-env)"
        ));
    }
    Ok(file)
}

/// Resolves `args` against the environment (`env(name)`) and the config file.
pub fn resolve(
    args: &RunArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, ConfigError> {
    let file = match &args.config {
        Some(path) => load_file(path)?,
        None => FileConfig::default(),
    };
    let mut warnings = Vec::new();
    // A blank variable counts as unset (except the secret's, see below).
    let env_set = |name: &str| env(name).filter(|v| !v.trim().is_empty());

    // Connector URL.
    let connector = args
        .connector
        .clone()
        .or_else(|| env_set(ENV_URL))
        .or(file.connector.clone());
    let Some(connector) = connector else {
        return err(format!(
            "no connector URL: pass --connector URL or set {ENV_URL}"
        ));
    };
    let dial_url = match relay_core::url::dial_url(&connector) {
        Ok(url) => url,
        Err(why) => return err(format!("invalid connector URL: {why}")),
    };

    // Gateway id.
    let gateway_id = args
        .gateway_id
        .clone()
        .or_else(|| env_set(ENV_ID))
        .or(file.gateway_id.clone())
        .map(|id| id.trim().to_string())
        .unwrap_or_default();

    // Platforms.
    let platforms: Vec<String> = if !args.platforms.is_empty() {
        let mut out = Vec::new();
        for p in &args.platforms {
            let p = p.trim();
            if p.is_empty() {
                return err("--platform must not be empty");
            }
            out.push(p.to_string());
        }
        out
    } else if let Some(list) = env_set(ENV_PLATFORMS) {
        split_list(&list)
    } else if let Some(list) = &file.platforms {
        list.iter()
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect()
    } else {
        Vec::new()
    };

    // Bot ids: --bot-id by position, else by platform name from the
    // environment, else from the file.
    if args.bot_ids.len() > platforms.len() {
        return err(format!(
            "{} --bot-id value(s) but {} platform(s): each --bot-id pairs with the --platform at \
             the same position",
            args.bot_ids.len(),
            platforms.len()
        ));
    }
    let by_name: BTreeMap<String, String> = if !args.bot_ids.is_empty() {
        BTreeMap::new()
    } else if let Some(raw) = env_set(ENV_BOT_IDS) {
        match parse_bot_ids(&raw) {
            Some(map) => map,
            None => {
                warnings.push(format!(
                    "{ENV_BOT_IDS} is not a JSON object like {{\"discord\":{{\"botId\":\"...\"}}}}; \
                     ignoring it (no bot ids)"
                ));
                BTreeMap::new()
            }
        }
    } else {
        file.bot_ids.clone().unwrap_or_default()
    };
    let identities: Vec<Identity> = platforms
        .iter()
        .enumerate()
        .map(|(i, platform)| {
            let bot_id = if args.bot_ids.is_empty() {
                by_name.get(platform).cloned().unwrap_or_default()
            } else {
                args.bot_ids.get(i).cloned().unwrap_or_default()
            };
            Identity::new(platform.clone(), bot_id.trim())
        })
        .collect();

    // Secret: only from the environment.
    let secret_env = args
        .secret_env
        .clone()
        .unwrap_or_else(|| DEFAULT_SECRET_ENV.to_string());
    if secret_env.is_empty() || secret_env.contains(['=', '\0']) {
        return err("--secret-env must be an environment variable name");
    }
    let secret = match env(&secret_env).map(|s| s.trim().to_string()) {
        Some(s) if !s.is_empty() => Some(Secret::new(s)),
        Some(_) if args.secret_env.is_some() => {
            return err(format!("--secret-env {secret_env}: the variable is blank"));
        }
        None if args.secret_env.is_some() => {
            return err(format!(
                "--secret-env {secret_env}: the variable is not set (or not valid UTF-8)"
            ));
        }
        Some(_) => {
            warnings.push(format!(
                "{secret_env} is blank; treating the secret as unset"
            ));
            None
        }
        None => None,
    };
    match (gateway_id.is_empty(), secret.is_none()) {
        (true, true) => warnings.push(format!(
            "no gateway id and no secret ({ENV_ID}, {secret_env}): dialing the connector \
             unauthenticated"
        )),
        (true, false) => warnings.push(format!(
            "a secret but no gateway id ({ENV_ID} / --gateway-id): dialing the connector \
             unauthenticated"
        )),
        (false, true) => warnings.push(format!(
            "a gateway id but no secret ({secret_env}): dialing the connector unauthenticated"
        )),
        (false, false) => {}
    }

    let mut config = AdapterConfig::new(connector);
    config.identities = identities;
    config.gateway_id = gateway_id;
    config.secret = secret;
    apply_file(&mut config, &file)?;
    // The egress knobs: the flag (a JSON object) replaces the file's table.
    if let Some(raw) = &args.platform_extra {
        config.platform_extra = match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(map)) => map,
            _ => {
                return err(
                    "--platform-extra must be a JSON object, for example '{\"slack\":{\"rich_blocks\":true}}'",
                );
            }
        };
    } else if let Some(table) = &file.platform_extra {
        config.platform_extra = table_json(table);
    }
    // The prompt nonce (flag, then file); validated with the rest below.
    config.prompt_nonce = args
        .prompt_nonce
        .clone()
        .or(file.prompt_nonce.clone())
        .map(|n| n.trim().to_owned());
    // The Discord command manifest, read from a JSON file (flag, then file).
    let command_manifest_file = match (&args.command_manifest, &file.command_manifest_file) {
        (Some(path), _) => Some(("--command-manifest", path.clone())),
        (None, Some(path)) => Some(("command_manifest_file", path.clone())),
        (None, None) => None,
    };
    if let Some((source, path)) = &command_manifest_file {
        config.command_manifest = load_manifest(source, path)?;
    }
    let command_manifest_file = command_manifest_file.map(|(_, path)| path);
    // A private CA for wss:// (flag, then environment, then file).
    config.ca_file = args
        .ca_file
        .clone()
        .or_else(|| env_set(ENV_CA_FILE).map(PathBuf::from))
        .or(file.ca_file.clone());
    // The media client (flag, then environment, then file); none without a
    // directory.
    config.media = media::resolve(args.media_dir.as_deref(), env_set(ENV_MEDIA_DIR), &file)?;

    // The compilation cache: flag, environment, file, then the per-user
    // default; `--no-cache` turns it off.
    let cache_dir = if args.no_cache {
        None
    } else {
        args.cache_dir
            .clone()
            .or_else(|| env_set(ENV_CACHE_DIR).map(PathBuf::from))
            .or(file.cache_dir.clone())
            .or_else(Plugin::default_cache_dir)
    };

    // Metrics listener.
    let metrics_listen = match args
        .metrics_listen
        .clone()
        .or_else(|| env_set(ENV_METRICS_LISTEN))
        .or(file.metrics_listen.clone())
    {
        None => None,
        Some(addr) => match addr.trim().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                return err(format!(
                    "invalid metrics listen address {addr:?}: expected IP:PORT, for example \
                     127.0.0.1:9464"
                ));
            }
        },
    };
    // Every bound at once, named by its `--config` key.
    if let Err(problems) = config.validate() {
        return err(format!("invalid configuration: {}", config_keys(&problems)));
    }

    Ok(Settings {
        config,
        dial_url,
        secret_env,
        component: args.component.clone(),
        native: args.native,
        cache_dir,
        agent: args.agent,
        metrics_listen,
        command_manifest_file,
        warnings,
    })
}

/// The command manifest file: a JSON array (its entries are the
/// component's to validate). `source` names where the path came from.
fn load_manifest(source: &str, path: &Path) -> Result<Vec<Value>, ConfigError> {
    let shown = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return err(format!("{source} {shown}: cannot read: {e}")),
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(commands)) => Ok(commands),
        Ok(_) => err(format!(
            "{source} {shown}: not a JSON array of commands ([{{\"name\": ..., \"description\": ...}}])"
        )),
        Err(e) => err(format!("{source} {shown}: not JSON: {e}")),
    }
}

/// A TOML table as a JSON object (dates and times become their text).
fn table_json(table: &toml::Table) -> serde_json::Map<String, Value> {
    fn value(v: &toml::Value) -> Value {
        match v {
            toml::Value::String(s) => Value::String(s.clone()),
            toml::Value::Integer(i) => json!(i),
            toml::Value::Float(f) => json!(f),
            toml::Value::Boolean(b) => Value::Bool(*b),
            toml::Value::Datetime(d) => Value::String(d.to_string()),
            toml::Value::Array(items) => Value::Array(items.iter().map(value).collect()),
            toml::Value::Table(t) => Value::Object(table_json(t)),
        }
    }
    table.iter().map(|(k, v)| (k.clone(), value(v))).collect()
}

/// `a, b,,c` → `["a", "b", "c"]`.
fn split_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `{"discord":{"botId":"123"}}` → `{discord: 123}`; `None` when malformed.
fn parse_bot_ids(raw: &str) -> Option<BTreeMap<String, String>> {
    let Value::Object(map) = serde_json::from_str::<Value>(raw).ok()? else {
        return None;
    };
    let mut out = BTreeMap::new();
    for (platform, entry) in map {
        let Value::Object(entry) = entry else {
            return None;
        };
        let bot_id = match entry.get("botId") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return None,
        };
        out.insert(platform.trim().to_string(), bot_id);
    }
    Some(out)
}

fn apply_file(config: &mut AdapterConfig, file: &FileConfig) -> Result<(), ConfigError> {
    let ms = Duration::from_millis;
    macro_rules! set {
        ($field:ident) => {
            if let Some(v) = file.$field {
                config.$field = v;
            }
        };
        ($key:ident => $($path:ident).+ , $conv:expr) => {
            if let Some(v) = file.$key {
                config.$($path).+ = $conv(v);
            }
        };
    }
    set!(token_ttl_secs);
    set!(handshake_timeout_ms => handshake_timeout, ms);
    set!(outbound_timeout_ms => outbound_timeout, ms);
    set!(reconnect);
    set!(reconnect_initial_ms => reconnect_initial, ms);
    set!(reconnect_max_ms => reconnect_max, ms);
    if let Some(jitter) = file.reconnect_jitter {
        if !(0.0..=1.0).contains(&jitter) {
            return err("--config: reconnect_jitter must be within 0.0..=1.0");
        }
        config.reconnect_jitter = Some(jitter);
    }
    set!(stable_connection_ms => stable_connection, ms);
    set!(dormant_redial_ms => dormant_redial, ms);
    set!(redial_hold_max_ms => redial_hold_max, ms);
    set!(going_idle_timeout_ms => going_idle_timeout, ms);
    set!(drain_grace_ms => drain_grace, ms);
    set!(max_pending);
    set!(admission_timeout_ms => admission_timeout, ms);
    set!(max_undelivered);
    set!(seen_capacity);
    set!(route_capacity);
    set!(max_line_bytes);
    set!(authorization_is_upstream);
    if let Some(bytes) = file.memory_bytes {
        config.limits.memory_bytes = usize::try_from(bytes)
            .map_err(|_| ConfigError("--config: memory_bytes is too large".into()))?;
    }
    set!(call_budget_ms => limits.call_budget, ms);
    set!(connect_timeout_ms => limits.connect_timeout, ms);
    set!(ping_interval_ms => limits.ping_interval, ms);
    set!(ping_timeout_ms => limits.ping_timeout, ms);
    set!(restart_initial_ms => limits.restart_initial, ms);
    set!(restart_max_ms => limits.restart_max, ms);
    set!(restart_reset_after_ms => limits.restart_reset_after, ms);
    set!(restart_budget => limits.restart_budget, |v| v);
    if let Some(window) = file.restart_window_ms {
        if window == 0 {
            return err("--config: restart_window_ms must be at least 1");
        }
        config.limits.restart_window = ms(window);
    }
    Ok(())
}

/// The library's field names in `problems` as the `--config` keys
/// (`limits.ping_interval` -> `ping_interval_ms`).
fn config_keys(problems: &str) -> String {
    const DURATIONS: &[&str] = &[
        "handshake_timeout",
        "outbound_timeout",
        "reconnect_initial",
        "reconnect_max",
        "stable_connection",
        "dormant_redial",
        "redial_hold_max",
        "going_idle_timeout",
        "drain_grace",
        "admission_timeout",
        "call_budget",
        "connect_timeout",
        "ping_interval",
        "ping_timeout",
        "restart_initial",
        "restart_max",
        "restart_reset_after",
        "restart_window",
    ];
    let mut text = media::config_keys(&problems.replace("limits.", ""));
    for name in DURATIONS {
        text = text
            .split(' ')
            .map(|word| {
                if word == *name {
                    format!("{name}_ms")
                } else {
                    word.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
    }
    text
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The effective configuration as printed by `config check`: the `--config`
/// keys with their effective values (the `media_*` keys null without a
/// media client), plus `identities`, `dial_url`,
/// `secret_env`, `authenticated`, `component` and `agent`. The secret is
/// `"<redacted>"` when set, else null.
pub fn effective_json(settings: &Settings) -> Value {
    let c = &settings.config;
    let identities: Vec<Value> = c
        .identities
        .iter()
        .map(|i| json!({"platform": i.platform, "bot_id": i.bot_id}))
        .collect();
    let mut effective = json!({
        "connector": c.connector_url,
        "dial_url": settings.dial_url,
        "identities": identities,
        "gateway_id": c.gateway_id,
        "secret": c.secret.as_ref().map(|_| "<redacted>"),
        "secret_env": settings.secret_env,
        "authenticated": !c.gateway_id.is_empty() && c.secret.is_some(),
        "component": settings
            .component
            .as_ref()
            .map(|p| p.display().to_string()),
        "native": settings.native,
        "agent": settings.agent.as_str(),
        "metrics_listen": settings.metrics_listen.map(|a| a.to_string()),
        "ca_file": c.ca_file.as_ref().map(|p| p.display().to_string()),
        "token_ttl_secs": c.token_ttl_secs,
        "handshake_timeout_ms": millis(c.handshake_timeout),
        "outbound_timeout_ms": millis(c.outbound_timeout),
        "reconnect": c.reconnect,
        "reconnect_initial_ms": millis(c.reconnect_initial),
        "reconnect_max_ms": millis(c.reconnect_max),
        "reconnect_jitter": c.reconnect_jitter,
        "stable_connection_ms": millis(c.stable_connection),
        "dormant_redial_ms": millis(c.dormant_redial),
        "redial_hold_max_ms": millis(c.redial_hold_max),
        "going_idle_timeout_ms": millis(c.going_idle_timeout),
        "drain_grace_ms": millis(c.drain_grace),
        "max_pending": c.max_pending,
        "admission_timeout_ms": millis(c.admission_timeout),
        "max_undelivered": c.max_undelivered,
        "seen_capacity": c.seen_capacity,
        "route_capacity": c.route_capacity,
        "max_line_bytes": c.max_line_bytes,
        "authorization_is_upstream": c.authorization_is_upstream,
        "memory_bytes": c.limits.memory_bytes,
        "call_budget_ms": millis(c.limits.call_budget),
        "connect_timeout_ms": millis(c.limits.connect_timeout),
        "ping_interval_ms": millis(c.limits.ping_interval),
        "ping_timeout_ms": millis(c.limits.ping_timeout),
        "restart_initial_ms": millis(c.limits.restart_initial),
        "restart_max_ms": millis(c.limits.restart_max),
        "restart_reset_after_ms": millis(c.limits.restart_reset_after),
        "restart_budget": c.limits.restart_budget,
        "restart_window_ms": millis(c.limits.restart_window),
    });
    // Outside the `json!` literal: one more key passes the macro's recursion limit.
    effective["cache_dir"] = json!(settings.cache_dir.as_ref().map(|p| p.display().to_string()));
    effective["platform_extra"] = Value::Object(c.platform_extra.clone());
    // Unset: `run` draws one per adapter at spawn.
    effective["prompt_nonce"] = json!(c.prompt_nonce);
    // The manifest's file and how many commands it holds, never its content.
    effective["command_manifest_file"] = json!(
        settings
            .command_manifest_file
            .as_ref()
            .map(|p| p.display().to_string())
    );
    effective["command_manifest_commands"] = json!(c.command_manifest.len());
    media::effective(&mut effective, c.media.as_ref());
    effective
}
