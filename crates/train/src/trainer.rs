//! The training loop of one worker: shard, forward, backward with gradient buckets averaged
//! on the communication thread meanwhile, step; then distributed evaluation. Rank 0 reports;
//! other ranks stay quiet unless they fail.

use crate::checkpoint::{self, RngState, TrainState};
use crate::config::{Config, OptimizerConfig};
use crate::ddp;
use crate::ddp::{CommStats, Reducer};
use crate::error::{Result, TrainError};
use crate::metrics::RunDir;
use crate::model::{build_model, load_datasets, memory_plan};
use crate::optim::{self, Optimizer, Schedule};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_autodiff::{ops, Param, Tape, Var};
use strata_comm::{CommHandle, CommThread, Communicator, ReduceOp};
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
/// `comm` moves onto a communication thread for the run (see [`CommThread`]): gradient
/// buckets are all-reduced there while backward goes on, and every other collective (metrics,
/// evaluation, synchronised batch norm) is queued behind them, in the same order on every rank.
///
/// Resumes from `cfg.checkpoint.resume` if set. With another world size than the checkpoint's,
/// the global batch is kept (the per-worker batch becomes global / world) and so is the
/// schedule's position; the log says so.
pub fn train(
    cfg: &Config,
    comm: &mut dyn Communicator,
    progress: ProgressMode,
) -> Result<RunSummary> {
    std::thread::scope(|scope| {
        let thread = CommThread::spawn(scope, comm)?;
        let summary = train_on(cfg, thread.handle(), progress);
        let joined = thread.join();
        let summary = summary?;
        joined?;
        Ok(summary)
    })
}

/// [`train`], with the communicator already on its thread.
fn train_on(cfg: &Config, handle: CommHandle, progress: ProgressMode) -> Result<RunSummary> {
    let mut blocking = handle.clone();
    let comm: &mut dyn Communicator = &mut blocking;
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
    let named_bufs = named_buffers(model.as_ref());
    let buffers: Vec<_> = named_bufs.iter().map(|(_, b)| b.clone()).collect();
    ddp::broadcast_parameters(comm, &params)?;
    let mut opt = Optimizer::new(named, cfg.optimizer.clone())?;
    let k = cfg.optimizer.accumulate_steps;
    let mut reducer = Reducer::new(&params, handle.clone(), cfg.ddp.bucket_options());
    let sync_stats: Option<Rc<dyn strata_nn::StatsAllReduce>> =
        if cfg.ddp.sync_bn { Some(Rc::new(CommStats(handle.clone()))) } else { None };
    drop(handle);

    let run_path = Path::new(&cfg.log.dir).join(&cfg.name);
    let mut pos = Position { step: 0, epoch: 0, batch_in_epoch: 0 };
    let mut b = cfg.data.batch_size;
    let mut skipped_steps = 0u64;
    if !cfg.checkpoint.resume.is_empty() {
        let dir = checkpoint::resolve(&run_path, &cfg.checkpoint.resume)?;
        let loaded = checkpoint::load(&dir, model.as_ref())?;
        opt.load_state(&loaded.optimizer)?;
        let st = loaded.state;
        if st.world_size == world && !loaded.rank_buffers.is_empty() {
            checkpoint::restore_rank_buffers(&dir, &loaded.rank_buffers, &named_bufs, rank)?;
        }
        if st.global_batch % (world * k) != 0 {
            return Err(TrainError::Config {
                path: dir.display().to_string(),
                detail: format!(
                    "its global batch {} does not divide over {world} workers x {k} \
                     accumulation steps (optimizer.accumulate_steps)",
                    st.global_batch
                ),
            });
        }
        b = st.global_batch / (world * k);
        skipped_steps = st.skipped_steps;
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
                keeping the global batch {} ({b} per worker) and the schedule position (step {})",
                st.world_size, st.global_batch, st.step
            ));
        }
        if st.config_hash != cfg.trajectory_hash() {
            say(format!(
                "strata: warning: the config differs from the one that wrote the checkpoint \
                 (hash {} there, {} here): the run will not match an uninterrupted one",
                st.config_hash,
                cfg.trajectory_hash()
            ));
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
    let steps_per_epoch = (sampler.num_samples() / (b * k)) as u64;
    if steps_per_epoch == 0 {
        return Err(TrainError::Config {
            path: "data.batch_size".into(),
            detail: format!(
                "{} training samples over {world} workers give no full step of {k} x {b} per \
                 worker",
                train_set.len()
            ),
        });
    }
    let mut total_steps = steps_per_epoch * cfg.epochs;
    if cfg.log.max_steps > 0 {
        total_steps = total_steps.min(cfg.log.max_steps);
    }
    let finished = pos.epoch >= cfg.epochs || pos.step >= total_steps;
    if !cfg.checkpoint.resume.is_empty() && finished {
        // As a PyTorch Lightning fit whose max_epochs is already reached: nothing is trained,
        // evaluated or appended to the run directory.
        say(format!(
            "strata: the run is already complete at step {} of {total_steps}; nothing to train \
             (raise epochs or log.max_steps to train further)",
            pos.step
        ));
        return Ok(RunSummary {
            steps: pos.step,
            final_train_loss: f64::NAN,
            test_accuracy: f64::NAN,
            test_loss: f64::NAN,
            wall_s: started.elapsed().as_secs_f64(),
        });
    }
    let global_batch = b * world * k;
    let lr = cfg.optimizer.effective_lr(global_batch);
    let schedule = Schedule::new(lr, cfg.schedule.clone(), total_steps, steps_per_epoch);
    let mut run_dir = if rank == 0 {
        Some(RunDir::create(&run_path, &cfg.to_toml(), pos.step > 0)?)
    } else {
        None
    };
    let start = StartInfo { world, b, k, global_batch, lr, steps_per_epoch, total_steps };
    say(start.line(cfg, parameter_count(model.as_ref())));
    if let Some(dir) = run_dir.as_mut() {
        dir.log(start.record(pos.step))?;
    }

    let augment = Augment { crop_pad: cfg.data.crop_padding, hflip: cfg.data.hflip };
    let mut last_loss = f64::NAN;
    let mut eval = Eval { loss: f64::NAN, accuracy: f64::NAN, samples: 0 };
    let write_checkpoint = |pos: &Position,
                            opt: &Optimizer,
                            skipped_steps: u64,
                            comm: &mut dyn Communicator|
     -> Result<()> {
        // The model file holds the running statistics averaged over the ranks; each rank's own
        // statistics are kept beside them and stay live, so writing a checkpoint never changes
        // the run and a resumed run continues every rank's statistics exactly.
        let own: Vec<Tensor> = buffers.iter().map(|b| b.borrow().clone()).collect();
        let per_rank = gather_tensors(comm, &own)?;
        ddp::all_reduce_buffers(comm, &buffers)?;
        if rank == 0 {
            let state = TrainState {
                step: pos.step,
                epoch: pos.epoch,
                batch_in_epoch: pos.batch_in_epoch,
                seed: cfg.seed,
                world_size: world,
                global_batch,
                config_hash: cfg.trajectory_hash(),
                lr: schedule.lr(pos.step),
                schedule: schedule.describe(),
                rng: RngState::at(
                    cfg.seed,
                    pos.epoch,
                    pos.step,
                    pos.batch_in_epoch * (b * k) as u64,
                ),
                skipped_steps,
            };
            let rank_buffers = checkpoint::rank_buffers(&named_bufs, &per_rank);
            let extra = checkpoint::Extra { optimizer: &opt.state()?, rank_buffers: &rank_buffers };
            checkpoint::save(&run_path, model.as_ref(), extra, &state, cfg.checkpoint.keep)?;
        }
        for (b, t) in buffers.iter().zip(own) {
            *b.borrow_mut() = t;
        }
        Ok(())
    };

    while pos.epoch < cfg.epochs && pos.step < total_steps {
        let epoch = pos.epoch;
        // The steps this epoch really runs: log.max_steps may end the run inside it.
        let epoch_steps = steps_per_epoch.min(pos.batch_in_epoch + (total_steps - pos.step));
        let epochs_run = cfg.epochs.min(total_steps.div_ceil(steps_per_epoch));
        let bar = make_bar(progress, epoch, epochs_run, epoch_steps);
        if let Some(bar) = &bar {
            bar.set_position(pos.batch_in_epoch);
        }
        let mut loader_cfg = LoaderConfig::new(b);
        loader_cfg.drop_last = true;
        loader_cfg.augment = Some(augment);
        loader_cfg.augment_seed = AugmentSeed { seed: cfg.seed, rank, epoch };
        loader_cfg.num_threads = cfg.data.loader_threads.max(1);
        loader_cfg.start_batch = (pos.batch_in_epoch as usize) * k;
        let loader = Loader::new(train_set.clone(), sampler.indices(epoch), loader_cfg)?;

        let mut window = Window::default();
        let mut micro_losses = Vec::with_capacity(k);
        let epoch_start = Instant::now();
        let mut epoch_images = 0usize;
        let mut loader = loader.into_iter();
        let mut micro_index = 0usize;
        let mut times = StepTimes::default();
        loop {
            let waited = Instant::now();
            let Some(batch) = loader.next() else { break };
            let batch = batch?;
            times.data += waited.elapsed();
            let micro = MicroStep { index: micro_index % k, count: k };
            micro_index += 1;
            let n = batch.labels.len();
            let x = Tensor::from_vec(batch.images, batch.shape)?;
            // Ctx counts forward passes: each micro-step draws its own dropout masks and
            // stochastic-depth decisions, as each forward does in PyTorch.
            let forward = pos.step * k as u64 + micro.index as u64;
            let at =
                Ctx { sync_stats: sync_stats.clone(), checkpoint: plan.clone(), ..Ctx::default() }
                    .with_rng(cfg.seed, rank, epoch, forward);
            let out =
                train_step(model.as_ref(), &mut reducer, &mut opt, x, &batch.labels, &at, micro)?;
            times.add(&out.times);
            micro_losses.push((out.loss, out.correct, n));
            if !micro.syncs_gradients() {
                continue;
            }

            let lr = schedule.lr(pos.step);
            let local_nonfinite = micro_losses.iter().any(|(l, _, _)| !l.is_finite());
            if local_nonfinite {
                tracing::warn!(rank, step = pos.step + 1, "non-finite loss on this rank");
            }
            let time_up = cfg.log.time_limit_s > 0.0
                && started.elapsed().as_secs_f64() >= cfg.log.time_limit_s;
            let t = Instant::now();
            let update =
                optimizer_step(&mut opt, comm, lr, &cfg.optimizer, local_nonfinite, time_up)?;
            times.optimizer += t.elapsed();
            window.add_step(std::mem::take(&mut times));
            pos.step += 1;
            pos.batch_in_epoch += 1;
            let step = pos.step;
            if update.nonfinite {
                if cfg.optimizer.on_nonfinite == "skip" {
                    skipped_steps += 1;
                    say(format!("strata: skipped step {step}: a rank saw a non-finite loss"));
                } else {
                    return Err(TrainError::Diverged { step, loss: f64::NAN });
                }
            } else {
                for (l, c, n) in &micro_losses {
                    window.add(*l, *c, *n);
                }
            }
            micro_losses.clear();
            epoch_images += n * world * k;

            if step.is_multiple_of(cfg.log.every) || step == total_steps {
                let (loss_avg, acc, t) = window.reduce(comm)?;
                last_loss = loss_avg;
                let ips = epoch_images as f64 / epoch_start.elapsed().as_secs_f64();
                if let Some(dir) = run_dir.as_mut() {
                    dir.log(json!({"kind": "train", "step": step, "epoch": epoch,
                        "loss": loss_avg, "accuracy": acc, "lr": lr, "grad_norm": update.grad_norm,
                        "skipped_steps": skipped_steps, "images_per_s": ips,
                        "collectives": comm.collectives_started(),
                        "time_s": started.elapsed().as_secs_f64(),
                        "data_s": t[0], "forward_s": t[1], "backward_s": t[2],
                        "comm_exposed_s": t[3], "comm_s": t[4], "optimizer_s": t[5]}))?;
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
            if every > 0 && step.is_multiple_of(every) && step < total_steps && !update.stop {
                write_checkpoint(&pos, &opt, skipped_steps, comm)?;
            }
            if update.stop {
                say(format!(
                    "strata: stopping after step {step}: log.time_limit_s = {} s reached on a \
                     rank; every rank stops here, with a checkpoint to --resume from",
                    cfg.log.time_limit_s
                ));
                write_checkpoint(&pos, &opt, skipped_steps, comm)?;
                return Ok(RunSummary {
                    steps: step,
                    final_train_loss: last_loss,
                    test_accuracy: f64::NAN,
                    test_loss: f64::NAN,
                    wall_s: started.elapsed().as_secs_f64(),
                });
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
            if step >= total_steps || pos.batch_in_epoch == 0 {
                // The epoch's last full step is done; leftover micro-batches are dropped.
                break;
            }
        }
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
        let spinner = show_evaluating(progress, test_set.len());
        eval = evaluate(model.as_ref(), &buffers, test_set.clone(), cfg, comm)?;
        if let Some(spinner) = spinner {
            spinner.finish_and_clear();
        }
        check_replicas_agree(&params, comm, pos.step)?;
        report_epoch(progress, &mut run_dir, epoch, pos.step, last_loss, eval, &epoch_start)?;
    }

    write_checkpoint(&pos, &opt, skipped_steps, comm)?;
    if let Some(dir) = &run_dir {
        crate::weights::save_weights(model.as_ref(), &dir.path().join("final.safetensors"))?;
        crate::plot::write_metrics_plot(dir.path())?;
    }
    let summary = RunSummary {
        steps: pos.step,
        final_train_loss: last_loss,
        test_accuracy: eval.accuracy,
        test_loss: eval.loss,
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

/// Where a micro-step stands in gradient accumulation: number `index` of the `count`
/// micro-steps (`optimizer.accumulate_steps`) that make one optimizer step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MicroStep {
    pub index: usize,
    pub count: usize,
}

impl MicroStep {
    /// An optimizer step of one micro-step (no accumulation).
    pub const SINGLE: MicroStep = MicroStep { index: 0, count: 1 };

    /// Whether this micro-step starts an optimizer step (and so clears the gradients).
    pub fn is_first(&self) -> bool {
        self.index == 0
    }

    /// Whether this micro-step all-reduces the gradients: only the last of an optimizer step
    /// does; the others only sum into the local gradients. This is the one place that decides
    /// it (a reducer's `no_sync` switch is `!syncs_gradients()`).
    pub fn syncs_gradients(&self) -> bool {
        self.index + 1 == self.count
    }
}

/// Wall time of the phases of one training step on this worker.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTimes {
    /// Waiting for the loader's batch (filled in by the training loop).
    pub data: Duration,
    /// Forward pass and loss.
    pub forward: Duration,
    /// Backward pass, including packing the gradient buckets it starts.
    pub backward: Duration,
    /// Waiting after backward for bucket all-reduces still in flight (not overlapped).
    pub comm_exposed: Duration,
    /// All bucket all-reduces of the step, as the communication thread timed them (overlapped
    /// or not).
    pub comm: Duration,
    /// The optimizer update.
    pub optimizer: Duration,
}

impl StepTimes {
    /// Add `other`'s phases to these (micro-steps of one optimizer step).
    pub fn add(&mut self, other: &StepTimes) {
        self.data += other.data;
        self.forward += other.forward;
        self.backward += other.backward;
        self.comm_exposed += other.comm_exposed;
        self.comm += other.comm;
        self.optimizer += other.optimizer;
    }
}

/// What one training step reports.
#[derive(Debug, Clone, Copy)]
pub struct StepOutput {
    /// The loss on this worker's batch.
    pub loss: f64,
    /// Correct predictions on this worker's batch.
    pub correct: usize,
    /// Where the step's time went.
    pub times: StepTimes,
}

/// One micro-step on this worker's batch `x`: gradients cleared on the first micro-step of an
/// optimizer step, then [`forward_backward`], with the reducer's `no_sync` on for every
/// micro-step but the last, so the accumulated gradients are all-reduced once. `at` carries
/// the run coordinates (seed, rank, epoch, forward pass) that key dropout masks and
/// stochastic-depth decisions, and the sync-BN collective if any. [`optimizer_step`] follows
/// the last micro-step.
pub fn train_step(
    model: &dyn Module,
    reducer: &mut Reducer,
    opt: &mut Optimizer,
    x: Tensor,
    labels: &[u32],
    at: &Ctx,
    micro: MicroStep,
) -> Result<StepOutput> {
    if micro.is_first() {
        opt.zero_grad();
    }
    reducer.set_no_sync(!micro.syncs_gradients());
    forward_backward(model, reducer, x, labels, at)
}

/// Forward and backward on one (micro-)batch `x`, adding its gradients into the parameters'
/// (zero them first for a fresh step). While backward runs, `reducer` all-reduces complete
/// gradient buckets on the communication thread; this returns once every bucket is done, so
/// the parameters then hold the mean over the world of their accumulated gradients.
///
/// With [`Reducer::set_no_sync`] on, nothing is reduced: the parameters hold this worker's
/// local sums. Gradient accumulation over k micro-batches runs k - 1 calls with `no_sync` on
/// and the last with it off, so the sums are all-reduced once.
pub fn forward_backward(
    model: &dyn Module,
    reducer: &mut Reducer,
    x: Tensor,
    labels: &[u32],
    at: &Ctx,
) -> Result<StepOutput> {
    let mut times = StepTimes::default();
    let t = Instant::now();
    let tape = Tape::new();
    let cx =
        Ctx { tape: Some(tape.clone()), train: true, update_running_stats: true, ..at.clone() };
    let logits = model.forward(&Var::constant(x), &cx)?;
    let loss = ops::softmax_cross_entropy(&logits, labels)?;
    let loss_value = loss.value().to_scalar()?;
    let correct = count_correct(logits.value(), labels)?;
    drop((logits, cx));
    times.forward = t.elapsed();

    let t = Instant::now();
    reducer.prepare(&tape);
    tape.backward(&loss)?;
    drop((loss, tape));
    times.backward = t.elapsed();

    let reduced = reducer.finish()?;
    times.comm_exposed = reduced.exposed;
    times.comm = reduced.comm;
    Ok(StepOutput { loss: loss_value, correct, times })
}

/// What [`optimizer_step`] did, as every rank agreed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepUpdate {
    /// Some rank saw a non-finite loss or gradient: no update was applied.
    pub nonfinite: bool,
    /// Some rank asked to stop after this step (`log.time_limit_s`).
    pub stop: bool,
    /// Global L2 norm of the averaged gradient before clipping (0 when non-finite).
    pub grad_norm: f64,
}

/// The update after the last micro-step: gradients divided by the micro-step count (so they
/// are the mean over the whole global batch), their global norm taken, the control-flow
/// flags (non-finite loss, stop request) and the norm agreed across ranks in one all-reduce
/// (max), then, unless some rank saw a non-finite value, clipping to
/// `optimizer.clip_grad_norm` and the optimizer step at `lr`.
///
/// # Errors
/// [`TrainError::OutOfSync`] if ranks computed different gradient norms, which means their
/// replicas diverged; communication and tensor errors.
pub fn optimizer_step(
    opt: &mut Optimizer,
    comm: &mut dyn Communicator,
    lr: f64,
    cfg: &OptimizerConfig,
    local_nonfinite: bool,
    local_stop: bool,
) -> Result<StepUpdate> {
    if cfg.accumulate_steps > 1 {
        optim::scale_gradients(opt.params(), 1.0 / cfg.accumulate_steps as f64)?;
    }
    let norm = optim::grad_norm(opt.params())?;
    let nonfinite = local_nonfinite || !norm.is_finite();
    let shown = if nonfinite { 0.0 } else { norm };
    let mut flags =
        [f64::from(u8::from(nonfinite)), f64::from(u8::from(local_stop)), shown, -shown];
    comm.all_reduce_f64(&mut flags, ReduceOp::Max)?;
    let update =
        StepUpdate { nonfinite: flags[0] > 0.0, stop: flags[1] > 0.0, grad_norm: flags[2] };
    if update.nonfinite {
        opt.zero_grad();
        return Ok(update);
    }
    if flags[2] != -flags[3] {
        return Err(TrainError::OutOfSync {
            detail: format!(
                "gradient norms differ between ranks ({} to {}) after the all-reduce",
                -flags[3], flags[2]
            ),
        });
    }
    if cfg.clip_grad_norm > 0.0 {
        optim::clip_gradients(opt.params(), norm, cfg.clip_grad_norm)?;
    }
    opt.step(lr)?;
    Ok(update)
}

/// Check that every rank holds the same parameters: a checksum (sum and sum of squares of
/// every parameter, in f64) agreed by max and min across ranks.
///
/// # Errors
/// [`TrainError::OutOfSync`] naming the step if any rank's checksum differs.
fn check_replicas_agree(
    params: &[Rc<Param>],
    comm: &mut dyn Communicator,
    step: u64,
) -> Result<()> {
    if comm.world_size() == 1 {
        return Ok(());
    }
    let mut sums = [0.0f64; 2];
    for p in params {
        let v = p.value();
        sums[0] += v.to_vec::<f32>()?.iter().map(|&x| x as f64).sum::<f64>();
        sums[1] += v.backend()?.sum_squares(&v)?;
    }
    let mut agreed = [sums[0], sums[1], -sums[0], -sums[1]];
    comm.all_reduce_f64(&mut agreed, ReduceOp::Max)?;
    if agreed[0] != -agreed[2] || agreed[1] != -agreed[3] {
        return Err(TrainError::OutOfSync {
            detail: format!("the ranks' parameters differ at step {step} (checksums {agreed:?})"),
        });
    }
    Ok(())
}

/// Every rank's `tensors` (f32), gathered on every rank: `out[rank][i]` is rank `rank`'s
/// `tensors[i]`.
fn gather_tensors(comm: &mut dyn Communicator, tensors: &[Tensor]) -> Result<Vec<Vec<Tensor>>> {
    let mut bytes = Vec::new();
    for t in tensors {
        bytes.extend(t.to_vec::<f32>()?.iter().flat_map(|v| v.to_le_bytes()));
    }
    let mut out = Vec::with_capacity(comm.world_size());
    for theirs in comm.all_gather_bytes(&bytes)? {
        let mut values =
            theirs.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        let mut rank_tensors = Vec::with_capacity(tensors.len());
        for t in tensors {
            let v: Vec<f32> = values.by_ref().take(t.elem_count()).collect();
            rank_tensors.push(Tensor::from_vec(v, t.dims())?);
        }
        out.push(rank_tensors);
    }
    Ok(out)
}

/// What the run reports at its start: world, batches, learning rate and steps per epoch.
struct StartInfo {
    world: usize,
    b: usize,
    k: usize,
    global_batch: usize,
    lr: f64,
    steps_per_epoch: u64,
    total_steps: u64,
}

impl StartInfo {
    /// The human line rank 0 prints.
    fn line(&self, cfg: &Config, parameters: usize) -> String {
        let accumulation = if self.k > 1 {
            format!(" ({} micro-steps of {} per step)", self.k, self.b)
        } else {
            String::new()
        };
        let scaled = if cfg.optimizer.reference_batch > 0 {
            format!(
                " (linear scaling: {} x {} / {})",
                cfg.optimizer.lr, self.global_batch, cfg.optimizer.reference_batch
            )
        } else {
            String::new()
        };
        format!(
            "strata: {} ({parameters} parameters) on {} worker(s) x {} thread(s); batch {} per \
             worker, {} global{accumulation}; {} steps per epoch, {} in all; {} lr {}{scaled}",
            cfg.name,
            self.world,
            rayon::current_num_threads(),
            self.b,
            self.global_batch,
            self.steps_per_epoch,
            self.total_steps,
            cfg.optimizer.kind,
            self.lr,
        )
    }

    /// The same facts as a metrics line.
    fn record(&self, step: u64) -> serde_json::Value {
        json!({"kind": "start", "step": step, "world_size": self.world,
            "batch_per_worker": self.b, "accumulate_steps": self.k,
            "global_batch": self.global_batch, "lr": self.lr,
            "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps})
    }
}

/// Loss, accuracy and step times accumulated over the steps between two log lines.
#[derive(Default)]
struct Window {
    loss_sum: f64,
    correct: f64,
    count: f64,
    steps: f64,
    /// Seconds of data, forward, backward, exposed comm, comm, optimizer.
    times: [f64; 6],
}

impl Window {
    /// One (micro-)batch's loss and correct predictions.
    fn add(&mut self, loss: f64, correct: usize, n: usize) {
        self.loss_sum += loss * n as f64;
        self.correct += correct as f64;
        self.count += n as f64;
    }

    /// One optimizer step's phase times (summed over its micro-steps).
    fn add_step(&mut self, t: StepTimes) {
        self.steps += 1.0;
        let phases = [t.data, t.forward, t.backward, t.comm_exposed, t.comm, t.optimizer];
        for (sum, d) in self.times.iter_mut().zip(phases) {
            *sum += d.as_secs_f64();
        }
    }

    /// Mean loss and accuracy over every rank's samples since the last reduce, and the mean
    /// seconds per step of each phase over the ranks (data, forward, backward, exposed comm,
    /// comm, optimizer).
    fn reduce(&mut self, comm: &mut dyn Communicator) -> Result<(f64, f64, [f64; 6])> {
        let mut v = [0.0; 10];
        v[..4].copy_from_slice(&[self.loss_sum, self.correct, self.count, self.steps]);
        v[4..].copy_from_slice(&self.times);
        comm.all_reduce_f64(&mut v, ReduceOp::Sum)?;
        *self = Window::default();
        let mut t = [0.0; 6];
        t.iter_mut().zip(&v[4..]).for_each(|(t, s)| *t = s / v[3].max(1.0));
        Ok((v[0] / v[2], v[1] / v[2], t))
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

/// The result of an evaluation over the whole test set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Eval {
    /// Mean loss per sample.
    pub loss: f64,
    /// Fraction of samples predicted right.
    pub accuracy: f64,
    /// Samples counted, over all ranks: the test set's size.
    pub samples: usize,
}

/// Exact distributed evaluation: running statistics are averaged over the ranks first; each
/// rank evaluates a disjoint, unpadded shard (their sizes differ by at most one); sums of
/// loss, correct and count are all-reduced, so every sample counts exactly once.
pub fn evaluate(
    model: &dyn Module,
    buffers: &[strata_nn::Buffer],
    test_set: Arc<dyn Dataset>,
    cfg: &Config,
    comm: &mut dyn Communicator,
) -> Result<Eval> {
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
    Ok(Eval { loss: sums[0] / sums[2], accuracy: sums[1] / sums[2], samples: sums[2] as usize })
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

/// Say that evaluation runs, since it can take a while on a deep model: a spinner with the
/// progress bar, a line otherwise (rank 0 only, as `mode` is `Quiet` elsewhere).
fn show_evaluating(mode: ProgressMode, samples: usize) -> Option<ProgressBar> {
    let msg = format!("evaluating on {samples} test images");
    match mode {
        ProgressMode::Bar => {
            let spinner = ProgressBar::new_spinner().with_message(msg);
            spinner.enable_steady_tick(std::time::Duration::from_millis(200));
            Some(spinner)
        }
        ProgressMode::Lines => {
            println!("{msg}");
            None
        }
        ProgressMode::Quiet => None,
    }
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
    eval: Eval,
    epoch_start: &Instant,
) -> Result<()> {
    if let Some(dir) = run_dir.as_mut() {
        dir.log(json!({"kind": "eval", "step": step, "epoch": epoch, "test_loss": eval.loss,
            "test_accuracy": eval.accuracy, "test_samples": eval.samples}))?;
    }
    if mode != ProgressMode::Quiet {
        println!(
            "epoch {} done in {:.1} s: train loss {train_loss:.4}, test loss {:.4}, \
             test accuracy {:.2} % of {} samples",
            epoch + 1,
            epoch_start.elapsed().as_secs_f64(),
            eval.loss,
            100.0 * eval.accuracy,
            eval.samples
        );
    }
    Ok(())
}
