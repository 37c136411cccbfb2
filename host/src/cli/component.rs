//! `relay-host component --out FILE`: writes the built-in component, so other
//! hosts (the Python host, any wasmtime embedding) load the very bytes this
//! binary runs.

use std::io::Write as _;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::args::ComponentArgs;
use super::exit::Exit;
use super::logging;

/// Runs `component`; returns the exit code.
pub fn component(args: &ComponentArgs) -> Exit {
    let bytes = relay_host::EMBEDDED_COMPONENT;
    let digest = Sha256::digest(bytes);
    let sha256: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    if args.out.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
            logging::final_line(&format!("fatal: cannot write the component to stdout: {e}"));
            return Exit::Fatal;
        }
        return Exit::Ok;
    }
    if let Err(e) = write_atomically(&args.out, bytes) {
        logging::final_line(&format!("fatal: cannot write {}: {e}", args.out.display()));
        return Exit::Fatal;
    }
    // The one stdout line: where, how big, which bytes, which interface.
    println!(
        "{}",
        serde_json::json!({
            "path": args.out.display().to_string(),
            "size_bytes": bytes.len(),
            "sha256": sha256,
            "api_version": relay_host::HOST_API_VERSION,
        })
    );
    Exit::Ok
}

/// Writes `bytes` beside `path` and renames, so a reader (a gateway loading
/// the file while it is refreshed) never sees half a component.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the path names no file"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let written = std::fs::File::create(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    match written.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}
