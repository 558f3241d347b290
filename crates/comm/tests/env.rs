//! Reading the launcher's variables and building a process group from them.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::store_server;
use strata_comm::{CommError, LaunchEnv, ProcessGroup, ReduceOp};

/// A lookup over fixed `(name, value)` pairs, standing in for the process environment.
fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> =
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |name| map.get(name).cloned()
}

fn env_error(pairs: &[(&str, &str)]) -> String {
    let err = LaunchEnv::from_lookup(vars(pairs)).unwrap_err();
    assert!(matches!(err, CommError::Env { .. }), "{err}");
    err.to_string()
}

#[test]
fn full_launcher_variables_are_read() {
    let env = LaunchEnv::from_lookup(vars(&[
        ("RANK", "3"),
        ("WORLD_SIZE", "4"),
        ("LOCAL_RANK", "1"),
        ("LOCAL_WORLD_SIZE", "2"),
        ("MASTER_ADDR", "10.0.0.7"),
        ("MASTER_PORT", "29500"),
    ]))
    .unwrap();
    assert_eq!(
        env,
        LaunchEnv {
            rank: 3,
            world_size: 4,
            local_rank: 1,
            local_world_size: 2,
            master: Some("10.0.0.7:29500".into()),
        }
    );
}

#[test]
fn a_world_of_one_needs_no_store() {
    let env = LaunchEnv::from_lookup(vars(&[("WORLD_SIZE", "1")])).unwrap();
    assert_eq!((env.rank, env.master.as_deref()), (0, None));

    let group = ProcessGroup::from_launch_env(env, Duration::from_secs(1)).unwrap();
    assert_eq!((group.comm.rank(), group.comm.world_size()), (0, 1));
    assert!(group.store.is_none());
}

#[test]
fn missing_or_malformed_variables_are_named() {
    let message = env_error(&[]);
    assert!(message.contains("WORLD_SIZE") && message.contains("launcher run"), "{message}");

    let message = env_error(&[("WORLD_SIZE", "2"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "1")]);
    assert!(message.contains("RANK is not set"), "{message}");

    let message = env_error(&[("WORLD_SIZE", "2"), ("RANK", "abc")]);
    assert!(message.contains("RANK") && message.contains("\"abc\""), "{message}");

    let message = env_error(&[("WORLD_SIZE", "2"), ("RANK", "2")]);
    assert!(message.contains("RANK") && message.contains("not below"), "{message}");

    let message = env_error(&[("WORLD_SIZE", "2"), ("RANK", "0")]);
    assert!(message.contains("MASTER_ADDR"), "{message}");

    let message = env_error(&[("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_ADDR", "h")]);
    assert!(message.contains("MASTER_PORT"), "{message}");

    let pairs = [("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "0")];
    assert!(env_error(&pairs).contains("MASTER_PORT"));
}

#[test]
fn ipv6_master_addresses_are_bracketed() {
    let env = LaunchEnv::from_lookup(vars(&[
        ("RANK", "0"),
        ("WORLD_SIZE", "2"),
        ("MASTER_ADDR", "::1"),
        ("MASTER_PORT", "29500"),
    ]))
    .unwrap();
    assert_eq!(env.master.as_deref(), Some("[::1]:29500"));
}

#[test]
fn a_group_of_two_built_from_launcher_variables_reduces() {
    let server = store_server();
    let port = server.local_addr().port().to_string();

    let threads: Vec<_> = (0..2)
        .map(|rank| {
            let port = port.clone();
            std::thread::spawn(move || {
                let rank_text = rank.to_string();
                let env = LaunchEnv::from_lookup(vars(&[
                    ("RANK", &rank_text),
                    ("WORLD_SIZE", "2"),
                    ("MASTER_ADDR", "127.0.0.1"),
                    ("MASTER_PORT", &port),
                ]))
                .unwrap();
                let mut group =
                    ProcessGroup::from_launch_env(env, Duration::from_secs(20)).unwrap();
                // Ranks hold 1 and 2: the mean is 1.5.
                let mut buf = [rank as f32 + 1.0];
                group.comm.all_reduce(&mut buf, ReduceOp::Mean).unwrap();
                let store = group.store.as_ref().unwrap();
                (buf[0], store.add("joined", 1).is_ok())
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), (1.5, true));
    }
}
