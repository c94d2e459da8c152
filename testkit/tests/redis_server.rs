//! The redis-server spawner: ephemeral ports, PING readiness, stop / restart on the same port,
//! cleanup on drop; and the Redis Cluster spawner (3 masters, every slot served, cleanup).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use iron_testkit::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Send one raw RESP command and return the first reply bytes.
async fn raw(port: u16, cmd: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(cmd).await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn start_stop_restart_same_port() {
    let mut redis = RedisServer::start().await.unwrap();
    let port = redis.port();
    assert_ne!(port, 0);
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    assert!(redis.ping().await);
    assert!(redis.is_running());
    assert!(redis.output().contains("Ready to accept connections"));

    // It is a real, empty, non-persistent redis.
    assert_eq!(
        raw(port, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n").await,
        "+OK\r\n"
    );
    assert_eq!(
        raw(port, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").await,
        "$1\r\nv\r\n"
    );
    assert_eq!(
        raw(port, b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nsave\r\n").await,
        "*2\r\n$4\r\nsave\r\n$0\r\n\r\n"
    );

    redis.stop().await.unwrap();
    assert!(!redis.ping().await, "stopped server must not answer");
    assert!(!redis.is_running());
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    );
    redis.stop().await.unwrap(); // idempotent

    redis.restart().await.unwrap();
    assert_eq!(redis.port(), port, "restart keeps the port");
    assert!(redis.ping().await);
    assert_eq!(
        raw(port, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").await,
        "$-1\r\n",
        "no persistence"
    );

    // Restart while running also works.
    redis.restart().await.unwrap();
    assert!(redis.ping().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_and_cleanup_on_drop() {
    let a = RedisServer::start().await.unwrap();
    let b = RedisServer::start().await.unwrap();
    assert_ne!(a.port(), b.port());
    assert!(a.ping().await && b.ping().await);
    let dir = a.dir().to_path_buf();
    let port = a.port();
    assert!(dir.exists());
    drop(a);
    assert!(!dir.exists(), "temp dir removed on drop");
    // The process is gone (killed and reaped in Drop).
    let refused = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "redis still listening after drop");
    assert!(b.ping().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_of_three_masters_serves_every_slot_and_cleans_up() {
    use iron_testkit::redis::RedisCluster;

    assert!(
        RedisCluster::start(2).await.is_err(),
        "fewer than 3 masters"
    );
    let cluster = RedisCluster::start(3).await.unwrap();
    let ports = cluster.ports();
    assert_eq!(ports.len(), 3);
    assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);
    assert_eq!(
        cluster.url(),
        format!(
            "redis+cluster://127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}",
            ports[0], ports[1], ports[2]
        )
    );
    assert_eq!(
        cluster.node_urls(),
        ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
    );
    for (i, port) in ports.iter().enumerate() {
        let info = cluster.cluster_info(i).await.unwrap();
        for line in [
            "cluster_state:ok",
            "cluster_slots_assigned:16384",
            "cluster_known_nodes:3",
            "cluster_size:3",
        ] {
            assert!(info.contains(line), "node {i}: {line} missing in\n{info}");
        }
        // The cluster bus listens on port + 10000.
        tokio::net::TcpStream::connect(("127.0.0.1", port + 10_000))
            .await
            .unwrap();
    }
    // A key has exactly one owner; the other masters redirect to it.
    let mut owners = Vec::new();
    let mut moved = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let r = cluster
            .node_command(i, &["SET", "iron:{g}:probe", "1"])
            .await
            .unwrap();
        if r == "OK" {
            owners.push(*port);
        } else {
            assert!(r.starts_with("-MOVED "), "{r}");
            moved.push(r);
        }
    }
    assert_eq!(owners.len(), 1, "{moved:?}");
    let slot = cluster
        .node_command(0, &["CLUSTER", "KEYSLOT", "iron:{g}:probe"])
        .await
        .unwrap();
    for r in &moved {
        assert_eq!(*r, format!("-MOVED {slot} 127.0.0.1:{}", owners[0]));
    }

    let dirs: Vec<_> = cluster
        .nodes()
        .iter()
        .map(|n| n.dir().to_path_buf())
        .collect();
    assert!(dirs.iter().all(|d| d.join("nodes.conf").exists()));
    drop(cluster);
    assert!(
        dirs.iter().all(|d| !d.exists()),
        "temp dirs removed on drop"
    );
    for port in ports {
        let refused = tokio::time::timeout(Duration::from_secs(2), async {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            refused.is_ok(),
            "cluster node {port} still listening after drop"
        );
    }
}
