//! How a client proves itself to the Temporal frontend and checks the server: nothing on a
//! local dev server; TLS with a client certificate (mTLS) or an API key on Temporal Cloud.
//!
//! The settings are Temporal's own, read the way its CLI and SDKs read them: the
//! environment variables below, and profiles of its client configuration file
//! (`temporal.toml`, by default in `$XDG_CONFIG_HOME/temporalio/`, `~/.config/temporalio/`
//! on Linux). A setting given on the command line or in the environment overrides the
//! profile's; the profile overrides the built-in defaults.
//!
//! | variable | meaning |
//! |---|---|
//! | `TEMPORAL_PROFILE` | profile of the file to use; default `default` (when the file has it) |
//! | `TEMPORAL_CONFIG_FILE` | the file; default `temporal.toml` in the user's configuration folder |
//! | `TEMPORAL_TLS` | `true`/`false`: force TLS on or off; default on with any setting below |
//! | `TEMPORAL_TLS_CLIENT_CERT_PATH`, `TEMPORAL_TLS_CLIENT_KEY_PATH` | client certificate and its key (PEM files), together: mTLS |
//! | `TEMPORAL_TLS_SERVER_CA_CERT_PATH` | CA (PEM file) the server's certificate chains to; default: the system's roots |
//! | `TEMPORAL_TLS_SERVER_NAME` | the name the server's certificate must carry (SNI), if not the address's host |
//! | `TEMPORAL_API_KEY` | an API key, sent as `Authorization: Bearer` over TLS |
//!
//! A key, a certificate or an `https://` address makes the connection TLS. A key or a
//! certificate over plain text (an `http://` address, or `TEMPORAL_TLS=false`) is refused
//! rather than sent unprotected.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use temporalio_client::{ClientTlsOptions, TlsOptions, Url};
use temporalio_common::envconfig::{
    ClientConfigProfile, ConfigError, DataSource, LoadClientConfigProfileOptions,
    load_client_config_profile,
};

/// Where the frontend is when neither the settings nor a profile say.
pub(crate) const DEFAULT_ADDRESS: &str = "127.0.0.1:7233";
/// The namespace when neither the settings nor a profile say.
pub(crate) const DEFAULT_NAMESPACE: &str = "default";

#[derive(Clone, Default, clap::Args)]
pub struct TemporalSecurity {
    /// Profile of Temporal's client configuration file to start from (its address,
    /// namespace, TLS and API key); the file's `default` profile when it has one.
    #[arg(
        id = "temporal_profile",
        value_name = "NAME",
        long = "temporal-profile",
        env = "TEMPORAL_PROFILE"
    )]
    pub profile: Option<String>,

    /// Temporal's client configuration file (TOML, `[profile.NAME]` tables); default:
    /// `temporalio/temporal.toml` in the user's configuration folder, when it exists.
    #[arg(
        id = "temporal_config_file",
        value_name = "FILE",
        long = "temporal-config-file",
        env = "TEMPORAL_CONFIG_FILE"
    )]
    pub config_file: Option<PathBuf>,

    /// Force TLS on (`true`) or off (`false`); by default it is on when a key, a
    /// certificate, a CA or an `https://` address is given.
    #[arg(
        id = "temporal_tls",
        value_name = "BOOL",
        long = "temporal-tls",
        env = "TEMPORAL_TLS"
    )]
    pub tls: Option<bool>,

    /// Client certificate (PEM) for mTLS, e.g. Temporal Cloud's certificate auth; needs
    /// `TEMPORAL_TLS_CLIENT_KEY_PATH`.
    #[arg(
        id = "temporal_tls_client_cert_path",
        value_name = "FILE",
        long = "temporal-tls-client-cert-path",
        env = "TEMPORAL_TLS_CLIENT_CERT_PATH"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The client certificate's private key (PEM); needs `TEMPORAL_TLS_CLIENT_CERT_PATH`.
    #[arg(
        id = "temporal_tls_client_key_path",
        value_name = "FILE",
        long = "temporal-tls-client-key-path",
        env = "TEMPORAL_TLS_CLIENT_KEY_PATH"
    )]
    pub tls_key: Option<PathBuf>,

    /// CA certificate(s) (PEM) the server's certificate must chain to; without it, the
    /// system's roots (right for Temporal Cloud). Implies TLS.
    #[arg(
        id = "temporal_tls_server_ca_cert_path",
        value_name = "FILE",
        long = "temporal-tls-server-ca-cert-path",
        env = "TEMPORAL_TLS_SERVER_CA_CERT_PATH"
    )]
    pub tls_ca: Option<PathBuf>,

    /// The name the server's certificate is checked against (and sent as SNI), when it is
    /// not the address's host.
    #[arg(
        id = "temporal_tls_server_name",
        value_name = "NAME",
        long = "temporal-tls-server-name",
        env = "TEMPORAL_TLS_SERVER_NAME"
    )]
    pub tls_server_name: Option<String>,

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
            .field("profile", &self.profile)
            .field("config_file", &self.config_file)
            .field("tls", &self.tls)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_ca", &self.tls_ca)
            .field("tls_server_name", &self.tls_server_name)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A combination of settings that cannot work, or a file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(
        "a client certificate is set (TEMPORAL_TLS_CLIENT_CERT_PATH or the profile's \
         tls.client_cert_path) but no key (TEMPORAL_TLS_CLIENT_KEY_PATH): mTLS needs both"
    )]
    CertWithoutKey,
    #[error(
        "a client key is set (TEMPORAL_TLS_CLIENT_KEY_PATH or the profile's \
         tls.client_key_path) but no certificate (TEMPORAL_TLS_CLIENT_CERT_PATH): mTLS needs both"
    )]
    KeyWithoutCert,
    #[error("TEMPORAL_API_KEY is set but empty")]
    EmptyApiKey,
    #[error(
        "TEMPORAL_ADDRESS {0} is plain http://, but TLS is configured (TEMPORAL_TLS_*, \
         TEMPORAL_API_KEY or the profile's): give it as host:port or https://"
    )]
    PlainAddress(String),
    #[error(
        "TEMPORAL_TLS is false, but an API key or a client certificate is configured: \
         it would be sent in plain text (unset TEMPORAL_TLS, or remove the credentials)"
    )]
    CredentialsWithoutTls,
    #[error(
        "the profile disables host verification (tls.disable_host_verification), which \
         this service does not support: give the server's CA (TEMPORAL_TLS_SERVER_CA_CERT_PATH) \
         or its name (TEMPORAL_TLS_SERVER_NAME) instead"
    )]
    HostVerification,
    #[error("invalid TEMPORAL_ADDRESS {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error("reading {} ({setting})", .path.display())]
    Read {
        setting: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The SDK's `ConfigError` holds a source that is neither `Send` nor `Sync`, so only
    /// its message travels.
    #[error("Temporal's client configuration ({file}, profile {profile}): {reason}")]
    Profile {
        file: String,
        profile: String,
        reason: String,
    },
}

/// Where and how to connect: the frontend's URL, the namespace, TLS when configured, the
/// API key.
#[derive(Debug)]
pub(crate) struct Target {
    pub url: Url,
    pub namespace: String,
    pub tls: Option<TlsOptions>,
    pub api_key: Option<String>,
}

/// A certificate or key: a file named by a setting, or the profile's path or inline data.
enum Pem {
    File(PathBuf, &'static str),
    Inline(Vec<u8>),
}

impl Pem {
    fn from_setting(path: &Option<PathBuf>, setting: &'static str) -> Option<Pem> {
        path.as_ref().map(|path| Pem::File(path.clone(), setting))
    }

    fn from_profile(source: Option<DataSource>, setting: &'static str) -> Option<Pem> {
        match source? {
            DataSource::Path(path) => Some(Pem::File(PathBuf::from(path), setting)),
            DataSource::Data(data) => Some(Pem::Inline(data)),
            _ => None,
        }
    }

    fn read(self) -> Result<Vec<u8>, SecurityError> {
        match self {
            Pem::File(path, setting) => read(&path, setting),
            Pem::Inline(data) => Ok(data),
        }
    }
}

impl TemporalSecurity {
    /// The profile of Temporal's configuration file these settings name, or an empty one
    /// when no file is named and the default file does not exist. Environment variables are
    /// not read here (clap already has), so the profile is the file's alone.
    fn profile(&self) -> Result<ClientConfigProfile, SecurityError> {
        let no_environment = HashMap::new();
        let options = LoadClientConfigProfileOptions::builder()
            .maybe_config_source(
                self.config_file
                    .as_ref()
                    .filter(|path| !path.as_os_str().is_empty())
                    .map(|path| DataSource::Path(path.to_string_lossy().into_owned())),
            )
            .maybe_config_file_profile(self.profile.clone().filter(|name| !name.is_empty()))
            .build();
        load_client_config_profile(options, Some(&no_environment)).map_err(|source| {
            SecurityError::Profile {
                file: self.config_file.as_ref().map_or_else(
                    || "the default temporal.toml".to_owned(),
                    |path| path.display().to_string(),
                ),
                profile: self.profile.clone().unwrap_or_else(|| "default".to_owned()),
                reason: match source {
                    ConfigError::LoadError(inner) => inner.to_string(),
                    other => other.to_string(),
                },
            }
        })
    }

    /// Resolves the connection: these settings over the profile's over the defaults. Checks
    /// the combination and reads the files, so every mistake is found here, at start-up,
    /// with the variables to fix, rather than as a failed handshake later.
    pub(crate) fn target(
        &self,
        address: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<Target, SecurityError> {
        let profile = self.profile()?;
        // A `tls` table in the profile turns TLS on unless it says `disabled = true`.
        let file_tls_table = profile.tls.is_some();
        let file_tls = profile.tls.unwrap_or_default();
        if file_tls.disable_host_verification {
            return Err(SecurityError::HostVerification);
        }
        let cert = Pem::from_setting(&self.tls_cert, "TEMPORAL_TLS_CLIENT_CERT_PATH")
            .or_else(|| Pem::from_profile(file_tls.client_cert, "tls.client_cert_path"));
        let key = Pem::from_setting(&self.tls_key, "TEMPORAL_TLS_CLIENT_KEY_PATH")
            .or_else(|| Pem::from_profile(file_tls.client_key, "tls.client_key_path"));
        let ca = Pem::from_setting(&self.tls_ca, "TEMPORAL_TLS_SERVER_CA_CERT_PATH")
            .or_else(|| Pem::from_profile(file_tls.server_ca_cert, "tls.server_ca_cert_path"));
        let server_name = self.tls_server_name.clone().or(file_tls.server_name);
        let api_key = self.api_key.clone().or(profile.api_key);
        let forced = self.tls.or(file_tls.disabled.map(|disabled| !disabled));
        let address = address
            .map(str::to_owned)
            .or(profile.address)
            .unwrap_or_else(|| DEFAULT_ADDRESS.to_owned());
        let namespace = namespace
            .map(str::to_owned)
            .or(profile.namespace)
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());

        match (&cert, &key) {
            (Some(_), None) => return Err(SecurityError::CertWithoutKey),
            (None, Some(_)) => return Err(SecurityError::KeyWithoutCert),
            _ => {}
        }
        if api_key.as_deref().is_some_and(|key| key.trim().is_empty()) {
            return Err(SecurityError::EmptyApiKey);
        }
        let credentials = cert.is_some() || api_key.is_some();
        let scheme = address.split_once("://").map(|(scheme, _)| scheme);
        let implied = credentials || ca.is_some() || server_name.is_some() || file_tls_table;
        let tls = match forced {
            Some(false) if credentials => return Err(SecurityError::CredentialsWithoutTls),
            Some(forced) => forced,
            None => implied || scheme == Some("https"),
        };
        if scheme == Some("http") && tls {
            return Err(SecurityError::PlainAddress(address));
        }
        let full = match scheme {
            Some(_) => address,
            None if tls => format!("https://{address}"),
            None => format!("http://{address}"),
        };
        let url = Url::parse(&full).map_err(|e| SecurityError::Address {
            address: full.clone(),
            reason: e.to_string(),
        })?;
        let tls = if tls {
            let client_tls_options = match (cert, key) {
                (Some(cert), Some(key)) => Some(
                    ClientTlsOptions::builder()
                        .client_cert(cert.read()?)
                        .client_private_key(key.read()?)
                        .build(),
                ),
                _ => None,
            };
            Some(
                TlsOptions::builder()
                    .maybe_server_root_ca_cert(ca.map(Pem::read).transpose()?)
                    .maybe_domain(server_name)
                    .maybe_client_tls_options(client_tls_options)
                    .build(),
            )
        } else {
            None
        };
        Ok(Target {
            url,
            namespace,
            tls,
            api_key,
        })
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
            .target(Some("127.0.0.1:7233"), None)
            .unwrap();
        assert_eq!(target.url.as_str(), "http://127.0.0.1:7233/");
        assert!(target.tls.is_none());
        assert!(target.api_key.is_none());
    }

    #[test]
    fn an_https_address_alone_verifies_the_server_with_the_system_roots() {
        let target = TemporalSecurity::default()
            .target(Some("https://temporal.example.com:7233"), None)
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
        let target = security
            .target(Some("ns.acct.tmprl.cloud:7233"), None)
            .unwrap();
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
            ..Default::default()
        };
        let tls = security
            .target(Some("ns.acct.tmprl.cloud:7233"), None)
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
        let error = security
            .target(Some("127.0.0.1:7233"), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("TEMPORAL_TLS_CLIENT_CERT_PATH"), "{error}");
        assert!(error.contains("TEMPORAL_TLS_CLIENT_KEY_PATH"), "{error}");
    }

    #[test]
    fn a_key_without_its_certificate_is_refused_naming_both_variables() {
        let security = TemporalSecurity {
            tls_key: Some(pem_file("key")),
            ..Default::default()
        };
        let error = security
            .target(Some("127.0.0.1:7233"), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("TEMPORAL_TLS_CLIENT_CERT_PATH"), "{error}");
        assert!(error.contains("TEMPORAL_TLS_CLIENT_KEY_PATH"), "{error}");
    }

    #[test]
    fn an_api_key_is_never_sent_to_a_plain_http_address() {
        let security = TemporalSecurity {
            api_key: Some("key".to_owned()),
            ..Default::default()
        };
        let error = security
            .target(Some("http://temporal:7233"), None)
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
        let error = security
            .target(Some("127.0.0.1:7233"), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("TEMPORAL_API_KEY"), "{error}");
    }

    #[test]
    fn a_missing_file_is_named_with_its_variable() {
        let security = TemporalSecurity {
            tls_ca: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..Default::default()
        };
        let error = security
            .target(Some("127.0.0.1:7233"), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
        assert!(
            error.contains("TEMPORAL_TLS_SERVER_CA_CERT_PATH"),
            "{error}"
        );
    }

    #[test]
    fn the_api_key_never_shows_in_a_debug_dump() {
        let security = TemporalSecurity {
            api_key: Some("secret-key-value".to_owned()),
            ..Default::default()
        };
        assert!(!format!("{security:?}").contains("secret-key-value"));
    }

    /// A temporal.toml in a folder of its own, as Temporal's CLI writes it.
    fn config_file(contents: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("lp-{}-temporal.toml", uuid::Uuid::new_v4()));
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn a_profile_gives_the_address_namespace_key_and_tls_the_settings_leave_open() {
        let ca = pem_file("ca");
        let file = config_file(&format!(
            "[profile.cloud]\naddress = \"ns.acct.tmprl.cloud:7233\"\n\
             namespace = \"ns.acct\"\napi_key = \"from-file\"\n\
             [profile.cloud.tls]\nserver_ca_cert_path = \"{}\"\nserver_name = \"front\"\n",
            ca.display()
        ));
        let security = TemporalSecurity {
            config_file: Some(file.clone()),
            profile: Some("cloud".to_owned()),
            ..Default::default()
        };
        let target = security.target(None, None).unwrap();
        assert_eq!(target.url.as_str(), "https://ns.acct.tmprl.cloud:7233/");
        assert_eq!(target.namespace, "ns.acct");
        assert_eq!(target.api_key.as_deref(), Some("from-file"));
        let tls = target.tls.expect("TLS");
        assert!(tls.server_root_ca_cert.is_some());
        assert_eq!(tls.domain.as_deref(), Some("front"));

        // What the command line or the environment gives wins over the profile.
        let security = TemporalSecurity {
            api_key: Some("from-env".to_owned()),
            ..security
        };
        let target = security
            .target(Some("other:7233"), Some("other-ns"))
            .unwrap();
        assert_eq!(target.url.as_str(), "https://other:7233/");
        assert_eq!(target.namespace, "other-ns");
        assert_eq!(target.api_key.as_deref(), Some("from-env"));
    }

    #[test]
    fn without_a_file_the_defaults_apply_and_a_named_missing_profile_is_an_error() {
        let file = config_file("[profile.default]\naddress = \"elsewhere:7233\"\n");
        let security = TemporalSecurity {
            config_file: Some(file.clone()),
            ..Default::default()
        };
        let target = security.target(None, None).unwrap();
        assert_eq!(target.url.as_str(), "http://elsewhere:7233/");
        assert_eq!(target.namespace, DEFAULT_NAMESPACE);

        let security = TemporalSecurity {
            profile: Some("staging".to_owned()),
            ..security
        };
        let error = security.target(None, None).unwrap_err().to_string();
        assert!(error.contains("staging"), "{error}");
        assert!(error.contains(&file.display().to_string()), "{error}");

        let nowhere = std::env::temp_dir().join(format!("lp-{}-none.toml", uuid::Uuid::new_v4()));
        let security = TemporalSecurity {
            config_file: Some(nowhere),
            ..Default::default()
        };
        let target = security.target(None, None).unwrap();
        assert_eq!(target.url.as_str(), format!("http://{DEFAULT_ADDRESS}/"));
    }

    #[test]
    fn tls_forced_off_with_a_key_is_refused_and_forced_on_needs_no_credentials() {
        let security = TemporalSecurity {
            tls: Some(false),
            api_key: Some("key".to_owned()),
            ..Default::default()
        };
        let error = security
            .target(Some("h:7233"), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("TEMPORAL_TLS"), "{error}");

        let security = TemporalSecurity {
            tls: Some(true),
            ..Default::default()
        };
        let target = security.target(Some("h:7233"), None).unwrap();
        assert_eq!(target.url.scheme(), "https");
        assert!(target.tls.is_some());
    }

    #[test]
    fn a_profile_that_skips_host_verification_is_refused() {
        let file = config_file(
            "[profile.default]\naddress = \"h:7233\"\n\
             [profile.default.tls]\ndisable_host_verification = true\n",
        );
        let security = TemporalSecurity {
            config_file: Some(file),
            ..Default::default()
        };
        let error = security.target(None, None).unwrap_err().to_string();
        assert!(error.contains("disable_host_verification"), "{error}");
    }
}
