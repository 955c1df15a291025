//! The cluster suite: the operator and the chart against a real Kubernetes control plane (etcd,
//! kube-apiserver with RBAC and admission, kube-controller-manager, kube-scheduler) with one
//! simulated node, started by `scripts/cluster-test` (see tests/cluster/). Every test is
//! `#[ignore]`d, so the plain workspace run lists them as skipped; `scripts/cluster-test` runs
//! them with `--run-ignored only`.
//!
//! Each test has its own namespace and its own operator process watching only that namespace,
//! authenticated as the chart's ServiceAccount, so tests run in parallel and a missing RBAC rule
//! fails them. Objects are read and written with the real `kubectl`; waits poll a condition
//! until a deadline.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long a shop may take to become Ready on the simulated node.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The cluster `scripts/cluster-test` started.
struct Cluster {
    dir: PathBuf,
}

fn cluster() -> Cluster {
    let dir = std::env::var_os("SOUK_CLUSTER_DIR")
        .map(PathBuf::from)
        .expect("SOUK_CLUSTER_DIR is unset: run the cluster suite with scripts/cluster-test");
    assert!(
        dir.join("operator.kubeconfig").is_file(),
        "{} has no operator.kubeconfig: run the cluster suite with scripts/cluster-test",
        dir.display()
    );
    Cluster { dir }
}

/// Runs `kubectl` as the cluster's admin; `Err(stderr)` when it fails.
fn kubectl(args: &[&str]) -> Result<String, String> {
    run("kubectl", args, None)
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if stdin.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} (PATH from scripts/cluster-test): {e}"));
    if let Some(input) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[track_caller]
fn ok(result: Result<String, String>) -> String {
    result.unwrap_or_else(|e| panic!("{e}"))
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Polls `check` until it gives `Ok`, or panics with its last error after `timeout`.
#[track_caller]
fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not after {timeout:?}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// A namespace of one test, deleted (without waiting) when dropped.
struct Namespace {
    name: String,
}

impl Namespace {
    fn new(test: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let mut name: String = test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(40)
            .collect();
        name = format!(
            "{}-{:x}{:x}",
            name.trim_end_matches('-'),
            std::process::id(),
            nanos
        );
        ok(kubectl(&["create", "namespace", &name]));
        Self { name }
    }

    fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        kubectl(&all)
    }

    fn get(&self, what: &str) -> Result<Value, String> {
        self.kubectl(&["get", what, "-o", "json"])
            .map(|t| json_of(&t))
    }

    /// `kubectl apply -f -` of `object` (YAML or JSON) in this namespace.
    fn apply(&self, object: &str) -> Result<String, String> {
        run(
            "kubectl",
            &[
                "-n",
                &self.name,
                "apply",
                "--server-side",
                "--field-manager",
                "souk-test",
                "-f",
                "-",
            ],
            Some(object),
        )
    }

    /// A Secret with these string keys.
    fn secret(&self, name: &str, data: &[(&str, &str)]) {
        let string_data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        ok(self.apply(
            &json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name},
                "stringData": string_data,
            })
            .to_string(),
        ));
    }

    /// Waits for `kubectl wait --for=condition=Ready shop/NAME`.
    #[track_caller]
    fn wait_ready(&self, shop: &str) {
        let timeout = format!("{}s", READY_TIMEOUT.as_secs());
        if let Err(e) = self.kubectl(&[
            "wait",
            "--for=condition=Ready",
            &format!("shop/{shop}"),
            "--timeout",
            &timeout,
        ]) {
            let status = self
                .kubectl(&["get", &format!("shop/{shop}"), "-o", "jsonpath={.status}"])
                .unwrap_or_default();
            panic!(
                "shop {shop} in {} not Ready: {e}\nstatus: {status}",
                self.name
            );
        }
    }

    /// The Shop's status, once its condition `type_` has `status` at the current generation.
    #[track_caller]
    fn wait_condition(&self, shop: &str, type_: &str, status: &str) -> Value {
        wait_until(
            &format!("shop/{shop} {type_}={status}"),
            READY_TIMEOUT,
            || {
                let shop = self.get(&format!("shop/{shop}"))?;
                let generation = shop["metadata"]["generation"].clone();
                let found = shop["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == type_ && c["status"] == status);
                if found && shop["status"]["observedGeneration"] == generation {
                    Ok(shop)
                } else {
                    Err(shop["status"].to_string())
                }
            },
        )
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

/// An operator process outside the cluster, as the chart's ServiceAccount, watching one
/// namespace. Killed when dropped.
struct Operator {
    child: Child,
    log: PathBuf,
}

impl Operator {
    fn start(cluster: &Cluster, ns: &Namespace) -> Self {
        Self::start_with(cluster, ns, &[], &ns.name)
    }

    fn start_with(cluster: &Cluster, ns: &Namespace, args: &[&str], log_name: &str) -> Self {
        let log = cluster
            .dir
            .join("logs")
            .join(format!("operator-{log_name}.log"));
        let file = std::fs::File::create(&log).expect("operator log");
        let child = Command::new(env!("CARGO_BIN_EXE_souk-operator"))
            .args(["--watch-namespace", &ns.name, "--http-addr", "127.0.0.1:0"])
            .args(args)
            .env("KUBECONFIG", cluster.dir.join("operator.kubeconfig"))
            .env("SOUK_LOG", "info,souk_operator=debug")
            .env_remove("POD_NAMESPACE")
            .env_remove("POD_NAME")
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("start souk-operator");
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop();
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A Shop file of the repository as JSON, its namespace (if any) dropped so that it lands in the
/// test's namespace.
fn example(path: &str) -> Value {
    let text = std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut shop: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    if let Some(meta) = shop["metadata"].as_object_mut() {
        meta.remove("namespace");
    }
    shop
}

/// Creates the Secrets a Shop names (admin account, external databases), with plausible values.
fn create_referenced_secrets(ns: &Namespace, shop: &Value) {
    if let Some(admin) = shop["spec"]["adminSecretName"].as_str() {
        ns.secret(
            admin,
            &[
                ("email", "admin@souk.test"),
                ("password", "correct horse battery"),
            ],
        );
    }
    for (service, db) in shop["spec"]["databases"].as_object().into_iter().flatten() {
        if let Some(secret) = db["external"]["secretName"].as_str() {
            let key = db["external"]["key"].as_str().unwrap_or("url");
            ns.secret(
                secret,
                &[(key, &format!("postgres://souk:pw@pg.infra:5432/{service}"))],
            );
        }
    }
}

fn names_of(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

/// The examples the documentation tells people to apply.
const EXAMPLES: [&str; 5] = [
    "crds/examples/minimal.yaml",
    "crds/examples/demo.yaml",
    "crds/examples/external.yaml",
    "crds/examples/scaled.yaml",
    "helm/examples/shop.yaml",
];

// 2a ------------------------------------------------------------------------------------------

#[test]
#[ignore = "needs a control plane: scripts/cluster-test"]
fn helm_install_establishes_the_crd_and_binds_the_operator_account() {
    let cluster = cluster();
    let status = json_of(&ok(run(
        "helm",
        &["status", "souk", "-n", "souk-system", "-o", "json"],
        None,
    )));
    assert_eq!(status["info"]["status"], "deployed", "{status}");

    let crd = json_of(&ok(kubectl(&[
        "get",
        "crd",
        "shops.souk.dev",
        "-o",
        "json",
    ])));
    let established = crd["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Established" && c["status"] == "True");
    assert!(established, "CRD not established: {}", crd["status"]);
    let committed: Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo().join("crds/shop.yaml")).expect("crd"))
            .expect("crd yaml");
    assert_eq!(
        crd["spec"]["versions"][0]["schema"], committed["spec"]["versions"][0]["schema"],
        "the installed CRD's schema is the committed one"
    );

    // The operator's own identity: what it may and may not do, as the API server decides.
    let kubeconfig = cluster.dir.join("operator.kubeconfig");
    let kubeconfig = kubeconfig.to_str().expect("utf-8 path");
    let can = |verb: &str, resource: &str| {
        run(
            "kubectl",
            &[
                "--kubeconfig",
                kubeconfig,
                "auth",
                "can-i",
                verb,
                resource,
                "-A",
            ],
            None,
        )
        .is_ok()
    };
    for (verb, resource) in [
        ("watch", "shops.souk.dev"),
        ("patch", "shops.souk.dev/status"),
        ("patch", "deployments.apps"),
        ("patch", "statefulsets.apps"),
        ("create", "secrets"),
        ("watch", "secrets"),
        ("create", "events.events.k8s.io"),
    ] {
        assert!(
            can(verb, resource),
            "the chart's account may not {verb} {resource}"
        );
    }
    for (verb, resource) in [
        ("delete", "shops.souk.dev"),
        ("create", "pods"),
        ("update", "secrets"),
    ] {
        assert!(
            !can(verb, resource),
            "the chart's account may {verb} {resource}, more than it needs"
        );
    }
}

// 2b ------------------------------------------------------------------------------------------

#[test]
#[ignore = "needs a control plane: scripts/cluster-test"]
fn every_example_shop_becomes_ready_with_columns_generation_and_events() {
    let cluster = cluster();
    let namespaces: Vec<_> = EXAMPLES
        .iter()
        .map(|path| (path, Namespace::new("example")))
        .collect();
    let operators: Vec<_> = namespaces
        .iter()
        .map(|(_, ns)| Operator::start(&cluster, ns))
        .collect();
    for (path, ns) in &namespaces {
        let shop = example(path);
        create_referenced_secrets(ns, &shop);
        // The file itself, as the documentation says: kubectl apply -f.
        let text = serde_yaml::to_string(&shop).expect("yaml");
        if let Err(e) = run(
            "kubectl",
            &["-n", &ns.name, "apply", "-f", "-"],
            Some(&text),
        ) {
            panic!("{path}: {e}");
        }
    }
    for ((path, ns), operator) in namespaces.iter().zip(&operators) {
        let name = example(path)["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_owned();
        if std::panic::catch_unwind(|| ns.wait_ready(&name)).is_err() {
            panic!(
                "{path} never became Ready; operator log:\n{}",
                operator.log()
            );
        }
        let shop = ns.get(&format!("shop/{name}")).expect("shop");
        assert_eq!(
            shop["status"]["observedGeneration"], shop["metadata"]["generation"],
            "{path}: observedGeneration"
        );
        let table = ok(ns.kubectl(&["get", "shop", &name, "-o", "wide"]));
        let mut lines = table.lines();
        let header: Vec<_> = lines.next().expect("header").split_whitespace().collect();
        assert_eq!(
            header,
            ["NAME", "READY", "COMPONENTS", "GATEWAY", "REASON", "AGE"],
            "{path}"
        );
        let row: Vec<_> = lines.next().expect("row").split_whitespace().collect();
        assert_eq!(row[1], "True", "{path}: {table}");
        let (ready, all) = row[2].split_once('/').expect("components n/m");
        assert_eq!(ready, all, "{path}: {table}");
        assert!(row[3].starts_with("http"), "{path}: gateway column {table}");
        assert_eq!(row[4], "AllComponentsReady", "{path}: {table}");

        let events = ns.get("events").expect("events");
        let reasons: Vec<_> = events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| {
                e["involvedObject"]["kind"] == "Shop"
                    && e["involvedObject"]["name"] == name.as_str()
            })
            .filter_map(|e| e["reason"].as_str())
            .collect();
        assert!(reasons.contains(&"ShopReady"), "{path}: Events {reasons:?}");
        assert!(
            reasons.contains(&"SecretsGenerated"),
            "{path}: Events {reasons:?}"
        );
    }
}

// 2e ------------------------------------------------------------------------------------------

#[test]
#[ignore = "needs a control plane: scripts/cluster-test"]
fn deleting_a_shop_garbage_collects_every_child() {
    let cluster = cluster();
    let ns = Namespace::new("delete");
    let _operator = Operator::start(&cluster, &ns);
    let mut shop = example("crds/examples/demo.yaml");
    create_referenced_secrets(&ns, &shop);
    shop["metadata"]["name"] = json!("gone");
    shop["spec"]["adminSecretName"] = json!("demo-admin");
    ok(ns.apply(&shop.to_string()));
    ns.wait_ready("gone");

    let kinds = "deployments,replicasets,statefulsets,services,ingresses,pods,persistentvolumeclaims,secrets";
    let selector = "app.kubernetes.io/instance=gone";
    let before = names_of(&json_of(&ok(
        ns.kubectl(&["get", kinds, "-l", selector, "-o", "json"])
    )));
    for expected in [
        "gone-gateway",
        "gone-user-db",
        "gone-nats",
        "gone-jwt",
        "data-gone-user-db-0",
    ] {
        assert!(
            before.iter().any(|n| n == expected),
            "{expected} among {before:?}"
        );
    }
    assert!(
        before.iter().any(|n| n.starts_with("gone-gateway-")),
        "gateway pods {before:?}"
    );

    ok(ns.kubectl(&["delete", "shop", "gone", "--wait=true", "--timeout=60s"]));
    let left = wait_until(
        "every child of the deleted shop is gone",
        Duration::from_secs(90),
        || {
            let left = names_of(&json_of(
                &ns.kubectl(&["get", kinds, "-l", selector, "-o", "json"])?,
            ));
            if left.is_empty() {
                Ok(left)
            } else {
                Err(format!("{left:?}"))
            }
        },
    );
    assert!(left.is_empty());
    // The Secrets the user made are theirs: never deleted.
    ok(ns.kubectl(&["get", "secret", "demo-admin", "orders-db"]));
}
