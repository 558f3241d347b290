//! The tape: accumulation over repeated uses, the grad-ready hook, recording nothing without a
//! tape, and gradients of composed operations against finite differences.

use std::cell::RefCell;
use std::rc::Rc;
use strata_autodiff::gradcheck::check_gradients;
use strata_autodiff::{ops, Param, Tape, Var};
use strata_tensor::{Conv2dParams, Tensor};

fn t(values: &[f64], dims: &[usize]) -> Tensor {
    Tensor::from_vec(values.to_vec(), dims).unwrap()
}

fn sum(x: &Var) -> Var {
    // sum(x) = x_flat · 1, as a [1] tensor.
    let n = x.value().elem_count();
    let flat = ops::reshape(x, &[1, n]).unwrap();
    let ones = Var::constant(Tensor::from_vec(vec![1.0f64; n], [1, n]).unwrap());
    ops::reshape(&ops::linear(&flat, &ones, None).unwrap(), &[1]).unwrap()
}

#[test]
fn a_value_used_twice_gets_the_sum_of_both_gradients() {
    // d/dx sum(x + x) = 2 for every element.
    let tape = Tape::new();
    let x = tape.leaf(t(&[1.0, -2.0, 3.0], &[3]));
    let y = sum(&ops::add(&x, &x).unwrap());
    let grads = tape.backward(&y).unwrap();
    assert_eq!(grads.get(&x).unwrap().to_vec::<f64>().unwrap(), vec![2.0, 2.0, 2.0]);
}

#[test]
fn parameters_accumulate_and_the_hook_fires_once_each_when_final() {
    // L = sum(relu(p) * 3) + sum(p): dL/dp = 3 * (p > 0) + 1.
    let p = Rc::new(Param::new(t(&[1.0, -1.0], &[2])));
    let q = Rc::new(Param::new(t(&[5.0], &[1])));
    let tape = Tape::new();
    let fired: Rc<RefCell<Vec<(usize, Vec<f64>)>>> = Rc::default();
    let log = fired.clone();
    tape.set_grad_ready_hook(Box::new(move |index, param| {
        log.borrow_mut().push((index, param.grad().as_ref().unwrap().to_vec::<f64>()?));
        Ok(())
    }));
    let pv = tape.param(&p);
    let qv = tape.param(&q);
    let a = sum(&ops::scale(&ops::relu(&pv).unwrap(), 3.0).unwrap());
    let b = sum(&pv);
    let loss = ops::add(&ops::add(&a, &b).unwrap(), &qv).unwrap();
    tape.backward(&loss).unwrap();

    assert_eq!(p.grad().as_ref().unwrap().to_vec::<f64>().unwrap(), vec![4.0, 1.0]);
    assert_eq!(q.grad().as_ref().unwrap().to_vec::<f64>().unwrap(), vec![1.0]);
    let fired = fired.borrow();
    assert_eq!(fired.len(), 2, "once per parameter: {fired:?}");
    // q's only use is the last operation recorded, so its gradient is final first.
    assert_eq!(fired[0], (1, vec![1.0]));
    assert_eq!(fired[1], (0, vec![4.0, 1.0]));

    // A second backward pass accumulates, as in PyTorch, until zero_grad.
    let tape = Tape::new();
    let again = sum(&tape.param(&p));
    tape.backward(&again).unwrap();
    assert_eq!(p.grad().as_ref().unwrap().to_vec::<f64>().unwrap(), vec![5.0, 2.0]);
    p.zero_grad();
    assert!(p.grad().is_none());
}

#[test]
fn constants_record_nothing_and_a_non_scalar_loss_is_an_error() {
    let x = Var::constant(t(&[1.0, 2.0], &[2]));
    let y = ops::relu(&x).unwrap();
    assert!(!y.requires_grad() && y.tape().is_none());

    let tape = Tape::new();
    let leaf = tape.leaf(t(&[1.0, 2.0], &[2]));
    let z = ops::relu(&leaf).unwrap();
    assert_eq!(tape.len(), 1);
    let err = tape.backward(&z).err().expect("a [2] loss is refused");
    assert!(err.to_string().contains("[2]"), "{err}");
}

#[test]
fn composed_operations_match_finite_differences() {
    // f(x, w) = gap(relu(conv(x, w)) + conv(x, w)): the conv output is used twice.
    let x: Vec<f64> = (0..2 * 2 * 4 * 4).map(|i| ((i * 7 % 13) as f64 - 6.0) / 5.0).collect();
    let w: Vec<f64> = (0..3 * 2 * 3 * 3).map(|i| ((i * 5 % 11) as f64 - 5.0) / 7.0).collect();
    let inputs = [t(&x, &[2, 2, 4, 4]), t(&w, &[3, 2, 3, 3])];
    let p = Conv2dParams { stride: 1, padding: 1 };
    let report = check_gradients(
        |v| {
            let c = ops::conv2d(&v[0], &v[1], p)?;
            ops::global_avg_pool(&ops::add(&ops::relu(&c)?, &c)?)
        },
        &inputs,
        1e-6,
        1e-6,
    )
    .unwrap();
    assert!(report.max_rel_error < 1e-6, "{report:?}");
}

#[test]
fn a_checkpointed_segment_gives_the_gradients_of_the_recorded_ops_and_keeps_only_its_input() {
    use strata_autodiff::checkpoint::segment;
    // y = sum(relu(linear(x, w, b))), the linear layer once recorded directly, once as a
    // segment that runs unrecorded and re-runs in backward.
    let w = Rc::new(Param::new(t(&[0.5, -1.0, 2.0, 0.25, 1.5, -0.5], &[2, 3])));
    let b = Rc::new(Param::new(t(&[0.1, -0.2], &[2])));
    let x0 = t(&[1.0, 2.0, -1.0, 0.5, -0.5, 3.0], &[2, 3]);
    let run = |segmented: bool| {
        w.zero_grad();
        b.zero_grad();
        let tape = Tape::new();
        let fired: Rc<RefCell<Vec<usize>>> = Rc::default();
        let log = fired.clone();
        tape.set_grad_ready_hook(Box::new(move |index, _| {
            log.borrow_mut().push(index);
            Ok(())
        }));
        let x = tape.leaf(x0.clone());
        let h = if segmented {
            let (wc, bc) = (Var::constant(w.value().clone()), Var::constant(b.value().clone()));
            let out = ops::relu(&ops::linear(&x.detach(), &wc, Some(&bc)).unwrap()).unwrap();
            let (w2, b2) = (w.clone(), b.clone());
            let rerun = Box::new(move |inner: &Rc<Tape>, xin: &Var| {
                ops::relu(&ops::linear(xin, &inner.param(&w2), Some(&inner.param(&b2)))?)
            });
            let h =
                segment(Some(&tape), &x, out.value().clone(), vec![w.clone(), b.clone()], rerun)
                    .unwrap();
            // The segment's node keeps its input alone (no parameter, no intermediate).
            let last = tape.records().pop().unwrap();
            assert_eq!(last.op, "checkpoint");
            assert_eq!(last.saved.len(), 1);
            assert_eq!(last.saved[0].storage, x0.storage_id());
            h
        } else {
            ops::relu(&ops::linear(&x, &tape.param(&w), Some(&tape.param(&b))).unwrap()).unwrap()
        };
        let grads = tape.backward(&sum(&h)).unwrap();
        let dx = grads.get(&x).unwrap().to_vec::<f64>().unwrap();
        let dw = w.grad().as_ref().unwrap().to_vec::<f64>().unwrap();
        let db = b.grad().as_ref().unwrap().to_vec::<f64>().unwrap();
        let order = fired.borrow().clone();
        (dx, dw, db, order)
    };
    let direct = run(false);
    let segmented = run(true);
    assert_eq!(segmented, direct);
    // Once per parameter, and the values are right: h = relu(x wᵀ + b); where the
    // pre-activation is positive, dL/db = 1 per row, dL/dw = x of that row.
    // Rows: x0 = [1, 2, -1] -> pre [0.5 - 2 - 2 + 0.1, 0.25 + 3 + 0.5 - 0.2] = [-3.4, 3.55];
    //       x1 = [0.5, -0.5, 3] -> [0.25 + 0.5 + 6 + 0.1, 0.125 - 0.75 - 1.5 - 0.2] = [6.85, -2.325].
    assert_eq!(direct.2, vec![1.0, 1.0]);
    assert_eq!(direct.1, vec![0.5, -0.5, 3.0, 1.0, 2.0, -1.0]);
    let mut order = direct.3.clone();
    order.sort();
    assert_eq!(order, vec![0, 1]);
}
