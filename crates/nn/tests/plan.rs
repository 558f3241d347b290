//! Segment plans, forward FLOPs and the memory plan's bookkeeping, against derivations.

use strata_nn::checkpoint::SegmentPlan;
use strata_nn::plan::{forward_flops, parse_bytes, plan_for_budget, profile};
use strata_nn::resnet::{CifarResNet, PreActResNet, ResNetOptions};

#[test]
fn sqrt_plans_checkpoint_all_but_the_last_of_about_sqrt_n_near_equal_parts() {
    // sqrt(333) = 18.2 -> 18 parts: 333 = 18 * 18 + 9, so 9 of 19 blocks and 9 of 18; the last
    // part (315..333) stays recorded.
    let plan = SegmentPlan::sqrt(333);
    let lens: Vec<usize> = plan.segments().iter().map(|r| r.len()).collect();
    assert_eq!(lens, [vec![19; 9], vec![18; 8]].concat());
    assert_eq!(plan.segments().last().unwrap().end, 315);
    // sqrt(54) = 7.3 -> 7 parts: 54 = 7 * 7 + 5; the last (47..54) stays recorded.
    let lens: Vec<usize> = SegmentPlan::sqrt(54).segments().iter().map(|r| r.len()).collect();
    assert_eq!(lens, [8, 8, 8, 8, 8, 7]);
    for n in 1..200 {
        let plan = SegmentPlan::sqrt(n);
        let parts = ((n as f64).sqrt().round() as usize).clamp(1, n);
        let last = n / parts;
        if parts == 1 {
            // One part (n <= 2): it is checkpointed, or nothing would be.
            assert_eq!(plan.segments(), [0..n]);
        } else {
            assert_eq!(plan.segments().len(), parts - 1, "n = {n}");
            assert_eq!(plan.checkpointed_blocks(), n - last, "n = {n}");
            assert_eq!(plan.segments().last().unwrap().end, n - last, "n = {n}");
        }
    }
    assert_eq!(SegmentPlan::every(7, 3, 0).segments(), [0..3, 3..6, 6..7]);
    assert_eq!(SegmentPlan::every(7, 3, 2).segments(), [2..5, 5..7]);
    assert!(SegmentPlan::new(vec![0..3, 2..4]).is_err());
    assert!(SegmentPlan::new(vec![0..2, 2..2]).is_err());
}

#[test]
fn forward_flops_of_preact_resnet164_on_28x28_match_the_derivation() {
    // Multiply-adds per sample, input 1x28x28, n = 18 bottlenecks per stage:
    //   stem 16*1*9 * 784                                              =    112,896
    //   stage 1 (28x28): block 0 (16*16 + 16*16*9 + 16*64 + 16*64 projection) * 784
    //                    = 3,612,672; 17 blocks (64*16 + 2304 + 16*64) * 784 = 58,003,456
    //   stage 2 (to 14x14): block 0 64*32*784 + 32*32*9*196 + 32*128*196 + 64*128*196
    //                    = 5,820,416; 17 blocks (128*32 + 9216 + 32*128) * 196 = 58,003,456
    //   stage 3 (to 7x7): likewise 5,820,416 and 58,003,456
    //   classifier 256*10                                              =      2,560
    // sum 189,379,328 multiply-adds = 378,758,656 FLOPs.
    let opts = ResNetOptions { in_channels: 1, ..ResNetOptions::default() };
    let model = PreActResNet::new(164, &opts).unwrap();
    assert_eq!(forward_flops(&model, &[1, 28, 28]).unwrap(), 378_758_656);
}

#[test]
fn the_profile_counts_what_resnet20_blocks_keep() {
    // ResNet-20 on 3x8x8, f32. An identity basic block keeps conv1's output (for bn1), relu1's
    // output (for conv2), conv2's output (for bn2) and its own output (relu2): four tensors of
    // 16*8*8*4 = 4096 bytes per sample in stage 1 (its input is the previous block's output).
    let model = CifarResNet::new(20, &ResNetOptions::default()).unwrap();
    let prof = profile(&model, &[3, 8, 8]).unwrap();
    assert_eq!(prof.blocks.len(), 9);
    let per_sample: u64 = prof.blocks[1].saved.iter().map(|s| s.1).sum();
    let input = prof.blocks[1].input.unwrap();
    let own: u64 = prof.blocks[1].saved.iter().filter(|s| s.0 != input.0).map(|s| s.1).sum();
    assert_eq!(own, 4 * 4096);
    assert_eq!(per_sample, 5 * 4096, "conv1 also keeps the block's input");
    // Parameters: 272,474 f32 (the summary test derives the count).
    assert_eq!(prof.param_bytes, 272_474 * 4);

    // More samples, more memory; checkpointing every block keeps less at batch 64.
    let none = prof.estimate(64, &SegmentPlan::none(), 1);
    let every = prof.estimate(64, &SegmentPlan::every(9, 1, 0), 1);
    assert!(every.peak < none.peak, "{every}\n{none}");
    assert!(prof.estimate(128, &SegmentPlan::none(), 1).peak > none.peak);
    assert_eq!(none.optimizer_state, none.parameters);
}

#[test]
fn the_budget_plan_fits_the_budget_and_checkpoints_no_more_than_it_must() {
    let model = CifarResNet::new(56, &ResNetOptions::default()).unwrap();
    let prof = profile(&model, &[3, 32, 32]).unwrap();
    let none = prof.estimate(32, &SegmentPlan::none(), 1).peak;
    let sqrt = prof.estimate(32, &SegmentPlan::sqrt(27), 1).peak;
    // A generous budget needs no checkpointing at all.
    assert!(plan_for_budget(&prof, 32, 1, none).unwrap().is_empty());
    // Half-way between: some blocks checkpointed, not all, and the prediction fits.
    let budget = (none + sqrt) / 2;
    let plan = plan_for_budget(&prof, 32, 1, budget).unwrap();
    assert!(prof.estimate(32, &plan, 1).peak <= budget);
    assert!(plan.checkpointed_blocks() > 0 && plan.checkpointed_blocks() < 27, "{plan:?}");
    // Below anything reachable: an error naming the smallest peak.
    let err = plan_for_budget(&prof, 32, 1, prof.param_bytes).unwrap_err().to_string();
    assert!(err.contains("smallest predicted peak"), "{err}");
    // The plan with that peak is named in words, not as Rust debug output.
    assert!(!err.contains("Some(") && !err.contains("None"), "{err}");
    assert!(err.contains("checkpointed segment"), "{err}");
}

#[test]
fn the_printed_estimate_says_which_gradients_its_peak_counts() {
    // ResNet-20 on 3x32x32 at batch 128 without checkpointing peaks in backward (the estimate's
    // position), where only the gradients delivered so far exist: fewer than the parameters.
    let model = CifarResNet::new(20, &ResNetOptions::default()).unwrap();
    let prof = profile(&model, &[3, 32, 32]).unwrap();
    let est = prof.estimate(128, &SegmentPlan::none(), 1);
    let text = est.to_string();
    assert!(est.gradients < est.parameters, "{text}");
    assert!(text.contains("gradients (delivered so far)"), "{text}");
    assert!(text.contains("cleared before backward"), "{text}");
    // The old footer's claim, that all of the previous step's gradients exist at the peak,
    // is gone from the estimate's own text.
    assert!(!text.contains("steady state"), "{text}");
    assert!(text.contains("momentum buffers"), "{text}");
}

#[test]
fn sizes_parse_with_binary_and_decimal_units() {
    assert_eq!(parse_bytes("2GiB").unwrap(), 2 << 30);
    assert_eq!(parse_bytes("512 MiB").unwrap(), 512 << 20);
    assert_eq!(parse_bytes("1.5GB").unwrap(), 1_500_000_000);
    assert_eq!(parse_bytes("4096").unwrap(), 4096);
    assert!(parse_bytes("lots").is_err());
    assert!(parse_bytes("3 furlongs").is_err());
}

#[test]
fn a_profile_marks_the_outermost_block_sequence_only() {
    use rand::SeedableRng;
    use strata_nn::init::{Init, InitRng};
    use strata_nn::layers::{Flatten, Linear, Relu, Sequential};
    use strata_tensor::DType;
    // Sequential[flatten, linear, Sequential[linear, relu], linear]: four blocks, the inner
    // sequence's two layers belong to the third.
    let mut rng = InitRng::seed_from_u64(0);
    let lin = |i, o, rng: &mut InitRng| Linear::new(i, o, true, Init::HeNormal, DType::F32, rng);
    let mut inner = Sequential::new();
    inner.push(lin(8, 8, &mut rng).unwrap());
    inner.push(Relu);
    let mut model = Sequential::new();
    model.push(Flatten);
    model.push(lin(12, 8, &mut rng).unwrap());
    model.push(inner);
    model.push(lin(8, 10, &mut rng).unwrap());
    let prof = profile(&model, &[3, 2, 2]).unwrap();
    assert_eq!(prof.blocks.len(), 4);
    // Parameters: 12*8 + 8, 8*8 + 8 (inner), 8*10 + 10, f32.
    let params: Vec<u64> = prof.blocks.iter().map(|b| b.param_bytes).collect();
    assert_eq!(params, [0, 104 * 4, 72 * 4, 90 * 4]);
}
