//! The subject of a client certificate, read from its DER bytes: the
//! Common Name (`use_identity_as_username`) or the whole name as RFC 2253
//! text (`use_subject_as_username`), as Mosquitto takes them from OpenSSL.
//!
//! Only the path to the subject is parsed; rustls has already checked the
//! certificate. Anything unexpected gives `None` (the client is then
//! refused with CONNACK 4), never a panic.

use std::fmt::Write as _;

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
/// `[0] EXPLICIT Version`, optional at the start of a TBSCertificate.
const VERSION: u8 = 0xA0;

/// The first Common Name of the certificate's subject, as Mosquitto
/// takes it (`X509_NAME_get_index_by_NID(NID_commonName)`); `None`
/// without one, or when it holds a NUL (Mosquitto refuses those too).
pub fn common_name(cert: &[u8]) -> Option<String> {
    let name = subject(cert)?;
    let value = attributes(name)?.into_iter().flatten().find(|(oid, _)| *oid == CN)?.1;
    let text = text(value)?;
    (!text.contains('\0')).then_some(text)
}

/// The certificate's subject as OpenSSL prints it with
/// `XN_FLAG_RFC2253`: last RDN first, `,` between RDNs, `+` inside one,
/// short attribute names, RFC 2253 escapes, bytes above 0x7f and control
/// characters as `\XX`, unknown attributes as `#` and hex DER.
pub fn rfc2253(cert: &[u8]) -> Option<String> {
    let rdns = attributes(subject(cert)?)?;
    let mut out = String::new();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, (oid, value)) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            match short_name(oid) {
                Some(name) => {
                    out.push_str(name);
                    out.push('=');
                    match text(*value) {
                        Some(text) => escape(&text, &mut out),
                        None => hex_der(*value, &mut out),
                    }
                }
                None => {
                    out.push_str(&dotted(oid)?);
                    out.push('=');
                    hex_der(*value, &mut out);
                }
            }
        }
    }
    Some(out)
}

/// One DER element: tag and content (and the whole encoding, for dumps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
    whole: &'a [u8],
}

/// Reads the elements of a DER sequence one by one.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn next(&mut self) -> Option<Tlv<'a>> {
        let start = self.0;
        let (&tag, rest) = start.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n].iter().fold(0usize, |len, &b| (len << 8) | usize::from(b));
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            return None;
        }
        let (content, after) = rest.split_at(len);
        let whole = &start[..start.len() - after.len()];
        self.0 = after;
        Some(Tlv { tag, content, whole })
    }

    fn expect(&mut self, tag: u8) -> Option<Tlv<'a>> {
        self.next().filter(|tlv| tlv.tag == tag)
    }
}

/// The subject Name of a certificate.
fn subject(cert: &[u8]) -> Option<&[u8]> {
    let certificate = Reader(cert).expect(SEQUENCE)?;
    let mut tbs = Reader(Reader(certificate.content).expect(SEQUENCE)?.content);
    let mut serial = tbs.next()?;
    if serial.tag == VERSION {
        serial = tbs.next()?;
    }
    let _ = serial;
    let _signature = tbs.expect(SEQUENCE)?;
    let _issuer = tbs.expect(SEQUENCE)?;
    let _validity = tbs.expect(SEQUENCE)?;
    Some(tbs.expect(SEQUENCE)?.content)
}

/// An attribute: its type (OID content bytes) and its value.
type Attribute<'a> = (&'a [u8], Tlv<'a>);

/// The RDNs of a Name, in certificate order, each a set of attributes.
fn attributes(name: &[u8]) -> Option<Vec<Vec<Attribute<'_>>>> {
    let mut rdns = Vec::new();
    let mut reader = Reader(name);
    while !reader.0.is_empty() {
        let mut set = Reader(reader.expect(SET)?.content);
        let mut rdn = Vec::new();
        while !set.0.is_empty() {
            let mut pair = Reader(set.expect(SEQUENCE)?.content);
            let oid = pair.expect(OID)?.content;
            rdn.push((oid, pair.next()?));
        }
        rdns.push(rdn);
    }
    Some(rdns)
}

/// `2.5.4.3`, commonName.
const CN: &[u8] = &[0x55, 0x04, 0x03];

/// OpenSSL's short names for the attributes found in device certificates.
fn short_name(oid: &[u8]) -> Option<&'static str> {
    Some(match oid {
        [0x55, 0x04, n] => match n {
            3 => "CN",
            4 => "SN",
            5 => "serialNumber",
            6 => "C",
            7 => "L",
            8 => "ST",
            9 => "street",
            10 => "O",
            11 => "OU",
            12 => "title",
            13 => "description",
            17 => "postalCode",
            42 => "GN",
            43 => "initials",
            44 => "generationQualifier",
            46 => "dnQualifier",
            65 => "pseudonym",
            _ => return None,
        },
        // 1.2.840.113549.1.9.1
        [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x01] => "emailAddress",
        // 0.9.2342.19200300.100.1.25 and .1
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xF2, 0x2C, 0x64, 0x01, 0x19] => "DC",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xF2, 0x2C, 0x64, 0x01, 0x01] => "UID",
        _ => return None,
    })
}

/// An OID in dotted form.
fn dotted(oid: &[u8]) -> Option<String> {
    let (&first, _) = oid.split_first()?;
    let mut out = format!("{}.{}", first / 40, first % 40);
    let mut arc: u64 = 0;
    for &b in &oid[1..] {
        arc = arc.checked_mul(128)? | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            let _ = write!(out, ".{arc}");
            arc = 0;
        }
    }
    Some(out)
}

/// A directory string's text; `None` for types that are not text.
fn text(value: Tlv<'_>) -> Option<String> {
    let bytes = value.content;
    match value.tag {
        // UTF8String, NumericString, PrintableString, IA5String, VisibleString
        0x0C | 0x12 | 0x13 | 0x16 | 0x1A => String::from_utf8(bytes.to_vec()).ok(),
        // TeletexString: read as Latin-1, as OpenSSL's UTF-8 conversion does.
        0x14 => Some(bytes.iter().map(|&b| char::from(b)).collect()),
        // BMPString: UTF-16BE.
        0x1E if bytes.len().is_multiple_of(2) => {
            let units = bytes.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units).collect::<Result<String, _>>().ok()
        }
        // UniversalString: UTF-32BE.
        0x1C if bytes.len().is_multiple_of(4) => {
            bytes.chunks_exact(4).map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))).collect()
        }
        _ => None,
    }
}

/// Appends `text` with OpenSSL's RFC 2253 escapes.
fn escape(text: &str, out: &mut String) {
    let last = text.len().saturating_sub(1);
    for (i, c) in text.char_indices() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\{:02X}", c as u32);
            }
            c if !c.is_ascii() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{b:02X}");
                }
            }
            c => out.push(c),
        }
    }
}

/// Appends `#` and the value's DER encoding in hex.
fn hex_der(value: Tlv<'_>, out: &mut String) {
    out.push('#');
    for b in value.whole {
        let _ = write!(out, "{b:02X}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if content.len() < 0x80 {
            out.push(content.len() as u8);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(content.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(content);
        out
    }

    fn rdn(attrs: &[(&[u8], u8, &[u8])]) -> Vec<u8> {
        let inner: Vec<u8> =
            attrs.iter().flat_map(|(oid, tag, v)| tlv(SEQUENCE, &[tlv(OID, oid), tlv(*tag, v)].concat())).collect();
        tlv(SET, &inner)
    }

    /// A certificate whose TBSCertificate has this subject (the other
    /// fields are placeholders: only their shape matters here).
    fn cert(subject: &[Vec<u8>]) -> Vec<u8> {
        let tbs = [
            tlv(VERSION, &tlv(0x02, &[2])),
            tlv(0x02, &[1]),
            tlv(SEQUENCE, &tlv(OID, &[0x2A])),
            tlv(SEQUENCE, &rdn(&[(CN, 0x0C, b"Test CA")])),
            tlv(SEQUENCE, &[]),
            tlv(SEQUENCE, &subject.concat()),
            tlv(SEQUENCE, &[0; 200]),
        ]
        .concat();
        tlv(SEQUENCE, &[tlv(SEQUENCE, &tbs), tlv(SEQUENCE, &[]), tlv(0x03, &[0])].concat())
    }

    const C: &[u8] = &[0x55, 0x04, 0x06];
    const O: &[u8] = &[0x55, 0x04, 0x0A];
    const OU: &[u8] = &[0x55, 0x04, 0x0B];

    #[test]
    fn common_name_is_the_first_cn() {
        let der = cert(&[rdn(&[(C, 0x13, b"DE")]), rdn(&[(CN, 0x0C, b"dev1")]), rdn(&[(CN, 0x0C, b"dev2")])]);
        assert_eq!(common_name(&der).as_deref(), Some("dev1"));
        assert_eq!(common_name(&cert(&[rdn(&[(C, 0x13, b"DE")])])), None);
        assert_eq!(common_name(&cert(&[rdn(&[(CN, 0x0C, b"a\0b")])])), None);
        assert_eq!(common_name(&cert(&[rdn(&[(CN, 0x1E, &[0, b'h', 0, b'i'])])])).as_deref(), Some("hi"));
    }

    #[test]
    fn subject_is_printed_as_openssl_rfc2253() {
        let der = cert(&[
            rdn(&[(C, 0x13, b"DE")]),
            rdn(&[(O, 0x0C, b"Example, Inc.")]),
            rdn(&[(OU, 0x0C, b"a"), (OU, 0x0C, b" b")]),
            rdn(&[(CN, 0x0C, "dév".as_bytes())]),
            rdn(&[(&[0x2B, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37], 0x0C, b"x")]),
        ]);
        assert_eq!(
            rfc2253(&der).as_deref(),
            Some("1.3.6.1.4.1.311=#0C0178,CN=d\\C3\\A9v,OU=a+OU=\\ b,O=Example\\, Inc.,C=DE")
        );
    }

    #[test]
    fn garbage_gives_none_without_panicking() {
        let der = cert(&[rdn(&[(CN, 0x0C, b"dev1")])]);
        for len in 0..der.len() {
            let _ = common_name(&der[..len]);
            let _ = rfc2253(&der[..len]);
        }
        assert_eq!(common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(rfc2253(b""), None);
    }
}
