//! A benchmark's figure: what every benchmark returns and `bench` prints.

/// One row of the benchmark table.
#[derive(Debug)]
pub struct Figure {
    pub name: String,
    pub value: String,
    pub goal: String,
    pub pass: Option<bool>,
}
