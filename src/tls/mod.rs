//! TLS (wss:// and https://) with rustls: the certificate chain and key come from PEM files and
//! can be reloaded while the server runs, so a renewed certificate needs no restart.

#[macro_use]
mod delegate;
mod halves;
mod stream;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

pub use halves::{ReadHalf, WriteHalf};
pub use stream::{accept, Accepted, Stream};

/// Where the server's certificate chain and private key live (PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate first, then the intermediates that lead to a trusted root.
    pub certfile: PathBuf,
    /// Its private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub keyfile: PathBuf,
}

/// The server's TLS identity. Connections take the acceptor current at their start; a reload
/// swaps it for the ones that come after and leaves open connections as they are.
pub struct Tls {
    files: TlsFiles,
    acceptor: RwLock<TlsAcceptor>,
}

impl Tls {
    /// Reads and checks the files; an error says which file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Tls, String> {
        let acceptor = RwLock::new(acceptor(&files)?);
        Ok(Tls { files, acceptor })
    }

    /// Reads the files again. On an error the previous certificate stays in use.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = acceptor(&self.files)?;
        *self.acceptor.write().unwrap() = fresh;
        log::info!(
            "TLS: reloaded the certificate from {}",
            self.files.certfile.display()
        );
        Ok(())
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.read().unwrap().clone()
    }
}

fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, String> {
    let certs = read_chain(&files.certfile)?;
    let key = PrivateKeyDer::from_pem_file(&files.keyfile).map_err(|e| {
        format!(
            "ssl_keyfile {}: no usable private key ({e}); give the PEM file of the \
             certificate's key (PKCS#8, RSA or EC)",
            files.keyfile.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "ssl_certfile {} and ssl_keyfile {} do not fit together: {e}",
                files.certfile.display(),
                files.keyfile.display()
            )
        })?;
    // Only HTTP/1.1 carries the WebSocket handshake this server speaks (no RFC 8441 over h2).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bad = |e: &dyn std::fmt::Display| {
        format!(
            "ssl_certfile {}: {e}; give a PEM file with the server's certificate first and its \
             intermediates after it",
            path.display()
        )
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"no CERTIFICATE block in it"));
    }
    Ok(certs)
}
