//! Dropout and augmentation streams differ between ranks, through the real launcher. With a
//! training set of one sample, the padded sampler hands that same sample to both of 2 workers
//! (as PyTorch's `DistributedSampler` pads by wrapping), so without randomness both ranks
//! compute the same gradient and their average is exactly the 1-worker gradient: the runs
//! agree bit for bit. With rank-keyed dropout masks or augmentation they cannot, while a
//! repeated run still agrees with itself.

mod common;

use common::{temp_dir, train};

const CONFIG: &str = "tests/configs/mlp-synthetic.toml";

/// One sample, one sample per worker and step, three epochs of one step each.
const ONE_SAMPLE: [&str; 3] = ["data.train_limit=1", "data.batch_size=1", "epochs=3"];

fn final_bytes(dir: &std::path::Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name).join("final.safetensors")).unwrap()
}

/// Final weights of 2 workers, of 2 workers again, and of 1 worker, with `extra` settings.
fn runs(dir: &std::path::Path, tag: &str, extra: &[&str]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let sets = [&ONE_SAMPLE[..], extra].concat();
    for (name, workers) in [("a", 2), ("b", 2), ("one", 1)] {
        train(CONFIG, dir, &format!("{tag}-{name}"), workers, &sets);
    }
    let w = |name: &str| final_bytes(dir, &format!("{tag}-{name}"));
    (w("a"), w("b"), w("one"))
}

#[test]
fn without_randomness_two_workers_on_the_same_sample_equal_one() {
    let dir = temp_dir("streams-plain");
    let (a, _, one) = runs(&dir, "plain", &[]);
    assert!(a == one, "the control case: identical inputs, identical averaged gradient");
}

#[test]
fn dropout_masks_differ_between_ranks_and_repeat_across_runs() {
    let dir = temp_dir("streams-dropout");
    // mlp-synthetic has no dropout of its own; 0.5 drops half of every hidden activation.
    let (a, b, one) = runs(&dir, "dropout", &["model.dropout=0.5"]);
    assert!(a == b, "the same seed and world size repeat the masks");
    assert!(a != one, "rank 1 drew rank 0's dropout masks");
}

#[test]
fn augmentation_differs_between_ranks_and_repeats_across_runs() {
    let dir = temp_dir("streams-augment");
    let (a, b, one) = runs(&dir, "augment", &["data.hflip=true", "data.crop_padding=2"]);
    assert!(a == b, "the same seed and world size repeat the augmentation");
    assert!(a != one, "rank 1 drew rank 0's crops and flips");
}
