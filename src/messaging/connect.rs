//! Connecting to NATS as one of the service's roles, with the deployment's credentials and TLS.

use std::path::{Path, PathBuf};

use async_nats::{ConnectOptions, ServerAddr};

use super::NatsConfig;

/// Why a connection could not even be attempted, or failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("reading the NATS credentials file {} (NATS_CREDS)", .path.display())]
    Credentials {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {} ({setting})", .path.display())]
    Tls {
        setting: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to NATS")]
    Connect(#[from] async_nats::ConnectError),
}

/// The options every component connects with: its name (shown in the server's connection
/// list), the user and password of a `nats://user:password@…` URL, the credentials file and
/// TLS settings when configured, and retrying a server that is
/// down at start-up instead of failing the process. A missing or unreadable file fails here,
/// at start-up, rather than as endless reconnect attempts.
pub async fn options(config: &NatsConfig, name: &str) -> Result<ConnectOptions, ConnectError> {
    let mut options = ConnectOptions::new()
        .name(format!("learning-progress-{name}"))
        .retry_on_initial_connect();
    // `nats://user:password@host`: the client would send no user from the URL by itself
    let first = config
        .servers()
        .first()
        .and_then(|url| url.parse::<ServerAddr>().ok());
    if let Some(addr) = first.filter(ServerAddr::has_user_pass) {
        let user = addr.username().unwrap_or_default().to_owned();
        let password = addr.password().unwrap_or_default().to_owned();
        options = options.user_and_password(user, password);
    }
    if let Some(path) = &config.creds {
        options =
            options
                .credentials_file(path)
                .await
                .map_err(|source| ConnectError::Credentials {
                    path: path.clone(),
                    source,
                })?;
    }
    if let Some(path) = &config.tls_ca {
        readable(path, "NATS_TLS_CA")?;
        options = options.add_root_certificates(path.clone());
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        readable(cert, "NATS_TLS_CERT")?;
        readable(key, "NATS_TLS_KEY")?;
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(options.require_tls(config.tls_required()))
}

/// Connects to NATS as `name` (`api`, `applier`, `worker`, …).
pub async fn connect(config: &NatsConfig, name: &str) -> Result<async_nats::Client, ConnectError> {
    Ok(options(config, name)
        .await?
        .connect(config.servers())
        .await?)
}

/// async-nats reads certificates only when it connects, and would retry a missing file forever.
fn readable(path: &Path, setting: &'static str) -> Result<(), ConnectError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|source| ConnectError::Tls {
            setting,
            path: path.to_owned(),
            source,
        })
}
