//! Rendezvous store tests: set/get, waiting gets, counters, delete, check, timeouts and errors.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use strata_comm::{CommError, StoreClient, StoreServer};

const CONNECT: Duration = Duration::from_secs(5);

fn server() -> StoreServer {
    StoreServer::start("127.0.0.1:0".parse().unwrap()).expect("store starts on a free port")
}

fn client(server: &StoreServer) -> StoreClient {
    StoreClient::connect(server.local_addr(), CONNECT).expect("client connects")
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn set_then_get_returns_the_value_and_set_replaces_it() {
    let server = server();
    let store = client(&server);

    store.set("a", b"first").unwrap();
    assert_eq!(store.get("a", Duration::ZERO).unwrap(), b"first");
    store.set("a", b"second").unwrap();
    assert_eq!(store.get("a", Duration::ZERO).unwrap(), b"second");

    // Values are opaque bytes: an empty one and a 1 MiB one round-trip unchanged.
    store.set("empty", b"").unwrap();
    assert_eq!(store.get("empty", Duration::ZERO).unwrap(), b"");
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    store.set("big", &big).unwrap();
    assert_eq!(store.get("big", Duration::ZERO).unwrap(), big);
}

#[test]
fn get_waits_for_a_later_set_from_another_client() {
    let server = server();
    let reader = client(&server);
    let writer = client(&server);

    let setter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        writer.set("late", b"here").unwrap();
    });
    // The key does not exist yet when the get starts; it arrives ~200 ms later.
    assert_eq!(reader.get("late", Duration::from_secs(10)).unwrap(), b"here");
    setter.join().unwrap();
}

#[test]
fn get_timeout_names_the_key() {
    let server = server();
    let store = client(&server);

    let err = store.get("ring/0/addr/3", Duration::from_millis(200)).unwrap_err();
    assert!(matches!(&err, CommError::KeyTimeout { key, .. } if key == "ring/0/addr/3"), "{err}");
    assert!(err.to_string().contains("ring/0/addr/3"), "{err}");
    assert!(err.is_timeout());

    // The connection stays usable after a timed-out get.
    store.set("k", b"v").unwrap();
    assert_eq!(store.get("k", Duration::ZERO).unwrap(), b"v");
}

#[test]
fn add_is_an_atomic_counter_stored_as_decimal_text() {
    let server = server();
    let store = Arc::new(client(&server));

    // 0 + 1 = 1, 1 + 5 = 6, 6 - 2 = 4.
    assert_eq!(store.add("n", 1).unwrap(), 1);
    assert_eq!(store.add("n", 5).unwrap(), 6);
    assert_eq!(store.add("n", -2).unwrap(), 4);
    assert_eq!(store.get("n", Duration::ZERO).unwrap(), b"4");

    // 4 threads x 50 increments of 1, half through one shared client, half through clones.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let shared = store.clone();
            std::thread::spawn(move || {
                let own = shared.try_clone().unwrap();
                for _ in 0..50 {
                    if t % 2 == 0 { shared.add("c", 1) } else { own.add("c", 1) }.unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(store.add("c", 0).unwrap(), 200);
}

#[test]
fn add_refuses_a_key_that_holds_no_counter() {
    let server = server();
    let store = client(&server);
    store.set("name", b"resnet").unwrap();

    let err = store.add("name", 1).unwrap_err();
    assert!(matches!(err, CommError::StoreRefused { .. }), "{err}");
    assert!(err.to_string().contains("name"), "{err}");
}

#[test]
fn delete_removes_a_key_and_says_whether_it_existed() {
    let server = server();
    let store = client(&server);
    store.set("gone", b"x").unwrap();

    assert!(store.delete("gone").unwrap());
    assert!(!store.delete("gone").unwrap());
    assert!(store.get("gone", Duration::from_millis(50)).unwrap_err().is_timeout());
}

#[test]
fn check_reports_whether_all_keys_exist() {
    let server = server();
    let store = client(&server);
    store.set("x", b"1").unwrap();

    assert!(store.check(&["x"]).unwrap());
    assert!(!store.check(&["x", "y"]).unwrap());
    assert!(store.check(&[]).unwrap());
}

#[test]
fn a_port_in_use_is_a_clear_error_naming_the_port() {
    let first = server();
    let addr = first.local_addr();

    let err = StoreServer::start(addr).err().expect("second bind of the same port fails");
    assert!(matches!(err, CommError::PortInUse { port, .. } if port == addr.port()), "{err}");
    let message = err.to_string();
    assert!(message.contains(&addr.port().to_string()), "{message}");
    assert!(message.contains("--master-port"), "{message}");
}

#[test]
fn connect_retries_until_the_server_listens() {
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let worker = std::thread::spawn(move || StoreClient::connect(addr, Duration::from_secs(10)));

    std::thread::sleep(Duration::from_millis(300));
    let server = StoreServer::start(addr).expect("the port freed above is still free");
    let store = worker.join().unwrap().expect("connect succeeds once the server is up");
    store.set("up", b"1").unwrap();
    assert_eq!(client(&server).get("up", Duration::ZERO).unwrap(), b"1");
}

#[test]
fn connect_gives_up_after_its_timeout_naming_the_address() {
    let addr = format!("127.0.0.1:{}", free_port());

    let err = StoreClient::connect(addr.as_str(), Duration::from_millis(300)).err().unwrap();
    assert!(matches!(err, CommError::Connect { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains(&addr), "{message}");
    assert!(message.contains("MASTER_ADDR"), "{message}");
}

#[test]
fn requests_fail_once_the_server_is_dropped() {
    let server = server();
    let store = client(&server);
    store.set("k", b"v").unwrap();
    drop(server);

    // The server thread has stopped and its connections are closed.
    assert!(store.set("k", b"w").is_err());
}
