//! Isolated NATS names, waiting on conditions with a deadline, reading a stream, a TCP proxy
//! that can cut a connection to a real server, a NATS server of a test's own, and an applier.
//! The example agent's tests include this file alone: it needs nothing but the service.
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use learning_progress::messaging::{self, NatsConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use uuid::Uuid;

pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// Streams and subjects no other test uses, on the shared NATS server; removed by `cleanup`.
pub async fn isolated_nats() -> (NatsConfig, jetstream::Context) {
    let tag = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
    let config = NatsConfig::isolated(nats_url(), &tag);
    let client = messaging::connect(&config, "test")
        .await
        .expect("NATS reachable");
    let js = jetstream::new(client);
    messaging::ensure_streams(&js, &config)
        .await
        .expect("streams created");
    (config, js)
}

#[allow(unused_imports)] // not every test binary deletes streams
pub use learning_progress::messaging::delete_streams;

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads `count` messages from `stream` (from its start), or panics after `timeout`.
pub async fn read_stream(
    js: &jetstream::Context,
    stream: &str,
    count: usize,
    timeout: Duration,
) -> Vec<jetstream::Message> {
    let consumer = js
        .create_consumer_on_stream(pull::Config::default(), stream)
        .await
        .expect("ephemeral consumer");
    let mut messages = consumer.messages().await.expect("message stream");
    let mut read = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while read.len() < count {
        match tokio::time::timeout_at(deadline, messages.next()).await {
            Ok(Some(Ok(message))) => {
                message.ack().await.ok();
                read.push(message);
            }
            Ok(other) => panic!("stream {stream} ended: {other:?}"),
            Err(_) => panic!(
                "read {} of {count} messages from {stream} in time",
                read.len()
            ),
        }
    }
    read
}

/// How many messages `stream` holds now.
pub async fn stream_len(js: &jetstream::Context, stream: &str) -> u64 {
    let mut stream = js.get_stream(stream).await.expect("stream exists");
    stream.info().await.expect("stream info").state.messages
}

/// A TCP proxy in front of a real server. `cut()` drops every connection and refuses new ones
/// until `restore()`: the server looks unreachable to whoever connects through the proxy.
/// In front of a NATS server (`Proxy::nats`), `hide(text)` keeps the connection up but leaves
/// out every message the server delivers on a subject containing `text`, as a broken route
/// between cluster nodes would.
pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    cut: Arc<Notify>,
    hidden: Arc<Mutex<Option<String>>>,
}

impl Proxy {
    pub async fn start(target: &'static str) -> Proxy {
        Proxy::spawn(target, false).await
    }

    /// A proxy that reads the NATS protocol the server sends, so that `hide` works.
    pub async fn nats(target: &'static str) -> Proxy {
        Proxy::spawn(target, true).await
    }

    async fn spawn(target: &'static str, nats: bool) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(Notify::new());
        let hidden = Arc::new(Mutex::new(None::<String>));
        let (up_in, cut_in, hidden_in) = (up.clone(), cut.clone(), hidden.clone());
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                if !up_in.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed
                }
                let (cut, hidden) = (cut_in.clone(), hidden_in.clone());
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = inbound.into_split();
                    let (mut server_read, mut server_write) = outbound.into_split();
                    let to_client = async {
                        if nats {
                            deliver(server_read, client_write, hidden).await;
                        } else {
                            let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy(&mut client_read, &mut server_write) => {}
                        _ = to_client => {}
                        _ = cut.notified() => {}
                    }
                });
            }
        });
        Proxy {
            port,
            up,
            cut,
            hidden,
        }
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// From now on, leaves out deliveries whose subject contains `text` (`None`: none).
    pub fn hide(&self, text: Option<&str>) {
        *self.hidden.lock().unwrap() = text.map(str::to_owned);
    }
}

/// Copies the server's side of a NATS connection frame by frame, leaving out `MSG` and `HMSG`
/// frames whose subject contains the hidden text.
async fn deliver(
    mut server: tokio::net::tcp::OwnedReadHalf,
    mut client: tokio::net::tcp::OwnedWriteHalf,
    hidden: Arc<Mutex<Option<String>>>,
) {
    let mut pending = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let read = match server.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        pending.extend_from_slice(&chunk[..read]);
        while let Some((length, subject)) = next_frame(&pending) {
            let hide = match (&subject, hidden.lock().unwrap().as_deref()) {
                (Some(subject), Some(text)) => subject.contains(text),
                _ => false,
            };
            let frame: Vec<u8> = pending.drain(..length).collect();
            if !hide && client.write_all(&frame).await.is_err() {
                return;
            }
        }
    }
}

/// The length of the first complete frame in `buffer`, and its subject if it delivers a
/// message (`MSG subject sid [reply] size` or `HMSG subject sid [reply] header-size size`,
/// then the payload and CRLF); `None` until a whole frame has arrived.
fn next_frame(buffer: &[u8]) -> Option<(usize, Option<String>)> {
    let line_end = buffer.windows(2).position(|pair| pair == b"\r\n")?;
    let line = std::str::from_utf8(&buffer[..line_end]).ok()?;
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.first() {
        Some(&"MSG") | Some(&"HMSG") => {
            let size: usize = words.last()?.parse().ok()?;
            let length = line_end + 2 + size + 2;
            (buffer.len() >= length).then(|| (length, Some(words[1].to_owned())))
        }
        _ => Some((line_end + 2, None)),
    }
}

/// A NATS server of the test's own on a free port, so a test can kill and restart it.
pub struct NatsServer {
    pub port: u16,
    store: std::path::PathBuf,
    config: Option<(std::path::PathBuf, Vec<(String, String)>)>,
    child: Option<tokio::process::Child>,
}

impl NatsServer {
    pub async fn start() -> NatsServer {
        NatsServer::start_with(None).await
    }

    /// A server that also reads the configuration file `config`, with `env` in its environment.
    pub async fn with_config(config: &std::path::Path, env: &[(&str, &str)]) -> NatsServer {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        NatsServer::start_with(Some((config.to_owned(), env))).await
    }

    async fn start_with(config: Option<(std::path::PathBuf, Vec<(String, String)>)>) -> NatsServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = std::env::temp_dir().join(format!("lp-nats-{}", Uuid::new_v4().simple()));
        let mut server = NatsServer {
            port,
            store,
            config,
            child: None,
        };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same port and store, after `kill`.
    pub async fn restart(&mut self) {
        let bin = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".to_owned());
        let mut command = tokio::process::Command::new(&bin);
        if let Some((config, env)) = &self.config {
            command.arg("-c").arg(config).envs(env.iter().cloned());
        }
        let child = command
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store)
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin} (set NATS_SERVER_BIN): {e}"));
        self.child = Some(child);
        let port = self.port;
        eventually(
            Duration::from_secs(10),
            "the NATS server to accept connections",
            || async move {
                TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
    }

    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// How many messages `stream` ever stored (its last sequence): unlike `stream_len`, it does not
/// drop when the applier takes commands off the work-queue commands stream.
pub async fn ever_stored(js: &jetstream::Context, stream: &str) -> u64 {
    let mut stream = js.get_stream(stream).await.expect("stream exists");
    stream
        .info()
        .await
        .expect("stream info")
        .state
        .last_sequence
}

/// The messages `stream` holds now, in stream order, read by sequence without a consumer
/// (a consumer's acks would take commands off the work-queue commands stream).
pub async fn stored(
    js: &jetstream::Context,
    stream: &str,
) -> Vec<async_nats::jetstream::message::StreamMessage> {
    let last = ever_stored(js, stream).await;
    let stream = js.get_stream(stream).await.expect("stream exists");
    let mut messages = Vec::new();
    for sequence in 1..=last {
        if let Ok(message) = stream.get_raw_message(sequence).await {
            messages.push(message);
        }
    }
    messages
}

/// An applier on `nats`'s streams with `config` and no test seams, stopped when the guard
/// drops.
pub fn start_applier(
    js: &jetstream::Context,
    pool: &sqlx::PgPool,
    nats: &NatsConfig,
    config: learning_progress::applier::ApplierConfig,
) -> tokio_util::sync::DropGuard {
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(learning_progress::applier::run(
        js.clone(),
        pool.clone(),
        nats.clone(),
        config,
        learning_progress::applier::Seams::default(),
        shutdown.clone(),
    ));
    shutdown.drop_guard()
}
