//! A listener's TLS settings (`certfile`, `keyfile`, `cafile`, ...), as
//! Mosquitto scopes them: to the `listener` line above them, or to the
//! default listener before any `listener` line.
//!
//! Only paths and values are kept here: the runtime reads the files, and an
//! unreadable or invalid one stops start-up naming the file and the
//! config line ([`Located::error`]).
//!
//! Divergences, on purpose: a TLS key on a listener without `certfile` and
//! `keyfile` is an error (Mosquitto serves such a listener without TLS),
//! and `tls_version tlsv1.1` is an error (no TLS 1.1 here).

use super::ConfError;
use super::file::Line;

/// The keys of this section.
pub(super) const KEYS: &[&str] = &[
    "cafile",
    "capath",
    "certfile",
    "ciphers",
    "ciphers_tls1.3",
    "crlfile",
    "dhparamfile",
    "disable_client_cert_date_checks",
    "keyfile",
    "psk_hint",
    "require_certificate",
    "tls_engine",
    "tls_engine_kpass_sha1",
    "tls_keyform",
    "tls_version",
    "use_identity_as_username",
    "use_subject_as_username",
];

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

/// Reads one TLS line into the settings of the listener it applies to.
/// The Mosquitto TLS keys that ask for what only OpenSSL has: `None` for
/// any other key; for these, accepted (a value asking nothing of it, such
/// as `tls_keyform pem`) or an error saying why Culex cannot honour it.
fn openssl_only(line: &Line<'_>) -> Option<Result<(), ConfError>> {
    let reason = match line.key {
        "dhparamfile" => Ok(Some(
            "Culex's TLS (rustls) has no finite-field Diffie-Hellman suites; remove the line: \
             its ECDHE suites give forward secrecy to every current client",
        )),
        "tls_engine" | "tls_engine_kpass_sha1" => {
            Ok(Some("Culex's TLS (rustls) has no OpenSSL engines; give the key as a PEM keyfile"))
        }
        "tls_keyform" => line.word().map(|form| {
            (form != "pem").then_some("Culex's TLS (rustls) reads keys from PEM files only (tls_keyform pem)")
        }),
        "psk_hint" => Ok(Some("Culex's TLS (rustls) has no pre-shared key suites; use certificates")),
        "disable_client_cert_date_checks" => {
            line.boolean().map(|disable| disable.then_some("Culex always checks the dates of client certificates"))
        }
        _ => return None,
    };
    Some(match reason {
        Ok(None) => Ok(()),
        Ok(Some(reason)) => Err(line.error(format!("{}: {reason}.", line.key))),
        Err(error) => Err(error),
    })
}

pub(super) fn handle(tls: &mut TlsConf, line: &Line<'_>) -> Result<(), ConfError> {
    if let Some(outcome) = openssl_only(line) {
        return outcome;
    }
    if tls.first.is_none() {
        tls.first = Some(line.located(line.key));
    }
    match line.key {
        "certfile" | "keyfile" | "cafile" | "capath" | "crlfile" | "ciphers" | "ciphers_tls1.3" => {
            let value = line.located(line.text()?);
            let slot = match line.key {
                "certfile" => &mut tls.certfile,
                "keyfile" => &mut tls.keyfile,
                "cafile" => &mut tls.cafile,
                "capath" => &mut tls.capath,
                "crlfile" => &mut tls.crlfile,
                "ciphers" => &mut tls.ciphers,
                _ => &mut tls.ciphers_tls13,
            };
            // Given twice for one listener is an error, as in Mosquitto.
            if slot.is_some() {
                return Err(line.duplicate());
            }
            *slot = Some(value);
        }
        "require_certificate" | "use_identity_as_username" | "use_subject_as_username" => {
            let on = line.boolean()?;
            match (line.key, on) {
                ("require_certificate", _) => tls.require_certificate = on,
                // Mosquitto checks use_identity_as_username first: it wins.
                ("use_identity_as_username", true) => tls.username = CertUsername::CommonName,
                ("use_subject_as_username", true) if tls.username != CertUsername::CommonName => {
                    tls.username = CertUsername::Subject;
                }
                ("use_identity_as_username", false) if tls.username == CertUsername::CommonName => {
                    tls.username = CertUsername::Connect;
                }
                ("use_subject_as_username", false) if tls.username == CertUsername::Subject => {
                    tls.username = CertUsername::Connect;
                }
                _ => {}
            }
        }
        "tls_version" => {
            tls.version = Some(match line.word()? {
                "tlsv1.3" => TlsVersion::Tls13,
                "tlsv1.2" => TlsVersion::Tls12,
                "tlsv1.1" => {
                    return Err(line.error(
                        "tls_version tlsv1.1 is not supported: Culex speaks TLS 1.2 and 1.3 only; use tlsv1.2.",
                    ));
                }
                other => {
                    return Err(
                        line.error(format!("Unsupported tls_version \"{other}\": expected tlsv1.3 or tlsv1.2."))
                    );
                }
            });
        }
        _ => return Err(line.unknown()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_only_openssl_honours_stop_start_up_saying_why() {
        for (text, reason) in [
            ("dhparamfile /etc/dh.pem", "no finite-field Diffie-Hellman suites"),
            ("tls_engine pkcs11", "no OpenSSL engines"),
            ("tls_keyform engine", "PEM files only"),
            ("psk_hint door", "no pre-shared key suites"),
            ("disable_client_cert_date_checks true", "always checks the dates"),
        ] {
            let error = crate::conf::testing::error(&format!("listener 8883\n{text}\n"));
            assert_eq!(error.line, 2, "{text}");
            assert!(error.reason.contains(reason), "{text}: {}", error.reason);
        }
        let accepted = conf("listener 8883\ntls_keyform pem\ndisable_client_cert_date_checks false\n");
        assert!(accepted.warnings.is_empty());
    }
    use crate::conf::testing::{assert_error, conf};
    use crate::conf::{DEFAULT_PORT, parse};

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

    // --- the keys, as read from a file ---------------------------------

    /// `value` as given at `line` of test.conf.
    fn given(value: &str, line: usize) -> Option<Located<String>> {
        Some(Located { value: value.to_owned(), file: "test.conf".to_owned(), line })
    }

    #[test]
    fn tls_keys_apply_to_their_listener() {
        let conf = conf(
            "listener 1883\nlistener 8883\ncafile /c a.pem\ncertfile /s.crt\nkeyfile /s.key\n\
             require_certificate true\nuse_identity_as_username true\ntls_version tlsv1.2\ncrlfile /crl\n\
             ciphers ECDHE-RSA-AES128-GCM-SHA256\nciphers_tls1.3 TLS_AES_128_GCM_SHA256\ncapath /ca\n",
        );
        assert_eq!(conf.listeners[0].tls, TlsConf::default());
        let tls = &conf.listeners[1].tls;
        assert!(tls.is_enabled());
        assert_eq!(tls.cafile, given("/c a.pem", 3));
        assert_eq!(tls.certfile, given("/s.crt", 4));
        assert_eq!(tls.keyfile, given("/s.key", 5));
        assert!(tls.require_certificate);
        assert_eq!(tls.username, CertUsername::CommonName);
        assert_eq!(tls.version, Some(TlsVersion::Tls12));
        assert_eq!(tls.crlfile, given("/crl", 9));
        assert_eq!(tls.ciphers, given("ECDHE-RSA-AES128-GCM-SHA256", 10));
        assert_eq!(tls.ciphers_tls13, given("TLS_AES_128_GCM_SHA256", 11));
        assert_eq!(tls.capath, given("/ca", 12));
        assert!(conf.warnings.is_empty());
    }

    #[test]
    fn tls_keys_before_any_listener_configure_the_default_listener() {
        let both = conf("certfile /s.crt\nkeyfile /s.key\nlistener 1884\n");
        assert_eq!(both.listeners.len(), 2);
        assert!(!both.listeners[0].tls.is_enabled());
        assert_eq!(both.listeners[1].port, DEFAULT_PORT);
        assert_eq!(both.listeners[1].tls.certfile, given("/s.crt", 1));
        let port = conf("port 8883\ncertfile /s.crt\nkeyfile /s.key\n");
        assert_eq!((port.listeners[0].port, port.listeners[0].tls.is_enabled()), (8883, true));
    }

    #[test]
    fn tls_in_local_only_mode_applies_to_the_loopback_listeners() {
        let conf = conf("certfile /s.crt\nkeyfile /s.key\n");
        assert!(conf.local_only);
        assert!(conf.listeners.iter().all(|l| l.tls.is_enabled()));
    }

    #[test]
    fn tls_version_values() {
        assert_eq!(
            conf("listener 1\ncertfile c\nkeyfile k\ntls_version tlsv1.3\n").listeners[0].tls.version,
            Some(TlsVersion::Tls13)
        );
        assert_error(
            "listener 1\ncertfile c\nkeyfile k\ntls_version tlsv1.1\n",
            4,
            "tls_version tlsv1.1 is not supported: Culex speaks TLS 1.2 and 1.3 only; use tlsv1.2.",
        );
        assert_error(
            "listener 1\ntls_version sslv3\n",
            2,
            "Unsupported tls_version \"sslv3\": expected tlsv1.3 or tlsv1.2.",
        );
    }

    #[test]
    fn certfile_and_keyfile_go_together() {
        let reason = "Both certfile and keyfile must be provided if one of them is set.";
        assert_error("listener 8883\ncertfile /s.crt\n", 2, reason);
        assert_error("listener 8883\nkeyfile /s.key\n", 2, reason);
    }

    #[test]
    fn tls_keys_without_a_certificate_are_an_error() {
        assert_error(
            "listener 8883\nrequire_certificate true\ncafile /c\n",
            2,
            "require_certificate is set for a listener without certfile and keyfile: TLS needs both (Culex \
             refuses to serve this listener without TLS).",
        );
    }

    #[test]
    fn client_certificate_checks_need_a_ca() {
        let tls = "listener 8883\ncertfile /s\nkeyfile /k\n";
        assert_error(
            &format!("{tls}require_certificate true\n"),
            2,
            "require_certificate is set but neither cafile nor capath is: client certificates cannot be checked.",
        );
        assert_error(
            &format!("{tls}use_identity_as_username true\n"),
            2,
            "use_identity_as_username is set but neither cafile nor capath is: client certificates cannot be \
             checked.",
        );
        assert_error(&format!("{tls}crlfile /crl\n"), 4, "crlfile is set but neither cafile nor capath is.");
        assert!(parse("t", &format!("{tls}require_certificate true\ncapath /ca\n")).is_ok());
    }

    #[test]
    fn identity_wins_over_subject_and_false_turns_each_off() {
        let base = "listener 8883\ncertfile /s\nkeyfile /k\ncafile /c\n";
        let mode = |extra: &str| conf(&format!("{base}{extra}")).listeners[0].tls.username;
        assert_eq!(mode("use_subject_as_username true\n"), CertUsername::Subject);
        assert_eq!(mode("use_subject_as_username true\nuse_identity_as_username true\n"), CertUsername::CommonName);
        assert_eq!(mode("use_identity_as_username true\nuse_subject_as_username true\n"), CertUsername::CommonName);
        assert_eq!(mode("use_identity_as_username true\nuse_identity_as_username false\n"), CertUsername::Connect);
        assert_eq!(mode("use_subject_as_username false\n"), CertUsername::Connect);
    }

    #[test]
    fn tls_files_given_twice_are_an_error() {
        assert_error("listener 8883\ncertfile /a\ncertfile /b\n", 3, "Duplicate certfile value in configuration.");
        assert_error("listener 8883\ncertfile\n", 2, "Empty certfile value in configuration.");
    }
}
