//! The training loop of one worker: shard, forward, backward, average gradients, step; then
//! distributed evaluation. Rank 0 reports; other ranks stay quiet unless they fail.

use crate::checkpoint::{self, TrainState};
use crate::config::Config;
use crate::ddp;
use crate::error::{Result, TrainError};
use crate::metrics::RunDir;
use crate::model::{build_model, load_datasets, memory_plan};
use crate::optim::{Schedule, Sgd};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;
use strata_autodiff::{ops, Param, Tape, Var};
use strata_comm::{Communicator, ReduceOp};
use strata_data::{Augment, AugmentSeed, Dataset, DistributedSampler, Loader, LoaderConfig};
use strata_nn::checkpoint::CheckpointPolicy;
use strata_nn::{named_buffers, named_parameters, parameter_count, Ctx, Module};
use strata_tensor::Tensor;

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub steps: u64,
    pub final_train_loss: f64,
    pub test_accuracy: f64,
    pub test_loss: f64,
    pub wall_s: f64,
}

/// How rank 0 shows progress: a live bar on a terminal, else a line every `log.every` steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Bar,
    Lines,
    Quiet,
}

/// Train `cfg` as one worker of `comm`'s world, on the global rayon pool's threads.
///
/// Resumes from `cfg.checkpoint.resume` if set. With another world size than the checkpoint's,
/// the global batch is kept (the per-worker batch becomes global / world) and so is the
/// schedule's position; the log says so.
pub fn train(
    cfg: &Config,
    comm: &mut dyn Communicator,
    progress: ProgressMode,
) -> Result<RunSummary> {
    let started = Instant::now();
    let (rank, world) = (comm.rank(), comm.world_size());
    let progress = if rank == 0 { progress } else { ProgressMode::Quiet };
    let say = |line: String| {
        if progress != ProgressMode::Quiet {
            println!("{line}");
        }
    };

    let (train_set, test_set) = load_datasets(&cfg.data)?;
    let model =
        build_model(&cfg.model, train_set.sample_shape(), train_set.num_classes(), cfg.seed)?;
    let named = named_parameters(model.as_ref());
    let params: Vec<_> = named.iter().map(|(_, p)| p.clone()).collect();
    let buffers: Vec<_> = named_buffers(model.as_ref()).into_iter().map(|(_, b)| b).collect();
    ddp::broadcast_parameters(comm, &params)?;
    let mut opt = Sgd::new(named, cfg.optimizer.clone());

    let run_path = Path::new(&cfg.log.dir).join(&cfg.name);
    let mut pos = Position { step: 0, epoch: 0, batch_in_epoch: 0 };
    let mut b = cfg.data.batch_size;
    if !cfg.checkpoint.resume.is_empty() {
        let dir = checkpoint::resolve(&run_path, &cfg.checkpoint.resume)?;
        let loaded = checkpoint::load(&dir, model.as_ref())?;
        opt.load_state(&loaded.optimizer)?;
        let st = loaded.state;
        if st.global_batch % world != 0 {
            return Err(TrainError::Config {
                path: dir.display().to_string(),
                detail: format!(
                    "its global batch {} does not divide over {world} workers",
                    st.global_batch
                ),
            });
        }
        b = st.global_batch / world;
        pos = Position { step: st.step, epoch: st.epoch, batch_in_epoch: st.batch_in_epoch };
        say(format!(
            "strata: resumed from {} at step {} (epoch {}, batch {})",
            dir.display(),
            st.step,
            st.epoch + 1,
            st.batch_in_epoch
        ));
        if st.world_size != world {
            say(format!(
                "strata: the checkpoint was written by {} workers, this run has {world}: \
                keeping the global batch {} ({b} per worker) and the schedule position",
                st.world_size, st.global_batch
            ));
        }
        if st.config_hash != cfg.trajectory_hash() {
            say("strata: warning: the config differs from the checkpoint's".into());
        }
    }

    // Gradient checkpointing: the segments the policy picks for this per-worker batch.
    let mut plan = None;
    if cfg.model.checkpoint_policy()? != CheckpointPolicy::None {
        let (_, segments, estimate) =
            memory_plan(cfg, model.as_ref(), train_set.sample_shape(), b)?;
        say(format!(
            "strata: gradient checkpointing: {} segment(s) over {} block(s); predicted peak {} \
             per worker",
            segments.segments().len(),
            segments.checkpointed_blocks(),
            strata_nn::plan::bytes_text(estimate.peak)
        ));
        plan = (!segments.is_empty()).then(|| Rc::new(segments));
    }

    let sampler = DistributedSampler::new(train_set.len(), world, rank)?.seed(cfg.seed);
    let steps_per_epoch = (sampler.num_samples() / b) as u64;
    if steps_per_epoch == 0 {
        return Err(TrainError::Config {
            path: "data.batch_size".into(),
            detail: format!(
                "{} training samples over {world} workers give no full batch of {b}",
                train_set.len()
            ),
        });
    }
    let mut total_steps = steps_per_epoch * cfg.epochs;
    if cfg.log.max_steps > 0 {
        total_steps = total_steps.min(cfg.log.max_steps);
    }
    let lr = cfg.optimizer.effective_lr(b * world);
    let schedule = Schedule::new(lr, cfg.schedule.clone(), total_steps, steps_per_epoch);
    let mut run_dir = if rank == 0 {
        Some(RunDir::create(&run_path, &cfg.to_toml(), pos.step > 0)?)
    } else {
        None
    };
    say(format!(
        "strata: {} ({} parameters) on {world} worker(s) x {} thread(s); batch {b} per worker, \
         {} global; {steps_per_epoch} steps per epoch; lr {lr}{}",
        cfg.name,
        parameter_count(model.as_ref()),
        rayon::current_num_threads(),
        b * world,
        if cfg.optimizer.reference_batch > 0 {
            format!(
                " (scaled from {} at batch {})",
                cfg.optimizer.lr, cfg.optimizer.reference_batch
            )
        } else {
            String::new()
        }
    ));

    let augment = Augment { crop_pad: cfg.data.crop_padding, hflip: cfg.data.hflip };
    let mut last_loss = f64::NAN;
    let mut eval = (f64::NAN, f64::NAN);
    let write_checkpoint = |pos: &Position, opt: &Sgd, comm: &mut dyn Communicator| -> Result<()> {
        // Running statistics are averaged first, on every rank, so all replicas stay equal.
        ddp::all_reduce_buffers(comm, &buffers)?;
        if rank == 0 {
            let state = TrainState {
                step: pos.step,
                epoch: pos.epoch,
                batch_in_epoch: pos.batch_in_epoch,
                seed: cfg.seed,
                world_size: world,
                global_batch: b * world,
                config_hash: cfg.trajectory_hash(),
                lr: schedule.lr(pos.step),
            };
            checkpoint::save(&run_path, model.as_ref(), &opt.state(), &state, cfg.checkpoint.keep)?;
        }
        Ok(())
    };

    while pos.epoch < cfg.epochs && pos.step < total_steps {
        let epoch = pos.epoch;
        let bar = make_bar(progress, epoch, cfg.epochs, steps_per_epoch);
        if let Some(bar) = &bar {
            bar.set_position(pos.batch_in_epoch);
        }
        let mut loader_cfg = LoaderConfig::new(b);
        loader_cfg.drop_last = true;
        loader_cfg.augment = Some(augment);
        loader_cfg.augment_seed = AugmentSeed { seed: cfg.seed, rank, epoch };
        loader_cfg.num_threads = cfg.data.loader_threads.max(1);
        loader_cfg.start_batch = pos.batch_in_epoch as usize;
        let loader = Loader::new(train_set.clone(), sampler.indices(epoch), loader_cfg)?;

        let mut window = Window::default();
        let epoch_start = Instant::now();
        let mut epoch_images = 0usize;
        for batch in loader {
            let batch = batch?;
            let lr = schedule.lr(pos.step);
            let n = batch.labels.len();
            let x = Tensor::from_vec(batch.images, batch.shape)?;
            let rng = Ctx { checkpoint: plan.clone(), ..Ctx::default() }
                .with_rng(cfg.seed, rank, epoch, pos.step);
            let (loss_value, correct) =
                train_step(model.as_ref(), &params, &mut opt, comm, x, &batch.labels, lr, &rng)?;
            pos.step += 1;
            pos.batch_in_epoch += 1;
            epoch_images += n * world;
            window.add(loss_value, correct, n);

            let step = pos.step;
            if step % cfg.log.every == 0 || step == total_steps {
                let (loss_avg, acc) = window.reduce(comm)?;
                if !loss_avg.is_finite() {
                    return Err(TrainError::Diverged { step, loss: loss_avg });
                }
                last_loss = loss_avg;
                let ips = epoch_images as f64 / epoch_start.elapsed().as_secs_f64();
                if let Some(dir) = run_dir.as_mut() {
                    dir.log(json!({"kind": "train", "step": step, "epoch": epoch,
                        "loss": loss_avg, "accuracy": acc, "lr": lr, "images_per_s": ips,
                        "time_s": started.elapsed().as_secs_f64()}))?;
                }
                show_step(progress, &bar, epoch, step, total_steps, loss_avg, acc, ips);
            }
            if let Some(bar) = &bar {
                bar.inc(1);
            }
            if pos.batch_in_epoch == steps_per_epoch {
                pos = Position { step, epoch: epoch + 1, batch_in_epoch: 0 };
            }
            let every = cfg.checkpoint.every;
            if every > 0 && step % every == 0 && step < total_steps {
                write_checkpoint(&pos, &opt, comm)?;
            }
            if step == cfg.log.stop_at_step {
                say(format!("strata: stopping after step {step} as configured (log.stop_at_step)"));
                return Ok(RunSummary {
                    steps: step,
                    final_train_loss: last_loss,
                    test_accuracy: f64::NAN,
                    test_loss: f64::NAN,
                    wall_s: started.elapsed().as_secs_f64(),
                });
            }
            if step >= total_steps {
                break;
            }
        }
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
        eval = evaluate(model.as_ref(), &buffers, test_set.clone(), cfg, comm)?;
        report_epoch(progress, &mut run_dir, epoch, pos.step, last_loss, eval, &epoch_start)?;
    }

    write_checkpoint(&pos, &opt, comm)?;
    if let Some(dir) = &run_dir {
        crate::weights::save_weights(model.as_ref(), &dir.path().join("final.safetensors"))?;
        crate::plot::write_metrics_plot(dir.path())?;
    }
    let summary = RunSummary {
        steps: pos.step,
        final_train_loss: last_loss,
        test_accuracy: eval.1,
        test_loss: eval.0,
        wall_s: started.elapsed().as_secs_f64(),
    };
    say(format!(
        "strata: done: {} steps in {:.1} s; test accuracy {:.2} %",
        summary.steps,
        summary.wall_s,
        100.0 * summary.test_accuracy
    ));
    Ok(summary)
}

/// Where the loop stands: steps taken, the epoch of the next step and its batches consumed.
#[derive(Debug, Clone, Copy)]
struct Position {
    step: u64,
    epoch: u64,
    batch_in_epoch: u64,
}

/// One optimizer step on this worker's batch `x`: forward, backward, gradients averaged over
/// the world, SGD update at `lr`. `rng` carries the run coordinates (seed, rank, epoch, step)
/// that key dropout masks and stochastic-depth decisions. Returns the local loss and the number
/// of correct predictions.
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    model: &dyn Module,
    params: &[Rc<Param>],
    opt: &mut Sgd,
    comm: &mut dyn Communicator,
    x: Tensor,
    labels: &[u32],
    lr: f64,
    rng: &Ctx,
) -> Result<(f64, usize)> {
    let tape = Tape::new();
    let cx =
        Ctx { tape: Some(tape.clone()), train: true, update_running_stats: true, ..rng.clone() };
    let logits = model.forward(&Var::constant(x), &cx)?;
    let loss = ops::softmax_cross_entropy(&logits, labels)?;
    let loss_value = loss.value().to_scalar()?;
    let correct = count_correct(logits.value(), labels)?;
    drop(logits);
    opt.zero_grad();
    tape.backward(&loss)?;
    drop((loss, tape));
    ddp::all_reduce_gradients(comm, params)?;
    opt.step(lr)?;
    Ok((loss_value, correct))
}

/// Loss and accuracy accumulated over the steps between two log lines.
#[derive(Default)]
struct Window {
    loss_sum: f64,
    correct: f64,
    count: f64,
}

impl Window {
    fn add(&mut self, loss: f64, correct: usize, n: usize) {
        self.loss_sum += loss * n as f64;
        self.correct += correct as f64;
        self.count += n as f64;
    }

    /// Mean loss and accuracy over every rank's samples since the last reduce.
    fn reduce(&mut self, comm: &mut dyn Communicator) -> Result<(f64, f64)> {
        let mut v = [self.loss_sum, self.correct, self.count];
        comm.all_reduce_f64(&mut v, ReduceOp::Sum)?;
        *self = Window::default();
        Ok((v[0] / v[2], v[1] / v[2]))
    }
}

fn count_correct(logits: &Tensor, labels: &[u32]) -> Result<usize> {
    let k = logits.dims()[1];
    let values = logits.to_vec::<f32>()?;
    let correct = values
        .chunks(k)
        .zip(labels)
        .filter(|(row, &label)| {
            let best = row.iter().enumerate().fold((0, f32::NEG_INFINITY), |acc, (i, &v)| {
                if v > acc.1 {
                    (i, v)
                } else {
                    acc
                }
            });
            best.0 == label as usize
        })
        .count();
    Ok(correct)
}

/// Exact distributed evaluation: running statistics are averaged over the ranks first; each
/// rank evaluates a disjoint, unpadded shard; sums of loss, correct and count are all-reduced.
/// Returns (mean loss, accuracy).
pub fn evaluate(
    model: &dyn Module,
    buffers: &[strata_nn::Buffer],
    test_set: Arc<dyn Dataset>,
    cfg: &Config,
    comm: &mut dyn Communicator,
) -> Result<(f64, f64)> {
    ddp::all_reduce_buffers(comm, buffers)?;
    let sampler = DistributedSampler::eval(test_set.len(), comm.world_size(), comm.rank())?;
    let mut loader_cfg = LoaderConfig::new(cfg.data.eval_batch_size.max(1));
    loader_cfg.num_threads = cfg.data.loader_threads.max(1);
    let indices = sampler.indices(0);
    let mut sums = [0.0f64; 3];
    if !indices.is_empty() {
        let cx = Ctx::eval();
        for batch in Loader::new(test_set, indices, loader_cfg)? {
            let batch = batch?;
            let x = Var::constant(Tensor::from_vec(batch.images, batch.shape)?);
            let logits = model.forward(&x, &cx)?;
            let loss = ops::softmax_cross_entropy(&logits, &batch.labels)?;
            let n = batch.labels.len() as f64;
            sums[0] += loss.value().to_scalar()? * n;
            sums[1] += count_correct(logits.value(), &batch.labels)? as f64;
            sums[2] += n;
        }
    }
    comm.all_reduce_f64(&mut sums, ReduceOp::Sum)?;
    Ok((sums[0] / sums[2], sums[1] / sums[2]))
}

fn make_bar(mode: ProgressMode, epoch: u64, epochs: u64, steps: u64) -> Option<ProgressBar> {
    if mode != ProgressMode::Bar {
        return None;
    }
    let bar = ProgressBar::new(steps);
    let style =
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
    Some(bar)
}

#[allow(clippy::too_many_arguments)]
fn show_step(
    mode: ProgressMode,
    bar: &Option<ProgressBar>,
    epoch: u64,
    step: u64,
    total: u64,
    loss: f64,
    acc: f64,
    ips: f64,
) {
    let msg = format!("loss {loss:.4} acc {:.2} % {ips:.0} img/s", 100.0 * acc);
    match (mode, bar) {
        (ProgressMode::Bar, Some(bar)) => bar.set_message(msg),
        (ProgressMode::Lines, _) => println!("epoch {} step {step}/{total} {msg}", epoch + 1),
        _ => {}
    }
}

fn report_epoch(
    mode: ProgressMode,
    run_dir: &mut Option<RunDir>,
    epoch: u64,
    step: u64,
    train_loss: f64,
    (test_loss, test_acc): (f64, f64),
    epoch_start: &Instant,
) -> Result<()> {
    if let Some(dir) = run_dir.as_mut() {
        dir.log(json!({"kind": "eval", "step": step, "epoch": epoch, "test_loss": test_loss,
            "test_accuracy": test_acc}))?;
    }
    if mode != ProgressMode::Quiet {
        println!(
            "epoch {} done in {:.1} s: train loss {train_loss:.4}, test loss {test_loss:.4}, \
             test accuracy {:.2} %",
            epoch + 1,
            epoch_start.elapsed().as_secs_f64(),
            100.0 * test_acc
        );
    }
    Ok(())
}
