//! The model builders: weighted-layer depth and parameter counts against derivations written
//! here, argument validation, and one forward and backward pass on a tiny batch for the small
//! models.

use strata_autodiff::{ops, Tape, Var};
use strata_nn::deep_cnn::DeepCnn;
use strata_nn::mlp::{Mlp, MlpOptions};
use strata_nn::resnet::{weighted_layer_count, ImageNetResNet, PreActResNet, ResNetOptions};
use strata_nn::{named_parameters, parameter_count, Ctx, Module};
use strata_tensor::{DType, Tensor};

fn opts(in_channels: usize, num_classes: usize) -> ResNetOptions {
    ResNetOptions { in_channels, num_classes, ..ResNetOptions::default() }
}

/// Parameters of a pre-activation bottleneck from `cin` through width `w` to `4w` channels:
/// BN(cin) 2cin; conv1x1 cin*w; BN(w) 2w; conv3x3 9w²; BN(w) 2w; conv1x1 4w²; and a 1x1
/// projection cin*4w (no BN) where the shape changes.
fn preact_bottleneck(cin: usize, w: usize, projects: bool) -> usize {
    2 * cin
        + cin * w
        + 2 * w
        + 9 * w * w
        + 2 * w
        + 4 * w * w
        + if projects { cin * 4 * w } else { 0 }
}

/// Pre-activation ResNet of depth 9n+2: stem conv3x3 c*16*9; three stages of n bottlenecks of
/// widths 16, 32, 64 (the first of each projects: 16 -> 64, 64 -> 128, 128 -> 256); final
/// BN(256) 512; classifier 256k + k.
fn expected_preact(n: usize, c: usize, k: usize) -> usize {
    let mut total = c * 16 * 9;
    let mut cin = 16;
    for w in [16, 32, 64] {
        for j in 0..n {
            total += preact_bottleneck(cin, w, j == 0);
            cin = 4 * w;
        }
    }
    total + 2 * 256 + 256 * k + k
}

#[test]
fn preact_resnet_164_and_1001_count_depth_and_parameters() {
    let m = PreActResNet::new(164, &opts(3, 10)).unwrap();
    assert_eq!(weighted_layer_count(&m), 164);
    assert_eq!(m.blocks.len(), 54);
    let p = parameter_count(&m);
    assert_eq!(p, expected_preact(18, 3, 10));
    // He et al. (2016b), Table 2: 1.7M. Derived: 1,703,258.
    assert_eq!(p, 1_703_258);

    let m = PreActResNet::new(1001, &opts(3, 10)).unwrap();
    assert_eq!(weighted_layer_count(&m), 1001);
    assert_eq!(m.blocks.len(), 333);
    let p = parameter_count(&m);
    assert_eq!(p, expected_preact(111, 3, 10));
    // The paper's "10.2M"; derived 10,327,706.
    assert!((10_200_000..10_400_000).contains(&p), "{p}");
}

#[test]
fn preact_resnet_rejects_depths_that_are_not_9n_plus_2() {
    for depth in [0, 10, 100, 165] {
        let msg = PreActResNet::new(depth, &opts(3, 10)).err().expect("invalid").to_string();
        assert!(msg.contains(&depth.to_string()) && msg.contains("9n+2"), "{msg}");
        assert!(msg.contains("164") && msg.contains("1001"), "{msg}");
    }
    let msg = PreActResNet::new(164, &opts(3, 0)).err().expect("no classes").to_string();
    assert!(msg.contains("classes 0"), "{msg}");
}

#[test]
fn preact_resnet_164_runs_forward_and_backward_on_a_tiny_batch() {
    let m = PreActResNet::new(164, &ResNetOptions { survival_prob: 0.5, ..opts(1, 10) }).unwrap();
    forward_backward(&m, &[2, 1, 28, 28]);
}

/// Parameters of an ImageNet bottleneck from `cin` through width `w` to `4w`: conv1x1 cin*w,
/// conv3x3 9w², conv1x1 4w², BNs 2w + 2w + 8w, and a projection cin*4w + BN 8w where the
/// shape changes.
fn imagenet_bottleneck(cin: usize, w: usize, projects: bool) -> usize {
    cin * w + 9 * w * w + 4 * w * w + 12 * w + if projects { cin * 4 * w + 8 * w } else { 0 }
}

/// Stem conv7x7 3*64*49 + BN 128; the stages; classifier 2048k + k.
fn expected_imagenet(stages: [usize; 4], k: usize) -> usize {
    let mut total = 3 * 64 * 49 + 128;
    let mut cin = 64;
    for (count, w) in stages.into_iter().zip([64, 128, 256, 512]) {
        for j in 0..count {
            total += imagenet_bottleneck(cin, w, j == 0);
            cin = 4 * w;
        }
    }
    total + 2048 * k + k
}

#[test]
fn imagenet_resnets_count_depth_and_parameters() {
    // torchvision's resnet50/101/152 have 25,557,032, 44,549,160 and 60,192,808 parameters
    // (the same layers: bias-free convolutions, BN everywhere, projections with BN).
    for (depth, stages, torchvision) in [
        (50, [3, 4, 6, 3], 25_557_032),
        (101, [3, 4, 23, 3], 44_549_160),
        (152, [3, 8, 36, 3], 60_192_808),
    ] {
        let m = ImageNetResNet::new(depth, &opts(3, 1000)).unwrap();
        assert_eq!(weighted_layer_count(&m), depth);
        let p = parameter_count(&m);
        assert_eq!(p, expected_imagenet(stages, 1000), "ResNet-{depth}");
        assert_eq!(p, torchvision, "ResNet-{depth}");
    }
    let msg = ImageNetResNet::new(34, &opts(3, 1000)).err().expect("34 unsupported").to_string();
    assert!(msg.contains("34") && msg.contains("50, 101, 152"), "{msg}");
}

#[test]
fn imagenet_resnet50_runs_forward_and_backward_on_a_small_image() {
    // 64x64 instead of 224x224 keeps the test quick; the stem and stages are the same.
    let m = ImageNetResNet::new(50, &opts(3, 10)).unwrap();
    forward_backward(&m, &[1, 3, 64, 64]);
}

/// Stem conv3x3 c*w*9 + BN 2w; per basic block cin -> out: 9 cin out + 9 out² + 4 out, and a
/// projection cin*out + 2 out where the shape changes; classifier.
fn expected_deep_cnn(stages: usize, w: usize, c: usize, k: usize) -> usize {
    let basic = |cin: usize, out: usize| {
        9 * cin * out + 9 * out * out + 4 * out + if cin != out { cin * out + 2 * out } else { 0 }
    };
    let mut total = c * w * 9 + 2 * w;
    let mut width = w;
    for s in 0..stages {
        if s > 0 {
            total += basic(width, 2 * width);
            width *= 2;
        }
        total += 2 * basic(width, width);
    }
    total + width * k + k
}

#[test]
fn deep_cnn_doubles_filters_after_every_second_block() {
    let m = DeepCnn::new(4, 16, &opts(1, 10)).unwrap();
    // Stages of 2 blocks joined by 3 stride-2 doubling blocks: 11 blocks, 6 * 4 weighted layers.
    assert_eq!(m.blocks.len(), 11);
    assert_eq!(weighted_layer_count(&m), 24);
    let widths: Vec<usize> = m.blocks.iter().map(|b| b.conv2.weight.value().dims()[0]).collect();
    assert_eq!(widths, [16, 16, 32, 32, 32, 64, 64, 64, 128, 128, 128]);
    let strides: Vec<usize> = m.blocks.iter().map(|b| b.conv1.params.stride).collect();
    assert_eq!(strides, [1, 1, 2, 1, 1, 2, 1, 1, 2, 1, 1]);
    assert_eq!(parameter_count(&m), expected_deep_cnn(4, 16, 1, 10));
    forward_backward(&m, &[2, 1, 28, 28]);

    // 16 * 2^10 = 16384 filters is the widest allowed: at most 11 stages from width 16.
    for (stages, width) in [(0, 16), (12, 16)] {
        let msg = DeepCnn::new(stages, width, &opts(1, 10)).err().expect("invalid").to_string();
        assert!(msg.contains("stages <= 11"), "{msg}");
    }
    let msg = DeepCnn::new(4, 0, &opts(1, 10)).err().expect("width 0").to_string();
    assert!(msg.contains("width >= 1"), "{msg}");
}

#[test]
fn deep_mlp_counts_parameters_and_trains_with_dropout() {
    let o = MlpOptions {
        in_features: 784,
        width: 64,
        depth: 10,
        num_classes: 10,
        batch_norm: true,
        dropout: 0.1,
        seed: 1,
        dtype: DType::F32,
    };
    let m = Mlp::new(&o).unwrap();
    assert_eq!(weighted_layer_count(&m), 11);
    // First block 784*64 + BN 128; nine blocks 64*64 + 128; classifier 64*10 + 10.
    assert_eq!(parameter_count(&m), 784 * 64 + 128 + 9 * (64 * 64 + 128) + 650);
    forward_backward(&m, &[4, 1, 28, 28]);
    let msg = Mlp::new(&MlpOptions { dropout: 2.0, ..o }).err().expect("bad p").to_string();
    assert!(msg.contains("0 <= p <= 1"), "{msg}");
}

/// One training forward and backward on a deterministic batch of `dims`: logits of
/// `[N, classes]`, a finite loss, a finite gradient of the right shape for every parameter.
fn forward_backward(m: &dyn Module, dims: &[usize]) {
    let n: usize = dims.iter().product();
    let x: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
    let x = Var::constant(Tensor::from_vec(x, dims).unwrap());
    let tape = Tape::new();
    let logits = m.forward(&x, &Ctx::train(tape.clone()).with_rng(3, 0, 0, 1)).unwrap();
    assert_eq!(logits.dims(), &[dims[0], 10]);
    let labels: Vec<u32> = (0..dims[0] as u32).collect();
    let loss = ops::softmax_cross_entropy(&logits, &labels).unwrap();
    let l = loss.value().to_scalar().unwrap();
    assert!(l.is_finite() && l > 0.0, "loss {l}");
    tape.backward(&loss).unwrap();
    let mut with_grad = 0;
    for (name, p) in named_parameters(m) {
        if let Some(g) = p.grad().as_ref() {
            assert_eq!(g.dims(), p.value().dims(), "{name}");
            assert!(g.to_vec::<f32>().unwrap().iter().all(|v| v.is_finite()), "{name}");
            with_grad += 1;
        }
    }
    assert!(with_grad > 0, "no parameter got a gradient");
}
