//! The command-line surface (clap derive). Parsing only; the meaning of each
//! flag (precedence over the environment and `--config`) is in
//! [`super::settings`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Run the Hermes relay adapter (a WebAssembly component) from the command line.
#[derive(Debug, Parser)]
#[command(name = "relay-host", version, about, long_about = None)]
#[command(propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Dial a connector and print every adapter event as one JSON line on stdout.
    #[command(after_long_help = RUN_AFTER_HELP)]
    Run(RunArgs),
    /// Show the component's API version, WIT world, exports and imports.
    #[command(after_long_help = INSPECT_AFTER_HELP)]
    Inspect(InspectArgs),
    /// Write the built-in component (`.wasm`) to a file, for other hosts.
    #[command(after_long_help = COMPONENT_AFTER_HELP)]
    Component(ComponentArgs),
    /// Configuration commands.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// A scripted walk through the protocol against an embedded stub connector.
    #[command(after_long_help = DEMO_AFTER_HELP)]
    Demo(DemoArgs),
}

/// `relay-host config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print it as JSON (secret redacted).
    ///
    /// Takes the same flags, environment and `--config` file as `run`, and
    /// exits 0 when `run` would start, 2 when it would refuse the
    /// configuration.
    Check(RunArgs),
}

/// How `run` answers message events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Agent {
    /// Print each message, then accept it.
    #[default]
    Print,
    /// Print and accept each message, then send its text back to its chat
    /// (pipelined) and print a `sent` line when the send resolves.
    Echo,
    /// A two-way bridge: commands as JSON lines on stdin, one `result` line
    /// per command on stdout beside the event lines; messages wait for the
    /// caller's `accept` / `reject`. End of stdin shuts down.
    Stdio,
}

impl Agent {
    /// The value as written on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Agent::Print => "print",
            Agent::Echo => "echo",
            Agent::Stdio => "stdio",
        }
    }
}

/// Log line format on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `run` and `config check`.
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// Connector base URL (env GATEWAY_RELAY_URL). http/https/ws/wss, any case;
    /// `/relay` is appended and https becomes wss (spec §1.2). No query,
    /// fragment or credentials.
    #[arg(long, value_name = "URL")]
    pub connector: Option<String>,

    /// Platform this gateway fronts; repeat for several, the first is the
    /// session default (env GATEWAY_RELAY_PLATFORMS, a comma list). None: one
    /// identity `relay`.
    #[arg(long = "platform", value_name = "NAME")]
    pub platforms: Vec<String>,

    /// Bot id of the platform at the same position; a platform without one
    /// gets "" (env GATEWAY_RELAY_BOT_IDS, JSON `{"<platform>":{"botId":"..."}}`).
    #[arg(long = "bot-id", value_name = "ID")]
    pub bot_ids: Vec<String>,

    /// Gateway id for the upgrade bearer token (env GATEWAY_RELAY_ID).
    #[arg(long, value_name = "ID")]
    pub gateway_id: Option<String>,

    /// Name of the environment variable holding the secret [default:
    /// GATEWAY_RELAY_SECRET]. The secret itself is never taken from the
    /// command line or a config file. Naming a variable that is unset or blank
    /// is an error.
    #[arg(long, value_name = "VAR")]
    pub secret_env: Option<String>,

    /// How message events are answered.
    #[arg(long, value_enum, default_value_t = Agent::Print)]
    pub agent: Agent,

    /// A relay component `.wasm` file instead of the built-in one.
    #[arg(long, value_name = "PATH")]
    pub component: Option<PathBuf>,

    /// Benchmarking only: run the same relay-core state machine compiled
    /// into this binary instead of the sandboxed component (no memory cap,
    /// no CPU budget, no trap recovery). It isolates what the sandbox costs;
    /// see docs/benchmarks.md.
    #[arg(long, conflicts_with = "component")]
    pub native: bool,

    /// Log format on stderr (filter with RUST_LOG; default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Serve the metrics in the Prometheus text format at
    /// http://ADDR/metrics (env RELAY_METRICS_LISTEN, --config key
    /// `metrics_listen`), e.g. 127.0.0.1:9464. No authentication and no
    /// TLS: keep it on loopback or a private network.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,

    /// PEM file of extra CA certificates trusted for a wss:// connector (a
    /// private CA), on top of the bundled Mozilla roots (env
    /// GATEWAY_RELAY_CA_FILE, --config key `ca_file`).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// Where compiled code is cached between runs (env RELAY_CACHE_DIR,
    /// --config key `cache_dir`) [default: $XDG_CACHE_HOME/relay-host, else
    /// $HOME/.cache/relay-host]. Created with mode 0700; a directory others
    /// may write is refused with a warning (the component is compiled).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Compile the component in this process; no cache read or written.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,

    /// The operator's egress knobs as a JSON object, e.g.
    /// '{"slack":{"rich_blocks":true,"unfurl_links":false}}' (--config table
    /// `platform_extra`, which this replaces). See docs/cli.md.
    #[arg(long, value_name = "JSON")]
    pub platform_extra: Option<String>,

    /// The nonce of this gateway's prompt ids: 6 lowercase hex digits
    /// (--config key `prompt_nonce`) [default: drawn at start]. Set it to
    /// keep prompt buttons working across restarts of the process.
    #[arg(long, value_name = "HEX")]
    pub prompt_nonce: Option<String>,

    /// JSON file holding the gateway's Discord slash commands, an array of
    /// `{name, description, options?}` sent on the Discord hello
    /// (--config key `command_manifest_file`). Unreadable or not a JSON
    /// array: exit 2; bad entries are skipped by the component with a
    /// warning.
    #[arg(long = "command-manifest", value_name = "FILE")]
    pub command_manifest: Option<PathBuf>,

    /// Turn the media client on (spec §9.1): inbound attachments are
    /// downloaded into DIR and handed over as local paths, and `send_media`
    /// can upload local files (env GATEWAY_RELAY_MEDIA_DIR, --config key
    /// `media_dir`; the `media_*` keys tune it). Created with mode 0700.
    /// Unset: no media client.
    #[arg(long, value_name = "DIR")]
    pub media_dir: Option<PathBuf>,

    /// TOML file with timers, bounds and host limits (see docs/cli.md). Flags
    /// and environment variables override it; it must not contain `secret`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Flags of `inspect`.
#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// A relay component `.wasm` file instead of the built-in one.
    #[arg(long, value_name = "PATH")]
    pub component: Option<PathBuf>,

    /// Print one JSON object (fixed schema, see below) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `component`.
#[derive(Debug, Clone, Args)]
pub struct ComponentArgs {
    /// Where to write the component; `-` writes the bytes to stdout.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Flags of `demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Log format on stderr (filter with RUST_LOG; default `warn` for the demo).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

const RUN_AFTER_HELP: &str = "\
Output (stdout carries only JSON lines, one object per line, flushed per line;
all logs go to stderr):
  {\"kind\":\"message\",\"delivery\":N,\"buffer_id\":\"...\"|null,\"event\":{...normalised event, nested \"source\"...}}
  {\"kind\":\"interrupt\",\"session_key\":\"...\",\"chat_id\":\"...\"}
  {\"kind\":\"state\",\"state\":\"connecting|handshaking|ready|reconnecting|idle|dormant|disabled|stopped\",\"detail\":\"...\"}
  {\"kind\":\"fatal\",\"code\":\"...\",\"message\":\"...\",\"retryable\":true|false}
  {\"kind\":\"sent\",\"chat_id\":\"...\",\"result\":{\"success\":..,\"message_id\":..,\"error\":..,\"code\":..,
                \"ambiguous\":..,\"declined\":..,\"thread_id\":..,\"auto_thread_name\":..}}   (--agent echo)
  {\"kind\":\"prompt_answer\",\"prompt_id\":\"...\",\"prompt_kind\":\"...\",\"option_id\":\"...\",\"chat_id\":\"...\",
                \"user_id\":..,\"prompt_message_id\":..,\"choice\":..,\"text_capture\":..,\"event\":{...}}
  Each message is accepted only after its line is flushed. --agent echo answers
  it with send(chat_id, text) without waiting for earlier sends to resolve.

Environment (flags override the environment, which overrides --config):
  GATEWAY_RELAY_URL        connector base URL (--connector)
  GATEWAY_RELAY_ID         gateway id (--gateway-id)
  GATEWAY_RELAY_PLATFORMS  comma list of platforms (--platform); items trimmed, empties dropped
  GATEWAY_RELAY_BOT_IDS    JSON {\"<platform>\":{\"botId\":\"...\"}} (--bot-id); malformed: warning, no bot ids
  GATEWAY_RELAY_SECRET     the secret (or the variable named by --secret-env); trimmed
  RELAY_METRICS_LISTEN     IP:PORT of the Prometheus /metrics listener (--metrics-listen)
  GATEWAY_RELAY_CA_FILE    PEM file of extra CA certificates for wss:// (--ca-file)
  GATEWAY_RELAY_MEDIA_DIR  media client directory; unset: no media client (--media-dir)
  RELAY_CACHE_DIR          compilation cache directory (--cache-dir)
  RUST_LOG                 log filter (default info)
  Without a gateway id and a secret the dial is unauthenticated (warning on stderr).

Exit codes:
  0  stopped by SIGINT/SIGTERM (the adapter goes idle, drains and closes; about 5 s at most)
  1  any other fatal condition that ends the adapter (unreadable or invalid
     component, adapter stopped unexpectedly, stdout closed)
  2  usage or configuration error (bad URL, more --bot-id than platforms,
     named secret variable unset or blank, unreadable or non-array --command-manifest,
     a media_* key without a media directory, bad --config file, refused by the
     component)
  3  relay disabled: the connector revoked the credentials (terminal 4401);
     the last stderr line is `relay-host: disabled: <message>`
  A 4401 before any successful handshake is retried with backoff, never an exit.
  The adapter re-dials after any other close, so `run` keeps running until a signal.

Metrics (--metrics-listen IP:PORT): `GET /metrics` answers in the Prometheus text
format; every metric has the label adapter=\"relay-N\". Counters:
relay_frames_in_total{type}, relay_frames_out_total{type},
relay_skipped_lines_total{reason}, relay_dials_total, relay_reconnects_total,
relay_unauthorized_total, relay_acks_total, relay_dedupe_hits_total,
relay_deliveries_total, relay_outbound_timeouts_total, relay_guest_restarts_total.
Gauges: relay_pending, relay_undelivered, relay_routes, relay_seen_keys,
relay_guest_memory_bytes, relay_guest_memory_peak_bytes,
relay_guest_memory_limit_bytes, relay_guest_call_max_seconds, relay_read_held_bytes. Histogram:
relay_outbound_latency_seconds{op}. Refreshed at most every 250 ms (1 s when
idle). The listener has no authentication: keep it on loopback. A listener that
cannot bind exits 1.";

const INSPECT_AFTER_HELP: &str = "\
--json prints one object with exactly these keys:
  {\"api_version\":\"0.2.0\",\"package\":\"hermes:relay@0.2.0\",\"world\":\"relay-adapter\",
   \"exports\":[\"hermes:relay/adapter@0.2.0\"],\"imports\":[\"hermes:relay/host@0.2.0\",\"wasi:...\"],
   \"functions\":[\"api-version\",\"start\",...],\"host_supported\":true,\"size_bytes\":N}
host_supported: whether this relay-host binds the component's WIT version (0.1 and 0.2).
Exit codes: 0 ok, 1 the component cannot be read, compiled or called, 2 usage error.";

const COMPONENT_AFTER_HELP: &str = "\
Writes the component this binary runs (the same bytes, not a rebuild) to FILE,
atomically (a temporary file beside it, then a rename), and prints one JSON line:
  {\"path\":\"...\",\"size_bytes\":N,\"sha256\":\"...\",\"api_version\":\"0.2.0\"}
Describe it (or any other component file) with `relay-host inspect --component FILE`;
bind it from another host with the WIT in wit/v0.2/ (docs/wit.md).
Exit codes: 0 written, 1 cannot write, 2 usage error.";

const DEMO_AFTER_HELP: &str = "\
Starts the stub connector on 127.0.0.1 (Discord descriptor, bearer verification
on), runs the built-in component against it and prints each step with the
frames exchanged: handshake, a guild message and its reply, a DM, a slash
command via passthrough_forward, interrupts both ways, a buffered replay with
inbound_ack, and a graceful shutdown with going_idle. Exits 0 when every step
checked out, 1 naming the step that failed.";
