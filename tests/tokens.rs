//! Development tokens and their `--ttl`, without a server.

use std::time::Duration;

use learning_progress::auth::{AuthConfig, Principal, Verifier, mint_dev_token, parse_ttl};
use uuid::Uuid;

/// Found by fuzzing (`fuzz/`, target `token_verify`): the count times the unit overflowed,
/// a panic in debug builds and a wrapped, much shorter TTL in release builds.
#[test]
fn a_ttl_beyond_what_a_duration_holds_is_refused() {
    let error = parse_ttl("16750638727377249166h").unwrap_err();
    assert!(error.contains("longer than a duration can be"), "{error}");
    assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
}

#[tokio::test]
async fn a_token_minted_with_the_longest_ttl_still_verifies() {
    let config = AuthConfig::with_secret("a-secret-for-this-test-only-a-secret-for-this-test");
    let verifier = Verifier::from_config(&config).await.unwrap();
    let user = Uuid::from_u128(7);
    let longest = parse_ttl(&format!("{}s", u64::MAX)).unwrap();
    let token = mint_dev_token(&config, user, false, longest).unwrap();
    let principal = verifier.verify(&token).await.unwrap();
    assert_eq!(
        principal,
        Principal {
            user_id: user,
            admin: false,
            expires_at: principal.expires_at,
        }
    );
    let in_a_century = jsonwebtoken::get_current_timestamp() + 100 * 365 * 86_400;
    assert!(principal.expires_at > in_a_century);
}
