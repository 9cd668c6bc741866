//! A Learning Record Store's Statement Resource: posting statements, and telling a refusal
//! (the LRS will never take them) from a transient failure (it may later).

use std::time::Duration;

use super::Statement;

/// `XAPI_LRS_URL`, `XAPI_LRS_USERNAME`, `XAPI_LRS_PASSWORD`, `XAPI_LRS_TOKEN`, `XAPI_VERSION`,
/// `XAPI_LRS_TIMEOUT_SECS`.
#[derive(Debug, Clone, clap::Args)]
pub struct LrsConfig {
    /// The LRS's xAPI endpoint; statements are posted to `<url>/statements`
    /// (e.g. `http://127.0.0.1:8100/xAPI` for Ralph).
    #[arg(long, env = "XAPI_LRS_URL")]
    pub lrs_url: String,

    /// Basic auth: the LRS user (with `XAPI_LRS_PASSWORD`).
    #[arg(long, env = "XAPI_LRS_USERNAME", conflicts_with = "lrs_token")]
    pub lrs_username: Option<String>,

    /// Basic auth: the LRS user's password.
    #[arg(
        long,
        env = "XAPI_LRS_PASSWORD",
        hide_env_values = true,
        requires = "lrs_username"
    )]
    pub lrs_password: Option<String>,

    /// Bearer auth: a token the LRS accepts, instead of a user and password.
    #[arg(long, env = "XAPI_LRS_TOKEN", hide_env_values = true)]
    pub lrs_token: Option<String>,

    /// The xAPI version announced in `X-Experience-API-Version`.
    #[arg(long, env = "XAPI_VERSION", value_enum, default_value_t)]
    pub xapi_version: XapiVersion,

    /// Longest time one request to the LRS may take before it counts as a transient failure.
    #[arg(long, env = "XAPI_LRS_TIMEOUT_SECS", default_value_t = 30)]
    pub lrs_timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum XapiVersion {
    #[default]
    #[value(name = "1.0.3")]
    V1_0_3,
    #[value(name = "2.0.0")]
    V2_0_0,
}

impl XapiVersion {
    pub(crate) fn header(self) -> &'static str {
        match self {
            XapiVersion::V1_0_3 => "1.0.3",
            XapiVersion::V2_0_0 => "2.0.0",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PostError {
    /// The LRS refused the statements (400, 409, 413, 422): sending them again will not help.
    #[error("the LRS refused the statements ({status}): {answer}")]
    Refused { status: u16, answer: String },
    /// Unreachable, timed out, overloaded, or not authorized (yet): try again later.
    #[error("the LRS did not take the statements: {0}")]
    Transient(String),
}

#[derive(Debug, thiserror::Error)]
#[error("building the LRS client")]
pub struct ClientError(#[source] reqwest::Error);

#[derive(Clone)]
pub(crate) struct Lrs {
    http: reqwest::Client,
    statements_url: String,
    config: LrsConfig,
}

impl Lrs {
    pub(crate) fn new(config: &LrsConfig) -> Result<Lrs, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.lrs_timeout_secs))
            // a redirect would resend credentials elsewhere
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(ClientError)?;
        Ok(Lrs {
            http,
            statements_url: format!("{}/statements", config.lrs_url.trim_end_matches('/')),
            config: config.clone(),
        })
    }

    /// Posts `statements` as one batch. An LRS stores a batch whole or not at all, and takes
    /// again a statement it already holds unchanged (same id, same content): resending is safe.
    pub(crate) async fn post(&self, statements: &[Statement]) -> Result<(), PostError> {
        let body = serde_json::to_vec(statements).expect("statements always serialize");
        let mut request = self
            .http
            .post(&self.statements_url)
            .header(
                "X-Experience-API-Version",
                self.config.xapi_version.header(),
            )
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(token) = &self.config.lrs_token {
            request = request.bearer_auth(token);
        } else if let Some(user) = &self.config.lrs_username {
            request = request.basic_auth(user, self.config.lrs_password.as_deref());
        }
        let response = request
            .send()
            .await
            .map_err(|e| PostError::Transient(crate::telemetry::causes(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let answer = response.text().await.unwrap_or_default();
        match status.as_u16() {
            400 | 409 | 413 | 422 => Err(PostError::Refused {
                status: status.as_u16(),
                answer,
            }),
            _ => Err(PostError::Transient(format!("{status}: {answer}"))),
        }
    }
}
