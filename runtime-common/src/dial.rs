//! Opening a bridge's socket, written once for both runtimes: the name
//! resolved, `bridge_bind_address` bound, the connection made within
//! [`CONNECT_TIMEOUT`] and, with the bridge's TLS keys, the TLS handshake
//! done within [`OPEN_TIMEOUT`] (as a listener's clients have for
//! theirs). Blocking: a runtime runs it on its blocking pool and hands
//! the socket and its [`Link`] to its reactor.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use culex_core::Remote;
use culex_core::bridge::Dial;
use socket2::{Domain, Protocol, Socket, Type};

use crate::link::{Link, OPEN_TIMEOUT};
use crate::tls::{ClientConfigs, ClientSession};

/// How long a connection attempt to a remote broker may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A bridge's socket, open.
#[derive(Debug)]
pub struct Dialed {
    /// Non-blocking, Nagle off.
    pub stream: TcpStream,
    /// How it carries MQTT: raw, or in TLS with the handshake done.
    pub link: Link,
}

/// Connects to the address `dial` names, trying each address its host
/// resolves to in turn, and does the TLS handshake if the bridge has TLS
/// keys.
///
/// # Errors
///
/// The name does not resolve, the bind address is not one of this
/// machine's, no address takes the connection (the last error), the TLS
/// files cannot be read, or the handshake fails (the remote's
/// certificate is not trusted, not for this host, ...).
pub fn connect(dial: &Dial, configs: &ClientConfigs) -> io::Result<Dialed> {
    let mut stream = tcp(dial)?;
    let link = match &dial.tls {
        None => Link::raw(),
        Some(tls) => {
            let config = configs.get(tls).map_err(io::Error::other)?;
            let mut session = ClientSession::new(config, &dial.address.host).map_err(io::Error::other)?;
            session.handshake(&mut stream, OPEN_TIMEOUT)?;
            Link::tls_client(Remote::Tcp(stream.peer_addr()?), session)
        }
    };
    stream.set_nonblocking(true)?;
    Ok(Dialed { stream, link })
}

/// The TCP connection, blocking.
fn tcp(dial: &Dial) -> io::Result<TcpStream> {
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
        let stream = connect(&dial(port, Some("127.0.0.1")), &ClientConfigs::default()).unwrap().stream;
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer, stream.local_addr().unwrap());
        drop(listener);
        assert!(connect(&dial(port, None), &ClientConfigs::default()).is_err());
        assert!(
            connect(&dial(port, Some("192.0.2.1")), &ClientConfigs::default()).is_err(),
            "not an address of this machine"
        );
    }
}
