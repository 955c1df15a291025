//! The user service's RPCs against a real PostgreSQL database of their own.

use std::time::Duration;

use souk_protos::v1::{
    GetUserRequest, LoginRequest, LoginResponse, LogoutRequest, RefreshRequest, RegisterRequest,
    user_service_client::UserServiceClient,
};
use souk_shared::{
    Shutdown,
    auth::with_token,
    config::Secret,
    db::DatabaseLocation,
    jwt::{KeyPair, Role, Signer, Verifier},
    testing::{TestDatabase, listener},
};
use souk_user::{AdminAccount, HashLimits, Settings};
use tonic::{Code, transport::Channel};

struct App {
    client: UserServiceClient<Channel>,
    verifier: Verifier,
    shutdown: Shutdown,
    settings: Settings,
    _db: TestDatabase,
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

const ADMIN_EMAIL: &str = "root@example.com";
const ADMIN_PASSWORD: &str = "admin-password";

async fn start_service(settings: Settings, shutdown: &Shutdown) -> UserServiceClient<Channel> {
    let service = souk_user::service(settings)
        .await
        .expect("settings")
        .ready()
        .await
        .expect("start");
    let listener = listener().await;
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(service.serve(listener, shutdown.clone()));
    UserServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

async fn app() -> App {
    let db = TestDatabase::create().await;
    let keys = KeyPair::generate().expect("keys");
    let verifier = Verifier::from_pem(&keys.public_pem).expect("verifier");
    let settings = Settings {
        database: DatabaseLocation::Own(db.url()),
        signer: Signer::from_pem(keys.private_pem.expose(), Duration::from_secs(900))
            .expect("signer"),
        verifier: verifier.clone(),
        admin: Some(AdminAccount {
            email: ADMIN_EMAIL.into(),
            password: Secret::new(ADMIN_PASSWORD.into()),
        }),
        hash_limits: HashLimits::for_this_machine(),
        refresh_ttl: Duration::from_secs(3600),
    };
    let shutdown = Shutdown::new();
    let client = start_service(settings.clone(), &shutdown).await;
    App {
        client,
        verifier,
        shutdown,
        settings,
        _db: db,
    }
}

fn register(email: &str, password: &str, name: &str) -> RegisterRequest {
    RegisterRequest {
        email: email.into(),
        password: password.into(),
        name: name.into(),
    }
}

impl App {
    async fn login(&mut self, email: &str, password: &str) -> Result<String, tonic::Status> {
        let response = self
            .client
            .login(LoginRequest {
                email: email.into(),
                password: password.into(),
            })
            .await?;
        Ok(response.into_inner().access_token)
    }

    async fn customer(&mut self, email: &str) -> (String, String) {
        let user = self
            .client
            .register(register(email, "password1", "Ada"))
            .await
            .expect("register")
            .into_inner();
        let token = self.login(email, "password1").await.expect("login");
        (user.id, token)
    }
}

#[tokio::test]
async fn register_creates_a_customer_with_a_trimmed_email() {
    let mut app = app().await;
    let user = app
        .client
        .register(register(
            "  Ada@Example.com ",
            "password1",
            " Ada Lovelace ",
        ))
        .await
        .expect("register")
        .into_inner();
    assert_eq!(user.email, "Ada@Example.com");
    assert_eq!(user.name, "Ada Lovelace");
    assert_eq!(user.role, "customer");
    assert!(uuid::Uuid::parse_str(&user.id).is_ok());
    assert!(user.created_at.is_some());
}

#[tokio::test]
async fn registering_an_email_twice_in_another_case_is_a_conflict() {
    let mut app = app().await;
    app.client
        .register(register("ada@example.com", "password1", "Ada"))
        .await
        .expect("first");
    let err = app
        .client
        .register(register("ADA@example.COM", "password2", "Ada 2"))
        .await
        .expect_err("second");
    assert_eq!(err.code(), Code::AlreadyExists);
    // Nobody becomes admin by registering the admin's email either.
    let err = app
        .client
        .register(register(ADMIN_EMAIL, "password2", "Mallory"))
        .await
        .expect_err("admin email");
    assert_eq!(err.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn invalid_registrations_are_rejected_and_create_nothing() {
    let mut app = app().await;
    for (request, field) in [
        (register("not-an-email", "password1", "Ada"), "email"),
        (register("ada@example.com", "short", "Ada"), "password"),
        (
            register("ada@example.com", &"p".repeat(129), "Ada"),
            "password",
        ),
        (register("ada@example.com", "password1", "  "), "name"),
        (
            register("ada@example.com", "password1", &"n".repeat(101)),
            "name",
        ),
    ] {
        let err = app.client.register(request).await.expect_err(field);
        assert_eq!(err.code(), Code::InvalidArgument, "{field}");
        assert!(err.message().starts_with(field), "{}", err.message());
    }
    let err = app
        .login("ada@example.com", "password1")
        .await
        .expect_err("no account was made");
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn login_returns_a_token_for_the_account() {
    let mut app = app().await;
    let user = app
        .client
        .register(register("ada@example.com", "password1", "Ada"))
        .await
        .expect("register")
        .into_inner();
    let response = app
        .client
        .login(LoginRequest {
            email: " ADA@example.com".into(),
            password: "password1".into(),
        })
        .await
        .expect("login")
        .into_inner();
    assert_eq!(response.token_type, "Bearer");
    assert_eq!(response.expires_in, 900);
    let claims = app
        .verifier
        .verify(&response.access_token)
        .expect("valid token");
    assert_eq!(claims.sub.to_string(), user.id);
    assert_eq!(claims.role, Role::Customer);
}

#[tokio::test]
async fn unknown_email_and_wrong_password_fail_alike() {
    let mut app = app().await;
    app.customer("ada@example.com").await;
    let wrong_password = app
        .login("ada@example.com", "password2")
        .await
        .expect_err("wrong password");
    let unknown_email = app
        .login("bob@example.com", "password1")
        .await
        .expect_err("unknown email");
    let malformed_email = app
        .login("bob", "password1")
        .await
        .expect_err("malformed email");
    for err in [&wrong_password, &unknown_email, &malformed_email] {
        assert_eq!(err.code(), Code::Unauthenticated);
        assert_eq!(err.message(), wrong_password.message());
    }
}

#[tokio::test]
async fn a_customer_reads_itself_but_not_another_user() {
    let mut app = app().await;
    let (ada, ada_token) = app.customer("ada@example.com").await;
    let (bob, _) = app.customer("bob@example.com").await;

    let me = app
        .client
        .get_user(with_token(GetUserRequest { id: ada.clone() }, &ada_token))
        .await
        .expect("self");
    assert_eq!(me.into_inner().email, "ada@example.com");

    let err = app
        .client
        .get_user(with_token(GetUserRequest { id: bob }, &ada_token))
        .await
        .expect_err("other");
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn an_admin_reads_anyone_and_learns_of_unknown_ids() {
    let mut app = app().await;
    let (ada, _) = app.customer("ada@example.com").await;
    let admin_token = app
        .login(ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .expect("admin login");
    assert_eq!(
        app.verifier.verify(&admin_token).expect("valid").role,
        Role::Admin
    );

    let user = app
        .client
        .get_user(with_token(GetUserRequest { id: ada }, &admin_token))
        .await
        .expect("read");
    assert_eq!(user.into_inner().role, "customer");

    let unknown = uuid::Uuid::new_v4().to_string();
    let err = app
        .client
        .get_user(with_token(GetUserRequest { id: unknown }, &admin_token))
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound);

    let err = app
        .client
        .get_user(with_token(
            GetUserRequest {
                id: "not-a-uuid".into(),
            },
            &admin_token,
        ))
        .await
        .expect_err("malformed");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn get_user_needs_a_valid_token() {
    let mut app = app().await;
    let (ada, _) = app.customer("ada@example.com").await;
    let err = app
        .client
        .get_user(GetUserRequest { id: ada.clone() })
        .await
        .expect_err("anonymous");
    assert_eq!(err.code(), Code::Unauthenticated);

    let other_keys = KeyPair::generate().expect("keys");
    let forged = Signer::from_pem(other_keys.private_pem.expose(), Duration::from_secs(60))
        .expect("signer")
        .sign(uuid::Uuid::new_v4(), Role::Admin)
        .expect("sign");
    let err = app
        .client
        .get_user(with_token(GetUserRequest { id: ada }, &forged))
        .await
        .expect_err("forged");
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn admin_bootstrap_is_idempotent_and_resets_the_password() {
    let mut app = app().await;
    // A second start with the same admin changes nothing visible.
    let again = start_service(app.settings.clone(), &app.shutdown).await;
    drop(again);
    app.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .expect("admin login after restart");

    // A start with a new admin password replaces the old one.
    let mut settings = app.settings.clone();
    settings.admin = Some(AdminAccount {
        email: ADMIN_EMAIL.to_uppercase(),
        password: Secret::new("new-admin-password".into()),
    });
    start_service(settings, &app.shutdown).await;
    assert!(app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.is_err());
    let token = app
        .login(ADMIN_EMAIL, "new-admin-password")
        .await
        .expect("new password");
    assert_eq!(
        app.verifier.verify(&token).expect("valid").role,
        Role::Admin
    );
}

#[tokio::test]
async fn logins_beyond_the_hashing_bound_are_refused_as_unavailable() {
    let app = app().await;
    app.shutdown.trigger();
    let shutdown = Shutdown::new();
    let settings = Settings {
        hash_limits: HashLimits {
            concurrent: 1,
            queued: 1,
        },
        ..app.settings.clone()
    };
    let client = start_service(settings, &shutdown).await;
    let logins: Vec<_> = (0..12)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                client
                    .login(LoginRequest {
                        email: ADMIN_EMAIL.into(),
                        password: "wrong-password".into(),
                    })
                    .await
            })
        })
        .collect();
    let mut codes = Vec::new();
    for login in logins {
        codes.push(
            login
                .await
                .expect("task")
                .expect_err("wrong password")
                .code(),
        );
    }
    let refused = codes.iter().filter(|c| **c == Code::Unavailable).count();
    assert!(refused >= 1, "no login refused: {codes:?}");
    assert!(
        codes
            .iter()
            .all(|c| matches!(c, Code::Unavailable | Code::Unauthenticated)),
        "{codes:?}"
    );
    shutdown.trigger();
}

impl App {
    async fn pair(&mut self, email: &str, password: &str) -> LoginResponse {
        self.client
            .login(LoginRequest {
                email: email.into(),
                password: password.into(),
            })
            .await
            .expect("login")
            .into_inner()
    }

    async fn refresh(&mut self, token: &str) -> Result<LoginResponse, tonic::Status> {
        Ok(self
            .client
            .refresh(RefreshRequest {
                refresh_token: token.into(),
            })
            .await?
            .into_inner())
    }

    async fn db(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(self._db.url().expose())
            .await
            .expect("db")
    }
}

#[tokio::test]
async fn a_refresh_rotates_and_a_reused_token_revokes_its_family() {
    let mut app = app().await;
    app.customer("ada@example.com").await;
    let first = app.pair("ada@example.com", "password1").await;
    assert_eq!(first.expires_in, 900);
    assert!(first.refresh_token.len() >= 43);
    let second = app.refresh(&first.refresh_token).await.expect("refresh");
    assert_ne!(second.refresh_token, first.refresh_token);
    app.verifier
        .verify(&second.access_token)
        .expect("valid access token");
    // The spent token again: refused, and the whole family with it.
    let err = app.refresh(&first.refresh_token).await.expect_err("reused");
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = app
        .refresh(&second.refresh_token)
        .await
        .expect_err("family revoked");
    assert_eq!(err.code(), Code::Unauthenticated);
    // Another login is another family.
    let other = app.pair("ada@example.com", "password1").await;
    app.refresh(&other.refresh_token).await.expect("own family");
    for junk in ["", "nope", &"x".repeat(500)] {
        let err = app.refresh(junk).await.expect_err("junk");
        assert_eq!(err.code(), Code::Unauthenticated);
    }
}

#[tokio::test]
async fn logout_revokes_the_session() {
    let mut app = app().await;
    app.customer("ada@example.com").await;
    let pair = app.pair("ada@example.com", "password1").await;
    app.client
        .logout(LogoutRequest {
            refresh_token: pair.refresh_token.clone(),
        })
        .await
        .expect("logout");
    let err = app
        .refresh(&pair.refresh_token)
        .await
        .expect_err("logged out");
    assert_eq!(err.code(), Code::Unauthenticated);
    // Logging out twice, or with junk, is fine.
    app.client
        .logout(LogoutRequest {
            refresh_token: "junk".into(),
        })
        .await
        .expect("logout junk");
}

#[tokio::test]
async fn a_role_change_or_a_deletion_takes_effect_at_the_next_refresh() {
    let mut app = app().await;
    let pair = app.pair(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let claims = app.verifier.verify(&pair.access_token).expect("valid");
    assert_eq!(claims.role, Role::Admin);
    let db = app.db().await;
    sqlx::query("update users set role = 'customer' where lower(email) = lower($1)")
        .bind(ADMIN_EMAIL)
        .execute(&db)
        .await
        .expect("demote");
    let renewed = app.refresh(&pair.refresh_token).await.expect("refresh");
    let claims = app.verifier.verify(&renewed.access_token).expect("valid");
    assert_eq!(claims.role, Role::Customer);

    sqlx::query("delete from users where lower(email) = lower($1)")
        .bind(ADMIN_EMAIL)
        .execute(&db)
        .await
        .expect("delete");
    let err = app
        .refresh(&renewed.refresh_token)
        .await
        .expect_err("deleted account");
    assert_eq!(err.code(), Code::Unauthenticated);
}
