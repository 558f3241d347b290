//! `launcher plan CONFIG`: the model summary, forward FLOPs per sample, and the predicted peak
//! memory per worker for the config's per-worker batch and gradient-checkpointing policy,
//! without training (and without reading the dataset).

use crate::JobArgs;
use std::process::ExitCode;
use strata::nn::checkpoint::SegmentPlan;
use strata::nn::plan::{bytes_text, forward_flops};
use strata::nn::summary::{summary, thousands};
use strata::train::model::{build_model, memory_plan, optimizer_copies, sample_shape};
use strata::train::Config;

pub fn run(args: JobArgs) -> ExitCode {
    match plan(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn plan(args: &JobArgs) -> Result<(), Box<dyn std::error::Error>> {
    let cfg = Config::load(&args.config, &args.overrides)?;
    let (shape, classes) = sample_shape(&cfg.data)?;
    let model = build_model(&cfg.model, shape, classes, cfg.seed)?;
    let batch = cfg.data.batch_size;
    print!("{}", summary(model.as_ref(), &shape)?);

    let flops = forward_flops(model.as_ref(), &shape)?;
    println!(
        "Forward FLOPs per sample: {} ({:.3} GFLOPs; 2 per multiply-add of convolutions and \
         dense layers)",
        thousands(flops as usize),
        flops as f64 / 1e9
    );

    let (profile, segments, estimate) = memory_plan(&cfg, model.as_ref(), shape, batch)?;
    let policy = cfg.model.gradient_checkpointing.as_ref().map_or("none".into(), |v| v.to_string());
    println!();
    println!("Gradient checkpointing: {policy} over {} blocks", profile.blocks.len());
    if segments.is_empty() {
        println!("  no segments: every block is recorded");
    } else {
        let mut runs: Vec<(usize, usize)> = Vec::new(); // (length, count)
        for r in segments.segments() {
            match runs.last_mut() {
                Some((len, count)) if *len == r.len() => *count += 1,
                _ => runs.push((r.len(), 1)),
            }
        }
        let runs: Vec<String> =
            runs.iter().map(|(len, count)| format!("{count} x {len} blocks")).collect();
        println!(
            "  {} segments ({}) over blocks {}..{}",
            segments.segments().len(),
            runs.join(", "),
            segments.segments()[0].start,
            segments.segments().last().map_or(0, |r| r.end)
        );
    }
    print!("{estimate}");

    let n = profile.blocks.len();
    if n > 0 {
        let copies = optimizer_copies(&cfg.optimizer);
        let none = profile.estimate(batch, &SegmentPlan::none(), copies).peak;
        let sqrt = profile.estimate(batch, &SegmentPlan::sqrt(n), copies).peak;
        println!(
            "For comparison at batch {batch}: no checkpointing {}, \"sqrt\" {}",
            bytes_text(none),
            bytes_text(sqrt)
        );
    }
    Ok(())
}
