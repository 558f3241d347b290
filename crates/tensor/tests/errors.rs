//! Bad operands make the CPU backend return errors, never panic: wrong shapes name the op and
//! the shapes, mixed dtypes name the dtypes.

mod common;

use common::{cpu, random};
use strata_tensor::{Conv2dParams, DType, Pool2dParams, SgdParams, Tensor, TensorError};

fn f32s(dims: &[usize]) -> Tensor {
    random(dims, 1, DType::F32)
}

fn f64s(dims: &[usize]) -> Tensor {
    random(dims, 1, DType::F64)
}

/// The error must be a shape error of `op` whose message mentions `needle`.
fn shape_error<T: std::fmt::Debug>(r: strata_tensor::Result<T>, op: &str, needle: &str) {
    match r {
        Err(e @ TensorError::Shape { .. }) => {
            let msg = e.to_string();
            assert!(msg.starts_with(op), "{msg:?} should name {op}");
            assert!(msg.contains(needle), "{msg:?} should mention {needle}");
        }
        other => panic!("{op}: expected a shape error, got {other:?}"),
    }
}

#[test]
fn convolution_shape_errors() {
    let be = cpu();
    let p = Conv2dParams { stride: 1, padding: 1 };
    let x = f32s(&[2, 3, 8, 8]);
    shape_error(be.conv2d_forward(&x, &f32s(&[4, 5, 3, 3]), p), "conv2d_forward", "[4, 5, 3, 3]");
    shape_error(
        be.conv2d_forward(&f32s(&[3, 8, 8]), &f32s(&[4, 3, 3, 3]), p),
        "conv2d_forward",
        "4 dims",
    );
    let zero_stride = Conv2dParams { stride: 0, padding: 0 };
    shape_error(
        be.conv2d_forward(&x, &f32s(&[4, 3, 3, 3]), zero_stride),
        "conv2d_forward",
        "stride",
    );
    let big = Conv2dParams { stride: 1, padding: 0 };
    shape_error(be.conv2d_forward(&x, &f32s(&[4, 3, 9, 9]), big), "conv2d_forward", "larger");
    let w = f32s(&[4, 3, 3, 3]);
    let dy_wrong = f32s(&[2, 4, 7, 8]);
    shape_error(
        be.conv2d_backward_data(&dy_wrong, &w, [2, 3, 8, 8], p),
        "conv2d_backward_data",
        "[2, 4, 7, 8]",
    );
    shape_error(
        be.conv2d_backward_filter(&dy_wrong, &x, [4, 3, 3, 3], p),
        "conv2d_backward_filter",
        "[2, 4, 8, 8]",
    );
}

#[test]
fn other_shape_errors() {
    let be = cpu();
    let (a, b) = (f32s(&[2, 3]), f32s(&[3, 2]));
    shape_error(be.add(&a, &b), "add", "[2, 3]");
    shape_error(be.mul(&a, &b), "mul", "[3, 2]");
    shape_error(be.relu_backward(&a, &b), "relu_backward", "[2, 3]");
    let mut d = a.clone();
    shape_error(be.add_assign(&mut d, &b), "add_assign", "[3, 2]");

    let x = f32s(&[2, 3, 4, 4]);
    shape_error(
        be.batch_norm_forward_train(&x, &f32s(&[4]), &f32s(&[3]), 1e-5),
        "batch_norm_forward_train",
        "gamma",
    );
    shape_error(
        be.batch_norm_forward_train(&f32s(&[2, 3, 4]), &f32s(&[3]), &f32s(&[3]), 1e-5),
        "batch_norm_forward_train",
        "[2, 3, 4]",
    );
    let c = f32s(&[3]);
    shape_error(
        be.batch_norm_backward(&f32s(&[2, 3, 4, 5]), &x, &c, &c, &c),
        "batch_norm_backward",
        "[2, 3, 4, 5]",
    );
    shape_error(
        be.batch_norm_forward_eval(&x, &c, &c, &c, &f32s(&[2]), 1e-5),
        "batch_norm_forward_eval",
        "var",
    );

    shape_error(be.global_avg_pool_forward(&a), "global_avg_pool_forward", "4 dims");
    shape_error(
        be.global_avg_pool_backward(&a, [2, 4, 1, 1]),
        "global_avg_pool_backward",
        "[2, 3]",
    );
    let p = Pool2dParams { kernel: 2, stride: 2, padding: 0 };
    shape_error(
        be.max_pool2d_forward(&x, Pool2dParams { kernel: 2, stride: 1, padding: 2 }),
        "max_pool2d_forward",
        "padding",
    );
    let (y, argmax) = be.max_pool2d_forward(&x, p).unwrap();
    shape_error(
        be.max_pool2d_backward(&y, &argmax[1..], [2, 3, 4, 4]),
        "max_pool2d_backward",
        "argmax",
    );
    shape_error(
        be.max_pool2d_backward(&y, &vec![999; argmax.len()], [2, 3, 4, 4]),
        "max_pool2d_backward",
        "999",
    );

    shape_error(be.linear_forward(&a, &f32s(&[4, 2]), None), "linear_forward", "[4, 2]");
    shape_error(be.linear_forward(&a, &f32s(&[4, 3]), Some(&f32s(&[3]))), "linear_forward", "b");
    shape_error(
        be.linear_backward(&f32s(&[2, 5]), &a, &f32s(&[4, 3]), true),
        "linear_backward",
        "dy",
    );

    shape_error(
        be.softmax_cross_entropy_forward(&a, &[0]),
        "softmax_cross_entropy_forward",
        "1 labels",
    );
    shape_error(
        be.softmax_cross_entropy_forward(&a, &[0, 3]),
        "softmax_cross_entropy_forward",
        "label 3",
    );
    shape_error(
        be.softmax_cross_entropy_backward(&a, &[0, 7], 1.0),
        "softmax_cross_entropy_backward",
        "label 7",
    );

    let (mut p1, mut buf) = (a.clone(), f32s(&[2, 2]));
    let sgd =
        SgdParams { lr: 0.1, momentum: 0.9, weight_decay: 0.0, nesterov: false, first_step: true };
    shape_error(be.sgd_step(&mut p1, &a, &mut buf, sgd), "sgd_step", "[2, 2]");
}

#[test]
fn mixed_dtypes_are_rejected() {
    let be = cpu();
    let (a, b) = (f32s(&[2, 3]), f64s(&[2, 3]));
    let is_dtype_error = |r: strata_tensor::Result<Tensor>, op: &str| match r {
        Err(TensorError::DType { op: o, expected: DType::F32, got: DType::F64 }) => {
            assert_eq!(o, op)
        }
        other => panic!("{op}: expected a dtype error, got {other:?}"),
    };
    is_dtype_error(be.add(&a, &b), "add");
    is_dtype_error(be.mul(&a, &b), "mul");
    let p = Conv2dParams { stride: 1, padding: 0 };
    is_dtype_error(
        be.conv2d_forward(&f32s(&[1, 2, 3, 3]), &f64s(&[1, 2, 1, 1]), p),
        "conv2d_forward",
    );
    is_dtype_error(be.linear_forward(&a, &f32s(&[4, 3]), Some(&f64s(&[4]))), "linear_forward");
    let mut d = a.clone();
    assert!(matches!(be.add_assign(&mut d, &b), Err(TensorError::DType { .. })));
    assert!(matches!(
        be.batch_norm_forward_train(&f32s(&[2, 3]), &f64s(&[3]), &f32s(&[3]), 1e-5),
        Err(TensorError::DType { .. })
    ));
}
