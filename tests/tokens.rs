//! Development tokens and their `--ttl`, without a server.

use std::time::Duration;

use learning_progress::auth::{
    AuthConfig, Principal, TokenError, Verifier, mint_dev_token, mint_development_token, parse_ttl,
};
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

#[tokio::test]
async fn the_token_command_mints_development_tokens_only() {
    let user = Uuid::from_u128(8);
    let hour = Duration::from_secs(3600);
    let real = AuthConfig::with_secret("a-real-project-secret-a-real-project-secret");
    assert!(matches!(
        mint_development_token(&real, user, true, hour),
        Err(TokenError::RealKeyConfigured)
    ));
    let with_jwks = AuthConfig {
        jwt_secret: None,
        jwks: Some("https://project.supabase.co/auth/v1/.well-known/jwks.json".to_owned()),
        ..real.clone()
    };
    assert!(matches!(
        mint_development_token(&with_jwks, user, true, hour),
        Err(TokenError::RealKeyConfigured)
    ));

    let unset = AuthConfig {
        jwt_secret: None,
        ..real.clone()
    };
    let token = mint_development_token(&unset, user, false, hour).unwrap();
    let development = Verifier::development().await;
    assert_eq!(development.verify(&token).await.unwrap().user_id, user);
    let production = Verifier::from_config(&real).await.unwrap();
    assert!(production.verify(&token).await.is_err());
}

#[tokio::test]
async fn development_mode_is_off_while_a_real_key_is_configured() {
    let path = std::env::temp_dir().join(format!("jwks-{}.json", Uuid::new_v4()));
    std::fs::write(&path, r#"{"keys": []}"#).unwrap();
    let with_jwks = AuthConfig {
        jwt_secret: None,
        jwks: Some(path.to_string_lossy().into_owned()),
        dev: true,
        ..AuthConfig::with_secret("unused")
    };
    assert!(!with_jwks.development_mode());
    let verifier = Verifier::from_config(&with_jwks).await.unwrap();
    let development = AuthConfig {
        jwks: None,
        ..with_jwks.clone()
    };
    assert!(development.development_mode());
    let token = mint_dev_token(
        &development,
        Uuid::from_u128(9),
        true,
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(
        verifier.verify(&token).await.is_err(),
        "a development token is refused beside a real key"
    );
}
