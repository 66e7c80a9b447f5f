//! A minimal MQTT 3.1.1 client over one TCP stream, built on the
//! `culex-core` codec: enough to connect, subscribe, publish and
//! acknowledge, with explicit buffers so callers control batching.

use std::io;
use std::net::SocketAddr;

use bytes::BytesMut;
use bytestring::ByteString;
use culex_core::codec::{self, ConnAck, Connect, ConnectReturnCode, Packet, SubAck, Subscribe, SubscribeReturnCode};
use culex_core::{PacketId, Protocol, QoS, TopicFilter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Largest packet the tool accepts from a broker.
const MAX_PACKET: usize = 1 << 20;

/// Bytes asked of the socket per read, unless told otherwise.
const READ_CHUNK: usize = 4 * 1024;

/// One client connection with its read and write buffers.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    rbuf: BytesMut,
    /// Bytes queued for the next [`Client::flush`].
    pub wbuf: BytesMut,
    /// Bytes asked of the socket per read: small for the many idle
    /// clients of `connections`, large for subscribers.
    pub read_chunk: usize,
}

/// An error for a broker that broke the protocol or closed early.
pub fn protocol_error(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

impl Client {
    /// Opens a TCP connection (TCP_NODELAY, as a device client would),
    /// sends CONNECT (MQTT 3.1.1, clean session) and waits for an accepting
    /// CONNACK.
    pub async fn connect(addr: SocketAddr, client_id: &str, keep_alive: u16) -> io::Result<Self> {
        Ok(Self::handshake(TcpStream::connect(addr).await?, client_id, keep_alive, true).await?.0)
    }

    /// [`Client::connect`] with the clean session flag `clean`; also
    /// returns the CONNACK's session present flag (a persistent session
    /// the broker kept, `clean` being false).
    pub async fn connect_session(
        addr: SocketAddr,
        client_id: &str,
        keep_alive: u16,
        clean: bool,
    ) -> io::Result<(Self, bool)> {
        Self::handshake(TcpStream::connect(addr).await?, client_id, keep_alive, clean).await
    }

    /// [`Client::connect`] with the socket's receive buffer (`SO_RCVBUF`)
    /// set to `rcvbuf` bytes before the connection opens, so that the
    /// window it advertises stays small: a slow reader then holds the
    /// broker back instead of its own kernel buffering for it.
    pub async fn connect_with_rcvbuf(
        addr: SocketAddr,
        client_id: &str,
        keep_alive: u16,
        rcvbuf: u32,
    ) -> io::Result<Self> {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_recv_buffer_size(rcvbuf)?;
        Ok(Self::handshake(socket.connect(addr).await?, client_id, keep_alive, true).await?.0)
    }

    /// CONNECT and CONNACK on a freshly opened stream: the client and the
    /// session present flag.
    pub async fn handshake(
        stream: TcpStream,
        client_id: &str,
        keep_alive: u16,
        clean_session: bool,
    ) -> io::Result<(Self, bool)> {
        stream.set_nodelay(true)?;
        let mut client =
            Self { stream, rbuf: BytesMut::new(), wbuf: BytesMut::with_capacity(256), read_chunk: READ_CHUNK };
        client.queue(&Packet::Connect(Box::new(Connect {
            protocol: Protocol::V311,
            clean_session,
            keep_alive,
            client_id: ByteString::from(client_id),
            will: None,
            bridge: false,
            username: None,
            password: None,
        })));
        client.flush().await?;
        match client.next_packet().await? {
            Some(Packet::ConnAck(ConnAck { code: ConnectReturnCode::Accepted, session_present })) => {
                Ok((client, session_present))
            }
            Some(Packet::ConnAck(ConnAck { code, .. })) => Err(protocol_error(format!("CONNACK refused: {code}"))),
            Some(other) => Err(protocol_error(format!("expected CONNACK, got {other:?}"))),
            None => Err(protocol_error("connection closed before CONNACK")),
        }
    }

    /// Subscribes to one filter and returns the QoS granted.
    pub async fn subscribe(&mut self, filter: &TopicFilter, qos: QoS) -> io::Result<QoS> {
        self.queue(&Packet::Subscribe(Subscribe { packet_id: PacketId::MIN, filters: vec![(filter.clone(), qos)] }));
        self.flush().await?;
        match self.next_packet().await? {
            Some(Packet::SubAck(SubAck { return_codes, .. })) => match return_codes.first() {
                Some(SubscribeReturnCode::Granted(granted)) => Ok(*granted),
                _ => Err(protocol_error("SUBSCRIBE refused")),
            },
            Some(other) => Err(protocol_error(format!("expected SUBACK, got {other:?}"))),
            None => Err(protocol_error("connection closed before SUBACK")),
        }
    }

    /// Appends `packet` to the write buffer.
    pub fn queue(&mut self, packet: &Packet) {
        packet.encode(&mut self.wbuf);
    }

    /// Writes the whole write buffer.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Decodes the next complete packet already read, if any (by 3.1.1's
    /// rules: the bench clients speak 3.1.1).
    pub fn decode(&mut self) -> io::Result<Option<Packet>> {
        codec::decode(&mut self.rbuf, MAX_PACKET, Protocol::V311)
            .map_err(|e| protocol_error(format!("malformed packet: {e}")))
    }

    /// Reads more bytes; `Ok(0)` is the end of the stream. Cancel safe.
    pub async fn fill(&mut self) -> io::Result<usize> {
        if self.rbuf.capacity() - self.rbuf.len() < self.read_chunk / 4 {
            self.rbuf.reserve(self.read_chunk);
        }
        self.stream.read_buf(&mut self.rbuf).await
    }

    /// Reads at most `limit` bytes (and at most [`READ_CHUNK`]); `Ok(0)`
    /// is the end of the stream. Cancel safe.
    pub async fn fill_at_most(&mut self, limit: usize) -> io::Result<usize> {
        let mut chunk = [0u8; READ_CHUNK];
        let n = self.stream.read(&mut chunk[..limit.clamp(1, READ_CHUNK)]).await?;
        self.rbuf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// The next packet, reading as needed; `None` at the end of the stream.
    pub async fn next_packet(&mut self) -> io::Result<Option<Packet>> {
        loop {
            if let Some(packet) = self.decode()? {
                return Ok(Some(packet));
            }
            if self.fill().await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Sends DISCONNECT, ignoring errors: the run is over either way.
    pub async fn disconnect(mut self) {
        self.queue(&Packet::Disconnect);
        let _ = self.flush().await;
    }

    /// Sends DISCONNECT and waits for the broker to close the connection,
    /// reading (and dropping) whatever comes before the end.
    pub async fn disconnect_and_wait(mut self) -> io::Result<()> {
        self.queue(&Packet::Disconnect);
        self.flush().await?;
        loop {
            self.rbuf.clear();
            if self.fill().await? == 0 {
                return Ok(());
            }
        }
    }
}
