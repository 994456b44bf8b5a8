//! The logfmt stage: `key=value key2="quoted value"` pairs become fields,
//! read without copying unquoted values.

use std::collections::BTreeMap;

use super::{Record, StageStats};

#[derive(Debug)]
pub(super) struct LogfmtStage {
    mapping: Vec<(String, String)>,
    source: Option<String>,
}

impl LogfmtStage {
    pub(super) fn new(mapping: &BTreeMap<String, String>, source: &Option<String>) -> LogfmtStage {
        LogfmtStage {
            mapping: mapping
                .iter()
                .map(|(k, v)| (k.clone(), if v.is_empty() { k.clone() } else { v.clone() }))
                .collect(),
            source: source.clone(),
        }
    }

    pub(super) fn run(&self, rec: &mut Record, stats: &StageStats) {
        let Some(text) = rec.source(&self.source) else {
            stats.error(2);
            return;
        };
        let mut found: Vec<(String, String)> = Vec::new();
        let ok = visit_logfmt(text, &mut |k, v| {
            if self.mapping.is_empty() {
                found.push((k.to_string(), v.into_owned()));
            } else {
                for (name, key) in &self.mapping {
                    if key == k {
                        found.push((name.clone(), v.to_string()));
                    }
                }
            }
        });
        if !ok {
            stats.error(2);
        }
        for (k, v) in found {
            rec.set_field(&k, v);
        }
    }
}

/// Parses logfmt pairs; false when the input was malformed (an unclosed
/// quote or a key without a name), with the pairs read up to there.
pub fn parse_logfmt(text: &str) -> (Vec<(String, String)>, bool) {
    let mut out = Vec::new();
    let ok = visit_logfmt(text, &mut |k, v| out.push((k.to_string(), v.into_owned())));
    (out, ok)
}

/// Calls `f` with each logfmt pair without copying unquoted values; false
/// when the input was malformed.
pub fn visit_logfmt<'a>(text: &'a str, f: &mut dyn FnMut(&'a str, std::borrow::Cow<'a, str>)) -> bool {
    use std::borrow::Cow;
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && b[i] != b' ' {
            i += 1;
        }
        let key = &text[ks..i];
        if key.is_empty() {
            return false;
        }
        if i >= b.len() || b[i] == b' ' {
            f(key, Cow::Borrowed(""));
            continue;
        }
        i += 1; // '='
        if i < b.len() && b[i] == b'"' {
            i += 1;
            let vs = i;
            let mut owned: Option<String> = None;
            let mut chunk = i;
            let mut closed = false;
            while i < b.len() {
                match b[i] {
                    b'\\' if i + 1 < b.len() && b[i + 1].is_ascii() => {
                        let v = owned.get_or_insert_with(String::new);
                        v.push_str(&text[chunk..i]);
                        v.push(match b[i + 1] {
                            b'n' => '\n',
                            b't' => '\t',
                            c => c as char,
                        });
                        i += 2;
                        chunk = i;
                    }
                    b'"' => {
                        closed = true;
                        break;
                    }
                    _ => i += 1,
                }
            }
            if !closed {
                return false;
            }
            let value = match owned {
                Some(mut v) => {
                    v.push_str(&text[chunk..i]);
                    Cow::Owned(v)
                }
                None => Cow::Borrowed(&text[vs..i]),
            };
            i += 1; // closing quote
            f(key, value);
        } else {
            let vs = i;
            while i < b.len() && b[i] != b' ' {
                i += 1;
            }
            f(key, Cow::Borrowed(&text[vs..i]));
        }
    }
    true
}
