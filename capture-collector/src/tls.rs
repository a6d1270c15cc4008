//! The server's TLS identity: a certificate chain and key from PEM files, or a development CA
//! and server certificate generated once into a directory (`--dev-tls DIR`).
//!
//! Development certificates name `localhost`, `127.0.0.1` and `::1`. The CA's private key is
//! thrown away once the server certificate is signed: the directory holds nothing that can
//! issue more certificates.

use std::{
    fs, io,
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};

use crate::seal::write_atomically;

pub const DEV_CA: &str = "ca.pem";
pub const DEV_CERT: &str = "server.pem";
pub const DEV_KEY: &str = "server-key.pem";

/// A certificate chain and its private key, both PEM.
#[derive(Clone)]
pub struct ServerIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl From<rcgen::Error> for TlsError {
    fn from(e: rcgen::Error) -> Self {
        Self::Generate(e)
    }
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerIdentity(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {}", .0.display(), .1)]
    Io(PathBuf, io::Error),
    #[error("{}: no PEM certificate in it", .0.display())]
    NoCertificate(PathBuf),
    #[error("{}: no PEM private key in it (PKCS#8, PKCS#1 or SEC1)", .0.display())]
    NoKey(PathBuf),
    #[error("generating development certificates: {0}")]
    Generate(rcgen::Error),
}

/// Reads and checks a certificate chain and key (so a bad file is named at start-up rather
/// than failing every handshake).
pub fn load(cert: &Path, key: &Path) -> Result<ServerIdentity, TlsError> {
    let cert_pem = fs::read(cert).map_err(|e| TlsError::Io(cert.to_owned(), e))?;
    let key_pem = fs::read(key).map_err(|e| TlsError::Io(key.to_owned(), e))?;
    if !CertificateDer::pem_slice_iter(&cert_pem).any(|c| c.is_ok()) {
        return Err(TlsError::NoCertificate(cert.to_owned()));
    }
    if PrivateKeyDer::from_pem_slice(&key_pem).is_err() {
        return Err(TlsError::NoKey(key.to_owned()));
    }
    Ok(ServerIdentity { cert_pem, key_pem })
}

/// A development identity in `dir`: reused when `ca.pem`, `server.pem` and `server-key.pem`
/// are there, generated otherwise. Returns it and the path of the CA certificate, which
/// clients must trust.
pub fn dev_identity(dir: &Path) -> Result<(ServerIdentity, PathBuf), TlsError> {
    let ca_path = dir.join(DEV_CA);
    let cert_path = dir.join(DEV_CERT);
    let key_path = dir.join(DEV_KEY);
    if ca_path.exists() && cert_path.exists() && key_path.exists() {
        return Ok((load(&cert_path, &key_path)?, ca_path));
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| TlsError::Io(dir.to_owned(), e))?;
    let generated = generate(&["localhost", "127.0.0.1", "::1"])?;
    let write = |path: &Path, bytes: &[u8], mode| {
        write_atomically(path, bytes, mode).map_err(|e| TlsError::Io(path.to_owned(), e))
    };
    write(&key_path, generated.identity.key_pem.as_slice(), 0o600)?;
    write(&cert_path, generated.identity.cert_pem.as_slice(), 0o644)?;
    write(&ca_path, generated.ca_pem.as_bytes(), 0o644)?;
    Ok((generated.identity, ca_path))
}

/// A CA and a server identity it signed.
pub struct Generated {
    pub ca_pem: String,
    pub identity: ServerIdentity,
}

/// Generates a CA (ECDSA P-256) and a server certificate for `names` (DNS names or IP
/// addresses) signed by it. Also used by the tests.
pub fn generate(names: &[&str]) -> Result<Generated, TlsError> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "capture-collector development CA");
    ca_params.distinguished_name = dn;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate()?;
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "capture-collector");
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&server_key, &issuer)?;
    Ok(Generated {
        ca_pem: ca_cert.pem(),
        identity: ServerIdentity {
            cert_pem: cert.pem().into_bytes(),
            key_pem: server_key.serialize_pem().into_bytes(),
        },
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[test]
    fn dev_identity_is_written_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("tls");
        let (first, ca) = dev_identity(&d).unwrap();
        assert_eq!(ca, d.join(DEV_CA));
        assert_eq!(fs::metadata(d.join(DEV_KEY)).unwrap().mode() & 0o777, 0o600);
        let (second, _) = dev_identity(&d).unwrap();
        assert_eq!(first.cert_pem, second.cert_pem);
        assert!(!fs::read_to_string(&ca).unwrap().contains("PRIVATE KEY"));
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        fs::write(&cert, "nothing").unwrap();
        fs::write(&key, "nothing").unwrap();
        assert!(matches!(load(&cert, &key), Err(TlsError::NoCertificate(_))));
        let generated = generate(&["localhost"]).unwrap();
        fs::write(&cert, &generated.identity.cert_pem).unwrap();
        assert!(matches!(load(&cert, &key), Err(TlsError::NoKey(_))));
        fs::write(&key, &generated.identity.key_pem).unwrap();
        load(&cert, &key).unwrap();
        assert!(matches!(
            load(&dir.path().join("missing"), &key),
            Err(TlsError::Io(..))
        ));
    }
}
