//! Publishes one message at QoS 1 with the sans-IO client over a blocking
//! TCP socket, and waits for its PUBACK:
//!
//! ```sh
//! cargo run -p culex-core --example publish -- 127.0.0.1:1883 sensors/t1 21.5
//! ```

// The example plays the runtime's part: it owns the socket and the clock
// that the core takes as arguments.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant as Clock};

use bytes::Bytes;
use culex_core::client::{Client, ClientEvent, ClientOptions};
use culex_core::{Instant, QoS, TopicName};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:1883".into());
    let topic = TopicName::new(args.next().unwrap_or_else(|| "culex/example".into()))?;
    let payload = Bytes::from(args.next().unwrap_or_else(|| "hello".into()));

    let started = Clock::now();
    let now = || Instant::from_origin(started.elapsed());
    let mut socket = TcpStream::connect(&address)?;
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut client = Client::new(ClientOptions::new("culex-example").keep_alive(30));
    client.connect(now());
    let mut buf = [0; 4096];
    loop {
        while let Some(bytes) = client.poll_transmit() {
            socket.write_all(&bytes)?;
        }
        while let Some(event) = client.poll_event() {
            match event {
                ClientEvent::Connected { .. } => {
                    client.publish(now(), topic.clone(), payload.clone(), QoS::AtLeastOnce, false);
                }
                ClientEvent::Published(id) => {
                    println!("published to {} (packet id {})", topic.as_str(), id.get());
                    client.disconnect(now());
                    if let Some(bytes) = client.poll_transmit() {
                        socket.write_all(&bytes)?;
                    }
                    return Ok(());
                }
                ClientEvent::Refused(code) => return Err(format!("refused: {code}").into()),
                ClientEvent::Lost(reason) => return Err(reason.to_string().into()),
                _ => {}
            }
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err("no PUBACK within 10 s".into());
        }
        match socket.read(&mut buf) {
            Ok(0) => return Err("the broker closed the connection".into()),
            Ok(n) => client.received(now(), &buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                client.timeout(now());
            }
            Err(e) => return Err(e.into()),
        }
    }
}
