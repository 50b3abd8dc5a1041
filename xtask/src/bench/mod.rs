//! Benchmarks: each prints a table and ends with one `RESULT key=value ...` line.

use anyhow::bail;

/// Known benchmarks and what they measure.
const BENCHES: &[(&str, &str)] = &[];

/// Run the benchmark `name`.
pub fn run(name: &str, _args: &[String]) -> anyhow::Result<()> {
    match name {
        "list" => {
            for (n, what) in BENCHES {
                println!("{n:12} {what}");
            }
            Ok(())
        }
        other => bail!("unknown benchmark `{other}`; `cargo xtask bench list` shows them"),
    }
}
