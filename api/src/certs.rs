//! `xt dev-ca`: a development CA and the certificates the cluster's mutual TLS needs, for
//! trying it out; production clusters take theirs from their own CA (a Kubernetes Secret).

use std::path::Path;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Writes `ca.pem` (the CA's certificate), `coordinator.pem`/`coordinator.key` (a server
/// certificate for [`xt_wire::tls::SERVER_NAME`], `hosts`, `localhost` and `127.0.0.1`) and `client.pem`/`client.key`
/// (for workers and the API) into `dir`. The CA's key is not kept: nothing else can be
/// signed with it later. Returns the files written.
pub fn dev_ca(dir: &Path, hosts: &[String], days: u32) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("--out {}", dir.display()))?;
    let now = time::OffsetDateTime::now_utc();
    let until = now + time::Duration::days(days.max(1) as i64);
    let dated = |mut p: CertificateParams| {
        p.not_before = now - time::Duration::minutes(5);
        p.not_after = until;
        p
    };

    let mut ca = dated(CertificateParams::new(Vec::<String>::new())?);
    ca.distinguished_name
        .push(DnType::CommonName, "xTrading development CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut names: Vec<String> = hosts.to_vec();
    for default in [xt_wire::tls::SERVER_NAME, "localhost", "127.0.0.1"] {
        if !names.iter().any(|n| n == default) {
            names.push(default.to_string());
        }
    }
    let mut server = dated(CertificateParams::new(names)?);
    server
        .distinguished_name
        .push(DnType::CommonName, "xt-coordinator");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, &issuer)?;

    let mut client = dated(CertificateParams::new(Vec::<String>::new())?);
    client
        .distinguished_name
        .push(DnType::CommonName, "xt-cluster-client");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate()?;
    let client_cert = client.signed_by(&client_key, &issuer)?;

    let files = [
        ("ca.pem", ca_cert.pem()),
        ("coordinator.pem", server_cert.pem()),
        ("coordinator.key", server_key.serialize_pem()),
        ("client.pem", client_cert.pem()),
        ("client.key", client_key.serialize_pem()),
    ];
    let mut written = Vec::new();
    for (name, pem) in files {
        let path = dir.join(name);
        std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
        if name.ends_with(".key") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        written.push(path.display().to_string());
    }
    Ok(written)
}
