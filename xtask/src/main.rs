//! Project automation, run as `cargo xtask ...`.
//!
//! - `cargo xtask test`: install what the suite needs (when root), build the VM image, run
//!   every test including the privileged ones.
//! - `cargo xtask bench NAME`: run a benchmark; it prints a table and a last `RESULT ...` line.
//! - `cargo xtask vm-image`: build (or reuse) the qemu boot image under `target/`.
//! - `cargo xtask vm -- COMMAND`: boot the image and run COMMAND in the guest.

mod bench;
mod deps;
mod test;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "ha-toolkit project automation")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install missing packages (as root), build the VM image and run the whole test suite.
    Test {
        /// Extra arguments passed to `cargo test` (after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run a benchmark by name.
    Bench {
        /// Benchmark name; `list` shows them.
        name: String,
        /// Extra arguments for the benchmark.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build (or reuse) the qemu boot image.
    VmImage {
        /// Rebuild even when a cached image exists.
        #[arg(long)]
        force: bool,
    },
    /// Boot the image and run a shell command inside the guest.
    Vm {
        /// Guest timeout in seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// The command (after `--`).
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Test { args } => test::run(&args),
        Cmd::Bench { name, args } => bench::run(&name, &args),
        Cmd::VmImage { force } => vm::image(force).map(|_| ()),
        Cmd::Vm { timeout, command } => vm::run(&command.join(" "), timeout),
    }
}
