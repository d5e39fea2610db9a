//! The benchmark corpus: real paragraphs and questions from the HotpotQA sample in
//! `shared/data/` (CC BY-SA 4.0, see its README), in the JSON Lines layout documented there.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One paragraph.
#[derive(Debug, Clone, Deserialize)]
pub struct Paragraph {
    /// Its title.
    pub title: String,
    /// Its text.
    pub text: String,
}

/// One multi-hop question with its gold and distractor paragraphs.
#[derive(Debug, Clone, Deserialize)]
pub struct Question {
    /// HotpotQA id.
    pub id: String,
    /// The question.
    pub question: String,
    /// The answer.
    pub answer: String,
    /// The two gold paragraphs.
    pub supporting: Vec<Paragraph>,
    /// The eight distractors.
    pub distractors: Vec<Paragraph>,
}

/// Where the sample lives relative to this crate.
pub fn default_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/hotpot-sample.jsonl")
}

/// Reads every question from a JSON Lines file.
pub fn load(path: &Path) -> anyhow::Result<Vec<Question>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading corpus {}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| anyhow::anyhow!("{} line {}: {e}", path.display(), i + 1))
        })
        .collect()
}

/// Every paragraph of every question, in file order.
pub fn paragraphs(questions: &[Question]) -> Vec<Paragraph> {
    questions
        .iter()
        .flat_map(|q| q.supporting.iter().chain(&q.distractors).cloned())
        .collect()
}
