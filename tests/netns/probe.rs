//! Round trips to the server as a host sees them: run inside a host's namespace, connect to
//! its forwarder and time PostgreSQL's answer to an SSLRequest (eight bytes out, one back),
//! which the server gives before any authentication. Prints the shortest of N in
//! microseconds: every trip pays the link's added latency, so the shortest shows it best on
//! a busy machine.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::net::Host;

/// `probe ADDR PORT N`.
pub fn main(args: &[String]) -> ExitCode {
    let [addr, port, n] = args else {
        eprintln!("usage: probe ADDR PORT N");
        return ExitCode::from(2);
    };
    let (Ok(port), Ok(n)) = (port.parse::<u16>(), n.parse::<u32>()) else {
        eprintln!("usage: probe ADDR PORT N");
        return ExitCode::from(2);
    };
    let mut shortest = Duration::MAX;
    for _ in 0..n.max(1) {
        match round_trip(addr, port) {
            Ok(took) => shortest = shortest.min(took),
            Err(e) => {
                eprintln!("probe {addr}:{port}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("{}", shortest.as_micros());
    ExitCode::SUCCESS
}

fn round_trip(addr: &str, port: u16) -> std::io::Result<Duration> {
    let mut stream = TcpStream::connect((addr, port))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    // Length 8, then the SSLRequest code 80877103.
    let request = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let started = Instant::now();
    stream.write_all(&request)?;
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer)?;
    Ok(started.elapsed())
}

/// The shortest of `n` round trips from `host` to the server through the forwarder at
/// `port`, by running this executable's probe inside the host's namespace.
pub fn shortest_round_trip(host: &Host, port: u16, n: u32) -> Duration {
    let exe = std::env::current_exe().expect("the test executable");
    let output = host
        .command(exe)
        .args([
            "probe",
            &host.root_addr.to_string(),
            &port.to_string(),
            &n.to_string(),
        ])
        .output()
        .expect("run the probe");
    assert!(
        output.status.success(),
        "probe from {}: {}",
        host.netns,
        String::from_utf8_lossy(&output.stderr)
    );
    let micros: u64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("the probe prints microseconds");
    Duration::from_micros(micros)
}
