//! `tls-server-end-point` channel binding data (RFC 5929 4.1): the hash
//! of the server's certificate, with the hash of its signature algorithm
//! (SHA-256 where that is MD5 or SHA-1), as PostgreSQL computes it.
//!
//! Hand-written on purpose: it needs one field of the certificate (the
//! signature algorithm's OID, right after the signed part), and the
//! crates that parse X.509 bring a parser framework for that one field.
//! It reads DER lengths only; anything it does not recognise means no
//! binding, never a wrong one.

use sha2::{Digest, Sha256, Sha384, Sha512};

/// DER of the signature algorithm OIDs whose hash decides the binding.
const SHA256_OIDS: &[&[u8]] = &[
    // sha256WithRSAEncryption, ecdsa-with-SHA256
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b],
    &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02],
    // sha1WithRSAEncryption, ecdsa-with-SHA1, md5WithRSAEncryption: SHA-256
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05],
    &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01],
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04],
];
const SHA384_OIDS: &[&[u8]] = &[
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c],
    &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
];
const SHA512_OIDS: &[&[u8]] = &[
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d],
    &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],
];

/// The binding data for the server certificate `der`, or `None` when its
/// signature algorithm names no hash this knows (Ed25519, RSA-PSS: the
/// server then offers no binding either).
pub fn server_end_point(der: &[u8]) -> Option<Vec<u8>> {
    let oid = signature_algorithm(der)?;
    if SHA256_OIDS.contains(&oid) {
        Some(Sha256::digest(der).to_vec())
    } else if SHA384_OIDS.contains(&oid) {
        Some(Sha384::digest(der).to_vec())
    } else if SHA512_OIDS.contains(&oid) {
        Some(Sha512::digest(der).to_vec())
    } else {
        None
    }
}

/// The OID of `Certificate.signatureAlgorithm`: the certificate is
/// SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm SEQUENCE {
/// algorithm OID, … }, signatureValue BIT STRING }.
fn signature_algorithm(der: &[u8]) -> Option<&[u8]> {
    let (tag, certificate, _) = tlv(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, _tbs, rest) = tlv(certificate)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, algorithm, _) = tlv(rest)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, oid, _) = tlv(algorithm)?;
    (tag == 0x06).then_some(oid)
}

/// One DER tag-length-value: (tag, value, what follows).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |l, &b| (l << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;

    /// A P-256 certificate from the same generator the gateway uses: its
    /// binding is the SHA-256 of its DER.
    #[test]
    fn an_ecdsa_sha256_certificate_binds_with_sha256() {
        let tls = portcullis_core::tls::generate_ca_and_server(&["localhost".into()]).unwrap();
        let der =
            rustls_pki_types::CertificateDer::from_pem_slice(tls.cert_pem.as_bytes()).unwrap();
        assert_eq!(
            server_end_point(&der).unwrap(),
            Sha256::digest(der.as_ref()).to_vec()
        );
        assert_eq!(server_end_point(&der[..der.len() / 2]), None);
        assert_eq!(server_end_point(b"\x30\x03\x02\x01\x00"), None);
    }
}
