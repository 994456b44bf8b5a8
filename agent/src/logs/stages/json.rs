//! The json stage: fields of a JSON object (top-level keys or dotted paths)
//! become fields.

use std::collections::BTreeMap;

use super::{Record, StageStats};

#[derive(Debug)]
pub(super) struct JsonStage {
    paths: Vec<(String, Vec<String>)>,
    source: Option<String>,
}

impl JsonStage {
    pub(super) fn new(expressions: &BTreeMap<String, String>, source: &Option<String>) -> JsonStage {
        JsonStage {
            paths: expressions
                .iter()
                .map(|(k, v)| {
                    let path = if v.is_empty() { k.as_str() } else { v.as_str() };
                    (k.clone(), path.split('.').map(String::from).collect())
                })
                .collect(),
            source: source.clone(),
        }
    }

    pub(super) fn run(&self, rec: &mut Record, stats: &StageStats) {
        let Some(text) = rec.source(&self.source) else {
            stats.error(1);
            return;
        };
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(map)) => {
                if self.paths.is_empty() {
                    for (k, v) in &map {
                        rec.set_field(k, json_text(v));
                    }
                } else {
                    for (name, path) in &self.paths {
                        let mut v = map.get(&path[0]);
                        for key in &path[1..] {
                            v = v.and_then(|v| v.get(key));
                        }
                        if let Some(v) = v {
                            rec.set_field(name, json_text(v));
                        }
                    }
                }
            }
            _ => stats.error(1),
        }
    }
}

fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}
