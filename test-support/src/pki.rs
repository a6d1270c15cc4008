//! A throw-away PKI for TLS tests: a CA and a server certificate for `localhost` and
//! `127.0.0.1`, written as PEM files into a directory removed on drop.

use std::fs;
use std::path::PathBuf;

use anyhow::Result;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

/// A CA and a server certificate for `localhost` and `127.0.0.1`, in PEM files.
#[derive(Debug)]
pub struct TestPki {
    dir: TempDir,
}

impl TestPki {
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("capture-e2e-pki-")
            .tempdir()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "capture e2e CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let mut params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "capture e2e collector");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca)?;
        fs::write(dir.path().join("ca.pem"), ca.pem())?;
        fs::write(dir.path().join("server.pem"), cert.pem())?;
        fs::write(dir.path().join("server.key"), key.serialize_pem())?;
        Ok(Self { dir })
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}
