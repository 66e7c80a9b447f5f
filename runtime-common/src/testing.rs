//! What the tests of the TLS and link layers share: the test
//! certificates (`tests/data/tls`), listener settings made from them, and
//! an in-memory rustls client with its two directions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::Arc;

use culex_core::Remote;
use culex_core::conf::{Located, TlsConf};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::tls::ListenerTls;

pub(crate) const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tls");

pub(crate) fn path(name: &str) -> String {
    format!("{DATA}/{name}")
}

pub(crate) fn at(value: &str, line: usize) -> Option<Located<String>> {
    Some(Located { value: value.to_owned(), file: "t.conf".to_owned(), line })
}

/// The listener's TLS keys: the test server certificate, plus `extra`.
pub(crate) fn conf(extra: impl FnOnce(&mut TlsConf)) -> TlsConf {
    let mut tls =
        TlsConf { certfile: at(&path("server.crt"), 2), keyfile: at(&path("server.key"), 3), ..TlsConf::default() };
    tls.first = tls.certfile.clone();
    extra(&mut tls);
    tls
}

pub(crate) fn listener(extra: impl FnOnce(&mut TlsConf)) -> ListenerTls {
    ListenerTls::load(&conf(extra)).unwrap().expect("a TLS listener")
}

pub(crate) fn with_ca(tls: &mut TlsConf) {
    tls.cafile = at(&path("ca.crt"), 4);
}

pub(crate) fn client(cert: Option<&str>) -> ClientConnection {
    client_with(cert, &[&rustls::version::TLS13, &rustls::version::TLS12])
}

pub(crate) fn client_with(
    cert: Option<&str>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> ClientConnection {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(path("ca.crt")).unwrap()).unwrap();
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let config = match cert {
        Some(name) => {
            let chain = vec![CertificateDer::from_pem_file(path(&format!("{name}.crt"))).unwrap()];
            let key = PrivateKeyDer::from_pem_file(path(&format!("{name}.key"))).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap()).unwrap()
}

/// Everything the client has to send.
pub(crate) fn from_client(client: &mut ClientConnection) -> Vec<u8> {
    let mut out = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut out).unwrap();
    }
    out
}

/// Gives the client what the server wrote; its plaintext, or its error.
pub(crate) fn to_client(client: &mut ClientConnection, mut data: &[u8]) -> Result<Vec<u8>, rustls::Error> {
    let mut plain = Vec::new();
    while !data.is_empty() {
        client.read_tls(&mut data).unwrap();
        let state = client.process_new_packets()?;
        let mut buf = vec![0; state.plaintext_bytes_to_read()];
        client.reader().read_exact(&mut buf).unwrap();
        plain.extend_from_slice(&buf);
    }
    Ok(plain)
}

pub(crate) fn remote() -> Remote {
    Remote::Tcp(SocketAddr::from(([127, 0, 0, 1], 40000)))
}
