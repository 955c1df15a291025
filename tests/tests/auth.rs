//! The Auth section of docs/api.md, over HTTP.

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use souk_e2e::{TestShop, json};

fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

#[tokio::test]
async fn registering_returns_the_user_without_secrets() {
    let shop = TestShop::start().await;
    let email = shop.unique_email();
    let reply = shop
        .post("/api/users", None, &json!({"email": format!("  {}", email.to_uppercase()), "password": "password-1", "name": " Ada "}))
        .await;
    let user = reply
        .expect(StatusCode::CREATED)
        .as_object()
        .expect("object")
        .clone();
    let mut keys: Vec<&str> = user.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["created_at", "email", "id", "name", "role"]);
    assert_eq!(user["email"], email.to_uppercase());
    assert_eq!(user["name"], "Ada");
    assert_eq!(user["role"], "customer");
    assert!(uuid::Uuid::parse_str(user["id"].as_str().expect("id")).is_ok());
    let created =
        chrono::DateTime::parse_from_rfc3339(user["created_at"].as_str().expect("created_at"))
            .expect("RFC 3339");
    assert_eq!(created.offset().local_minus_utc(), 0);
    assert!(!reply.text.contains("password") && !reply.text.contains("argon2"));
}

#[tokio::test]
async fn the_same_email_in_another_case_is_a_conflict() {
    let shop = TestShop::start().await;
    let email = shop.unique_email();
    let body = json!({"email": email, "password": "password-1", "name": "Ada"});
    shop.post("/api/users", None, &body)
        .await
        .expect(StatusCode::CREATED);
    let again = json!({"email": email.to_uppercase(), "password": "password-2", "name": "Ada"});
    shop.post("/api/users", None, &again)
        .await
        .expect(StatusCode::CONFLICT);
}

#[tokio::test]
async fn invalid_registrations_are_bad_requests_naming_the_field() {
    let shop = TestShop::start().await;
    let email = shop.unique_email();
    let long = "p".repeat(129);
    let cases = [
        (
            json!({"email": "nope", "password": "password-1", "name": "Ada"}),
            "email",
        ),
        (
            json!({"email": email, "password": "short", "name": "Ada"}),
            "password",
        ),
        (
            json!({"email": email, "password": long, "name": "Ada"}),
            "password",
        ),
        (
            json!({"email": email, "password": "password-1", "name": ""}),
            "name",
        ),
        (
            json!({"email": email, "password": "password-1", "name": "n".repeat(101)}),
            "name",
        ),
    ];
    for (body, field) in cases {
        let reply = shop.post("/api/users", None, &body).await;
        let problem = reply.expect(StatusCode::BAD_REQUEST);
        assert!(
            problem["errors"][field].is_string(),
            "{field}: {}",
            reply.text
        );
    }
    // Nothing was created by the rejected attempts.
    let login = shop
        .post(
            "/api/auth/login",
            None,
            &json!({"email": email, "password": "password-1"}),
        )
        .await;
    login.expect(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn malformed_bodies_are_bad_requests() {
    let shop = TestShop::start().await;
    let email = shop.unique_email();
    let raw = |body: &'static str| {
        shop.request(Method::POST, "/api/users")
            .header("content-type", "application/json")
            .body(body)
    };
    for body in ["{", "", "[]", "null", "\"text\"", "{\"email\": }"] {
        shop.send(raw(body)).await.expect(StatusCode::BAD_REQUEST);
    }
    let wrong_types = [
        json!({"email": email, "password": 12345678, "name": "Ada"}),
        json!({"email": email, "password": "password-1", "name": 1.5}),
        json!({"email": [email], "password": "password-1", "name": "Ada"}),
        json!({"email": email, "password": "password-1"}),
        json!({"email": email, "password": "password-1", "name": null}),
    ];
    for body in wrong_types {
        let reply = shop.post("/api/users", None, &body).await;
        reply.expect(StatusCode::BAD_REQUEST);
    }
    shop.post("/api/auth/login", None, &json!({"email": email}))
        .await
        .expect(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn bodies_over_64_kib_are_refused() {
    let shop = TestShop::start().await;
    let big = json!({"email": shop.unique_email(), "password": "password-1", "name": "x".repeat(70 * 1024)});
    shop.post("/api/users", None, &big)
        .await
        .expect(StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn login_returns_an_es256_bearer_token() {
    let shop = TestShop::start().await;
    let customer = shop.customer().await;
    let reply = shop
        .post(
            "/api/auth/login",
            None,
            &json!({"email": customer.email.to_uppercase(), "password": customer.password}),
        )
        .await;
    let body = reply.expect(StatusCode::OK);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_i64().is_some_and(|s| s > 0));
    let token = body["access_token"].as_str().expect("token");
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').next().expect("header"))
        .expect("base64url");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&header).expect("JSON")["alg"],
        "ES256"
    );
    let claims = claims(token);
    assert_eq!(claims["sub"], customer.id);
    assert_eq!(claims["role"], "customer");
    assert_eq!(claims["iss"], "souk");
    assert_eq!(claims["aud"], "souk-api");
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        body["expires_in"].as_i64().expect("expires_in")
    );
}

#[tokio::test]
async fn unknown_email_and_wrong_password_are_the_same_401() {
    let shop = TestShop::start().await;
    let customer = shop.customer().await;
    let wrong = shop
        .post(
            "/api/auth/login",
            None,
            &json!({"email": customer.email, "password": "not-the-password"}),
        )
        .await;
    let unknown = shop
        .post(
            "/api/auth/login",
            None,
            &json!({"email": shop.unique_email(), "password": customer.password}),
        )
        .await;
    wrong.expect(StatusCode::UNAUTHORIZED);
    unknown.expect(StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.body, unknown.body);
}

#[tokio::test]
async fn me_is_the_caller() {
    let shop = TestShop::start().await;
    let customer = shop.customer().await;
    let reply = shop.get("/api/users/me", Some(&customer.token)).await;
    let me = reply.expect(StatusCode::OK);
    assert_eq!(me["id"], customer.id);
    assert_eq!(me["email"], customer.email);
}

#[tokio::test]
async fn a_customer_reads_itself_but_not_another_user() {
    let shop = TestShop::start().await;
    let ada = shop.customer().await;
    let bob = shop.customer().await;
    shop.get(&format!("/api/users/{}", ada.id), Some(&ada.token))
        .await
        .expect(StatusCode::OK);
    shop.get(&format!("/api/users/{}", bob.id), Some(&ada.token))
        .await
        .expect(StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_admin_reads_anyone() {
    let shop = TestShop::start().await;
    let ada = shop.customer().await;
    let admin = shop.admin().await;
    assert_eq!(claims(&admin.token)["role"], "admin");
    let reply = shop
        .get(&format!("/api/users/{}", ada.id), Some(&admin.token))
        .await;
    assert_eq!(reply.expect(StatusCode::OK)["email"], ada.email);
    let unknown = uuid::Uuid::new_v4();
    shop.get(&format!("/api/users/{unknown}"), Some(&admin.token))
        .await
        .expect(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_malformed_user_id_is_a_bad_request() {
    let shop = TestShop::start().await;
    let ada = shop.customer().await;
    shop.get("/api/users/not-a-uuid", Some(&ada.token))
        .await
        .expect(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn requests_without_a_valid_token_are_unauthorized() {
    let shop = TestShop::start().await;
    let ada = shop.customer().await;
    shop.get("/api/users/me", None)
        .await
        .expect(StatusCode::UNAUTHORIZED);
    shop.get("/api/users/me", Some("garbage"))
        .await
        .expect(StatusCode::UNAUTHORIZED);
    let basic = shop
        .request(Method::GET, "/api/users/me")
        .header("authorization", format!("Basic {}", ada.token));
    shop.send(basic).await.expect(StatusCode::UNAUTHORIZED);

    // alg none, with the same claims as a valid token.
    let parts: Vec<&str> = ada.token.split('.').collect();
    let none_header =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let unsigned = format!("{none_header}.{}.", parts[1]);
    shop.get("/api/users/me", Some(&unsigned))
        .await
        .expect(StatusCode::UNAUTHORIZED);

    // A tampered payload (role raised to admin) under the original signature.
    let mut forged = claims(&ada.token);
    forged["role"] = json!("admin");
    let forged_payload =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged.to_string());
    let tampered = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    shop.get("/api/users/me", Some(&tampered))
        .await
        .expect(StatusCode::UNAUTHORIZED);

    // HS256 keyed with the public key is a classic confusion attack.
    let hs_header =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let hs = format!("{hs_header}.{}.{}", parts[1], parts[2]);
    shop.get("/api/users/me", Some(&hs))
        .await
        .expect(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
#[cfg_attr(feature = "remote", ignore = "needs the in-process shop")]
async fn expired_tokens_and_wrong_issuers_or_audiences_are_unauthorized() {
    let mut shop = TestShop::start().await;
    let ada = shop.customer().await;
    let local = shop.local();
    let key = local.keys.private_pem.expose().clone();
    let now = chrono::Utc::now().timestamp();
    let sign = |overrides: serde_json::Value| {
        let mut claims = json!({"sub": ada.id, "role": "customer", "iss": "souk", "aud": "souk-api", "iat": now, "exp": now + 600});
        for (k, v) in overrides.as_object().expect("object") {
            claims[k] = v.clone();
        }
        souk_e2e_sign(&key, &claims)
    };
    let valid = sign(json!({}));
    shop.get("/api/users/me", Some(&valid))
        .await
        .expect(StatusCode::OK);
    for overrides in [
        json!({"iat": now - 7200, "exp": now - 3600}),
        json!({"iss": "someone-else"}),
        json!({"aud": "another-api"}),
    ] {
        let token = sign(overrides.clone());
        let reply = shop.get("/api/users/me", Some(&token)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{overrides}");
    }
}

/// Signs claims with the shop's private key (in-process shops only).
fn souk_e2e_sign(private_pem: &str, claims: &serde_json::Value) -> String {
    souk_e2e::sign_es256(private_pem, claims)
}
