//! Opening a bridge's socket, written once for both runtimes: the name
//! resolved, `bridge_bind_address` bound, the connection made within
//! [`CONNECT_TIMEOUT`]. Blocking: a runtime runs it on its blocking pool
//! and hands the socket to its reactor.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use culex_core::bridge::Dial;
use socket2::{Domain, Protocol, Socket, Type};

/// How long a connection attempt to a remote broker may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to the address `dial` names, trying each address its host
/// resolves to in turn. The socket comes back non-blocking, Nagle off.
///
/// # Errors
///
/// The name does not resolve, the bind address is not one of this
/// machine's, or no address takes the connection (the last error).
pub fn connect(dial: &Dial) -> io::Result<TcpStream> {
    if dial.tls.is_some() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "TLS bridges are not supported by this version of Culex",
        ));
    }
    let bind = dial.bind_address.as_deref().map(bind_ip).transpose()?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{} has no address", dial.address.host));
    for addr in (dial.address.host.as_str(), dial.address.port).to_socket_addrs()? {
        match connect_to(addr, bind) {
            Ok(stream) => return Ok(stream),
            Err(error) => last = error,
        }
    }
    Err(last)
}

fn connect_to(addr: SocketAddr, bind: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(ip) = bind {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.connect_timeout(&addr.into(), CONNECT_TIMEOUT)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The address of `bridge_bind_address`: an IP address, or a name that
/// resolves to one.
fn bind_ip(name: &str) -> io::Result<IpAddr> {
    if let Ok(ip) = name.parse() {
        return Ok(ip);
    }
    (name, 0)
        .to_socket_addrs()?
        .next()
        .map(|a| a.ip())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("bridge_bind_address {name} has no address")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use culex_core::bridge::BridgeId;
    use culex_core::conf::BridgeAddress;
    use std::net::TcpListener;

    fn dial(port: u16, bind: Option<&str>) -> Dial {
        Dial {
            bridge: BridgeId(1),
            address: BridgeAddress { host: "localhost".into(), port },
            bind_address: bind.map(str::to_owned),
            tls: None,
            probe: false,
        }
    }

    #[test]
    fn connects_from_the_bind_address_and_reports_refusals() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stream = connect(&dial(port, Some("127.0.0.1"))).unwrap();
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer, stream.local_addr().unwrap());
        drop(listener);
        assert!(connect(&dial(port, None)).is_err());
        assert!(connect(&dial(port, Some("192.0.2.1"))).is_err(), "not an address of this machine");
    }
}
