//! The regex stage: named capture groups of a line (or a field) become fields.

use regex::Regex;

use super::{Record, StageStats};

#[derive(Debug)]
pub(super) struct RegexStage {
    re: Regex,
    names: Vec<String>,
    source: Option<String>,
}

impl RegexStage {
    pub(super) fn new(expression: &str, source: &Option<String>, here: &str) -> Result<RegexStage, Vec<String>> {
        let err = |m: String| vec![format!("{here}: {m}")];
        let re = Regex::new(expression).map_err(|e| err(format!("expression: {e}")))?;
        let names: Vec<String> = re.capture_names().flatten().map(String::from).collect();
        if names.is_empty() {
            return Err(err("expression has no named groups (?P<name>...)".into()));
        }
        Ok(RegexStage { re, names, source: source.clone() })
    }

    pub(super) fn run(&self, rec: &mut Record, stats: &StageStats) {
        let Some(text) = rec.source(&self.source) else {
            stats.error(0);
            return;
        };
        match self.re.captures(text) {
            Some(caps) => {
                let found: Vec<(String, String)> = self
                    .names
                    .iter()
                    .filter_map(|n| caps.name(n).map(|m| (n.clone(), m.as_str().to_string())))
                    .collect();
                for (k, v) in found {
                    rec.set_field(&k, v);
                }
            }
            None => stats.error(0),
        }
    }
}
