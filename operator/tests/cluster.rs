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

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use souk_contract::Service;

/// How long a shop may take to become Ready on the simulated node.
const READY_TIMEOUT: Duration = Duration::from_secs(300);

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
        let kubeconfig = cluster.dir.join("operator.kubeconfig");
        Self::start_as(cluster, ns, args, log_name, &kubeconfig)
    }

    /// Like `start_with`, with the credentials of `kubeconfig`.
    fn start_as(
        cluster: &Cluster,
        ns: &Namespace,
        args: &[&str],
        log_name: &str,
        kubeconfig: &Path,
    ) -> Self {
        let log = cluster
            .dir
            .join("logs")
            .join(format!("operator-{log_name}.log"));
        let file = std::fs::File::create(&log).expect("operator log");
        let child = Command::new(env!("CARGO_BIN_EXE_souk-operator"))
            .args(["--watch-namespace", &ns.name, "--http-addr", "127.0.0.1:0"])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
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
    let installed = &crd["spec"]["versions"][0];
    assert_eq!(
        installed["additionalPrinterColumns"],
        committed["spec"]["versions"][0]["additionalPrinterColumns"],
        "the installed CRD is the committed one"
    );
    let managed = &installed["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["databases"]
        ["properties"]["user"]["properties"]["managed"]["properties"];
    assert_ne!(
        managed["storageSize"]["nullable"], true,
        "storageSize must not be nullable"
    );
    assert_eq!(managed["storageSize"]["default"], "1Gi");

    // The operator's own identity: what it may and may not do, as the API server decides.
    let kubeconfig = cluster.dir.join("operator.kubeconfig");
    let kubeconfig = kubeconfig.to_str().expect("utf-8 path");
    let can = |verb: &str, resource: &str| {
        let mut args = vec!["--kubeconfig", kubeconfig, "auth", "can-i", verb, "-A"];
        match resource.split_once('/') {
            Some((resource, subresource)) => args.extend([resource, "--subresource", subresource]),
            None => args.push(resource),
        }
        run("kubectl", &args, None).is_ok()
    };
    for (verb, resource) in [
        ("watch", "shops.souk.dev"),
        ("patch", "shops.souk.dev/status"),
        ("patch", "deployments.apps"),
        ("patch", "statefulsets.apps"),
        ("create", "secrets"),
        ("watch", "secrets"),
        ("patch", "configmaps"),
        ("patch", "networkpolicies.networking.k8s.io"),
        ("watch", "networkpolicies.networking.k8s.io"),
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

    ok(ns.kubectl(&["delete", "shop", "gone", "--wait=true", "--timeout=180s"]));
    let left = wait_until(
        "every child of the deleted shop is gone",
        Duration::from_secs(240),
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

/// A small valid shop: `name`, managed everything, with an admin Secret.
fn small_shop(ns: &Namespace, name: &str) -> Value {
    let shop = json!({
        "apiVersion": "souk.dev/v1alpha1", "kind": "Shop",
        "metadata": {"name": name},
        "spec": {"adminSecretName": format!("{name}-admin")},
    });
    create_referenced_secrets(ns, &shop);
    shop
}

/// `kubectl patch shop/NAME --type merge -p PATCH`.
#[track_caller]
fn patch_shop(ns: &Namespace, name: &str, patch: &Value) {
    ok(ns.kubectl(&[
        "patch",
        &format!("shop/{name}"),
        "--type",
        "merge",
        "-p",
        &patch.to_string(),
    ]));
}

fn deployment_image(ns: &Namespace, name: &str) -> String {
    ok(ns.kubectl(&[
        "get",
        &format!("deployment/{name}"),
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]))
}

/// Waits until the Deployment has rolled out its current template (every replica updated and
/// ready, the old ones gone).
#[track_caller]
fn wait_rolled_out(ns: &Namespace, name: &str) {
    if let Err(e) = ns.kubectl(&[
        "rollout",
        "status",
        &format!("deployment/{name}"),
        "--timeout=240s",
    ]) {
        panic!("{name} did not roll out: {e}");
    }
}

fn degraded_message(shop: &Value) -> Option<String> {
    shop["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Degraded" && c["status"] == "True")
        .and_then(|c| c["message"].as_str().map(str::to_owned))
}

// 2c ------------------------------------------------------------------------------------------

#[test]
#[ignore = "needs a control plane: scripts/cluster-test"]
fn upgrades_of_image_replicas_and_resources_roll_out_and_the_shop_is_ready_again() {
    let cluster = cluster();
    let ns = Namespace::new("upgrade");
    let operator = Operator::start(&cluster, &ns);
    let shop = small_shop(&ns, "up");
    ok(ns.apply(&shop.to_string()));
    ns.wait_ready("up");
    let pvc_before = ok(ns.kubectl(&[
        "get",
        "pvc",
        "data-up-user-db-0",
        "-o",
        "jsonpath={.metadata.uid}",
    ]));
    let db_revision = || {
        ok(ns.kubectl(&[
            "get",
            "statefulset/up-user-db",
            "-o",
            "jsonpath={.status.updateRevision}",
        ]))
    };
    let db_before = db_revision();

    let hex = "0123456789abcdef".repeat(4);
    let digest = format!("0.3.0@sha256:{}", "f".repeat(64));
    for tag in ["0.2.0", hex.as_str(), digest.as_str()] {
        patch_shop(&ns, "up", &json!({"spec": {"image": {"tag": tag}}}));
        let status = ns.wait_condition("up", "Ready", "True");
        assert_eq!(degraded_message(&status), None, "tag {tag}");
        for service in ["gateway", "user", "order"] {
            assert_eq!(
                deployment_image(&ns, &format!("up-{service}")),
                format!("souk:{tag}")
            );
            wait_rolled_out(&ns, &format!("up-{service}"));
        }
    }
    assert_eq!(
        db_revision(),
        db_before,
        "a souk upgrade must not restart the databases"
    );

    patch_shop(
        &ns,
        "up",
        &json!({"spec": {"services": {"gateway": {"replicas": 3, "resources": {
            "requests": {"cpu": "300m", "memory": "200Mi"}, "limits": {"memory": "600Mi"}}}}}}),
    );
    ns.wait_condition("up", "Ready", "True");
    wait_rolled_out(&ns, "up-gateway");
    let gateway = ns.get("deployment/up-gateway").expect("gateway");
    assert_eq!(gateway["status"]["readyReplicas"], 3);
    assert_eq!(
        gateway["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"],
        "300m"
    );
    let pvc_after = ok(ns.kubectl(&[
        "get",
        "pvc",
        "data-up-user-db-0",
        "-o",
        "jsonpath={.metadata.uid}",
    ]));
    assert_eq!(
        pvc_before, pvc_after,
        "the data volume survives every upgrade"
    );
    assert!(
        !operator.log().contains("ApplyFailed"),
        "{}",
        operator.log()
    );
}

#[test]
#[ignore = "needs a control plane: scripts/cluster-test"]
fn without_replicas_in_the_spec_an_autoscalers_count_stands() {
    let cluster = cluster();
    let ns = Namespace::new("hpa");
    let _operator = Operator::start(&cluster, &ns);
    ok(ns.apply(&small_shop(&ns, "auto").to_string()));
    ns.wait_ready("auto");
    // What a HorizontalPodAutoscaler does: write the scale subresource.
    ok(ns.kubectl(&["scale", "deployment/auto-cart", "--replicas=3"]));
    // Any change makes the operator apply everything again.
    patch_shop(&ns, "auto", &json!({"spec": {"tokenTtlSeconds": 1800}}));
    ns.wait_condition("auto", "Ready", "True");
    let replicas = ok(ns.kubectl(&[
        "get",
        "deployment/auto-cart",
        "-o",
        "jsonpath={.spec.replicas}",
    ]));
    assert_eq!(replicas, "3", "the operator fought the autoscaler");
}

#[test]
#[ignore = "needs a control plane: scripts/cluster-test"]
fn helm_upgrade_with_changed_values_and_a_changed_crd_applies_both() {
    let cluster = cluster();
    let ns = Namespace::new("helm-upgrade");
    let _operator = Operator::start(&cluster, &ns);
    ok(ns.apply(&small_shop(&ns, "kept").to_string()));
    ns.wait_ready("kept");

    // The next chart: its CRD has a new column and a description changed.
    let chart = cluster.dir.join(format!("chart-{}", ns.name));
    let copied = Command::new("cp")
        .args([
            "-r",
            repo().join("helm/souk").to_str().expect("path"),
            chart.to_str().expect("path"),
        ])
        .status()
        .expect("cp");
    assert!(copied.success());
    let crd_path = chart.join("crd/shop.yaml");
    let mut crd: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&crd_path).expect("crd")).expect("yaml");
    let marker = format!("upgraded by {}", ns.name);
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] = json!(marker);
    std::fs::write(&crd_path, serde_yaml::to_string(&crd).expect("yaml")).expect("write crd");

    let upgrade = |chart: &Path, level: &str| {
        ok(run(
            "helm",
            &[
                "upgrade",
                "souk",
                chart.to_str().expect("path"),
                "-n",
                "souk-system",
                "--reuse-values",
                "--set",
                &format!("operator.logLevel={level}"),
                "--wait",
                "--timeout",
                "2m",
            ],
            None,
        ))
    };
    upgrade(&chart, "debug");
    let description = ok(kubectl(&[
        "get",
        "crd",
        "shops.souk.dev",
        "-o",
        "jsonpath={.spec.versions[0].schema.openAPIV3Schema.description}",
    ]));
    assert_eq!(description, marker, "helm upgrade did not upgrade the CRD");
    let level = ok(kubectl(&[
        "-n",
        "souk-system",
        "get",
        "deployment/souk-operator",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env[?(@.name==\"SOUK_LOG\")].value}",
    ]));
    assert_eq!(level, "debug");
    ok(kubectl(&[
        "-n",
        "souk-system",
        "rollout",
        "status",
        "deployment/souk-operator",
        "--timeout=180s",
    ]));

    // Back to this chart; the Shop went on being reconciled throughout.
    upgrade(&repo().join("helm/souk"), "info");
    patch_shop(&ns, "kept", &json!({"spec": {"tokenTtlSeconds": 1200}}));
    ns.wait_condition("kept", "Ready", "True");
}

// 2d ------------------------------------------------------------------------------------------

#[test]
#[ignore = "needs a control plane: scripts/cluster-test"]
fn a_database_switched_to_external_and_back_keeps_its_volume() {
    let cluster = cluster();
    let ns = Namespace::new("switch");
    let _operator = Operator::start(&cluster, &ns);
    ok(ns.apply(&small_shop(&ns, "sw").to_string()));
    ns.wait_ready("sw");
    let pvc_uid = || {
        ns.kubectl(&[
            "get",
            "pvc",
            "data-sw-user-db-0",
            "-o",
            "jsonpath={.metadata.uid}",
        ])
    };
    let before = ok(pvc_uid());

    ns.secret(
        "users-elsewhere",
        &[("url", "postgres://souk:pw@pg.infra:5432/user")],
    );
    patch_shop(
        &ns,
        "sw",
        &json!({"spec": {"databases": {"user": {"external": {"secretName": "users-elsewhere"}}}}}),
    );
    ns.wait_condition("sw", "Ready", "True");
    let replicas = ok(ns.kubectl(&[
        "get",
        "statefulset/sw-user-db",
        "-o",
        "jsonpath={.spec.replicas}",
    ]));
    assert_eq!(replicas, "0", "the managed database is parked, not deleted");
    assert_eq!(ok(pvc_uid()), before, "its volume is kept");
    let url = ok(ns.kubectl(&["get", "deployment/sw-user", "-o",
        "jsonpath={.spec.template.spec.containers[0].env[?(@.name==\"SOUK_USER_DATABASE_URL\")].valueFrom.secretKeyRef.name}"]));
    assert_eq!(url, "users-elsewhere");

    patch_shop(&ns, "sw", &json!({"spec": {"databases": {"user": null}}}));
    ns.wait_condition("sw", "Ready", "True");
    let replicas = ok(ns.kubectl(&[
        "get",
        "statefulset/sw-user-db",
        "-o",
        "jsonpath={.spec.replicas}",
    ]));
    assert_eq!(replicas, "1");
    assert_eq!(
        ok(pvc_uid()),
        before,
        "switched back, the same volume serves again"
    );
}

// 2f ------------------------------------------------------------------------------------------

/// Every path of the Shop schema where `nullable: true` lets a `null` through (not inside arrays).
fn nullable_paths(schema: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    for (name, property) in schema["properties"].as_object().into_iter().flatten() {
        path.push(name.clone());
        if property["nullable"] == true {
            out.push(path.clone());
        }
        if property["type"] == "object" {
            nullable_paths(property, path, out);
        }
        path.pop();
    }
}

/// An object with the required fields of `schema` given plausible values (a host, a URL, a name).
fn required_fields(schema: &Value) -> Value {
    let mut object = json!({});
    for field in schema["required"].as_array().into_iter().flatten() {
        let field = field.as_str().unwrap_or_default();
        object[field] = json!(match field {
            "host" => "shop.example.com",
            "url" => "nats://nats.infra:4222",
            _ => "required-value",
        });
    }
    object
}

#[test]
#[ignore = "needs a control plane: scripts/cluster-test"]
fn invalid_shops_are_refused_naming_the_field_and_others_keep_reconciling() {
    let cluster = cluster();
    let ns = Namespace::new("invalid");
    let _operator = Operator::start(&cluster, &ns);
    ok(ns.apply(&small_shop(&ns, "good").to_string()));
    ns.wait_ready("good");

    // Refused by the API server: the message names the field.
    let refused = [
        (
            json!({"services": {"cart": {"replicas": -1}}}),
            "spec.services.cart.replicas",
        ),
        (json!({"tokenTtlSeconds": 10}), "spec.tokenTtlSeconds"),
        (
            json!({"paymentDeclineAboveCents": -1}),
            "spec.paymentDeclineAboveCents",
        ),
        (
            json!({"databases": {"user": {"managed": {}, "external": {"secretName": "x"}}}}),
            "spec.databases.user",
        ),
        (
            json!({"nats": {"managed": {}, "external": {"url": "nats://x:4222"}}}),
            "spec.nats",
        ),
        (
            json!({"gateway": {"ingress": {"host": ""}}}),
            "spec.gateway.ingress.host",
        ),
        (
            json!({"gateway": {"serviceType": "Magic"}}),
            "spec.gateway.serviceType",
        ),
        (
            json!({"image": {"pullPolicy": "Sometimes"}}),
            "spec.image.pullPolicy",
        ),
        (
            json!({"databases": {"user": {"managed": {"storageSize": "lots"}}}}),
            "storageSize",
        ),
    ];
    for (i, (spec, field)) in refused.iter().enumerate() {
        let shop = json!({"apiVersion": "souk.dev/v1alpha1", "kind": "Shop",
                          "metadata": {"name": format!("refused-{i}")}, "spec": spec});
        match ns.apply(&shop.to_string()) {
            Ok(out) => panic!("{spec} was accepted: {out}"),
            Err(e) => assert!(
                e.contains(field),
                "{spec}: the error does not name {field}: {e}"
            ),
        }
    }

    // Accepted by the schema, refused by the operator: Degraded, naming the field.
    let degraded = [
        (
            json!({"nats": {"external": {"url": "http://nats:4222"}}}),
            "spec.nats.external.url",
        ),
        (
            json!({"adminSecretName": "nobody-made-this"}),
            "spec.adminSecretName",
        ),
        (json!({"adminSecretName": ""}), "spec.adminSecretName"),
    ];
    for (i, (spec, field)) in degraded.iter().enumerate() {
        let name = format!("degraded-{i}");
        let shop = json!({"apiVersion": "souk.dev/v1alpha1", "kind": "Shop",
                          "metadata": {"name": name}, "spec": spec});
        ok(ns.apply(&shop.to_string()));
        let status = ns.wait_condition(&name, "Degraded", "True");
        let message = degraded_message(&status).expect("a message");
        assert!(
            message.contains(field),
            "{spec}: {message:?} does not name {field}"
        );
    }
    let long = "a".repeat(60);
    ok(ns.apply(
        &json!({"apiVersion": "souk.dev/v1alpha1", "kind": "Shop",
                        "metadata": {"name": long}, "spec": {}})
        .to_string(),
    ));
    let status = ns.wait_condition(&long, "Degraded", "True");
    assert!(
        degraded_message(&status)
            .expect("message")
            .contains("shop name")
    );

    // A null wherever the schema lets one through: each such Shop is stored, and the operator
    // decodes and reconciles it (a Shop it cannot decode would stop the whole controller).
    let crd = json_of(&ok(kubectl(&[
        "get",
        "crd",
        "shops.souk.dev",
        "-o",
        "json",
    ])));
    let mut paths = Vec::new();
    nullable_paths(
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
        &mut Vec::new(),
        &mut paths,
    );
    let paths: Vec<_> = paths
        .into_iter()
        .filter(|p| p.first().map(String::as_str) == Some("spec"))
        .collect();
    assert!(paths.len() > 10, "{paths:?}");
    for (i, path) in paths.iter().enumerate() {
        let mut spec = json!({});
        let mut at = &mut spec;
        let mut schema =
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        for key in &path[1..path.len() - 1] {
            schema = &schema["properties"][key.as_str()];
            at = &mut at[key.as_str()];
            *at = required_fields(schema);
        }
        at[path[path.len() - 1].as_str()] = Value::Null;
        let shop = json!({"apiVersion": "souk.dev/v1alpha1", "kind": "Shop",
                          "metadata": {"name": format!("null-{i}")}, "spec": spec});
        if let Err(e) = run(
            "kubectl",
            &["-n", &ns.name, "apply", "-f", "-"],
            Some(&shop.to_string()),
        ) {
            panic!("{}: {e}", path.join("."));
        }
    }
    for (i, path) in paths.iter().enumerate() {
        let name = format!("null-{i}");
        wait_until(
            &format!("{name} ({}) reconciled", path.join(".")),
            READY_TIMEOUT,
            || {
                let shop = ns.get(&format!("shop/{name}"))?;
                if shop["status"]["observedGeneration"] == shop["metadata"]["generation"] {
                    Ok(())
                } else {
                    Err(shop["status"].to_string())
                }
            },
        );
    }
    // And the good shop is still reconciled.
    patch_shop(&ns, "good", &json!({"spec": {"tokenTtlSeconds": 900}}));
    ns.wait_condition("good", "Ready", "True");
}

// 2g ------------------------------------------------------------------------------------------

#[test]
#[ignore = "needs a control plane: scripts/cluster-test"]
fn a_secret_made_after_its_shop_is_reconciled_at_once() {
    let cluster = cluster();
    let ns = Namespace::new("late-secret");
    let _operator = Operator::start(&cluster, &ns);
    ok(ns.apply(
        &json!({"apiVersion": "souk.dev/v1alpha1", "kind": "Shop",
                        "metadata": {"name": "late"}, "spec": {"adminSecretName": "late-admin"}})
        .to_string(),
    ));
    let status = ns.wait_condition("late", "Degraded", "True");
    assert!(
        degraded_message(&status)
            .expect("message")
            .contains("late-admin")
    );
    let made = Instant::now();
    ns.secret(
        "late-admin",
        &[("email", "a@souk.test"), ("password", "pw pw pw pw")],
    );
    // Well inside the 30 s resync of a shop waiting for a Secret: the watch brought it.
    wait_until(
        "the shop leaves Degraded after its Secret is made",
        Duration::from_secs(20),
        || {
            let shop = ns.get("shop/late")?;
            match degraded_message(&shop) {
                None => Ok(()),
                Some(message) => Err(message),
            }
        },
    );
    eprintln!("reconciled {:?} after the Secret was made", made.elapsed());
    ns.wait_ready("late");
}

// 2i ------------------------------------------------------------------------------------------

#[test]
#[ignore = "needs a control plane: scripts/cluster-test"]
fn changing_the_admin_or_jwt_secret_rolls_the_pods_that_read_it() {
    let cluster = cluster();
    let ns = Namespace::new("secret-roll");
    let _operator = Operator::start(&cluster, &ns);
    ok(ns.apply(&small_shop(&ns, "roll").to_string()));
    ns.wait_ready("roll");
    let hash = |deployment: &str| {
        ok(ns.kubectl(&[
            "get",
            &format!("deployment/{deployment}"),
            "-o",
            "jsonpath={.spec.template.metadata.annotations.souk\\.dev/secrets-hash}",
        ]))
    };
    // The Deployment's new hash, once it differs from `before`.
    let rolled = |deployment: &str, before: &str, what: &str| {
        wait_until(what, Duration::from_secs(60), || {
            let now = hash(deployment);
            if now == before { Err(now) } else { Ok(now) }
        })
    };
    let (user, cart) = (hash("roll-user"), hash("roll-cart"));
    assert!(!user.is_empty(), "no secrets hash on the user pods");

    ns.secret(
        "roll-admin",
        &[("email", "admin@souk.test"), ("password", "a new password")],
    );
    let new_user = rolled(
        "roll-user",
        &user,
        "the user pods roll for the admin Secret",
    );
    wait_rolled_out(&ns, "roll-user");
    assert_eq!(
        hash("roll-cart"),
        cart,
        "the cart pods do not read the admin Secret"
    );

    let gateway = hash("roll-gateway");
    ok(ns.kubectl(&[
        "patch",
        "secret/roll-jwt",
        "--type",
        "merge",
        "-p",
        &json!({"stringData": {"public.pem": "rotated"}}).to_string(),
    ]));
    rolled(
        "roll-gateway",
        &gateway,
        "the gateway pods roll for the JWT Secret",
    );
    // The gateway's Deployment is applied first; the user pods, which read the JWT Secret too,
    // follow in the same reconcile.
    rolled(
        "roll-user",
        &new_user,
        "the user pods roll for the JWT Secret too",
    );
    wait_rolled_out(&ns, "roll-gateway");
    wait_rolled_out(&ns, "roll-user");
    ns.wait_condition("roll", "Ready", "True");
}

// 2h ------------------------------------------------------------------------------------------

/// The lease's holder, if any.
fn lease_holder(name: &str) -> Option<String> {
    kubectl(&[
        "-n",
        "souk-system",
        "get",
        &format!("lease/{name}"),
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
    .ok()
    .filter(|h| !h.is_empty())
}

#[test]
#[ignore = "needs a control plane: scripts/cluster-test"]
fn of_two_operators_one_reconciles_and_the_other_takes_over_within_the_lease() {
    let cluster = cluster();
    let ns = Namespace::new("two-operators");
    let lease = ns.name.clone();
    let start = |identity: &str| {
        Operator::start_with(
            &cluster,
            &ns,
            &[
                "--leader-elect",
                "--lease-name",
                &lease,
                "--lease-namespace",
                "souk-system",
                "--pod-name",
                identity,
            ],
            &format!("{}-{identity}", ns.name),
        )
    };
    let mut a = start("operator-a");
    let first = wait_until("a leader", Duration::from_secs(30), || {
        lease_holder(&lease).ok_or_else(String::new)
    });
    assert_eq!(first, "operator-a");
    let mut b = start("operator-b");
    ok(ns.apply(&small_shop(&ns, "led").to_string()));
    ns.wait_ready("led");
    assert!(
        !b.log().contains("controller started"),
        "the standby reconciles too:\n{}",
        b.log()
    );
    assert_eq!(lease_holder(&lease).as_deref(), Some("operator-a"));

    // The leader dies without a word: the standby takes over once the Lease has gone unrenewed
    // for its duration (15 s), after a look every 2 s.
    a.stop();
    let killed = Instant::now();
    wait_until(
        "operator-b leads",
        Duration::from_secs(25),
        || match lease_holder(&lease) {
            Some(h) if h == "operator-b" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let took = killed.elapsed();
    eprintln!("takeover {took:?} after the leader died (lease 15 s)");
    assert!(
        took >= Duration::from_secs(10),
        "taken over before the Lease could have run out: {took:?}"
    );
    patch_shop(&ns, "led", &json!({"spec": {"tokenTtlSeconds": 1500}}));
    ns.wait_condition("led", "Ready", "True");
    assert!(b.log().contains("controller started"), "{}", b.log());
    b.stop();
    let a_log = a.log();
    assert!(a_log.contains("became the leader"), "{a_log}");
}

// gRPC balancing ------------------------------------------------------------------------------

/// The plain values of the environment of a Deployment's first container.
fn env_of(ns: &Namespace, deployment: &str) -> Vec<(String, String)> {
    let deployment = ns
        .get(&format!("deployment/{deployment}"))
        .unwrap_or_else(|e| panic!("{e}"));
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|var| {
            Some((
                var["name"].as_str()?.to_owned(),
                var["value"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

// Issue 13, item 4 ----------------------------------------------------------------------------

/// `kubectl get KIND/NAME -o json`.
#[track_caller]
fn object(ns: &Namespace, what: &str) -> Value {
    ns.get(what).unwrap_or_else(|e| panic!("{e}"))
}

/// The secretKeyRef (Secret, key) of variable `name` in `container`.
fn secret_key_of(container: &Value, name: &str) -> Option<(String, String)> {
    container["env"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)
        .map(|v| &v["valueFrom"]["secretKeyRef"])
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_owned(),
                r["key"].as_str().unwrap_or_default().to_owned(),
            )
        })
}

/// `nats-server -t` accepts `config` with the hashes of `secret` (as stored: base64) in its
/// environment, as the NATS pod has them.
#[track_caller]
fn nats_server_accepts(config: &str, secret: &Value) {
    let binary = std::env::var_os("SOUK_NATS_SERVER_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| {
                PathBuf::from(home).join(format!(
                    ".cache/souk/bin/nats-server-{}",
                    souk_contract::NATS_VERSION
                ))
            })
        })
        .filter(|path| path.exists())
        .expect("a nats-server binary (scripts/setup, or SOUK_NATS_SERVER_BIN)");
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(secret.clone()).expect("a Secret");
    let file = std::env::temp_dir().join(format!(
        "souk-cluster-nats-{}-{}.conf",
        std::process::id(),
        secret.metadata.resource_version.unwrap_or_default()
    ));
    std::fs::write(&file, config).expect("config file");
    let mut command = Command::new(binary);
    command.arg("-t").arg("-c").arg(&file);
    for (key, value) in secret.data.unwrap_or_default() {
        if let Some(user) = key.strip_suffix(".bcrypt") {
            command.env(
                format!("SOUK_NATS_PASSWORD_{}", user.to_uppercase()),
                String::from_utf8(value.0).expect("utf-8 hash"),
            );
        }
    }
    let out = command.output().expect("run nats-server -t");
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "nats-server refuses the configuration: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs a control plane: scripts/cluster-test"]
fn callers_are_given_headless_grpc_services_that_list_every_replica() {
    let cluster = cluster();
    let ns = Namespace::new("headless");
    let _operator = Operator::start(&cluster, &ns);
    let mut shop = small_shop(&ns, "spread");
    shop["spec"]["services"] = json!({"product": {"replicas": 3}, "cart": {"replicas": 2}});
    ok(ns.apply(&shop.to_string()));
    ns.wait_ready("spread");

    // Every caller and the peers it calls, as the contract says (gateway, cart, order).
    let callers = Service::ALL
        .into_iter()
        .filter(|caller| !caller.calls().is_empty());
    for caller in callers {
        let env = env_of(&ns, &format!("spread-{caller}"));
        for &peer in caller.calls() {
            let setting = souk_contract::env::service_url(peer.name()).expect("a gRPC service");
            let url = env
                .iter()
                .find(|(name, _)| name == setting)
                .map(|(_, value)| value.clone())
                .unwrap_or_else(|| panic!("{caller} has no {setting}: {env:?}"));
            let (host, port) = url
                .strip_prefix("http://")
                .and_then(|rest| rest.rsplit_once(':'))
                .unwrap_or_else(|| panic!("{setting}={url} is not http://host:port"));
            assert_eq!(
                port,
                souk_contract::port::GRPC.to_string(),
                "{setting}={url}"
            );
            let service = ns
                .get(&format!("service/{host}"))
                .unwrap_or_else(|e| panic!("{caller}'s {setting}={url}: no such Service: {e}"));
            assert_eq!(
                service["spec"]["clusterIP"], "None",
                "{caller}'s {setting}={url}: the Service must be headless, so the name resolves \
                 to every replica"
            );
            // The cluster DNS answers a headless name with the ready addresses of its
            // EndpointSlices: one per ready replica of the peer.
            let replicas = ok(ns.kubectl(&[
                "get",
                &format!("deployment/spread-{peer}"),
                "-o",
                "jsonpath={.status.readyReplicas}",
            ]));
            let addresses = wait_until(
                &format!("{host} lists every ready replica of {peer}"),
                Duration::from_secs(60),
                || {
                    let slices = json_of(&ns.kubectl(&[
                        "get",
                        "endpointslices",
                        "-l",
                        &format!("kubernetes.io/service-name={host}"),
                        "-o",
                        "json",
                    ])?);
                    let mut ready: Vec<String> = slices["items"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
                        .filter(|e| e["conditions"]["ready"] == true)
                        .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
                        .filter_map(|a| a.as_str().map(str::to_owned))
                        .collect();
                    ready.sort();
                    ready.dedup();
                    if ready.len().to_string() == replicas {
                        Ok(ready)
                    } else {
                        Err(format!("{ready:?}, {replicas} ready replicas"))
                    }
                },
            );
            eprintln!(
                "{caller} → {setting}={url}: {} addresses {addresses:?}",
                addresses.len()
            );
        }
    }
}

/// A kubeconfig of its own for an operator, with a new token of the chart's ServiceAccount, and
/// the token's id (`jti`): the API server's audit log names it as the credential of every
/// request made with the token, which tells the writes of two operators apart.
fn own_credentials(cluster: &Cluster, name: &str) -> (PathBuf, String) {
    let account = ok(kubectl(&[
        "-n",
        "souk-system",
        "get",
        "deployment/souk-operator",
        "-o",
        "jsonpath={.spec.template.spec.serviceAccountName}",
    ]));
    let token = ok(kubectl(&[
        "-n",
        "souk-system",
        "create",
        "token",
        &account,
        "--duration",
        "1h",
    ]))
    .trim()
    .to_owned();
    let base = cluster.dir.join("operator.kubeconfig");
    let mut config: Value = serde_yaml::from_str(
        &std::fs::read_to_string(&base).unwrap_or_else(|e| panic!("{}: {e}", base.display())),
    )
    .expect("operator.kubeconfig is YAML");
    config["users"][0]["user"] = json!({"token": token});
    let path = cluster.dir.join(format!("{name}.kubeconfig"));
    std::fs::write(&path, config.to_string()).expect("write a kubeconfig");
    let payload = token.split('.').nth(1).expect("a JWT");
    let claims = json_of(&String::from_utf8(base64url(payload)).expect("UTF-8 claims"));
    let jti = claims["jti"]
        .as_str()
        .expect("the token has an id")
        .to_owned();
    (path, jti)
}

fn base64url(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'-' => 62,
            b'_' => 63,
            _ => panic!("not base64url: {text}"),
        }
    };
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0u32);
    for c in text.bytes().filter(|&c| c != b'=') {
        acc = (acc << 6) | value(c);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// One write the API server answered, from its audit log.
#[derive(Debug)]
struct Write {
    received: Timestamp,
    completed: Timestamp,
    what: String,
}

/// Every write made with the token `jti`, in the order the API server received them.
fn writes_by(jti: &str) -> Vec<Write> {
    let path = std::env::var("SOUK_CLUSTER_AUDIT_LOG")
        .expect("SOUK_CLUSTER_AUDIT_LOG is unset: run the cluster suite with scripts/cluster-test");
    let log = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let credential = format!("JTI={jti}");
    let time = |event: &Value, field: &str| -> Timestamp {
        event[field]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("audit event without {field}: {event}"))
    };
    let mut writes: Vec<Write> = log
        .lines()
        .map(json_of)
        .filter(|event| {
            event["user"]["extra"]["authentication.kubernetes.io/credential-id"][0] == credential
        })
        .map(|event| Write {
            received: time(&event, "requestReceivedTimestamp"),
            completed: time(&event, "stageTimestamp"),
            what: format!(
                "{} {}/{} → {}",
                event["verb"].as_str().unwrap_or_default(),
                event["objectRef"]["resource"].as_str().unwrap_or_default(),
                event["objectRef"]["name"].as_str().unwrap_or_default(),
                event["responseStatus"]["code"]
            ),
        })
        .collect();
    writes.sort_by_key(|w| w.received);
    writes
}

#[test]
#[ignore = "needs a control plane: scripts/cluster-test"]
fn two_operators_never_write_at_once_even_when_the_leader_freezes() {
    let cluster = cluster();
    let ns = Namespace::new("frozen-leader");
    let lease = ns.name.clone();
    let start = |identity: &str| {
        let name = format!("{}-{identity}", ns.name);
        let (kubeconfig, jti) = own_credentials(&cluster, &name);
        let args = [
            "--leader-elect",
            "--lease-name",
            &lease,
            "--lease-namespace",
            "souk-system",
            "--pod-name",
            identity,
        ];
        let operator = Operator::start_as(&cluster, &ns, &args, &name, &kubeconfig);
        (operator, jti)
    };
    let (mut a, a_token) = start("operator-a");
    wait_until(
        "operator-a leads",
        Duration::from_secs(30),
        || match lease_holder(&lease) {
            Some(h) if h == "operator-a" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let (mut b, b_token) = start("operator-b");
    ok(ns.apply(&small_shop(&ns, "frozen").to_string()));
    ns.wait_ready("frozen");

    // The leader freezes (a paused VM, a stalled node): alive, its state and its connections
    // kept, renewing nothing. A change waits for whoever leads.
    let pid = a.child.id().to_string();
    ok(run("kill", &["-s", "STOP", &pid], None));
    let frozen = Timestamp::now();
    patch_shop(&ns, "frozen", &json!({"spec": {"tokenTtlSeconds": 1500}}));
    wait_until(
        "operator-b leads",
        Duration::from_secs(30),
        || match lease_holder(&lease) {
            Some(h) if h == "operator-b" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    ns.wait_condition("frozen", "Ready", "True");

    // The old leader wakes up to a world that moved on (its watches deliver what operator-b
    // did): it must see that it has not renewed within its renew deadline and stop, writing
    // nothing.
    let resumed = Timestamp::now();
    ok(run("kill", &["-s", "CONT", &pid], None));
    let exit = wait_until("operator-a stops", Duration::from_secs(30), || {
        a.child
            .try_wait()
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "still running".to_owned())
    });
    // More work for the leader, to be sure the log has operator-b's writes after a woke up.
    patch_shop(&ns, "frozen", &json!({"spec": {"tokenTtlSeconds": 1600}}));
    ns.wait_condition("frozen", "Ready", "True");
    b.stop();

    let (a_writes, b_writes) = (writes_by(&a_token), writes_by(&b_token));
    let (Some(a_last), Some(b_first)) = (a_writes.last(), b_writes.first()) else {
        panic!("both operators wrote: a {a_writes:#?}, b {b_writes:#?}");
    };
    let gap = b_first.received.duration_since(a_last.completed);
    eprintln!(
        "operator-a: {} writes, the last ({}) completed at {}; frozen at {frozen}, resumed at \
         {resumed}, then exited ({exit})",
        a_writes.len(),
        a_last.what,
        a_last.completed
    );
    eprintln!(
        "operator-b: {} writes, the first ({}) received at {}: {gap:#} after operator-a's last \
         (lease {} s, renew deadline {} s)",
        b_writes.len(),
        b_first.what,
        b_first.received,
        souk_operator::leader::LEASE_DURATION.as_secs(),
        souk_operator::leader::RENEW_DEADLINE.as_secs()
    );
    let late: Vec<&Write> = a_writes.iter().filter(|w| w.received >= resumed).collect();
    assert!(
        late.is_empty(),
        "operator-a wrote after it woke up at {resumed}: {late:#?}"
    );
    assert!(
        a_last.completed < b_first.received,
        "the two operators' writes overlap: operator-a's last {a_last:?}, operator-b's first \
         {b_first:?}"
    );
    assert!(
        b.log().contains("became the leader"),
        "operator-b took over: {}",
        b.log()
    );
}

#[test]
#[ignore = "needs a control plane: scripts/cluster-test"]
fn nats_users_and_network_policies_are_made_kept_across_reconciles_and_collected() {
    let cluster = cluster();
    let ns = Namespace::new("nats-auth");
    let mut operator = Operator::start(&cluster, &ns);
    ok(ns.apply(&small_shop(&ns, "auth").to_string()));
    ns.wait_ready("auth");

    // The users' Secret: a password and a bcrypt hash per user.
    let secret = object(&ns, "secret/auth-nats");
    let data = secret["data"].clone();
    for user in ["admin", "product", "cart", "order", "gateway"] {
        assert!(data[user].is_string(), "no password for {user}: {data}");
        assert!(
            data[format!("{user}.bcrypt")].is_string(),
            "no hash for {user}"
        );
    }
    // The configuration asks for them, the hashes coming from the pod's environment.
    let config = object(&ns, "configmap/auth-nats");
    let text = config["data"]["nats.conf"].as_str().expect("nats.conf");
    assert!(
        text.contains(r#"user: "cart", password: $SOUK_NATS_PASSWORD_CART,"#),
        "{text}"
    );
    assert!(!text.contains("$JS.API.>"), "{text}");
    nats_server_accepts(text, &secret);
    let nats = object(&ns, "statefulset/auth-nats");
    let container = &nats["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        secret_key_of(container, "SOUK_NATS_PASSWORD_CART"),
        Some(("auth-nats".into(), "cart.bcrypt".into()))
    );
    assert_eq!(container["args"], json!(["-c", "/etc/nats/nats.conf"]));
    // Each service reads its own user's password; a service without NATS reads none.
    for (deployment, user) in [
        ("auth-cart", Some("cart")),
        ("auth-order", Some("order")),
        ("auth-gateway", Some("gateway")),
        ("auth-user", None),
    ] {
        let deployment = object(&ns, &format!("deployment/{deployment}"));
        for container in deployment["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("containers")
        {
            assert_eq!(
                secret_key_of(container, "SOUK_NATS_PASSWORD"),
                user.map(|u| ("auth-nats".to_owned(), u.to_owned())),
                "{}",
                container["name"]
            );
        }
    }

    // The NetworkPolicies, as the API server validated and stored them.
    let policies = json_of(&ok(ns.kubectl(&["get", "networkpolicies", "-o", "json"])));
    let mut names = names_of(&policies);
    names.sort();
    assert_eq!(
        names,
        [
            "auth-cart-db",
            "auth-nats",
            "auth-order-db",
            "auth-payment-db",
            "auth-product-db",
            "auth-user-db"
        ]
    );
    let cart_db = object(&ns, "networkpolicy/auth-cart-db");
    assert_eq!(
        cart_db["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "cart-db"
    );
    let from = &cart_db["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"];
    assert_eq!(from["app.kubernetes.io/component"], "cart", "{cart_db}");
    assert_eq!(from["app.kubernetes.io/instance"], "auth", "{cart_db}");
    let nats_policy = object(&ns, "networkpolicy/auth-nats");
    let from = &nats_policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"];
    assert_eq!(from["app.kubernetes.io/instance"], "auth", "{nats_policy}");
    assert!(
        from["app.kubernetes.io/component"].is_null(),
        "{nats_policy}"
    );

    // A removed policy comes back (the operator watches them), and the reconciles that follow,
    // also those of a restarted operator, keep the passwords and rewrite nothing.
    let version = |what: &str| object(&ns, what)["metadata"]["resourceVersion"].clone();
    let config_version = version("configmap/auth-nats");
    let nats_generation = object(&ns, "statefulset/auth-nats")["metadata"]["generation"].clone();
    ok(ns.kubectl(&["delete", "networkpolicy", "auth-user-db"]));
    wait_until(
        "the deleted NetworkPolicy is applied again",
        Duration::from_secs(60),
        || ns.get("networkpolicy/auth-user-db"),
    );
    operator.stop();
    let _operator = Operator::start_with(&cluster, &ns, &[], &format!("{}-again", ns.name));
    ok(ns.kubectl(&["delete", "networkpolicy", "auth-nats"]));
    wait_until(
        "the restarted operator reconciles",
        Duration::from_secs(60),
        || ns.get("networkpolicy/auth-nats"),
    );
    ns.wait_condition("auth", "Ready", "True");
    assert_eq!(
        object(&ns, "secret/auth-nats")["data"],
        data,
        "passwords changed"
    );
    assert_eq!(version("configmap/auth-nats"), config_version);
    assert_eq!(
        object(&ns, "statefulset/auth-nats")["metadata"]["generation"],
        nats_generation,
        "NATS was rolled for nothing"
    );

    // Rotation: the Secret deleted, a new one is generated, and NATS and the services that
    // read it roll together (NATS would otherwise keep the old hashes).
    let secrets_hash = |what: &str| {
        object(&ns, what)["spec"]["template"]["metadata"]["annotations"]["souk.dev/secrets-hash"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("{what} has no secrets hash"))
    };
    let (nats_hash, cart_hash) = (
        secrets_hash("statefulset/auth-nats"),
        secrets_hash("deployment/auth-cart"),
    );
    ok(ns.kubectl(&["delete", "secret", "auth-nats"]));
    wait_until(
        "a new NATS users' Secret rolls NATS and the cart service",
        Duration::from_secs(60),
        || {
            let rotated = ns.get("secret/auth-nats")?;
            let rolled = secrets_hash("statefulset/auth-nats") != nats_hash
                && secrets_hash("deployment/auth-cart") != cart_hash;
            if rotated["data"] != data && rolled {
                Ok(())
            } else {
                Err("not yet".to_owned())
            }
        },
    );

    // Deleting the shop takes them all.
    ok(ns.kubectl(&["delete", "shop", "auth", "--wait=true", "--timeout=180s"]));
    wait_until(
        "the NATS users, configuration and policies are collected",
        Duration::from_secs(240),
        || {
            let left = names_of(&json_of(&ns.kubectl(&[
                "get",
                "secrets,configmaps,networkpolicies",
                "-l",
                "app.kubernetes.io/instance=auth",
                "-o",
                "json",
            ])?));
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    );
}
