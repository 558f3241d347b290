//! The bucketed reducer through the real launcher: whatever the bucket layout (one bucket, small
//! buckets, one per parameter) and with or without overlap, 2 and 3 workers reach the weights
//! of 1 worker with the concatenated batch; blocks dropped by stochastic depth (parameters with
//! no gradient) neither hang a rank nor break that equality; the metrics report the phases.

mod common;

use common::{metrics, temp_dir, train_run, worst_diff};

const MLP: &str = "tests/configs/mlp-synthetic.toml";
const RESNET_SD: &str = "tests/configs/resnet8-sd-synthetic.toml";

/// The tolerance for N workers against one (float sums in another order, 3 steps).
const TOL: f32 = 1e-5;

#[test]
fn every_bucket_layout_matches_one_worker_with_2_and_3_workers() {
    let dir = temp_dir("ddp-buckets");
    // The MLP's parameters hold 2 to 8 KiB each: 0.004 MiB buckets hold two or three, the
    // 0.001 MiB first bucket one.
    let layouts: [(&str, &[&str]); 4] = [
        ("default", &[]),
        ("small", &["ddp.bucket_cap_mb=0.004", "ddp.first_bucket_mb=0.001"]),
        ("per-param", &["ddp.bucket_cap_mb=0", "ddp.first_bucket_mb=0"]),
        ("after-backward", &["ddp.bucket_cap_mb=0.004", "ddp.overlap=false"]),
    ];
    for (workers, batch) in [(2, 8), (3, 4)] {
        let global = format!("data.batch_size={}", workers * batch);
        let one = train_run(MLP, &dir, &format!("one-{workers}"), 1, &[&global]);
        let untrained =
            train_run(MLP, &dir, &format!("lr0-{workers}"), 1, &[&global, "optimizer.lr=0.0"]);
        let (moved, _) = worst_diff(&one, &untrained, |_| true);
        assert!(moved > 1e-3, "3 steps moved the weights by only {moved:e}");

        for (layout, sets) in layouts {
            let per_worker = format!("data.batch_size={batch}");
            let mut all = vec![per_worker.as_str()];
            all.extend_from_slice(sets);
            let name = format!("{layout}-{workers}");
            let many = train_run(MLP, &dir, &name, workers, &all);
            let (diff, at) = worst_diff(&many, &one, |_| true);
            eprintln!("{workers} workers, {layout} buckets: max abs difference {diff:e} ({at})");
            assert!(diff <= TOL, "{workers} workers, {layout}: {diff:e} at {at}");
        }
    }
}

#[test]
fn dropped_blocks_contribute_zeros_and_never_hang_a_rank() {
    // Survival probabilities 0.73, 0.47 and 0.2 for the three blocks: a step keeps all three
    // with probability 0.07, so over 4 steps some block is dropped (and its parameters get
    // no gradient) with probability above 0.9999. Decisions are keyed by (seed, step), so 1
    // and 3 workers drop the same blocks; sync_bn makes batch norm exact too.
    let dir = temp_dir("ddp-dropped");
    let one = train_run(RESNET_SD, &dir, "one", 1, &["data.batch_size=24"]);
    for (workers, batch) in [(2, 12), (3, 8)] {
        let sets = [format!("data.batch_size={batch}"), "ddp.bucket_cap_mb=0.01".into()];
        let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
        let many = train_run(RESNET_SD, &dir, &format!("w{workers}"), workers, &sets);
        let (diff, at) = worst_diff(&many, &one, |_| true);
        eprintln!("{workers} workers with dropped blocks: max abs difference {diff:e} ({at})");
        assert!(diff <= TOL, "{workers} workers: {diff:e} at {at}");
    }
}

#[test]
fn metrics_report_the_phases_of_each_step() {
    let dir = temp_dir("ddp-phases");
    train_run(MLP, &dir, "phases", 2, &["ddp.bucket_cap_mb=0.004"]);
    let lines = metrics(&dir.join("phases"));
    let train: Vec<_> = lines.iter().filter(|l| l["kind"] == "train").collect();
    assert_eq!(train.len(), 3, "one line per step at log.every = 1");
    for line in train {
        let phase = |k: &str| line[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {line}"));
        let (fwd, bwd, exposed) =
            (phase("forward_s"), phase("backward_s"), phase("comm_exposed_s"));
        let (data, comm, opt) = (phase("data_s"), phase("comm_s"), phase("optimizer_s"));
        // Each phase is a measured duration; forward, backward and the all-reduces take time.
        assert!(fwd > 0.0 && bwd > 0.0 && comm > 0.0, "{line}");
        assert!(data >= 0.0 && exposed >= 0.0 && opt >= 0.0, "{line}");
    }
}
