//! The design documents' cost model for N agents × F facts each, reproduced exactly.
//!
//! Every message, request and answer is wrapped in an envelope of [`SeedModel::envelope`]
//! tokens; a fact's payload is [`SeedModel::payload`] tokens, an ack's [`SeedModel::ack`].
//!
//! * Baseline: every agent sends each of its facts to every other agent (envelope +
//!   payload) and gets an ack back (envelope + ack): `N·F·(N−1)·(2·envelope + payload +
//!   ack)`.
//! * Membrane: each agent exposes each fact once (envelope + payload) and queries once
//!   (envelope), receiving every other agent's facts (payload each):
//!   `N·(F·(envelope + payload) + envelope + (N−1)·F·payload)`.
//!
//! Both sides grow with N², so the reduction tends to `1 − payload / (2·envelope + payload
//! + ack)` (75.8% with the published constants) and can never pass it.

/// The cost model's constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedModel {
    /// Tokens of a message's envelope (system/tool wrapper).
    pub envelope: u64,
    /// Tokens of one fact.
    pub payload: u64,
    /// Tokens of an ack's body.
    pub ack: u64,
    /// Facts per agent.
    pub facts: u64,
}

/// The constants the design documents publish.
pub const PUBLISHED: SeedModel = SeedModel {
    envelope: 90,
    payload: 60,
    ack: 8,
    facts: 5,
};

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeedRow {
    /// Agents.
    pub agents: u64,
    /// Baseline tokens.
    pub baseline: u64,
    /// Membrane tokens.
    pub membrane: u64,
}

impl SeedRow {
    /// `1 − membrane / baseline`, in percent.
    pub fn reduction_pct(&self) -> f64 {
        if self.baseline == 0 {
            return 0.0;
        }
        100.0 * (1.0 - self.membrane as f64 / self.baseline as f64)
    }
}

impl SeedModel {
    /// Baseline tokens for `n` agents.
    pub fn baseline(&self, n: u64) -> u64 {
        let per_message = self.envelope + self.payload + self.envelope + self.ack;
        n * self.facts * n.saturating_sub(1) * per_message
    }

    /// Membrane tokens for `n` agents.
    pub fn membrane(&self, n: u64) -> u64 {
        let exposes = self.facts * (self.envelope + self.payload);
        let query = self.envelope + n.saturating_sub(1) * self.facts * self.payload;
        n * (exposes + query)
    }

    /// The row for `n` agents.
    pub fn row(&self, n: u64) -> SeedRow {
        SeedRow {
            agents: n,
            baseline: self.baseline(n),
            membrane: self.membrane(n),
        }
    }

    /// The reduction as N grows without bound, in percent.
    pub fn limit_pct(&self) -> f64 {
        let per_message = (2 * self.envelope + self.payload + self.ack) as f64;
        100.0 * (1.0 - self.payload as f64 / per_message)
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The table as the design documents print it (markdown).
pub fn markdown(model: &SeedModel, agents: &[u64]) -> String {
    let mut out = String::from(
        "| agents | baseline tokens | membrane tokens | reduction |\n|---|---|---|---|\n",
    );
    for &n in agents {
        let row = model.row(n);
        out.push_str(&format!(
            "| {} | {} | {} | {:.1}% |\n",
            n,
            thousands(row.baseline),
            thousands(row.membrane),
            row.reduction_pct()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table exactly as the design documents (and issue 7) publish it.
    const PUBLISHED_TABLE: &str = "\
| agents | baseline tokens | membrane tokens | reduction |
|---|---|---|---|
| 3 | 7,440 | 4,320 | 41.9% |
| 5 | 24,800 | 10,200 | 58.9% |
| 8 | 69,440 | 23,520 | 66.1% |
| 12 | 163,680 | 49,680 | 69.6% |
| 20 | 471,200 | 130,800 | 72.2% |
";

    #[test]
    fn reproduces_the_published_table_exactly() {
        assert_eq!(markdown(&PUBLISHED, &[3, 5, 8, 12, 20]), PUBLISHED_TABLE);
    }

    #[test]
    fn the_reduction_approaches_but_never_passes_its_limit() {
        let limit = PUBLISHED.limit_pct();
        assert!((limit - 75.806).abs() < 0.01, "{limit}");
        let mut last = 0.0;
        for n in [2, 3, 5, 20, 100, 1000, 100_000] {
            let r = PUBLISHED.row(n).reduction_pct();
            assert!(r > last && r < limit, "{n}: {r}");
            last = r;
        }
        assert!(limit - PUBLISHED.row(100_000).reduction_pct() < 0.01);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(471_200), "471,200");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
