//! A listener's TLS settings (`certfile`, `keyfile`, `cafile`, ...), as
//! Mosquitto scopes them: to the `listener` line above them, or to the
//! default listener before any `listener` line.
//!
//! Only paths and values live here: the runtime reads the files, and an
//! unreadable or invalid one stops start-up naming the file and the
//! config line ([`Located::error`]).

use super::file::ConfError;

/// A value with the config line that set it, so that a problem found
/// later (a file that cannot be read) can name that line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    /// The value as written.
    pub value: T,
    /// The file the line is in.
    pub file: String,
    /// The 1-based line number.
    pub line: usize,
}

impl<T> Located<T> {
    /// A [`ConfError`] at this value's line.
    pub fn error(&self, reason: impl Into<String>) -> ConfError {
        ConfError { file: self.file.clone(), line: self.line, reason: reason.into() }
    }
}

/// The oldest TLS version a listener accepts. Mosquitto: `tls_version`.
/// Without it, TLS 1.2 and 1.3 are accepted, as in Mosquitto 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// `tlsv1.2`: TLS 1.2 and 1.3.
    Tls12,
    /// `tlsv1.3`: TLS 1.3 only.
    Tls13,
}

/// Where the user name of a client on a TLS listener comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CertUsername {
    /// From CONNECT, checked against `password_file` (the default).
    #[default]
    Connect,
    /// `use_identity_as_username true`: the Common Name of the client's
    /// certificate; CONNECT's user name and password are ignored.
    CommonName,
    /// `use_subject_as_username true`: the certificate's whole subject,
    /// formatted as RFC 2253 (`CN=dev1,O=Example,C=DE`), as Mosquitto
    /// formats it.
    Subject,
}

/// The TLS keys given for one listener. The listener speaks TLS when
/// [`certfile`](Self::certfile) is set (the parser makes sure `keyfile`
/// is then set too, and that no TLS key is given without them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsConf {
    /// `certfile`: the server certificate chain, PEM.
    pub certfile: Option<Located<String>>,
    /// `keyfile`: the server's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub keyfile: Option<Located<String>>,
    /// `cafile`: CA certificates that sign client certificates, PEM.
    pub cafile: Option<Located<String>>,
    /// `capath`: a directory of such CA certificates, PEM, one or more
    /// per file.
    pub capath: Option<Located<String>>,
    /// `crlfile`: revoked client certificates, PEM CRLs.
    pub crlfile: Option<Located<String>>,
    /// `require_certificate`: a client without a valid certificate fails
    /// the handshake. Without it, a certificate is asked for (when a CA
    /// is configured) and checked if sent, but not required.
    pub require_certificate: bool,
    /// `use_identity_as_username` / `use_subject_as_username`.
    pub username: CertUsername,
    /// `tls_version`; `None` accepts TLS 1.2 and 1.3.
    pub version: Option<TlsVersion>,
    /// `ciphers`: the TLS 1.2 cipher suites, OpenSSL names separated by
    /// `:`.
    pub ciphers: Option<Located<String>>,
    /// `ciphers_tls1.3`: the TLS 1.3 cipher suites, IANA names separated
    /// by `:`.
    pub ciphers_tls13: Option<Located<String>>,
    /// The first TLS key given for this listener (its name), for errors
    /// about the set as a whole.
    pub first: Option<Located<String>>,
}

impl TlsConf {
    /// Whether the listener speaks TLS.
    pub fn is_enabled(&self) -> bool {
        self.certfile.is_some()
    }

    /// Checks the keys together, as Mosquitto does when it opens the
    /// listener: certfile and keyfile go together, client certificates
    /// need a CA to check them against, and TLS keys need a certificate.
    pub(super) fn validate(&self) -> Result<(), ConfError> {
        let Some(first) = &self.first else { return Ok(()) };
        match (&self.certfile, &self.keyfile) {
            (Some(_), Some(_)) => {}
            (Some(at), None) | (None, Some(at)) => {
                return Err(at.error("Both certfile and keyfile must be provided if one of them is set."));
            }
            (None, None) => {
                return Err(first.error(format!(
                    "{} is set for a listener without certfile and keyfile: TLS needs both (Culex refuses to \
                     serve this listener without TLS).",
                    first.value
                )));
            }
        }
        let has_ca = self.cafile.is_some() || self.capath.is_some();
        if !has_ca {
            let needs_ca = if self.require_certificate {
                Some("require_certificate")
            } else {
                match self.username {
                    CertUsername::Connect => None,
                    CertUsername::CommonName => Some("use_identity_as_username"),
                    CertUsername::Subject => Some("use_subject_as_username"),
                }
            };
            if let Some(key) = needs_ca {
                return Err(first.error(format!(
                    "{key} is set but neither cafile nor capath is: client certificates cannot be checked."
                )));
            }
            if let Some(crl) = &self.crlfile {
                return Err(crl.error("crlfile is set but neither cafile nor capath is."));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(value: &str, line: usize) -> Located<String> {
        Located { value: value.to_owned(), file: "t.conf".to_owned(), line }
    }

    #[test]
    fn located_error_names_its_line() {
        assert_eq!(at("/x", 4).error("bad").to_string(), "t.conf:4: bad");
    }

    #[test]
    fn no_tls_key_is_valid_and_not_enabled() {
        let tls = TlsConf::default();
        assert!(tls.validate().is_ok());
        assert!(!tls.is_enabled());
    }
}
