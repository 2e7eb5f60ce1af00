use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago, below the range the
/// kernel hands out to outgoing connections (32768 and up on Linux).
///
/// Why not port 0: the kernel then picks from that same range, and
/// between this check and the server's own bind any client socket of a
/// test running beside it could take the port as its source port (seen in
/// CI: a gateway's API port "already in use"). Each call in a process
/// tries the next port of a range starting at an offset of its own.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id().wrapping_mul(7_919);
    for _ in 0..COUNT {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + offset.wrapping_add(n) % COUNT;
        let port = u16::try_from(port).expect("below 32000");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between 20000 and 32000")
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
