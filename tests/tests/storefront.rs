//! The storefront over plain HTTP (its journeys run in a browser: `tests/browser`, run by
//! `scripts/browser-test`): pages at the root of the same origin as the API, rendered on the
//! server from what the services hold, under a policy that lets nothing inline run.

use reqwest::StatusCode;
use souk_e2e::{TestShop, json};

#[tokio::test]
async fn the_storefront_shows_the_catalog_at_the_root_of_the_api_origin() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let name = format!("Teapot {}", uuid::Uuid::new_v4().simple());
    let body =
        json!({"name": name, "description": "<b>not bold</b>", "price_cents": 2999, "stock": 2});
    let product = shop.post("/api/products", Some(&admin.token), &body).await;
    let id = product.expect(StatusCode::CREATED)["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let home = shop.get("/", None).await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(
        home.headers["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/html")
    );
    let policy = home.headers["content-security-policy"]
        .to_str()
        .expect("ascii");
    assert!(
        policy.contains("script-src 'self'") && !policy.contains("unsafe-inline"),
        "{policy}"
    );
    assert!(
        home.text.contains(&format!("/products/{id}")),
        "the newest product is linked"
    );

    let page = shop.get(&format!("/products/{id}"), None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains(&name));
    assert!(page.text.contains("$29.99"));
    assert!(page.text.contains("Only 2 left"));
    assert!(
        page.text.contains("&lt;b&gt;not bold&lt;/b&gt;"),
        "text is escaped"
    );

    let missing = shop
        .get(&format!("/products/{}", uuid::Uuid::new_v4()), None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.text.contains("<h1>Not found</h1>"));
}

#[tokio::test]
async fn a_category_is_listed_a_page_at_a_time() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let category = shop
        .post(
            "/api/products/categories",
            Some(&admin.token),
            &json!({"name": format!("Shelf {}", uuid::Uuid::new_v4().simple())}),
        )
        .await;
    let category = category.expect(StatusCode::CREATED)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // One more than a page (12) holds.
    for n in 0..13 {
        let body = json!({"name": format!("Book {n:02}"), "description": "", "price_cents": 500, "stock": 1, "category_id": category});
        shop.post("/api/products", Some(&admin.token), &body)
            .await
            .expect(StatusCode::CREATED);
    }
    let first = shop.get(&format!("/categories/{category}"), None).await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(first.text.contains("Page 1 of 2"), "{}", first.text);
    assert!(
        first
            .text
            .contains(&format!("href=\"/categories/{category}?page=2\""))
    );
    assert!(
        first.text.contains("Book 12") && !first.text.contains("Book 00"),
        "newest first"
    );
    let second = shop
        .get(&format!("/categories/{category}?page=2"), None)
        .await;
    assert!(second.text.contains("Page 2 of 2"));
    assert!(second.text.contains("Book 00") && !second.text.contains("Book 01"));
    assert!(second.text.contains("Previous page") && !second.text.contains("Next page"));
    // A page number that is not one is the first page, not an error.
    let odd = shop
        .get(&format!("/categories/{category}?page=x"), None)
        .await;
    assert!(odd.text.contains("Page 1 of 2"));
}

#[tokio::test]
async fn the_log_in_form_is_throttled_like_the_api() {
    let shop = TestShop::start().await;
    let customer = shop.customer().await;
    // The CSRF token a browser gets with the form: its cookie, repeated in the form.
    let page = shop.get("/login", None).await;
    let cookie = page
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| value.strip_prefix("souk_csrf="))
        .and_then(|value| value.split(';').next())
        .expect("the log-in page sets the CSRF cookie")
        .to_owned();
    let form = format!(
        "csrf={cookie}&next=%2F&email={}&password=not-the-password",
        customer.email.replace('@', "%40")
    );
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let request = shop
            .request(reqwest::Method::POST, "/login")
            .header("cookie", format!("souk_csrf={cookie}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.clone());
        let reply = shop.send(request).await;
        let throttled = reply.status == StatusCode::TOO_MANY_REQUESTS;
        statuses.push(reply.status);
        if throttled {
            assert!(
                reply.headers.contains_key("retry-after"),
                "{:?}",
                reply.headers
            );
            break;
        }
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
    }
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "wrong passwords through the form were never throttled: {statuses:?}"
    );
}

#[tokio::test]
async fn an_address_with_no_page_is_a_page_and_an_unknown_api_path_a_problem() {
    let shop = TestShop::start().await;
    let page = shop.get("/no-such-page/here", None).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let content_type = page.headers["content-type"].to_str().expect("ascii");
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(page.text.contains("There is no page at this address."));
    assert!(
        page.headers.contains_key("content-security-policy"),
        "the 404 page carries the pages' policy"
    );

    let problem = shop.get("/api/no-such-resource", None).await;
    assert_eq!(problem.status, StatusCode::NOT_FOUND);
    let content_type = problem.headers["content-type"].to_str().expect("ascii");
    assert_eq!(content_type, "application/problem+json");
}

/// The CSRF token a page sets: its cookie, to be repeated in the form.
fn csrf_cookie(page: &souk_e2e::Reply) -> String {
    page.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| value.strip_prefix("souk_csrf="))
        .and_then(|value| value.split(';').next())
        .expect("the page sets the CSRF cookie")
        .to_owned()
}

/// The version in the admin page's "Set stock" form of `product`.
fn stock_form_version(page: &str, product: &str) -> String {
    let form = page
        .split(&format!("action=\"/admin/products/{product}/stock\""))
        .nth(1)
        .expect("the admin page has the product's stock form");
    let form = &form[..form.find("</form>").expect("the form ends")];
    form.split("name=\"version\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the stock form carries the product's version")
        .to_owned()
}

#[tokio::test]
async fn an_admins_stock_form_from_before_an_order_is_refused_and_changes_nothing() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let customer = shop.customer().await;
    let product = shop.create_product(&admin, 500, 5).await;
    let admin_page = || {
        shop.send(
            shop.request(reqwest::Method::GET, "/admin")
                .header("cookie", format!("souk_session={}", admin.token)),
        )
    };
    let set_stock = |csrf: &str, version: &str, stock: i64| {
        shop.send(
            shop.request(
                reqwest::Method::POST,
                &format!("/admin/products/{product}/stock"),
            )
            .header(
                "cookie",
                format!("souk_session={}; souk_csrf={csrf}", admin.token),
            )
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("csrf={csrf}&stock={stock}&version={version}")),
        )
    };
    let page = admin_page().await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let (csrf, version) = (csrf_cookie(&page), stock_form_version(&page.text, &product));

    // An order takes 2 of the 5 after the page was rendered.
    shop.add_to_cart(&customer, &product, 2).await;
    shop.send(
        shop.request(reqwest::Method::POST, "/api/orders")
            .bearer_auth(&customer.token),
    )
    .await
    .expect(StatusCode::ACCEPTED);
    shop.wait_for_stock(&product, 3).await;

    let stale = set_stock(&csrf, &version, 5).await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.text);
    assert!(
        stale.text.contains("changed since the page was loaded"),
        "{}",
        stale.text
    );
    let now = shop.get(&format!("/api/products/{product}"), None).await;
    assert_eq!(
        now.expect(StatusCode::OK)["stock"],
        3,
        "the order's stock came back"
    );

    // From the page as it is now, the stock is set.
    let page = admin_page().await;
    let version = stock_form_version(&page.text, &product);
    let set = set_stock(&csrf, &version, 10).await;
    assert!(
        set.status.is_redirection() || set.status.is_success(),
        "{}: {}",
        set.status,
        set.text
    );
    shop.wait_for_stock(&product, 10).await;
}

/// The value `reply` sets cookie `name` to, if it sets it: the last one, which a browser keeps.
fn set_cookie(reply: &souk_e2e::Reply, name: &str) -> Option<String> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(|value| value.strip_prefix(&format!("{name}=")))
        .filter_map(|value| value.split(';').next())
        .map(str::to_owned)
        .next_back()
}

#[tokio::test]
async fn a_session_outlives_its_access_token_and_ends_at_log_out() {
    let shop = TestShop::start().await;
    let customer = shop.customer().await;
    // Redirects are looked at, not followed: they carry the cookies.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client");
    let send = |method, path: &str, cookies: String| {
        shop.send(
            browser
                .request(method, shop.url(path))
                .header("cookie", cookies),
        )
    };
    let csrf = csrf_cookie(&shop.get("/login", None).await);
    let log_in = || {
        shop.send(
            browser
                .post(shop.url("/login"))
                .header("cookie", format!("souk_csrf={csrf}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!(
                    "csrf={csrf}&next=%2Forders&email={}&password={}",
                    customer.email.replace('@', "%40"),
                    customer.password
                )),
        )
    };
    // The log-out form, posted with `cookies` beside the CSRF one.
    let log_out = |cookies: String| {
        shop.send(
            browser
                .post(shop.url("/logout"))
                .header("cookie", format!("souk_csrf={csrf}; {cookies}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("csrf={csrf}")),
        )
    };
    let login = log_in().await;
    assert_eq!(login.status, StatusCode::SEE_OTHER, "{}", login.text);
    assert!(set_cookie(&login, "souk_session").is_some_and(|t| !t.is_empty()));
    let first = set_cookie(&login, "souk_refresh").expect("the log-in keeps the refresh token");

    // The access token's cookie is gone (it lives as long as the token): the pages racing with
    // one refresh token all renew the session, to the same next pair.
    let pages = futures::future::join_all((0..4).map(|_| {
        send(
            reqwest::Method::GET,
            "/orders",
            format!("souk_csrf={csrf}; souk_refresh={first}"),
        )
    }))
    .await;
    let mut next = Vec::new();
    for page in &pages {
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        assert!(
            page.text.contains("Log out"),
            "not signed in: {}",
            page.text
        );
        next.push(set_cookie(page, "souk_refresh").expect("a renewed refresh token"));
    }
    next.dedup();
    assert_eq!(next.len(), 1, "one exchange, shared: {next:?}");
    let second = next.remove(0);
    assert_ne!(second, first, "the refresh token was rotated");

    // Shared, the rotated token was never presented twice: its successor still works.
    let page = send(
        reqwest::Method::GET,
        "/orders",
        format!("souk_csrf={csrf}; souk_refresh={second}"),
    )
    .await;
    assert!(
        page.text.contains("Log out"),
        "not signed in: {}",
        page.text
    );
    let access = set_cookie(&page, "souk_session").expect("a renewed access token");
    let third = set_cookie(&page, "souk_refresh").expect("a renewed refresh token");

    // Logging out revokes the refresh token and forgets both cookies.
    let logout = log_out(format!("souk_session={access}; souk_refresh={third}")).await;
    assert_eq!(logout.status, StatusCode::SEE_OTHER, "{}", logout.text);
    assert_eq!(set_cookie(&logout, "souk_session").as_deref(), Some(""));
    assert_eq!(set_cookie(&logout, "souk_refresh").as_deref(), Some(""));
    let after = send(
        reqwest::Method::GET,
        "/orders",
        format!("souk_csrf={csrf}; souk_refresh={third}"),
    )
    .await;
    assert_eq!(
        after.status,
        StatusCode::SEE_OTHER,
        "signed in after logging out"
    );
    assert_eq!(set_cookie(&after, "souk_refresh").as_deref(), Some(""));

    // Logging out once the access token has expired: the renewal the request brings does not
    // outlive the log-out.
    let login = log_in().await;
    let fourth = set_cookie(&login, "souk_refresh").expect("a refresh token");
    let logout = log_out(format!("souk_refresh={fourth}")).await;
    assert_eq!(logout.status, StatusCode::SEE_OTHER, "{}", logout.text);
    assert_eq!(set_cookie(&logout, "souk_session").as_deref(), Some(""));
    assert_eq!(set_cookie(&logout, "souk_refresh").as_deref(), Some(""));
}

#[tokio::test]
#[cfg_attr(feature = "remote", ignore = "needs the in-process shop")]
async fn a_session_that_cannot_be_renewed_for_now_is_a_503_page_and_is_kept() {
    let mut shop = TestShop::start_with(souk_e2e::Options {
        proxied_databases: vec!["user"],
        ..souk_e2e::Options::default()
    })
    .await;
    let customer = shop.customer().await;
    let tokens = shop
        .post(
            "/api/auth/login",
            None,
            &json!({"email": customer.email, "password": customer.password}),
        )
        .await;
    let refresh = tokens.expect(StatusCode::OK)["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned();
    let cookie = format!("souk_refresh={refresh}");
    let orders = |shop: &TestShop| {
        shop.request(reqwest::Method::GET, "/orders")
            .header("cookie", cookie.clone())
    };

    shop.local().database_proxies["user"].cut();
    let page = shop.send(orders(&shop)).await;
    assert_eq!(
        page.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        page.text
    );
    assert_eq!(
        set_cookie(&page, "souk_refresh"),
        None,
        "the session was dropped"
    );
    // A page that does not need the session is still served, to a visitor.
    let home = shop
        .send(
            shop.request(reqwest::Method::GET, "/")
                .header("cookie", cookie.clone()),
        )
        .await;
    assert_eq!(home.status, StatusCode::OK, "{}", home.text);
    assert!(!home.text.contains("Log out"), "{}", home.text);

    // Back, the same refresh token renews the session: its failure was not kept for the
    // requests that follow (as a success is, for 10 s).
    shop.local().database_proxies["user"].restore().await;
    let restored = std::time::Instant::now();
    let deadline = restored + std::time::Duration::from_secs(5);
    let page = loop {
        let page = shop.send(orders(&shop)).await;
        if page.status != StatusCode::SERVICE_UNAVAILABLE || std::time::Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    eprintln!(
        "renewed {:?} after the database came back",
        restored.elapsed()
    );
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(
        page.text.contains("Log out"),
        "not signed in: {}",
        page.text
    );
}
