//! Configuration from flags and environment, parsed once into one typed struct per component.
//!
//! | variable | default | used by |
//! |---|---|---|
//! | `DATABASE_URL` | `postgres://postgres@127.0.0.1:5432/learning_progress` | everything |
//! | `DATABASE_MAX_CONNECTIONS` | 10 | everything |
//! | `DATABASE_ACQUIRE_TIMEOUT_SECS` | 5 | everything |
//! | `LOG_FORMAT` | `pretty` (`json` for machines) | everything |
//! | `RUST_LOG` | `info` | everything |
//!
//! Secrets (passwords in URLs, JWT secrets) are never printed: see [`DbConfig::redacted_url`].

/// A configuration with every field at its command-line default, as if no flag and no
/// environment variable were given: the `impl Default`s call this, so each default is written
/// once, in its `#[arg]` attribute.
///
/// # Panics
///
/// If a field of `T` is required (has no default), which a test of each caller catches.
pub(crate) fn defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults").no_binary_name(true))
        .mut_args(|arg| arg.env(None::<&'static str>));
    let matches = command
        .try_get_matches_from(std::iter::empty::<std::ffi::OsString>())
        .expect("every field has a default");
    T::from_arg_matches(&matches).expect("the defaults parse")
}

#[derive(Debug, Clone, clap::Args)]
pub struct DbConfig {
    /// PostgreSQL (or Supabase) connection URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/learning_progress",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Pool size per process; keep the sum over all processes under the server's limit.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub max_connections: u32,

    /// How long a query waits for a free connection before it fails.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT_SECS", default_value_t = 5)]
    pub acquire_timeout_secs: u64,
}

impl DbConfig {
    pub fn new(database_url: impl Into<String>) -> DbConfig {
        DbConfig {
            database_url: database_url.into(),
            max_connections: 10,
            acquire_timeout_secs: 5,
        }
    }

    /// The URL with any password replaced by `***`, for logs.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.database_url)
    }
}

/// Replaces the password of `scheme://user:password@host/...` with `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[cfg(test)]
mod tests {
    use crate::api::ApiConfig;
    use crate::applier::ApplierConfig;
    use crate::xapi::XapiConfig;

    /// `Default` is the command line with nothing given: the values of the `#[arg]`s,
    /// skipped fields included.
    #[test]
    fn defaults_are_the_command_lines() {
        let api = ApiConfig::default();
        assert_eq!(api.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(api.cache_ttl_secs, 300);
        assert_eq!(api.applier_durable, "progress-applier");
        assert!(api.cors_origins.is_empty() && !api.cors_loopback);
        assert_eq!(api.stream_ticket_lifetime.as_secs(), 30);
        let applier = ApplierConfig::default();
        assert_eq!(
            (
                applier.durable.as_str(),
                applier.batch_size,
                applier.ack_wait_secs
            ),
            ("progress-applier", 500, 30)
        );
        assert_eq!(XapiConfig::default().language, "en");
    }
}
