//! The redis-server spawner: ephemeral ports, PING readiness, stop / restart on the same port,
//! cleanup on drop.
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
