//! The output stage: replaces the line with a field.

use super::{Record, StageStats};

#[derive(Debug)]
pub(super) struct OutputStage(String);

impl OutputStage {
    pub(super) fn new(source: &str) -> OutputStage {
        OutputStage(source.to_string())
    }

    pub(super) fn run(&self, rec: &mut Record, stats: &StageStats) {
        match rec.field(&self.0) {
            Some(v) => rec.line = v.to_string(),
            None => stats.error(5),
        }
    }
}
