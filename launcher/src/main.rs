//! `launcher`: starts one Strata worker process per device on this node and supervises them.
//!
//! `launcher run CONFIG` is Strata's torchrun. Each worker is this same binary run as
//! `launcher worker CONFIG`, with the environment described in [`supervise`]. The launcher hosts
//! the rendezvous store on node 0, prefixes every line a worker prints with its rank, stops all
//! workers as soon as one fails, forwards SIGINT and SIGTERM, and exits non-zero naming the
//! rank that caused the failure and its exit status (exit codes: [`supervise`] and [`worker`]).
//! `launcher plan CONFIG` predicts a config's memory and FLOPs without training.

mod plan;
mod supervise;
mod worker;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "launcher", version, about = "Start and supervise Strata training workers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options shared by `run` and `worker`.
#[derive(clap::Args, Clone, Debug)]
pub struct JobArgs {
    /// Experiment config (TOML), such as configs/resnet20-fashion.toml.
    pub config: PathBuf,
    /// Override a config value: --set optimizer.lr=0.05 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Train CONFIG with N worker processes per node.
    Run(supervise::RunArgs),
    /// Print the model summary, forward FLOPs per sample and the predicted peak memory per
    /// worker for CONFIG's batch size and gradient checkpointing, without training.
    Plan(JobArgs),
    /// Run one worker (started by `launcher run`, which sets its environment).
    #[command(hide = true)]
    Worker(JobArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => supervise::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Worker(args) => worker::run(args),
    }
}
