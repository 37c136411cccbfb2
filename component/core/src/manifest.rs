//! The Discord command manifest (spec §9.6, §2.2): the gateway's slash
//! commands, validated once at start and sent on the Discord `hello` as
//! `command_manifest`. The content is the gateway's; the shape rules are
//! Discord's, applied here so a bad entry is skipped with a reason instead
//! of failing the connector's registration. Nothing here ever fails the
//! handshake.

use serde_json::{Map, Value};

/// Discord's limit on global commands.
pub const MAX_COMMANDS: usize = 100;
/// Discord's limit on options (and choices) per level.
pub const MAX_OPTIONS: usize = 25;
/// Longest description, in UTF-16 code units.
pub const MAX_DESCRIPTION_UTF16: usize = 100;

/// A validated manifest and what was dropped from it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifest {
    /// The commands to send (empty: the `hello` goes without a manifest).
    pub commands: Vec<Value>,
    /// One line per skipped entry or whole-manifest problem, for the log.
    pub warnings: Vec<String>,
}

/// `[a-z0-9_-]{1,32}`: a command or option name.
pub fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
}

/// `text` cut to at most [`MAX_DESCRIPTION_UTF16`] UTF-16 code units, never
/// inside a character.
pub fn truncate_utf16(text: &str) -> String {
    let mut units = 0;
    let mut out = String::new();
    for c in text.chars() {
        units += c.len_utf16();
        if units > MAX_DESCRIPTION_UTF16 {
            break;
        }
        out.push(c);
    }
    out
}

/// Parses and validates the manifest text (a JSON array of `{name,
/// description, options?}`; `""` is none). Invalid commands are skipped
/// (a warning each), and so are duplicates of a name already kept and
/// commands past [`MAX_COMMANDS`]; text that is not a JSON array drops the
/// whole manifest with one warning.
pub fn parse(text: &str) -> Manifest {
    let mut manifest = Manifest::default();
    if text.trim().is_empty() {
        return manifest;
    }
    let entries = match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(entries)) => entries,
        _ => {
            manifest.warnings.push(
                "relay command manifest is not a JSON array; the hello goes without it".into(),
            );
            return manifest;
        }
    };
    let mut names: Vec<String> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        match command(entry) {
            Ok(cmd) => {
                let name = cmd
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                if names.contains(&name) {
                    manifest.warnings.push(format!(
                        "relay command manifest: duplicate command {name:?} skipped"
                    ));
                } else if manifest.commands.len() >= MAX_COMMANDS {
                    manifest.warnings.push(format!(
                        "relay command manifest: command {name:?} skipped (Discord allows {MAX_COMMANDS})"
                    ));
                } else {
                    names.push(name);
                    manifest.commands.push(cmd);
                }
            }
            Err(why) => manifest
                .warnings
                .push(format!("relay command manifest: entry {i} skipped: {why}")),
        }
    }
    manifest
}

fn name_of(obj: &Map<String, Value>, what: &str) -> Result<String, String> {
    match obj.get("name").and_then(Value::as_str) {
        Some(name) if valid_name(name) => Ok(name.to_owned()),
        Some(name) => Err(format!(
            "{what} name {:?} does not match [a-z0-9_-]{{1,32}}",
            name.chars().take(40).collect::<String>()
        )),
        None => Err(format!("{what} has no name")),
    }
}

fn description_of(obj: &Map<String, Value>, name: &str) -> Result<String, String> {
    match obj
        .get("description")
        .and_then(Value::as_str)
        .map(str::trim)
    {
        Some(d) if !d.is_empty() => Ok(truncate_utf16(d)),
        _ => Err(format!("{name:?} has no description")),
    }
}

/// One command: `name`, `description` (truncated), `options` validated.
fn command(entry: &Value) -> Result<Value, String> {
    let obj = entry.as_object().ok_or("not an object")?;
    let name = name_of(obj, "command")?;
    let description = description_of(obj, &name)?;
    let mut out = Map::new();
    out.insert("name".into(), Value::from(name.clone()));
    out.insert("description".into(), Value::from(description));
    if let Some(options) = obj.get("options") {
        out.insert("options".into(), options_of(options, &name, 0)?);
    }
    Ok(Value::Object(out))
}

/// Discord option objects (types 1-11), kept verbatim but for a truncated
/// description; sub-commands (1) and groups (2) nest at most two levels.
fn options_of(options: &Value, owner: &str, depth: usize) -> Result<Value, String> {
    let list = options
        .as_array()
        .ok_or_else(|| format!("{owner:?} options are not an array"))?;
    if list.len() > MAX_OPTIONS {
        return Err(format!("{owner:?} has more than {MAX_OPTIONS} options"));
    }
    let mut out = Vec::with_capacity(list.len());
    let mut seen: Vec<&str> = Vec::new();
    for option in list {
        let obj = option
            .as_object()
            .ok_or_else(|| format!("an option of {owner:?} is not an object"))?;
        let name = name_of(obj, "option")?;
        if seen.contains(&name.as_str()) {
            return Err(format!("{owner:?} has two options named {name:?}"));
        }
        let kind = obj
            .get("type")
            .and_then(Value::as_u64)
            .filter(|t| (1..=11).contains(t))
            .ok_or_else(|| format!("option {name:?} of {owner:?} has no type in 1..=11"))?;
        let mut kept = obj.clone();
        kept.insert(
            "description".into(),
            Value::from(description_of(obj, &name)?),
        );
        if let Some(required) = obj.get("required")
            && !required.is_boolean()
        {
            return Err(format!("option {name:?}: `required` is not a boolean"));
        }
        if let Some(choices) = obj.get("choices") {
            let valid = choices.as_array().is_some_and(|c| {
                c.len() <= MAX_OPTIONS
                    && c.iter().all(|choice| {
                        choice.get("name").and_then(Value::as_str).is_some()
                            && choice
                                .get("value")
                                .is_some_and(|v| v.is_string() || v.is_number())
                    })
            });
            if !valid {
                return Err(format!("option {name:?}: bad `choices`"));
            }
        }
        match (kind, obj.get("options")) {
            (1 | 2, Some(nested)) if depth < 2 => {
                kept.insert("options".into(), options_of(nested, &name, depth + 1)?);
            }
            (1 | 2, Some(_)) => return Err(format!("option {name:?} nests too deep")),
            (_, Some(_)) => {
                return Err(format!("option {name:?}: only sub-commands take options"));
            }
            _ => {}
        }
        seen.push(obj.get("name").and_then(Value::as_str).unwrap_or_default());
        out.push(Value::Object(kept));
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn valid_entries_pass_and_descriptions_are_cut_in_utf16_units() {
        let long = "é".repeat(99) + "😀x";
        let m = parse(
            &json!([
                {"name":"model","description":long,"options":[
                    {"type":3,"name":"name","description":"Model","required":false,
                     "choices":[{"name":"a","value":"a"}]}]},
                {"name":"disk-cleanup","description":"Clean","options":[
                    {"type":1,"name":"run","description":"Run it","options":[
                        {"type":3,"name":"path","description":"Where"}]}]}
            ])
            .to_string(),
        );
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        assert_eq!(m.commands.len(), 2);
        let d = m.commands[0]["description"].as_str().unwrap_or_default();
        // 99 units of é, then the emoji (2 units) would pass 100: cut.
        assert_eq!(d, "é".repeat(99));
        assert_eq!(m.commands[1]["options"][0]["options"][0]["name"], "path");
    }

    #[test]
    fn bad_entries_and_duplicates_are_skipped_with_a_reason() {
        let m = parse(
            &json!([
                {"name":"Bad Name","description":"x"},
                {"name":"ok","description":"x"},
                {"name":"ok","description":"again"},
                {"name":"nodesc"},
                {"name":"opt","description":"x","options":[{"type":99,"name":"a","description":"b"}]},
                {"name":"flat","description":"x","options":[{"type":3,"name":"a","description":"b","options":[]}]},
                7
            ])
            .to_string(),
        );
        assert_eq!(m.commands, vec![json!({"name":"ok","description":"x"})]);
        assert_eq!(m.warnings.len(), 6, "{:?}", m.warnings);
        assert!(m.warnings[1].contains("duplicate"));
    }

    #[test]
    fn not_an_array_drops_the_manifest() {
        let m = parse(r#"{"name":"x"}"#);
        assert!(m.commands.is_empty());
        assert_eq!(m.warnings.len(), 1);
        assert_eq!(parse(""), Manifest::default());
        let many: Vec<Value> = (0..120)
            .map(|i| json!({"name":format!("c{i}"),"description":"d"}))
            .collect();
        let m = parse(&Value::Array(many).to_string());
        assert_eq!(m.commands.len(), MAX_COMMANDS);
        assert_eq!(m.warnings.len(), 20);
    }

    #[test]
    fn names() {
        assert!(valid_name("reload-mcp") && valid_name("a_1"));
        assert!(!valid_name("") && !valid_name("Up") && !valid_name(&"a".repeat(33)));
    }
}
