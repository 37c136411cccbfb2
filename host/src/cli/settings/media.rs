//! The media client's settings (spec §9.1): a directory (`--media-dir`,
//! then [`ENV_MEDIA_DIR`], then the `--config` key `media_dir`) turns it
//! on, and the `media_*` keys of the `--config` file tune it. Apart from
//! `settings.rs` to keep that file readable; a child module so it reads the
//! file's keys where they are declared.

use std::path::{Path, PathBuf};
use std::time::Duration;

use relay_host::MediaOptions;
use serde_json::{Value, json};

use super::{ConfigError, FileConfig, err, millis};

/// The media directory (`--media-dir`).
pub const ENV_MEDIA_DIR: &str = "GATEWAY_RELAY_MEDIA_DIR";

/// The media options, or `None` (no client) when no source names a
/// directory. `env_dir` is the environment's value, blank already dropped.
/// A `media_*` key without a directory is an error naming it: it would
/// silently do nothing.
pub(super) fn resolve(
    flag: Option<&Path>,
    env_dir: Option<String>,
    file: &FileConfig,
) -> Result<Option<MediaOptions>, ConfigError> {
    let dir = match (flag, env_dir, &file.media_dir) {
        (Some(dir), _, _) => Some(("--media-dir", dir.to_path_buf())),
        (None, Some(dir), _) => Some((ENV_MEDIA_DIR, PathBuf::from(dir))),
        (None, None, Some(dir)) => Some(("media_dir", dir.clone())),
        (None, None, None) => None,
    };
    let Some((source, dir)) = dir else {
        let given: Vec<&str> = [
            (
                "media_allow_private_addresses",
                file.media_allow_private_addresses.is_some(),
            ),
            ("media_max_bytes", file.media_max_bytes.is_some()),
            ("media_timeout_ms", file.media_timeout_ms.is_some()),
            ("media_retention_ms", file.media_retention_ms.is_some()),
            ("media_max_files", file.media_max_files.is_some()),
            (
                "media_max_total_bytes",
                file.media_max_total_bytes.is_some(),
            ),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect();
        if given.is_empty() {
            return Ok(None);
        }
        return err(format!(
            "--config: {} without media_dir: the media client is off unless `media_dir`, \
             --media-dir or {ENV_MEDIA_DIR} names its directory",
            given.join(", ")
        ));
    };
    if dir.as_os_str().is_empty() {
        return err(format!("{source} must not be empty"));
    }
    // Absolute, so the paths handed to the gateway in `media_urls` do not
    // depend on this process's working directory.
    let dir = match std::path::absolute(&dir) {
        Ok(dir) => dir,
        Err(e) => return err(format!("{source} {}: {e}", dir.display())),
    };
    let mut options = MediaOptions::new(dir);
    if let Some(allow) = file.media_allow_private_addresses {
        options.allow_private_addresses = allow;
    }
    if let Some(bytes) = file.media_max_bytes {
        options.max_bytes = bytes;
    }
    if let Some(ms) = file.media_timeout_ms {
        options.timeout = Duration::from_millis(ms);
    }
    if let Some(ms) = file.media_retention_ms {
        options.retention = Duration::from_millis(ms);
    }
    if let Some(files) = file.media_max_files {
        options.max_files = files;
    }
    if let Some(bytes) = file.media_max_total_bytes {
        options.max_total_bytes = bytes;
    }
    // The bounds are `AdapterConfig::validate`'s, checked with the rest.
    Ok(Some(options))
}

/// The library's `media.*` names in `validate`'s problems as the
/// `--config` keys (`media.timeout` -> `media_timeout_ms`).
pub(super) fn config_keys(problems: &str) -> String {
    problems
        .replace("media.timeout", "media_timeout_ms")
        .replace("media.retention", "media_retention_ms")
        .replace("media.", "media_")
}

/// Adds the media keys to `config check`'s object: their effective values,
/// or all null when there is no media client.
pub(super) fn effective(effective: &mut Value, media: Option<&MediaOptions>) {
    let values = match media {
        Some(m) => json!({
            "media_dir": m.dir.display().to_string(),
            "media_allow_private_addresses": m.allow_private_addresses,
            "media_max_bytes": m.max_bytes,
            "media_timeout_ms": millis(m.timeout),
            "media_retention_ms": millis(m.retention),
            "media_max_files": m.max_files,
            "media_max_total_bytes": m.max_total_bytes,
        }),
        None => json!({
            "media_dir": null,
            "media_allow_private_addresses": null,
            "media_max_bytes": null,
            "media_timeout_ms": null,
            "media_retention_ms": null,
            "media_max_files": null,
            "media_max_total_bytes": null,
        }),
    };
    if let (Value::Object(target), Value::Object(values)) = (effective, values) {
        target.extend(values);
    }
}
