//! Temporal Cloud's connection settings against the local dev server: plain text still works,
//! and a TLS setting fails at once with a clear error instead of hanging; a half-configured
//! client certificate stops the worker before it connects, naming both variables; and a client
//! certificate gets through a TLS front that demands one (mTLS, as Temporal Cloud does).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use learning_progress::workflow::{self, TemporalConfig};

use super::BINARY;

fn dev_server() -> String {
    std::env::var("TEMPORAL_ADDRESS").unwrap_or_else(|_| "127.0.0.1:7233".to_owned())
}

#[tokio::test]
async fn without_tls_settings_the_dev_server_connects_in_plain_text() {
    let config = TemporalConfig::new(dev_server(), "deploy-plain");
    workflow::connect(&config, "test").await.expect("connects");
}

#[tokio::test]
async fn an_api_key_against_the_plain_dev_server_fails_at_once_naming_the_tls_address() {
    let mut config = TemporalConfig::new(dev_server(), "deploy-tls");
    config.security.api_key = Some("placeholder-key".to_owned());
    let error = tokio::time::timeout(Duration::from_secs(30), workflow::connect(&config, "test"))
        .await
        .expect("a failed handshake ends the attempt rather than hanging")
        .expect_err("a plain-text server cannot pass for TLS");
    let message = error.to_string();
    assert!(message.contains("https://"), "{message}");
}

#[test]
fn a_client_certificate_without_its_key_stops_the_worker_naming_both_variables() {
    let cert = std::env::temp_dir().join(format!("lp-cert-{}.pem", uuid::Uuid::new_v4()));
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let output = std::process::Command::new(BINARY)
        .arg("worker")
        .env("TEMPORAL_ADDRESS", dev_server())
        .env("TEMPORAL_TLS_CLIENT_CERT_PATH", &cert)
        .env_remove("TEMPORAL_TLS_CLIENT_KEY_PATH")
        .env_remove("TEMPORAL_PROFILE")
        .env("TEMPORAL_CONFIG_FILE", "/nonexistent/temporal.toml")
        .output()
        .unwrap();
    std::fs::remove_file(&cert).ok();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("TEMPORAL_TLS_CLIENT_CERT_PATH")
            && stderr.contains("TEMPORAL_TLS_CLIENT_KEY_PATH"),
        "{stderr}"
    );
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let output = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl installed (Debian's ca-certificates depends on it)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, both signed by it.
fn certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "1",
                "-subj",
                "/CN=test-ca",
            ],
        ]
        .concat(),
    );
    for (name, extensions) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(dir.join(&ext), extensions).unwrap();
        let subject = format!("/CN={name}");
        openssl(
            dir,
            &[
                &["req"][..],
                &ec,
                &["-keyout", &key, "-out", &csr, "-subj", &subject],
            ]
            .concat(),
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "1",
                "-extfile",
                &ext,
            ],
        );
    }
}

/// A TLS front for the dev server that, like Temporal Cloud's mTLS endpoints, accepts only
/// clients with a certificate signed by its CA; returns its port.
async fn mtls_front(dir: &Path) -> u16 {
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::{RootCertStore, ServerConfig, crypto, server::WebPkiClientVerifier};

    let provider = Arc::new(crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(dir.join("ca.pem")).unwrap())
        .unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_file(dir.join("server.pem")).unwrap()],
            PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = dev_server();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let address = upstream.trim_start_matches("http://");
                if let Ok(mut server) = tokio::net::TcpStream::connect(address).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn a_client_certificate_connects_over_mutual_tls_and_none_is_refused() {
    let dir = std::env::temp_dir().join(format!("lp-mtls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir);
    let port = mtls_front(&dir).await;

    let mut config = TemporalConfig::new(format!("127.0.0.1:{port}"), "deploy-mtls");
    config.security.tls_ca = Some(dir.join("ca.pem"));
    config.security.config_file = Some(dir.join("no-temporal.toml"));
    config.security.tls_cert = Some(dir.join("client.pem"));
    config.security.tls_key = Some(dir.join("client.key"));
    let connected =
        tokio::time::timeout(Duration::from_secs(30), workflow::connect(&config, "test")).await;
    assert!(
        matches!(connected, Ok(Ok(_))),
        "through mTLS: {:?}",
        connected.map(|c| c.err().map(|e| format!("{e:?}")))
    );

    config.security.tls_cert = None;
    config.security.tls_key = None;
    let refused = tokio::time::timeout(Duration::from_secs(30), workflow::connect(&config, "test"))
        .await
        .expect("a refused handshake ends the attempt");
    assert!(
        refused.is_err(),
        "the front took a client without a certificate"
    );

    // The same connection from a profile of Temporal's client configuration file
    // (`--temporal-config-file`/TEMPORAL_CONFIG_FILE, `--temporal-profile`/TEMPORAL_PROFILE),
    // with no address given: the profile's address, certificate, key and CA are used.
    let file = dir.join("temporal.toml");
    std::fs::write(
        &file,
        format!(
            "[profile.default]\naddress = \"127.0.0.1:1\"\n\n\
             [profile.cloud]\naddress = \"127.0.0.1:{port}\"\nnamespace = \"default\"\n\n\
             [profile.cloud.tls]\nclient_cert_path = \"{cert}\"\nclient_key_path = \"{key}\"\n\
             server_ca_cert_path = \"{ca}\"\n",
            cert = dir.join("client.pem").display(),
            key = dir.join("client.key").display(),
            ca = dir.join("ca.pem").display(),
        ),
    )
    .unwrap();
    let mut from_profile = TemporalConfig::new(String::new(), "deploy-mtls");
    from_profile.address = None;
    from_profile.security.config_file = Some(file.clone());
    from_profile.security.profile = Some("cloud".to_owned());
    let connected = tokio::time::timeout(
        Duration::from_secs(30),
        workflow::connect(&from_profile, "test"),
    )
    .await;
    assert!(
        matches!(connected, Ok(Ok(_))),
        "through mTLS from the profile: {:?}",
        connected.map(|c| c.err().map(|e| format!("{e:?}")))
    );
    // The default profile names a closed port: not the profile asked for.
    from_profile.security.profile = None;
    let refused = tokio::time::timeout(
        Duration::from_secs(30),
        workflow::connect(&from_profile, "test"),
    )
    .await
    .expect("a refused connection ends the attempt");
    let message = format!("{:?}", refused.expect_err("nothing listens on port 1"));
    assert!(message.contains("127.0.0.1:1"), "{message}");
    std::fs::remove_dir_all(&dir).ok();
}
