//! How a client proves itself to the Temporal frontend and checks the server: nothing on a
//! local dev server; TLS with a client certificate (mTLS) or an API key on Temporal Cloud.
//!
//! | variable | meaning |
//! |---|---|
//! | `TEMPORAL_TLS_CERT`, `TEMPORAL_TLS_KEY` | client certificate and its key (PEM files), together: mTLS |
//! | `TEMPORAL_TLS_CA` | CA (PEM file) the server's certificate chains to; default: the system's roots |
//! | `TEMPORAL_API_KEY` | an API key, sent as `Authorization: Bearer` over TLS |
//!
//! Any of them, or an `https://` address, makes the connection TLS; an `http://` address with
//! any of them is refused rather than sending a key or certificate in plain text.

use std::path::{Path, PathBuf};

use temporalio_client::{ClientTlsOptions, TlsOptions, Url};

#[derive(Clone, Default, clap::Args)]
pub struct TemporalSecurity {
    /// Client certificate (PEM) for mTLS, e.g. Temporal Cloud's certificate auth; needs
    /// `TEMPORAL_TLS_KEY`.
    #[arg(
        id = "temporal_tls_cert",
        value_name = "FILE",
        long = "temporal-tls-cert",
        env = "TEMPORAL_TLS_CERT"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The client certificate's private key (PEM); needs `TEMPORAL_TLS_CERT`.
    #[arg(
        id = "temporal_tls_key",
        value_name = "FILE",
        long = "temporal-tls-key",
        env = "TEMPORAL_TLS_KEY",
        hide_env_values = true
    )]
    pub tls_key: Option<PathBuf>,

    /// CA certificate(s) (PEM) the server's certificate must chain to; without it, the
    /// system's roots (right for Temporal Cloud). Implies TLS.
    #[arg(
        id = "temporal_tls_ca",
        value_name = "FILE",
        long = "temporal-tls-ca",
        env = "TEMPORAL_TLS_CA"
    )]
    pub tls_ca: Option<PathBuf>,

    /// A Temporal Cloud API key, sent as a bearer token. Implies TLS.
    #[arg(
        id = "temporal_api_key",
        value_name = "KEY",
        long = "temporal-api-key",
        env = "TEMPORAL_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
}

/// The API key is a secret: it is never printed, not even in a debug dump of the config.
impl std::fmt::Debug for TemporalSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemporalSecurity")
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_ca", &self.tls_ca)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A combination of settings that cannot work, or a file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(
        "TEMPORAL_TLS_CERT is set but TEMPORAL_TLS_KEY is not: mTLS needs the client \
         certificate and its private key (set both, or neither)"
    )]
    CertWithoutKey,
    #[error(
        "TEMPORAL_TLS_KEY is set but TEMPORAL_TLS_CERT is not: mTLS needs the client \
         certificate and its private key (set both, or neither)"
    )]
    KeyWithoutCert,
    #[error("TEMPORAL_API_KEY is set but empty")]
    EmptyApiKey,
    #[error(
        "TEMPORAL_ADDRESS {0} is plain http://, but TLS is configured (TEMPORAL_TLS_*, \
         TEMPORAL_API_KEY): give it as host:port or https://"
    )]
    PlainAddress(String),
    #[error("invalid TEMPORAL_ADDRESS {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error("reading {} ({setting})", .path.display())]
    Read {
        setting: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where and how to connect: the frontend's URL, TLS when configured, the API key.
#[derive(Debug)]
pub struct Target {
    pub url: Url,
    pub tls: Option<TlsOptions>,
    pub api_key: Option<String>,
}

impl TemporalSecurity {
    /// Whether the connection is TLS, by these settings alone.
    fn wants_tls(&self) -> bool {
        self.tls_cert.is_some()
            || self.tls_key.is_some()
            || self.tls_ca.is_some()
            || self.api_key.is_some()
    }

    /// Checks the combination and reads the files: every mistake is found here, at start-up,
    /// with the variables to fix, rather than as a failed handshake later.
    pub fn target(&self, address: &str) -> Result<Target, SecurityError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return Err(SecurityError::CertWithoutKey),
            (None, Some(_)) => return Err(SecurityError::KeyWithoutCert),
            _ => {}
        }
        if self
            .api_key
            .as_deref()
            .is_some_and(|key| key.trim().is_empty())
        {
            return Err(SecurityError::EmptyApiKey);
        }
        let scheme = address.split_once("://").map(|(scheme, _)| scheme);
        if scheme == Some("http") && self.wants_tls() {
            return Err(SecurityError::PlainAddress(address.to_owned()));
        }
        let tls = self.wants_tls() || scheme == Some("https");
        let full = match scheme {
            Some(_) => address.to_owned(),
            None if tls => format!("https://{address}"),
            None => format!("http://{address}"),
        };
        let url = Url::parse(&full).map_err(|e| SecurityError::Address {
            address: full.clone(),
            reason: e.to_string(),
        })?;
        let tls = if tls { Some(self.tls_options()?) } else { None };
        Ok(Target {
            url,
            tls,
            api_key: self.api_key.clone(),
        })
    }

    fn tls_options(&self) -> Result<TlsOptions, SecurityError> {
        let server_root_ca_cert = match &self.tls_ca {
            Some(path) => Some(read(path, "TEMPORAL_TLS_CA")?),
            None => None,
        };
        let client_tls_options = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(
                ClientTlsOptions::builder()
                    .client_cert(read(cert, "TEMPORAL_TLS_CERT")?)
                    .client_private_key(read(key, "TEMPORAL_TLS_KEY")?)
                    .build(),
            ),
            _ => None,
        };
        Ok(TlsOptions::builder()
            .maybe_server_root_ca_cert(server_root_ca_cert)
            .maybe_client_tls_options(client_tls_options)
            .build())
    }
}

fn read(path: &Path, setting: &'static str) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|source| SecurityError::Read {
        setting,
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_file(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("lp-{}-{name}", uuid::Uuid::new_v4()));
        std::fs::write(&path, "-----BEGIN CERTIFICATE-----\n").unwrap();
        path
    }

    #[test]
    fn no_settings_connect_in_plain_text() {
        let target = TemporalSecurity::default()
            .target("127.0.0.1:7233")
            .unwrap();
        assert_eq!(target.url.as_str(), "http://127.0.0.1:7233/");
        assert!(target.tls.is_none());
        assert!(target.api_key.is_none());
    }

    #[test]
    fn an_https_address_alone_verifies_the_server_with_the_system_roots() {
        let target = TemporalSecurity::default()
            .target("https://temporal.example.com:7233")
            .unwrap();
        let tls = target.tls.expect("TLS");
        assert!(tls.server_root_ca_cert.is_none());
        assert!(tls.client_tls_options.is_none());
    }

    #[test]
    fn an_api_key_makes_the_connection_tls_and_is_sent() {
        let security = TemporalSecurity {
            api_key: Some("key".to_owned()),
            ..Default::default()
        };
        let target = security.target("ns.acct.tmprl.cloud:7233").unwrap();
        assert_eq!(target.url.scheme(), "https");
        assert!(target.tls.is_some());
        assert_eq!(target.api_key.as_deref(), Some("key"));
    }

    #[test]
    fn a_certificate_and_its_key_give_mtls_with_the_files_contents() {
        let (cert, key, ca) = (pem_file("cert"), pem_file("key"), pem_file("ca"));
        let security = TemporalSecurity {
            tls_cert: Some(cert),
            tls_key: Some(key),
            tls_ca: Some(ca),
            api_key: None,
        };
        let tls = security
            .target("ns.acct.tmprl.cloud:7233")
            .unwrap()
            .tls
            .unwrap();
        let client = tls.client_tls_options.expect("client certificate");
        assert!(client.client_cert.starts_with(b"-----BEGIN"));
        assert!(client.client_private_key.starts_with(b"-----BEGIN"));
        assert!(tls.server_root_ca_cert.is_some());
    }

    #[test]
    fn a_certificate_without_its_key_is_refused_naming_both_variables() {
        let security = TemporalSecurity {
            tls_cert: Some(pem_file("cert")),
            ..Default::default()
        };
        let error = security.target("127.0.0.1:7233").unwrap_err().to_string();
        assert!(error.contains("TEMPORAL_TLS_CERT"), "{error}");
        assert!(error.contains("TEMPORAL_TLS_KEY"), "{error}");
    }

    #[test]
    fn a_key_without_its_certificate_is_refused_naming_both_variables() {
        let security = TemporalSecurity {
            tls_key: Some(pem_file("key")),
            ..Default::default()
        };
        let error = security.target("127.0.0.1:7233").unwrap_err().to_string();
        assert!(error.contains("TEMPORAL_TLS_CERT"), "{error}");
        assert!(error.contains("TEMPORAL_TLS_KEY"), "{error}");
    }

    #[test]
    fn an_api_key_is_never_sent_to_a_plain_http_address() {
        let security = TemporalSecurity {
            api_key: Some("key".to_owned()),
            ..Default::default()
        };
        let error = security
            .target("http://temporal:7233")
            .unwrap_err()
            .to_string();
        assert!(error.contains("http://temporal:7233"), "{error}");
        assert!(error.contains("TEMPORAL_API_KEY"), "{error}");
    }

    #[test]
    fn an_empty_api_key_is_refused() {
        let security = TemporalSecurity {
            api_key: Some(" ".to_owned()),
            ..Default::default()
        };
        let error = security.target("127.0.0.1:7233").unwrap_err().to_string();
        assert!(error.contains("TEMPORAL_API_KEY"), "{error}");
    }

    #[test]
    fn a_missing_file_is_named_with_its_variable() {
        let security = TemporalSecurity {
            tls_ca: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..Default::default()
        };
        let error = security.target("127.0.0.1:7233").unwrap_err().to_string();
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
        assert!(error.contains("TEMPORAL_TLS_CA"), "{error}");
    }

    #[test]
    fn the_api_key_never_shows_in_a_debug_dump() {
        let security = TemporalSecurity {
            api_key: Some("secret-key-value".to_owned()),
            ..Default::default()
        };
        assert!(!format!("{security:?}").contains("secret-key-value"));
    }
}
