//! How learners and activities are named in statements: the actor's account home page, the
//! base of the activity IRIs and the language of their names. Shared by the read view and the
//! forwarder, so both give the same statement for the same command.

/// `XAPI_HOME_PAGE`, `XAPI_ACTIVITY_BASE`, `XAPI_LANGUAGE`.
#[derive(Debug, Clone, clap::Args)]
pub struct XapiConfig {
    /// The `homePage` of every learner's xAPI account (the account's `name` is the user id),
    /// e.g. the Supabase project's URL.
    #[arg(
        long = "xapi-home-page",
        env = "XAPI_HOME_PAGE",
        default_value = "https://learning-progress.example"
    )]
    pub home_page: String,

    /// The base of activity IRIs: `<base>/tracks/<track_id>` and
    /// `<base>/tracks/<track_id>/units/<unit_id>`. Keep it stable: an LRS knows activities by it.
    #[arg(
        long = "xapi-activity-base",
        env = "XAPI_ACTIVITY_BASE",
        default_value = "https://learning-progress.example/activities"
    )]
    pub activity_base: String,

    /// The language tag of the tracks' and units' titles in `definition.name`.
    #[arg(long = "xapi-language", env = "XAPI_LANGUAGE", default_value = "en")]
    pub language: String,
}

impl Default for XapiConfig {
    /// The command line's defaults ([`crate::config::defaults`]).
    fn default() -> XapiConfig {
        crate::config::defaults()
    }
}

impl XapiConfig {
    /// The activity base without a trailing slash.
    pub(crate) fn base(&self) -> &str {
        self.activity_base.trim_end_matches('/')
    }

    pub fn track_iri(&self, track_id: uuid::Uuid) -> String {
        format!("{}/tracks/{track_id}", self.base())
    }

    pub fn unit_iri(&self, track_id: uuid::Uuid, unit_id: uuid::Uuid) -> String {
        format!("{}/tracks/{track_id}/units/{unit_id}", self.base())
    }
}
