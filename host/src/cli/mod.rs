//! The `relay-host` binary's modules (declared from `main.rs`, not part of
//! the library).

pub mod args;
mod component;
mod demo;
mod exit;
mod inspect;
mod lines;
mod logging;
mod metrics;
mod output;
mod run;
mod settings;
mod stdio;

use std::process::ExitCode;

use args::{Cli, Command, ConfigCommand, RunArgs};
use exit::Exit;

/// Runs the parsed command line; returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    let exit = match cli.command {
        Command::Run(args) => run_command(&args),
        Command::Config(ConfigCommand::Check(args)) => config_check(&args),
        Command::Component(args) => {
            logging::init(args::LogFormat::Text, "warn");
            component::component(&args)
        }
        Command::Inspect(args) => {
            logging::init(args::LogFormat::Text, "warn");
            inspect::inspect(&args)
        }
        Command::Demo(args) => {
            logging::init(args.log_format, "warn");
            match runtime() {
                Ok(rt) => rt.block_on(demo::demo()),
                Err(exit) => exit,
            }
        }
    };
    exit.into()
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Resolves the settings, logging the warnings; `Err` is exit 2.
fn resolve(args: &RunArgs) -> Result<settings::Settings, Exit> {
    match settings::resolve(args, &process_env) {
        Ok(settings) => {
            for warning in &settings.warnings {
                tracing::warn!("{warning}");
            }
            Ok(settings)
        }
        Err(e) => {
            logging::error_line(&format!("error: {e}"));
            Err(Exit::Usage)
        }
    }
}

fn run_command(args: &RunArgs) -> Exit {
    logging::init(args.log_format, "info");
    let settings = match resolve(args) {
        Ok(settings) => settings,
        Err(exit) => return exit,
    };
    match runtime() {
        Ok(rt) => {
            // On a worker, not the main thread: the adapter's actor and the
            // event loop then share a thread instead of waking each other
            // across threads on every event.
            let exit = rt.block_on(async {
                tokio::spawn(run::run(settings)).await.unwrap_or_else(|e| {
                    logging::final_line(&format!("fatal: the event loop failed: {e}"));
                    Exit::Fatal
                })
            });
            // Connection tasks may still be closing; do not wait for them.
            rt.shutdown_background();
            exit
        }
        Err(exit) => exit,
    }
}

fn config_check(args: &RunArgs) -> Exit {
    logging::init(args.log_format, "info");
    let settings = match resolve(args) {
        Ok(settings) => settings,
        Err(exit) => return exit,
    };
    let json = settings::effective_json(&settings);
    let text = serde_json::to_string_pretty(&json).unwrap_or_else(|_| json.to_string());
    println!("{text}");
    Exit::Ok
}

fn runtime() -> Result<tokio::runtime::Runtime, Exit> {
    // One adapter's tasks (actor, socket, event loop) on one CPU: a
    // single-threaded runtime skips the work-stealing machinery.
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = if one_cpu {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build().map_err(|e| {
        logging::final_line(&format!("fatal: cannot start the async runtime: {e}"));
        Exit::Fatal
    })
}
