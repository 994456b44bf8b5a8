//! Prometheus relabeling: the same rules, defaults and edge cases as
//! Prometheus's `relabel_config`, applied to targets before a scrape and to
//! samples after it (and by sinks that relabel what they send).
//!
//! Defaults as in Prometheus: action `replace`, separator `;`, regex `(.*)`
//! (always anchored at both ends), replacement `$1`.

use std::borrow::Cow;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::sample::{Labels, Text};

/// Whether `name` is a valid Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One relabel rule as written in the config (Prometheus's field names).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    /// Labels whose values are joined with `separator` and matched.
    #[serde(default)]
    pub source_labels: Vec<String>,
    /// Joins the source values; `;` when unset.
    #[serde(default)]
    pub separator: Option<String>,
    /// Matched against the whole joined value; `(.*)` when unset.
    #[serde(default)]
    pub regex: Option<String>,
    /// Modulus of the `hashmod` action.
    #[serde(default)]
    pub modulus: Option<u64>,
    /// Label written by `replace`, `hashmod`, `lowercase`, `uppercase`,
    /// compared by `keepequal` and `dropequal`.
    #[serde(default)]
    pub target_label: Option<String>,
    /// Value written by `replace` (and name written by `labelmap`); `$1`
    /// when unset.
    #[serde(default)]
    pub replacement: Option<String>,
    /// What the rule does; `replace` when unset.
    #[serde(default)]
    pub action: Option<String>,
}

const DEFAULT_SEPARATOR: &str = ";";
const DEFAULT_REGEX: &str = "(.*)";
const DEFAULT_REPLACEMENT: &str = "$1";

/// The relabel actions Prometheus knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Replace,
    Keep,
    Drop,
    KeepEqual,
    DropEqual,
    HashMod,
    LabelMap,
    LabelDrop,
    LabelKeep,
    Lowercase,
    Uppercase,
}

impl Action {
    fn parse(text: &str) -> Option<Action> {
        // Prometheus accepts the action in any case.
        Some(match text.to_ascii_lowercase().as_str() {
            "replace" => Action::Replace,
            "keep" => Action::Keep,
            "drop" => Action::Drop,
            "keepequal" => Action::KeepEqual,
            "dropequal" => Action::DropEqual,
            "hashmod" => Action::HashMod,
            "labelmap" => Action::LabelMap,
            "labeldrop" => Action::LabelDrop,
            "labelkeep" => Action::LabelKeep,
            "lowercase" => Action::Lowercase,
            "uppercase" => Action::Uppercase,
            _ => return None,
        })
    }
}

/// One compiled rule.
#[derive(Clone, Debug)]
struct Rule {
    action: Action,
    source_labels: Vec<String>,
    separator: String,
    regex: Regex,
    /// Whether the regex is the default `(.*)`: its only group is then the
    /// whole value (when it has no newline), so no regex needs to run.
    regex_is_default: bool,
    modulus: u64,
    target_label: String,
    /// Whether `target_label` holds `$` references to expand.
    target_is_template: bool,
    replacement: String,
}

/// Compiled rules, applied in order.
#[derive(Clone, Debug, Default)]
pub struct Relabeler {
    rules: Vec<Rule>,
    /// Identifies the rules as written (0 for none): caches of relabeled
    /// series are valid only for the rules they were built with.
    fingerprint: u64,
}

/// Whether `text` is a label name optionally built from `$1`, `${name}`
/// references: Prometheus's check for templated target labels and
/// `labelmap` replacements.
fn is_valid_label_template(text: &str) -> bool {
    // Prometheus: ^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$ . Equivalent:
    // non-empty, and each piece is a word character, or a `$` reference,
    // with the first piece not a digit (a reference may start with one).
    let b = text.as_bytes();
    if b.is_empty() || b[0].is_ascii_digit() {
        return false;
    }
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            i += 1;
            if i < b.len() && b[i] == b'{' {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && word(b[j]) {
                    j += 1;
                }
                if j == start || j >= b.len() || b[j] != b'}' {
                    return false;
                }
                i = j + 1;
            } else {
                let start = i;
                while i < b.len() && word(b[i]) {
                    i += 1;
                }
                if i == start {
                    return false;
                }
            }
        } else if word(b[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

impl Rule {
    fn compile(config: &RelabelConfig) -> Result<Rule, String> {
        let action_text = config.action.as_deref().unwrap_or("replace");
        let action = Action::parse(action_text).ok_or_else(|| {
            format!(
                "unknown action {action_text:?} (use replace, keep, drop, keepequal, dropequal, hashmod, labelmap, labeldrop, labelkeep, lowercase or uppercase)"
            )
        })?;
        let regex_text = config.regex.as_deref().unwrap_or(DEFAULT_REGEX);
        let regex =
            Regex::new(&format!("^(?:{regex_text})$")).map_err(|e| format!("invalid regex {regex_text:?}: {e}"))?;
        let separator = config.separator.clone().unwrap_or_else(|| DEFAULT_SEPARATOR.into());
        let replacement = config.replacement.clone().unwrap_or_else(|| DEFAULT_REPLACEMENT.into());
        let target_label = config.target_label.clone().unwrap_or_default();
        let modulus = config.modulus.unwrap_or(0);
        let name = action_text.to_ascii_lowercase();

        // The same checks, in the same order, as Prometheus's Validate.
        if action == Action::HashMod && modulus == 0 {
            return Err("hashmod requires a non-zero modulus".into());
        }
        let needs_target = matches!(
            action,
            Action::Replace
                | Action::HashMod
                | Action::Lowercase
                | Action::Uppercase
                | Action::KeepEqual
                | Action::DropEqual
        );
        if needs_target && target_label.is_empty() {
            return Err(format!("{name} requires target_label"));
        }
        let target_is_template = target_label.contains('$');
        if action == Action::Replace
            && ((!target_is_template && !is_valid_label_name(&target_label))
                || (target_is_template && !is_valid_label_template(&target_label)))
        {
            return Err(format!("{target_label:?} is not a valid target_label for {name}"));
        }
        let plain_target = matches!(
            action,
            Action::Lowercase | Action::Uppercase | Action::KeepEqual | Action::DropEqual | Action::HashMod
        );
        if plain_target && !is_valid_label_name(&target_label) {
            return Err(format!("{target_label:?} is not a valid target_label for {name}"));
        }
        let no_replacement =
            matches!(action, Action::Lowercase | Action::Uppercase | Action::KeepEqual | Action::DropEqual);
        if no_replacement && replacement != DEFAULT_REPLACEMENT {
            return Err(format!("replacement cannot be set for {name}"));
        }
        if action == Action::LabelMap && !is_valid_label_template(&replacement) {
            return Err(format!("{replacement:?} is not a valid replacement for labelmap"));
        }
        if matches!(action, Action::KeepEqual | Action::DropEqual)
            && (regex_text != DEFAULT_REGEX || modulus != 0 || separator != DEFAULT_SEPARATOR)
        {
            return Err(format!("{name} takes only source_labels and target_label"));
        }
        if matches!(action, Action::LabelDrop | Action::LabelKeep)
            && (!config.source_labels.is_empty()
                || !target_label.is_empty()
                || modulus != 0
                || separator != DEFAULT_SEPARATOR
                || replacement != DEFAULT_REPLACEMENT)
        {
            return Err(format!("{name} takes only regex"));
        }
        Ok(Rule {
            action,
            source_labels: config.source_labels.clone(),
            separator,
            regex,
            regex_is_default: regex_text == DEFAULT_REGEX,
            modulus,
            target_label,
            target_is_template,
            replacement,
        })
    }

    /// The source values joined by the separator (an absent label counts as
    /// the empty string), borrowed when there is a single source label.
    fn source_value<'a>(&self, labels: &'a Labels) -> Cow<'a, str> {
        match self.source_labels.as_slice() {
            [] => Cow::Borrowed(""),
            [one] => Cow::Borrowed(labels.get(one).unwrap_or("")),
            many => {
                let mut joined = String::new();
                for (i, name) in many.iter().enumerate() {
                    if i > 0 {
                        joined.push_str(&self.separator);
                    }
                    joined.push_str(labels.get(name).unwrap_or(""));
                }
                Cow::Owned(joined)
            }
        }
    }

    /// `replace` with the default regex without running it: the match is
    /// the whole value. None when the general path must run (a newline in
    /// the value, `$` forms other than `$1`).
    /// Label text up to 24 bytes is inline: on this path, taken for every
    /// sample of a scrape, the rule allocates nothing.
    fn replace_default(&self, value: &str) -> Option<(Text, Text)> {
        if !self.regex_is_default || self.target_is_template || value.contains('\n') {
            return None;
        }
        let v = match self.replacement.as_str() {
            "$1" | "${1}" => Text::from(value),
            r if !r.contains('$') => Text::from(r),
            _ => return None,
        };
        Some((Text::from(self.target_label.as_str()), v))
    }

    /// Applies this rule; false when the series or target is dropped.
    fn apply(&self, labels: &mut Labels) -> bool {
        match self.action {
            Action::Keep => return self.regex.is_match(&self.source_value(labels)),
            Action::Drop => return !self.regex.is_match(&self.source_value(labels)),
            Action::KeepEqual => {
                return labels.get(&self.target_label).unwrap_or("") == self.source_value(labels);
            }
            Action::DropEqual => {
                return labels.get(&self.target_label).unwrap_or("") != self.source_value(labels);
            }
            Action::Replace => {
                let write = {
                    let value = self.source_value(labels);
                    if let Some((target, v)) = self.replace_default(&value) {
                        drop(value);
                        labels.set(target, v);
                        return true;
                    }
                    self.regex.captures(&value).and_then(|caps| {
                        let target = if self.target_is_template {
                            let mut t = String::new();
                            caps.expand(&self.target_label, &mut t);
                            t
                        } else {
                            self.target_label.clone()
                        };
                        // An expanded name that is not a label name means no
                        // write at all (Prometheus leaves the set unchanged).
                        if !is_valid_label_name(&target) {
                            return None;
                        }
                        let mut v = String::new();
                        caps.expand(&self.replacement, &mut v);
                        Some((target, v))
                    })
                };
                if let Some((target, value)) = write {
                    // An empty value deletes the label, as in Prometheus.
                    labels.set(target, value);
                }
            }
            Action::Lowercase => {
                let v = self.source_value(labels).to_lowercase();
                labels.set(self.target_label.as_str(), v);
            }
            Action::Uppercase => {
                let v = self.source_value(labels).to_uppercase();
                labels.set(self.target_label.as_str(), v);
            }
            Action::HashMod => {
                let digest = md5(self.source_value(labels).as_bytes());
                // Prometheus uses the last 8 bytes of the digest, big-endian.
                let mut tail = [0u8; 8];
                tail.copy_from_slice(&digest[8..]);
                let m = u64::from_be_bytes(tail) % self.modulus;
                labels.set(self.target_label.as_str(), m.to_string());
            }
            Action::LabelMap => {
                // Every rename is decided on the set as it was before the
                // rule, so a mapped name is not mapped again.
                let mut writes = Vec::new();
                for l in labels.iter() {
                    if self.regex.is_match(&l.name) {
                        let name = self.regex.replace_all(&l.name, self.replacement.as_str()).into_owned();
                        writes.push((name, l.value.clone()));
                    }
                }
                for (name, value) in writes {
                    // Prometheus would store an invalid name and then fail
                    // the sample; skipping the write keeps the series usable.
                    if is_valid_label_name(&name) {
                        labels.set(name, value);
                    }
                }
            }
            Action::LabelDrop => labels.retain(|l| !self.regex.is_match(&l.name)),
            Action::LabelKeep => labels.retain(|l| self.regex.is_match(&l.name)),
        }
        true
    }
}

impl Relabeler {
    /// Compiles `rules`; an error names the rule (by index) and the problem.
    pub fn new(configs: &[RelabelConfig]) -> Result<Relabeler, String> {
        let rules = configs
            .iter()
            .enumerate()
            .map(|(i, r)| Rule::compile(r).map_err(|e| format!("relabel rule {i}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        // FNV-1a of the rules as written: stable, and different rules
        // (order included) give different text.
        let fingerprint = if rules.is_empty() { 0 } else { crate::hash::fnv1a(format!("{configs:?}").as_bytes()) };
        Ok(Relabeler { rules, fingerprint })
    }

    /// Identifies the rules: equal for the same rules as written, 0 for none.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Whether there are no rules (applying them changes nothing).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Applies the rules to `labels`; false when the series is dropped.
    pub fn apply(&self, labels: &mut Labels) -> bool {
        self.rules.iter().all(|rule| rule.apply(labels))
    }
}

/// MD5 digest of `data`. Only `hashmod` needs it, for Prometheus-compatible
/// shard numbers; not used for anything secret.
fn md5(data: &[u8]) -> [u8; 16] {
    use md5::Digest;
    md5::Md5::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(action: &str) -> RelabelConfig {
        RelabelConfig { action: Some(action.into()), ..Default::default() }
    }

    fn with(mut r: RelabelConfig, f: impl FnOnce(&mut RelabelConfig)) -> RelabelConfig {
        f(&mut r);
        r
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    fn src(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    /// One case: name, input labels, rules, expected output (None = dropped).
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<RelabelConfig>, Option<Vec<(&'a str, &'a str)>>);

    /// Runs each case.
    fn check(cases: Vec<Case<'_>>) {
        for (name, input, rules, want) in cases {
            let r = Relabeler::new(&rules).unwrap_or_else(|e| panic!("{name}: {e}"));
            let mut l = labels(&input);
            let kept = r.apply(&mut l);
            match want {
                None => assert!(!kept, "{name}: should be dropped, got {l}"),
                Some(w) => {
                    assert!(kept, "{name}: dropped");
                    assert_eq!(l, labels(&w), "{name}");
                }
            }
        }
    }

    #[test]
    fn md5_known_vectors() {
        let hex = |d: [u8; 16]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex(md5(b"")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(hex(md5(b"abc")), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(hex(md5(b"The quick brown fox jumps over the lazy dog")), "9e107d9d372bb6826bd81d3542a419d6");
        assert_eq!(hex(md5(&[b'a'; 64])), "014842d480b571495a4a0363793f7367");
    }

    #[test]
    fn actions_with_exact_results() {
        let foo = vec![("a", "foo"), ("b", "bar"), ("c", "baz")];
        check(vec![
            (
                "replace with groups from joined sources",
                foo.clone(),
                vec![with(rule("replace"), |r| {
                    r.source_labels = src(&["a", "b"]);
                    r.regex = s("f(.*);(.*)r");
                    r.target_label = s("d");
                    r.replacement = s("ch${1}-ch${2}");
                })],
                Some(vec![("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "choo-chba")]),
            ),
            (
                "regex is anchored: a partial match does nothing",
                foo.clone(),
                vec![with(rule("replace"), |r| {
                    r.source_labels = src(&["a"]);
                    r.regex = s("o+");
                    r.target_label = s("d");
                })],
                Some(foo.clone()),
            ),
            (
                "defaults: action replace, regex (.*), replacement $1",
                foo.clone(),
                vec![RelabelConfig { source_labels: src(&["a"]), target_label: s("d"), ..Default::default() }],
                Some(vec![("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "foo")]),
            ),
            (
                "empty source value with the default regex writes the replacement",
                foo.clone(),
                vec![with(rule("replace"), |r| {
                    r.source_labels = src(&["missing"]);
                    r.target_label = s("d");
                    r.replacement = s("static");
                })],
                Some(vec![("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "static")]),
            ),
            (
                "empty result deletes the target label",
                foo.clone(),
                vec![with(rule("replace"), |r| {
                    r.source_labels = src(&["missing"]);
                    r.target_label = s("a");
                })],
                Some(vec![("b", "bar"), ("c", "baz")]),
            ),
            (
                "$1 when the regex has no group is empty, so the label goes",
                foo.clone(),
                vec![with(rule("replace"), |r| {
                    r.source_labels = src(&["a"]);
                    r.regex = s("foo");
                    r.target_label = s("b");
                })],
                Some(vec![("a", "foo"), ("c", "baz")]),
            ),
            (
                "$1x names group `1x`, which does not exist",
                foo.clone(),
                vec![with(rule("replace"), |r| {
                    r.source_labels = src(&["a"]);
                    r.regex = s("(f)oo");
                    r.target_label = s("d");
                    r.replacement = s("$1x${1}y$$");
                })],
                Some(vec![("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "fy$")]),
            ),
            (
                "target_label built from a group",
                vec![("a", "some-name-value")],
                vec![with(rule("replace"), |r| {
                    r.source_labels = src(&["a"]);
                    r.regex = s("some-([^-]+)-([^,]+)");
                    r.target_label = s("${1}");
                    r.replacement = s("${2}");
                })],
                Some(vec![("a", "some-name-value"), ("name", "value")]),
            ),
            (
                "an expanded target that is not a label name writes nothing",
                vec![("a", "some-2-value")],
                vec![with(rule("replace"), |r| {
                    r.source_labels = src(&["a"]);
                    r.regex = s("some-([^-]+)-([^,]+)");
                    r.target_label = s("${1}");
                    r.replacement = s("${2}");
                })],
                Some(vec![("a", "some-2-value")]),
            ),
            (
                "the default regex does not match across a newline",
                vec![("a", "x\ny")],
                vec![with(rule("replace"), |r| {
                    r.source_labels = src(&["a"]);
                    r.target_label = s("b");
                })],
                Some(vec![("a", "x\ny")]),
            ),
            (
                "no match leaves the set unchanged",
                foo.clone(),
                vec![with(rule("replace"), |r| {
                    r.source_labels = src(&["a"]);
                    r.regex = s("bar");
                    r.target_label = s("a");
                    r.replacement = s("x");
                })],
                Some(foo.clone()),
            ),
            (
                "keep matching",
                foo.clone(),
                vec![with(rule("keep"), |r| {
                    r.source_labels = src(&["a"]);
                    r.regex = s("f.*");
                })],
                Some(foo.clone()),
            ),
            (
                "keep not matching drops",
                foo.clone(),
                vec![with(rule("keep"), |r| {
                    r.source_labels = src(&["a"]);
                    r.regex = s("f");
                })],
                None,
            ),
            (
                "keep on an absent label matches the empty string",
                foo.clone(),
                vec![with(rule("keep"), |r| {
                    r.source_labels = src(&["z"]);
                    r.regex = s("");
                })],
                Some(foo.clone()),
            ),
            (
                "drop matching",
                foo.clone(),
                vec![with(rule("drop"), |r| {
                    r.source_labels = src(&["a", "b"]);
                    r.regex = s("foo;bar");
                })],
                None,
            ),
            (
                "drop with a custom separator",
                foo.clone(),
                vec![with(rule("drop"), |r| {
                    r.source_labels = src(&["a", "b"]);
                    r.separator = s("");
                    r.regex = s("foobar");
                })],
                None,
            ),
            (
                "keepequal keeps equal",
                vec![("a", "1"), ("b", "1")],
                vec![with(rule("keepequal"), |r| {
                    r.source_labels = src(&["a"]);
                    r.target_label = s("b");
                })],
                Some(vec![("a", "1"), ("b", "1")]),
            ),
            (
                "keepequal drops different",
                vec![("a", "1"), ("b", "2")],
                vec![with(rule("keepequal"), |r| {
                    r.source_labels = src(&["a"]);
                    r.target_label = s("b");
                })],
                None,
            ),
            (
                "dropequal drops equal, absent equals empty",
                vec![("a", "1")],
                vec![with(rule("dropequal"), |r| {
                    r.source_labels = src(&["x"]);
                    r.target_label = s("y");
                })],
                None,
            ),
            (
                "hashmod as Prometheus (md5, last 8 bytes big-endian)",
                foo.clone(),
                vec![with(rule("hashmod"), |r| {
                    r.source_labels = src(&["c"]);
                    r.target_label = s("d");
                    r.modulus = Some(1000);
                })],
                Some(vec![("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "976")]),
            ),
            (
                "labelmap copies matching names",
                vec![("__meta_my_bar", "aaa"), ("__meta_my_baz", "bbb"), ("__meta_other", "ccc"), ("a", "foo")],
                vec![with(rule("labelmap"), |r| {
                    r.regex = s("__meta_my_(.+)");
                })],
                Some(vec![
                    ("__meta_my_bar", "aaa"),
                    ("__meta_my_baz", "bbb"),
                    ("__meta_other", "ccc"),
                    ("a", "foo"),
                    ("bar", "aaa"),
                    ("baz", "bbb"),
                ]),
            ),
            (
                "labelmap with a prefix replacement",
                vec![("__meta_docker_container_label_app", "x")],
                vec![with(rule("labelmap"), |r| {
                    r.regex = s("__meta_docker_container_label_(.+)");
                    r.replacement = s("lbl_$1");
                })],
                Some(vec![("__meta_docker_container_label_app", "x"), ("lbl_app", "x")]),
            ),
            (
                "labeldrop",
                foo.clone(),
                vec![with(rule("labeldrop"), |r| r.regex = s("[ab]"))],
                Some(vec![("c", "baz")]),
            ),
            (
                "labelkeep",
                foo.clone(),
                vec![with(rule("labelkeep"), |r| r.regex = s("[ab]"))],
                Some(vec![("a", "foo"), ("b", "bar")]),
            ),
            (
                "lowercase and uppercase",
                vec![("a", "AbC"), ("b", "dEf")],
                vec![
                    with(rule("lowercase"), |r| {
                        r.source_labels = src(&["a"]);
                        r.target_label = s("a_low");
                    }),
                    with(rule("uppercase"), |r| {
                        r.source_labels = src(&["b"]);
                        r.target_label = s("b_up");
                    }),
                ],
                Some(vec![("a", "AbC"), ("a_low", "abc"), ("b", "dEf"), ("b_up", "DEF")]),
            ),
            (
                "action is case-insensitive and rules apply in order",
                vec![("__address__", "10.0.0.1:9100")],
                vec![
                    with(rule("Replace"), |r| {
                        r.source_labels = src(&["__address__"]);
                        r.regex = s("([^:]+):.*");
                        r.target_label = s("host");
                    }),
                    with(rule("KEEP"), |r| {
                        r.source_labels = src(&["host"]);
                        r.regex = s("10\\..*");
                    }),
                ],
                Some(vec![("__address__", "10.0.0.1:9100"), ("host", "10.0.0.1")]),
            ),
        ]);
    }

    #[test]
    fn invalid_rules_name_their_index() {
        let bad: Vec<(RelabelConfig, &str)> = vec![
            (rule("bogus"), "unknown action"),
            (with(rule("keep"), |r| r.regex = s("(")), "invalid regex"),
            (with(rule("hashmod"), |r| r.target_label = s("x")), "non-zero modulus"),
            (rule("replace"), "requires target_label"),
            (with(rule("replace"), |r| r.target_label = s("1abc")), "not a valid target_label"),
            (with(rule("replace"), |r| r.target_label = s("a-$1")), "not a valid target_label"),
            (
                with(rule("lowercase"), |r| {
                    r.target_label = s("x");
                    r.replacement = s("y");
                }),
                "replacement cannot be set",
            ),
            (with(rule("labelmap"), |r| r.replacement = s("a-b")), "not a valid replacement"),
            (
                with(rule("keepequal"), |r| {
                    r.target_label = s("x");
                    r.regex = s("a");
                }),
                "takes only",
            ),
            (with(rule("labeldrop"), |r| r.source_labels = src(&["a"])), "takes only regex"),
        ];
        for (r, want) in bad {
            let rules = vec![with(rule("keep"), |_| {}), r];
            let err = Relabeler::new(&rules).unwrap_err();
            assert!(err.starts_with("relabel rule 1: ") && err.contains(want), "{err}");
        }
        assert!(Relabeler::new(&[with(rule("replace"), |r| r.target_label = s("x_${1}_$2y"))]).is_ok());
    }

    #[test]
    fn template_check_matches_prometheus_pattern() {
        for ok in ["a", "_", "a1", "$1", "${1}", "a$1b", "${name}_x", "$1$2", "__param_$1"] {
            assert!(is_valid_label_template(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "$", "${}", "${1", "a.b", "$-"] {
            assert!(!is_valid_label_template(bad), "{bad}");
        }
    }
}
