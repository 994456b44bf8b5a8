//! The match stage and the Loki-style label selector it guards its sub-list
//! with.

use regex::Regex;

use super::{MatchAction, Record, Stage, StageConfig, StageStats};
use crate::sample::Labels;

#[derive(Debug)]
pub(super) struct MatchStage {
    selector: Selector,
    action: MatchAction,
    stages: Vec<Stage>,
}

impl MatchStage {
    pub(super) fn new(
        selector: &str,
        action: MatchAction,
        stages: &[StageConfig],
        here: &str,
    ) -> Result<MatchStage, Vec<String>> {
        let selector = Selector::parse(selector).map_err(|e| vec![format!("{here}: selector: {e}")])?;
        let mut sub = Vec::new();
        let mut problems = Vec::new();
        for (i, s) in stages.iter().enumerate() {
            if matches!(s, StageConfig::Multiline { .. }) {
                problems.push(format!("{here}.stages[{i}]: multiline cannot be inside match"));
                continue;
            }
            match super::compile(s, &format!("{here}.stages[{i}]")) {
                Ok(s) => sub.push(s),
                Err(e) => problems.extend(e),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(MatchStage { selector, action, stages: sub })
    }

    /// False when the record was dropped, here or by the sub-list.
    pub(super) fn run(&self, rec: &mut Record, stats: &StageStats) -> bool {
        if self.selector.matches(&rec.labels) {
            if self.action == MatchAction::Drop {
                stats.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return false;
            }
            if !super::run_stages(&self.stages, rec, stats) {
                return false;
            }
        }
        true
    }
}

/// A Loki-style label selector: `{a="b", c!="d", e=~"re", f!~"re"}`.
#[derive(Debug)]
pub struct Selector {
    matchers: Vec<(String, Op, String, Option<Regex>)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Re,
    Nre,
}

impl Selector {
    /// Parses a selector.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let t = text.trim();
        let inner = t
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .ok_or_else(|| format!("{text:?} is not a selector like {{app=\"x\"}}"))?;
        let mut matchers = Vec::new();
        let mut rest = inner.trim();
        while !rest.is_empty() {
            let name_end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            let name = &rest[..name_end];
            if name.is_empty() {
                return Err(format!("expected a label name at {rest:?}"));
            }
            rest = rest[name_end..].trim_start();
            let (op, len) = if rest.starts_with("=~") {
                (Op::Re, 2)
            } else if rest.starts_with("!~") {
                (Op::Nre, 2)
            } else if rest.starts_with("!=") {
                (Op::Ne, 2)
            } else if rest.starts_with('=') {
                (Op::Eq, 1)
            } else {
                return Err(format!("expected =, !=, =~ or !~ after {name:?}"));
            };
            rest = rest[len..].trim_start();
            let body = rest.strip_prefix('"').ok_or_else(|| format!("the value of {name:?} must be quoted"))?;
            let mut value = String::new();
            let mut chars = body.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let end = end.ok_or_else(|| format!("unclosed quote in the value of {name:?}"))?;
            rest = body[end + 1..].trim_start();
            rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
            let re = match op {
                Op::Re | Op::Nre => Some(Regex::new(&format!("^(?:{value})$")).map_err(|e| format!("{name}: {e}"))?),
                _ => None,
            };
            matchers.push((name.to_string(), op, value, re));
        }
        if matchers.is_empty() {
            return Err("a selector needs at least one matcher".into());
        }
        Ok(Selector { matchers })
    }

    /// Whether `labels` satisfy every matcher (a missing label is "").
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matchers.iter().all(|(name, op, value, re)| {
            let v = labels.get(name).unwrap_or("");
            match op {
                Op::Eq => v == value,
                Op::Ne => v != value,
                Op::Re => re.as_ref().is_some_and(|r| r.is_match(v)),
                Op::Nre => re.as_ref().is_some_and(|r| !r.is_match(v)),
            }
        })
    }
}
