//! Just enough DER to read a certificate's subject common name and to wrap an EC key: no
//! general ASN.1, every length checked against the input.

/// The first element of `input`: its tag, its contents and what follows it.
pub fn next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |l, b| (l << 8) | *b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// One element with a definite length.
pub fn encode(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
    out
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
/// id-at-commonName, 2.5.4.3.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// The subject common name of an X.509 certificate, as Go's `Subject.CommonName` reads it
/// (the last CN attribute when there are several); None when it has none or is malformed.
pub fn common_name(cert: &[u8]) -> Option<String> {
    let (SEQUENCE, cert, _) = next(cert)? else {
        return None;
    };
    let (SEQUENCE, mut tbs, _) = next(cert)? else {
        return None;
    };
    // [0] version (optional), serial, signature algorithm, issuer, validity, then subject.
    if tbs.first() == Some(&0xa0) {
        tbs = next(tbs)?.2;
    }
    for _ in 0..4 {
        tbs = next(tbs)?.2;
    }
    let (SEQUENCE, mut rdns, _) = next(tbs)? else {
        return None;
    };
    let mut found = None;
    while !rdns.is_empty() {
        let (SET, mut attrs, rest) = next(rdns)? else {
            return None;
        };
        while !attrs.is_empty() {
            let (SEQUENCE, attr, more) = next(attrs)? else {
                return None;
            };
            let (OID, oid, value) = next(attr)? else {
                return None;
            };
            if oid == COMMON_NAME {
                let (_, text, _) = next(value)?;
                found = Some(String::from_utf8_lossy(text).into_owned());
            }
            attrs = more;
        }
        rdns = rest;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_common_name_of_a_generated_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "corekv");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()).as_deref(), Some("alice"));

        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()), None);
        assert_eq!(common_name(&cert.der()[..40]), None);
        assert_eq!(common_name(b""), None);
    }
}
