//! `${VAR}` and `${VAR:-default}` in configuration files, filled from the
//! process environment first and then from an env file (`--env-file`), so
//! that the environment wins as it does with docker compose.

use std::collections::HashMap;
use std::path::Path;

/// Where variables come from.
#[derive(Clone, Debug, Default)]
pub struct Vars {
    file: HashMap<String, String>,
}

/// A variable that is used but set nowhere and has no default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsetVar {
    pub name: String,
    pub line: usize,
    pub column: usize,
}

impl Vars {
    /// Variables from the process environment only.
    pub fn from_env() -> Self {
        Vars::default()
    }

    /// Variables from the environment, then from `path` (a `.env` file).
    pub fn with_env_file(path: &Path) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read env file {}: {e}", path.display()))?;
        Ok(Vars { file: parse_env_file(&text) })
    }

    /// Variables from an in-memory map standing in for the env file.
    pub fn from_map(file: HashMap<String, String>) -> Self {
        Vars { file }
    }

    /// The value of `name`: the environment, then the env file.
    pub fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().or_else(|| self.file.get(name).cloned())
    }
}

/// Parses a docker-compose style env file: `KEY=VALUE` lines, `#` comments,
/// an optional `export ` prefix and optional single or double quotes.
pub fn parse_env_file(text: &str) -> HashMap<String, String> {
    let mut vars = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else { continue };
        let value = value.trim();
        let value = match value.as_bytes() {
            [b'"', .., b'"'] | [b'\'', .., b'\''] if value.len() >= 2 => &value[1..value.len() - 1],
            _ => value.split(" #").next().unwrap_or("").trim_end(),
        };
        vars.insert(key.trim().to_string(), value.to_string());
    }
    vars
}

/// Replaces every `${VAR}` / `${VAR:-default}` in TOML text. Values are
/// escaped for TOML basic strings (backslash, quote, control characters),
/// so a password with a `"` in it cannot break the file; variables belong
/// inside double-quoted strings. `$$` stands for a literal `$`. Returns the
/// text and every unset variable with its position in the original.
pub fn interpolate(text: &str, vars: &Vars) -> (String, Vec<UnsetVar>) {
    let mut out = String::with_capacity(text.len());
    let mut unset = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
            continue;
        }
        let Some(body_end) = after.strip_prefix('{').and_then(|b| b.find('}')) else {
            out.push('$');
            rest = after;
            continue;
        };
        let body = &after[1..body_end + 1];
        let (name, default) = match body.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (body, None),
        };
        match vars.get(name).filter(|v| default.is_none() || !v.is_empty()).or(default.map(str::to_string)) {
            Some(value) => escape_into(&mut out, &value),
            None => {
                let offset = text.len() - rest.len() + i;
                let (line, column) = line_column(text, offset);
                unset.push(UnsetVar { name: name.to_string(), line, column });
            }
        }
        rest = &after[body_end + 2..];
    }
    out.push_str(rest);
    (out, unset)
}

fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
}

/// 1-based line and column of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        Vars::from_map(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn fills_defaults_escapes_and_reports_unset() {
        let v = vars(&[("VANTAGE_T_A", "x\"y"), ("VANTAGE_T_EMPTY", "")]);
        let text = "a = \"${VANTAGE_T_A}\"\nb = \"${VANTAGE_T_NONE:-15s}\"\nc = \"${VANTAGE_T_EMPTY:-d}\"\n  d = \"${VANTAGE_T_MISSING}\" $$ $x";
        let (out, unset) = interpolate(text, &v);
        assert_eq!(out, "a = \"x\\\"y\"\nb = \"15s\"\nc = \"d\"\n  d = \"\" $ $x");
        assert_eq!(unset, vec![UnsetVar { name: "VANTAGE_T_MISSING".into(), line: 4, column: 8 }]);
    }

    #[test]
    fn environment_wins_over_env_file() {
        std::env::set_var("VANTAGE_T_BOTH", "from-env");
        let v = vars(&[("VANTAGE_T_BOTH", "from-file")]);
        assert_eq!(v.get("VANTAGE_T_BOTH").as_deref(), Some("from-env"));
    }

    #[test]
    fn env_file_syntax() {
        let vars = parse_env_file("# c\nexport A=1\nB=\"two words\"\nC='x=y'\nD=plain # comment\n\nbad line\n");
        assert_eq!(vars["A"], "1");
        assert_eq!(vars["B"], "two words");
        assert_eq!(vars["C"], "x=y");
        assert_eq!(vars["D"], "plain");
        assert_eq!(vars.len(), 4);
    }
}
