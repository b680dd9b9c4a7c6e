//! Mutual TLS on the cluster's port, as an option: the coordinator presents a certificate
//! and asks every caller (workers, the API) for one, all signed by the cluster's CA. It is
//! the process's one identity, installed once at start ([`install`]) and used by every
//! endpoint and server this crate makes; the cluster secret is still checked on top.

use std::path::Path;
use std::sync::OnceLock;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The cluster's CA and this process's certificate and key.
pub struct Tls {
    ca: Certificate,
    identity: Identity,
}

static TLS: OnceLock<Tls> = OnceLock::new();

/// The name every coordinator's certificate carries, and the one clients check, whatever
/// address they reach it at: a leader announces its pod's address, which no certificate
/// made in advance could name.
pub const SERVER_NAME: &str = "xt-coordinator";

impl Tls {
    /// Reads PEM files: the CA's certificate, and this process's certificate and key.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<Tls> {
        let read = |flag: &str, p: &Path| {
            std::fs::read(p).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", p.display()))
        };
        let (ca_pem, cert_pem, key_pem) = (
            read("--tls-ca", ca)?,
            read("--tls-cert", cert)?,
            read("--tls-key", key)?,
        );
        for (flag, pem, marker) in [
            ("--tls-ca", &ca_pem, "CERTIFICATE"),
            ("--tls-cert", &cert_pem, "CERTIFICATE"),
            ("--tls-key", &key_pem, "PRIVATE KEY"),
        ] {
            if !String::from_utf8_lossy(pem).contains(marker) {
                anyhow::bail!("{flag}: not a PEM file holding a {marker}");
            }
        }
        Ok(Tls {
            ca: Certificate::from_pem(ca_pem),
            identity: Identity::from_pem(cert_pem, key_pem),
        })
    }
}

/// From the three flags: all of them (TLS), or none (plain); any other mix is an error
/// naming what is missing.
pub fn from_flags(
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> anyhow::Result<Option<Tls>> {
    match (ca, cert, key) {
        (None, None, None) => Ok(None),
        (Some(ca), Some(cert), Some(key)) => Tls::load(ca, cert, key).map(Some),
        _ => anyhow::bail!("--tls-ca, --tls-cert and --tls-key go together: give all three"),
    }
}

/// The three flags of every program that joins the cluster: with all of them, their
/// identity is installed for the process; with none, it speaks plain HTTP/2.
pub fn install_from_flags(
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> anyhow::Result<()> {
    match from_flags(ca, cert, key)? {
        Some(tls) => install(tls),
        None => Ok(()),
    }
}

/// Makes `tls` this process's identity on the cluster's connections (once).
pub fn install(tls: Tls) -> anyhow::Result<()> {
    TLS.set(tls)
        .map_err(|_| anyhow::anyhow!("the cluster's TLS identity is installed already"))
}

/// Whether this process speaks TLS to the cluster.
pub fn enabled() -> bool {
    TLS.get().is_some()
}

pub(crate) fn server_config() -> Option<ServerTlsConfig> {
    TLS.get().map(|t| {
        ServerTlsConfig::new()
            .identity(t.identity.clone())
            .client_ca_root(t.ca.clone())
    })
}

pub(crate) fn client_config() -> Option<ClientTlsConfig> {
    TLS.get().map(|t| {
        ClientTlsConfig::new()
            .ca_certificate(t.ca.clone())
            .identity(t.identity.clone())
            .domain_name(SERVER_NAME)
    })
}
