//! The Redis target against a real `redis-server` started by the test on a
//! port of its own. Without `redis-server` on PATH this test fails and says
//! what to install: a bench whose Redis side is never run is not tested.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bench::driver::{run, LoadConfig, Target};
use bench::keys::{KeyDist, Mix};
use bench::redis::RedisTarget;

/// A redis-server child that is killed when the guard drops.
struct RedisServer {
    child: Child,
    address: SocketAddr,
}

impl RedisServer {
    fn start() -> RedisServer {
        // Binding port 0 and letting go of it gives a port nobody else uses
        // right now, so tests and other servers on the machine do not collide.
        let address = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &address.port().to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}); install it (apt-get install -y redis-server) \
                     to run the Redis bench test; bench/vs-redis.sh installs it too"
                )
            });
        let mut server = RedisServer { child, address };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&address, Duration::from_millis(100)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("redis-server exited at start ({status})");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {address} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn seed() -> u64 {
    let seed = match std::env::var("SEED") {
        Ok(text) => text.parse().expect("SEED must be a u64"),
        Err(_) => rand::random(),
    };
    println!("SEED={seed}");
    seed
}

#[test]
fn one_second_against_a_real_redis() {
    let seed = seed();
    let server = RedisServer::start();
    let target = RedisTarget::new(server.address);
    let small = LoadConfig {
        services: 2,
        outstanding: 20,
        keys: 2_000,
        warmup: Duration::from_millis(200),
        duration: Duration::from_secs(1),
        seed,
        ..LoadConfig::default()
    };

    // Before any key exists, every read finds nothing.
    let empty = run(
        &target,
        &LoadConfig {
            preload: false,
            mix: Mix::Read,
            ..small.clone()
        },
        false,
    )
    .unwrap();
    println!("{empty}");
    assert!(empty.ops > 0);
    assert_eq!(empty.error_count(), 0, "{empty}");
    assert_eq!(empty.not_found, empty.reads);
    assert!(
        empty.memory.is_none(),
        "memory is measured around a preload only"
    );

    // With the preload, every read finds its key, and the memory grew by at
    // least the payload.
    let full = run(
        &target,
        &LoadConfig {
            mix: Mix::Half,
            dist: KeyDist::Zipfian,
            ..small.clone()
        },
        false,
    )
    .unwrap();
    println!("{full}");
    assert!(full.ops > 0 && full.reads > 0 && full.writes > 0, "{full}");
    assert_eq!(full.error_count(), 0, "{full}");
    assert_eq!(full.not_found, 0, "{full}");
    assert_eq!(full.preload.as_ref().unwrap().keys_written, 2_000);
    let memory = full.memory.expect("redis reports used_memory");
    assert!(memory.used_bytes > memory.baseline_bytes);
    assert_eq!(memory.payload_bytes, 2_000 * (8 + 150));
    assert!(memory.bytes_per_key >= 158.0, "{memory:?}");

    // The server holds exactly the preloaded keys.
    assert_eq!(
        target.used_memory_bytes().unwrap().map(|b| b > 0),
        Some(true)
    );
    let mut conn = bench::redis::RedisService::connect(server.address).unwrap();
    let reply = conn.call(&[b"DBSIZE"], Duration::from_secs(5)).unwrap();
    assert_eq!(reply, bench::resp::Reply::Integer(2_000));
}
