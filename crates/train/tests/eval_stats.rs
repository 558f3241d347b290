//! Evaluation averages batch-norm running statistics over the ranks before it runs: two ranks
//! (threads over a TCP ring) whose running statistics differ end up with the mean on both, and
//! report the loss and accuracy one process reports with those averaged statistics.

use std::time::Duration;
use strata_comm::{Communicator, RingOptions, SingleProcess, StoreClient, StoreServer, TcpRing};
use strata_nn::{named_buffers, Module};
use strata_tensor::Tensor;
use strata_train::model::{build_model, load_datasets};
use strata_train::trainer::evaluate;
use strata_train::Config;

const CONFIG: &str = r#"
    name = "eval-stats"
    seed = 4
    epochs = 1
    [model]
    kind = "mlp"
    depth = 2
    width = 8
    batch_norm = true
    [data]
    dataset = "synthetic"
    synthetic_shape = [1, 4, 4]
    synthetic_len = 64
    batch_size = 8
    eval_batch_size = 16
    [optimizer]
    kind = "sgd"
    lr = 0.1
"#;

/// Builds the model and sets every running mean to `mean` and every running variance to
/// `var`; evaluates on `comm`; returns (loss, accuracy) and the running statistics after.
fn eval_with(comm: &mut dyn Communicator, mean: f32, var: f32) -> ((f64, f64), Vec<Vec<f32>>) {
    let cfg = Config::parse(CONFIG, "eval-stats", &[]).unwrap();
    let (train, test) = load_datasets(&cfg.data).unwrap();
    let model: Box<dyn Module> =
        build_model(&cfg.model, train.sample_shape(), train.num_classes(), cfg.seed).unwrap();
    let buffers: Vec<_> = named_buffers(model.as_ref()).into_iter().collect();
    for (name, b) in &buffers {
        let value = if name.ends_with("running_mean") { mean } else { var };
        let n = b.borrow().elem_count();
        *b.borrow_mut() = Tensor::from_vec(vec![value; n], [n]).unwrap();
    }
    let only: Vec<_> = buffers.iter().map(|(_, b)| b.clone()).collect();
    let result = evaluate(model.as_ref(), &only, test, &cfg, comm).unwrap();
    let after = only.iter().map(|b| b.borrow().to_vec::<f32>().unwrap()).collect();
    ((result.loss, result.accuracy), after)
}

#[test]
fn evaluation_first_averages_running_statistics_over_the_ranks() {
    let server = StoreServer::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr();
    // Rank 0 holds mean 1 and variance 2, rank 1 mean 3 and variance 6: the averages are 2
    // and 4, exact in f32.
    let ranks: Vec<_> = [(1.0f32, 2.0f32), (3.0, 6.0)]
        .into_iter()
        .enumerate()
        .map(|(rank, (mean, var))| {
            std::thread::spawn(move || {
                let store = StoreClient::connect(addr, Duration::from_secs(5)).unwrap();
                let opts = RingOptions { timeout: Duration::from_secs(20), ..Default::default() };
                let mut ring = TcpRing::connect(&store, rank, 2, opts).unwrap();
                eval_with(&mut ring, mean, var)
            })
        })
        .collect();
    let results: Vec<_> = ranks.into_iter().map(|t| t.join().unwrap()).collect();
    let (alone, _) = eval_with(&mut SingleProcess::new(), 2.0, 4.0);

    for (rank, (metrics, after)) in results.iter().enumerate() {
        for stats in after {
            assert!(stats.iter().all(|&v| v == 2.0 || v == 4.0), "rank {rank}: {stats:?}");
        }
        // Each test sample is counted once, on one rank; the sums are the same f64 sums in
        // another order, hence the small tolerance.
        assert!(
            (metrics.0 - alone.0).abs() < 1e-9,
            "rank {rank}: loss {} vs {}",
            metrics.0,
            alone.0
        );
        assert_eq!(metrics.1, alone.1, "rank {rank}: accuracy");
    }
    // Had each rank kept its own statistics, rank 0 would report another loss.
    let (own, _) = eval_with(&mut SingleProcess::new(), 1.0, 2.0);
    assert!((own.0 - alone.0).abs() > 1e-6, "the statistics do not change the loss");
}
