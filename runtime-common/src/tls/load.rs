//! Reads a listener's certificate, key, CAs and CRLs and builds its
//! rustls `ServerConfig`. Every failure names the file, the config line
//! that gave it, and the reason; start-up stops on it.

use std::sync::Arc;

use culex_core::conf::{Located, TlsConf, TlsVersion};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite};

/// Why a TLS listener cannot be set up. Displayed as
/// `file:line: reason`, like every configuration error.
#[derive(Debug, thiserror::Error)]
#[error("{at}")]
pub struct LoadError {
    at: culex_core::conf::ConfError,
}

impl LoadError {
    fn at<T>(place: &Located<T>, reason: impl Into<String>) -> Self {
        Self { at: place.error(reason) }
    }
}

/// The rustls configuration of a listener with `certfile` set.
pub(super) fn server_config(tls: &TlsConf) -> Result<Arc<ServerConfig>, LoadError> {
    let (Some(certfile), Some(keyfile)) = (&tls.certfile, &tls.keyfile) else { unreachable_config()? };
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = cipher_suites(tls, &provider.cipher_suites)?;
    let provider = Arc::new(provider);
    let cas = ca_certificates(tls)?;
    let chain = completed_chain(certificates(certfile, "server certificate")?, &cas, &provider);
    let key = PrivateKeyDer::from_pem_file(&keyfile.value).map_err(|e| {
        LoadError::at(keyfile, format!("Unable to load server key file \"{}\": {}.", keyfile.value, pem_reason(&e)))
    })?;
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.version {
        Some(TlsVersion::Tls13) => &[&rustls::version::TLS13],
        Some(TlsVersion::Tls12) | None => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let first = tls.first.as_ref().unwrap_or(certfile);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| LoadError::at(first, format!("No usable TLS version and cipher suite: {e}.")))?;
    let builder = match client_verifier(tls, cas, &provider)? {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| {
        LoadError::at(
            keyfile,
            format!("Server certificate \"{}\" and key \"{}\" do not go together: {e}.", certfile.value, keyfile.value),
        )
    })?;
    Ok(Arc::new(config))
}

/// The parser only hands over listeners with both files; a caller that
/// builds a `TlsConf` by hand without them gets an error, not a panic.
fn unreachable_config<T>() -> Result<T, LoadError> {
    let place = Located { value: (), file: "configuration".to_owned(), line: 0 };
    Err(LoadError::at(&place, "certfile and keyfile are both needed for TLS."))
}

/// A pki-types PEM error in words; a missing file is the usual one.
pub(super) fn pem_reason(error: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match error {
        Error::Io(e) => e.to_string(),
        Error::NoItemsFound => "no PEM item of the expected kind found".to_owned(),
        other => format!("invalid PEM ({other:?})"),
    }
}

/// Every certificate of a PEM file; none is an error.
fn certificates(place: &Located<String>, what: &str) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    read_certificates(&place.value)
        .map_err(|reason| LoadError::at(place, format!("Unable to load {what} \"{}\": {reason}.", place.value)))
}

pub(super) fn read_certificates(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_reason(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_reason(&e))?;
    if certs.is_empty() {
        return Err("no certificate found in it".to_owned());
    }
    Ok(certs)
}

/// The certificates of `cafile` and `capath`, in that order.
fn ca_certificates(tls: &TlsConf) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let mut cas = Vec::new();
    if let Some(cafile) = &tls.cafile {
        cas.extend(certificates(cafile, "CA certificates")?);
    }
    if let Some(capath) = &tls.capath {
        let found = ca_directory(&capath.value).map_err(|reason| {
            LoadError::at(capath, format!("Unable to load CA certificates from \"{}\": {reason}.", capath.value))
        })?;
        tracing::debug!("{} CA certificates read from {}", found.len(), capath.value);
        cas.extend(found);
    }
    Ok(cas)
}

/// The chain the server sends. A `certfile` holding the server's
/// certificate alone is completed, as OpenSSL completes it, with the
/// intermediates of `cas` that lead from it to a self-signed CA there
/// (the root itself is not sent: a client must trust it already). A
/// `certfile` holding more than one certificate is sent as it is, and so
/// is one that no path in `cas` leads from (logged).
fn completed_chain(
    chain: Vec<CertificateDer<'static>>,
    cas: &[CertificateDer<'static>],
    provider: &CryptoProvider,
) -> Vec<CertificateDer<'static>> {
    let ([leaf], false) = (chain.as_slice(), cas.is_empty()) else { return chain };
    let Ok(end_entity) = webpki::EndEntityCert::try_from(leaf) else { return chain };
    let (mut anchors, mut intermediates) = (Vec::new(), Vec::new());
    for ca in cas {
        let self_signed = webpki::EndEntityCert::try_from(ca).is_ok_and(|cert| cert.subject() == cert.issuer());
        match self_signed.then(|| webpki::anchor_from_trusted_cert(ca)) {
            Some(Ok(anchor)) => anchors.push(anchor),
            Some(Err(_)) => {}
            None => intermediates.push(ca.clone()),
        }
    }
    let path = end_entity.verify_for_usage(
        provider.signature_verification_algorithms.all,
        &anchors,
        &intermediates,
        rustls::pki_types::UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    );
    match path {
        Ok(path) => {
            let mut completed = vec![leaf.clone()];
            completed.extend(path.intermediate_certificates().map(|cert| cert.der().into_owned()));
            completed
        }
        Err(error) => {
            tracing::debug!("server certificate sent alone: no path to a CA of cafile/capath ({error:?})");
            chain
        }
    }
}

/// Checks client certificates against `cas` (and `crlfile`): required
/// with `require_certificate`, otherwise asked for and checked when sent.
/// `None` without `cafile` or `capath`: no client certificate is asked
/// for.
fn client_verifier(
    tls: &TlsConf,
    cas: Vec<CertificateDer<'static>>,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, LoadError> {
    let Some(place) = tls.cafile.as_ref().or(tls.capath.as_ref()) else { return Ok(None) };
    let mut roots = RootCertStore::empty();
    for cert in cas {
        roots
            .add(cert)
            .map_err(|e| LoadError::at(place, format!("Unable to load CA certificates \"{}\": {e}.", place.value)))?;
    }
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if let Some(crlfile) = &tls.crlfile {
        let crls = CertificateRevocationListDer::pem_file_iter(&crlfile.value)
            .and_then(|items| items.collect::<Result<Vec<_>, _>>())
            .map_err(|e| pem_reason(&e))
            .and_then(|crls| if crls.is_empty() { Err("no CRL found in it".to_owned()) } else { Ok(crls) })
            .map_err(|reason| {
                LoadError::at(crlfile, format!("Unable to load CRL file \"{}\": {reason}.", crlfile.value))
            })?;
        builder = builder.with_crls(crls);
    }
    if !tls.require_certificate {
        builder = builder.allow_unauthenticated();
    }
    let verifier =
        builder.build().map_err(|e| LoadError::at(place, format!("Unusable client CA configuration: {e}.")))?;
    Ok(Some(verifier))
}

/// The certificates of every PEM file in `dir` (OpenSSL's hashed links
/// and the files they point to alike); files without a certificate are
/// skipped. A directory without any certificate is an error.
pub(super) fn ca_directory(dir: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_file())
        .collect();
    entries.sort();
    let mut found = Vec::new();
    for path in entries {
        let Some(name) = path.to_str() else { continue };
        let Ok(certs) = read_certificates(name) else { continue };
        found.extend(certs);
    }
    if found.is_empty() {
        return Err("no certificate found in the directory".to_owned());
    }
    Ok(found)
}

/// The cipher suites `ciphers` (TLS 1.2, OpenSSL names) and
/// `ciphers_tls1.3` (IANA names) allow, in the order given. Only exact
/// suite names are understood: OpenSSL's keywords (`HIGH`, `!aNULL`, ...)
/// cannot be honoured and stop start-up. Names of suites rustls does not
/// implement are skipped, as OpenSSL skips unknown names, but at least
/// one of each list must remain.
fn cipher_suites(tls: &TlsConf, all: &[SupportedCipherSuite]) -> Result<Vec<SupportedCipherSuite>, LoadError> {
    let is13 = |s: &SupportedCipherSuite| matches!(s, SupportedCipherSuite::Tls13(_));
    let mut chosen: Vec<SupportedCipherSuite> = match &tls.ciphers_tls13 {
        Some(list) => pick(list, all.iter().filter(|s| is13(s)), |name| name.replacen("TLS13_", "TLS_", 1))?,
        None => all.iter().filter(|s| is13(s)).copied().collect(),
    };
    let tls12 = match &tls.ciphers {
        Some(list) => pick(list, all.iter().filter(|s| !is13(s)), openssl_name)?,
        None => all.iter().filter(|s| !is13(s)).copied().collect(),
    };
    chosen.extend(tls12);
    Ok(chosen)
}

/// The suites of `candidates` named in `list`, in list order.
fn pick<'a>(
    list: &Located<String>,
    candidates: impl Iterator<Item = &'a SupportedCipherSuite> + Clone,
    name_of: impl Fn(&str) -> String,
) -> Result<Vec<SupportedCipherSuite>, LoadError> {
    let mut chosen = Vec::new();
    for name in list.value.split([':', ',', ' ']).filter(|n| !n.is_empty()) {
        if name.starts_with(['!', '-', '+', '@']) || name.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(LoadError::at(
                list,
                format!(
                    "Cipher list item \"{name}\" is an OpenSSL keyword or operator, which Culex (rustls) cannot \
                     honour; list the cipher suites by name."
                ),
            ));
        }
        let found = candidates.clone().find(|s| name_of(s.suite().as_str().unwrap_or_default()) == name);
        match found {
            Some(suite) if !chosen.contains(suite) => chosen.push(*suite),
            Some(_) => {}
            None => tracing::warn!("Warning: {}:{}: cipher {name} is not available, skipped", list.file, list.line),
        }
    }
    if chosen.is_empty() {
        let known: Vec<String> = candidates.map(|s| name_of(s.suite().as_str().unwrap_or_default())).collect();
        return Err(LoadError::at(
            list,
            format!("No cipher suite of \"{}\" is available; choose from {}.", list.value, known.join(":")),
        ));
    }
    Ok(chosen)
}

/// OpenSSL's name of a TLS 1.2 suite from its IANA name, for the suites
/// rustls implements (ECDHE with AES-GCM or ChaCha20-Poly1305).
fn openssl_name(iana: &str) -> String {
    let Some(rest) = iana.strip_prefix("TLS_ECDHE_") else { return iana.to_owned() };
    let Some((auth, cipher)) = rest.split_once("_WITH_") else { return iana.to_owned() };
    let cipher = match cipher {
        "AES_128_GCM_SHA256" => "AES128-GCM-SHA256",
        "AES_256_GCM_SHA384" => "AES256-GCM-SHA384",
        "CHACHA20_POLY1305_SHA256" => "CHACHA20-POLY1305",
        other => return format!("{auth}-{other}"),
    };
    format!("ECDHE-{auth}-{cipher}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_names_of_the_tls12_suites() {
        let names: Vec<String> = rustls::crypto::ring::default_provider()
            .cipher_suites
            .iter()
            .filter(|s| matches!(s, SupportedCipherSuite::Tls12(_)))
            .map(|s| openssl_name(s.suite().as_str().unwrap_or_default()))
            .collect();
        for name in [
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            "ECDHE-RSA-AES256-GCM-SHA384",
            "ECDHE-RSA-AES128-GCM-SHA256",
            "ECDHE-RSA-CHACHA20-POLY1305",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
    }

    fn list(value: &str) -> Option<Located<String>> {
        Some(Located { value: value.to_owned(), file: "t.conf".to_owned(), line: 3 })
    }

    #[test]
    fn cipher_lists_pick_named_suites_and_refuse_keywords() {
        let all = rustls::crypto::ring::default_provider().cipher_suites;
        let tls = TlsConf {
            ciphers: list("ECDHE-RSA-AES128-GCM-SHA256:DES-CBC3-SHA"),
            ciphers_tls13: list("TLS_CHACHA20_POLY1305_SHA256"),
            ..TlsConf::default()
        };
        let names: Vec<_> = cipher_suites(&tls, &all).unwrap_or_default().iter().map(|s| s.suite()).collect();
        assert_eq!(
            names,
            [
                rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
                rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
            ]
        );
        let keyword = TlsConf { ciphers: list("HIGH:!aNULL"), ..TlsConf::default() };
        let error = cipher_suites(&keyword, &all).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.starts_with("t.conf:3: Cipher list item \"HIGH\""), "{error}");
        let none = TlsConf { ciphers_tls13: list("TLS_AES_128_CCM_SHA256"), ..TlsConf::default() };
        let error = cipher_suites(&none, &all).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("No cipher suite of \"TLS_AES_128_CCM_SHA256\""), "{error}");
    }
}
