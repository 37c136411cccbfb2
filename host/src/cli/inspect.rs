//! `relay-host inspect`: what a relay component is, without dialing anything.
//! Compiles the component on a plain engine, lists its imports and exports
//! from its type, and calls `api-version` on an instance whose WASI has no
//! capabilities and whose `hermes:relay/host` imports trap (a component
//! calling one from `api-version` is broken anyway).

use serde_json::{Value, json};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::args::InspectArgs;
use super::exit::Exit;
use super::logging;

/// The component built into this binary (the one `Plugin::shared` runs).
const BUILTIN: &[u8] = relay_host::EMBEDDED_COMPONENT;

/// The interface the host drives.
const ADAPTER_INTERFACE: &str = "hermes:relay/adapter";
/// The world the host links against (`wit/v*/relay.wit`).
const WORLD: &str = "relay-adapter";

/// What `inspect` reports.
struct Report {
    source: String,
    api_version: String,
    package: String,
    exports: Vec<String>,
    imports: Vec<String>,
    /// Functions of the adapter export (text output only).
    functions: Vec<String>,
    size_bytes: usize,
}

impl Report {
    /// The documented `--json` schema.
    fn to_json(&self) -> Value {
        json!({
            "api_version": self.api_version,
            "package": self.package,
            "world": WORLD,
            "exports": self.exports,
            "imports": self.imports,
            "functions": self.functions,
            "host_supported": self.host_supported(),
            "size_bytes": self.size_bytes,
        })
    }

    /// Whether this host binds the component's version (same major.minor as
    /// one of `SUPPORTED_API_VERSIONS`).
    fn host_supported(&self) -> bool {
        let major_minor = |v: &str| {
            let mut parts = v.trim().split('.');
            (
                parts.next().map(str::to_owned),
                parts.next().map(str::to_owned),
            )
        };
        relay_host::SUPPORTED_API_VERSIONS
            .iter()
            .any(|v| major_minor(v) == major_minor(&self.api_version))
    }
}

/// Runs `inspect`; returns the exit code.
pub fn inspect(args: &InspectArgs) -> Exit {
    let (bytes, source) = match &args.component {
        Some(path) => match std::fs::read(path) {
            Ok(bytes) => (bytes, path.display().to_string()),
            Err(e) => {
                logging::final_line(&format!("fatal: cannot read {}: {e}", path.display()));
                return Exit::Fatal;
            }
        },
        None => (BUILTIN.to_vec(), "built-in".to_string()),
    };
    let report = match examine(&bytes, source) {
        Ok(report) => report,
        Err(e) => {
            logging::final_line(&format!("fatal: {e}"));
            return Exit::Fatal;
        }
    };
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("component    {}", report.source);
        println!("size         {} bytes", report.size_bytes);
        println!(
            "api-version  {} ({})",
            report.api_version,
            if report.host_supported() {
                "this host binds it"
            } else {
                "this host does not bind it"
            }
        );
        println!("package      {}", report.package);
        println!("world        {WORLD}");
        println!("exports");
        for name in &report.exports {
            println!("  {name}");
        }
        println!(
            "  functions (the lanes it offers): {}",
            report.functions.join(", ")
        );
        println!("imports");
        for name in &report.imports {
            println!("  {name}");
        }
    }
    Exit::Ok
}

fn examine(bytes: &[u8], source: String) -> Result<Report, String> {
    let engine = Engine::new(&Config::new()).map_err(|e| format!("engine setup failed: {e:#}"))?;
    let component =
        Component::new(&engine, bytes).map_err(|e| format!("not a valid component: {e:#}"))?;
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(&engine).map(|(n, _)| n.to_string()).collect();
    let exports: Vec<String> = ty.exports(&engine).map(|(n, _)| n.to_string()).collect();
    let adapter = exports
        .iter()
        .find(|name| name.split('@').next() == Some(ADAPTER_INTERFACE))
        .cloned()
        .ok_or_else(|| format!("not a relay component: it does not export {ADAPTER_INTERFACE}"))?;
    let functions: Vec<String> = match ty.get_export(&engine, &adapter).map(|e| e.ty) {
        Some(ComponentItem::ComponentInstance(instance)) => instance
            .exports(&engine)
            .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentFunc(_)))
            .map(|(name, _)| name.to_string())
            .collect(),
        _ => Vec::new(),
    };
    // `hermes:relay/adapter@0.1.0` belongs to package `hermes:relay@0.1.0`.
    let package = match adapter.split_once('@') {
        Some((_, version)) => format!("hermes:relay@{version}"),
        None => "hermes:relay".to_string(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let api_version = rt
        .block_on(api_version(&engine, &component, &adapter))
        .map_err(|e| format!("cannot call api-version: {e:#}"))?;
    Ok(Report {
        source,
        api_version,
        package,
        exports,
        imports,
        functions,
        size_bytes: bytes.len(),
    })
}

struct Bare {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

async fn api_version(
    engine: &Engine,
    component: &Component,
    adapter: &str,
) -> wasmtime::Result<String> {
    let mut linker = Linker::<Bare>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    // The relay imports trap; WASI is the real (capability-less) one.
    let ty = component.component_type();
    for (name, item) in ty.imports(engine) {
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            continue;
        };
        if !name.starts_with("hermes:relay/") {
            continue;
        }
        let mut stubs = linker.instance(name)?;
        for (func, item) in instance.exports(engine) {
            if let ComponentItem::ComponentFunc(_) = item.ty {
                let what = format!("{name}#{func}");
                stubs.func_new(func, move |_, _, _, _| {
                    Err(wasmtime::format_err!(
                        "inspect: {what} called during api-version"
                    ))
                })?;
            }
        }
    }
    let mut store = Store::new(
        engine,
        Bare {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        },
    );
    let instance = linker.instantiate_async(&mut store, component).await?;
    let interface = instance
        .get_export_index(&mut store, None, adapter)
        .ok_or_else(|| wasmtime::format_err!("{adapter} is not an instance export"))?;
    let func = instance
        .get_export_index(&mut store, Some(&interface), "api-version")
        .ok_or_else(|| wasmtime::format_err!("{adapter} has no api-version"))?;
    let api_version = instance.get_typed_func::<(), (String,)>(&mut store, &func)?;
    let (version,) = api_version.call_async(&mut store, ()).await?;
    Ok(version)
}
