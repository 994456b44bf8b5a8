//! The labels stage (fields become labels) and the static_labels stage
//! (fixed labels).

use std::collections::BTreeMap;

use super::Record;

#[derive(Debug)]
pub(super) struct LabelsStage(Vec<(String, String)>);

impl LabelsStage {
    pub(super) fn new(values: &BTreeMap<String, String>, here: &str) -> Result<LabelsStage, Vec<String>> {
        Ok(LabelsStage(label_names(values, here)?))
    }

    pub(super) fn run(&self, rec: &mut Record) {
        for (label, field) in &self.0 {
            if let Some(v) = rec.field(field).map(str::to_string) {
                rec.labels.set(label.clone(), v);
            }
        }
    }
}

#[derive(Debug)]
pub(super) struct StaticLabelsStage(Vec<(String, String)>);

impl StaticLabelsStage {
    pub(super) fn new(values: &BTreeMap<String, String>, here: &str) -> Result<StaticLabelsStage, Vec<String>> {
        label_names(values, here)?;
        Ok(StaticLabelsStage(values.iter().map(|(k, v)| (k.clone(), v.clone())).collect()))
    }

    pub(super) fn run(&self, rec: &mut Record) {
        for (k, v) in &self.0 {
            rec.labels.set(k.clone(), v.clone());
        }
    }
}

/// Checks every key is a label name and pairs each with its field (an empty
/// field name means the label's name).
fn label_names(values: &BTreeMap<String, String>, here: &str) -> Result<Vec<(String, String)>, Vec<String>> {
    let bad: Vec<String> = values
        .keys()
        .filter(|k| !crate::relabel::is_valid_label_name(k))
        .map(|k| format!("{here}: {k:?} is not a valid label name"))
        .collect();
    if !bad.is_empty() {
        return Err(bad);
    }
    Ok(values.iter().map(|(k, v)| (k.clone(), if v.is_empty() { k.clone() } else { v.clone() })).collect())
}
