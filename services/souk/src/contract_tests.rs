//! The operator–souk contract, checked: every example Shop is rendered by the operator, and the
//! arguments and environment of each container it would run are parsed by souk's own parser
//! (`Cli`). A setting renamed on one side only, a subcommand the operator names and souk does not
//! have, or a value souk refuses, fails here instead of in a cluster.

use std::path::Path;

use clap::{CommandFactory, Parser};
use k8s_openapi::api::core::v1::{Container, EnvVar, Volume};
use souk_operator::Shop;
use souk_operator::desired::{Child, desired};

use super::{Cli, Command, Relay, Serve};

/// The example Shops the documentation tells people to apply.
const EXAMPLES: [&str; 5] = [
    "crds/examples/minimal.yaml",
    "crds/examples/demo.yaml",
    "crds/examples/external.yaml",
    "crds/examples/scaled.yaml",
    "helm/examples/shop.yaml",
];

fn example(path: &str) -> Shop {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut shop: Shop = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    // As the API server would: a stored object has a namespace and a uid.
    shop.metadata
        .namespace
        .get_or_insert_with(|| "default".into());
    shop.metadata.uid = Some("00000000-0000-0000-0000-000000000000".into());
    shop
}

/// The flag that the command `path` (e.g. `["serve", "product"]`) reads `variable` into, from the
/// environment names its parser declares (the command's own settings and the global ones).
fn flag_of(path: &[String], variable: &str) -> Option<String> {
    let mut cli = Cli::command();
    cli.build();
    let mut commands = vec![&cli];
    for name in path {
        let Some(next) = commands.last().and_then(|c| c.find_subcommand(name)) else {
            break;
        };
        commands.push(next);
    }
    let global = cli.get_arguments();
    let own = commands.last().expect("a command").get_arguments();
    global
        .chain(own)
        .find(|arg| arg.get_env().is_some_and(|env| env == variable))
        .and_then(|arg| arg.get_long().map(|long| format!("--{long}")))
}

/// The value a variable would have in the pod: its literal value, or a plausible one for a value
/// from a Secret (whose contents the operator does not write).
fn value_of(var: &EnvVar) -> String {
    if let Some(value) = &var.value {
        return value.clone();
    }
    let key = var
        .value_from
        .as_ref()
        .and_then(|f| f.secret_key_ref.as_ref())
        .map(|r| r.key.as_str())
        .unwrap_or_else(|| panic!("{} has neither a value nor a Secret key", var.name));
    match key {
        "email" => "admin@souk.test".to_owned(),
        "password" => "a password".to_owned(),
        _ => "postgres://souk:pw@db.example:5432/souk".to_owned(),
    }
}

/// The command line souk would see: the container's arguments, then one flag per variable.
fn command_line(container: &Container) -> Vec<String> {
    let args = container.args.clone().unwrap_or_default();
    let mut argv = vec!["souk".to_owned()];
    argv.extend(args.iter().cloned());
    for var in container.env.iter().flatten() {
        let flag = flag_of(&args, &var.name).unwrap_or_else(|| {
            panic!(
                "container {} is given {}, which `souk {}` does not read",
                container.name,
                var.name,
                args.join(" ")
            )
        });
        argv.push(format!("{flag}={}", value_of(var)));
    }
    argv
}

/// Each `*_FILE` variable points into a volume the container mounts, at a key the volume has.
fn check_files(container: &Container, volumes: &[Volume]) {
    for var in container.env.iter().flatten() {
        if !var.name.ends_with("_FILE") {
            continue;
        }
        let path = var.value.clone().expect("a file path");
        let (dir, file) = path.rsplit_once('/').expect("a path with a folder");
        let mount = container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == dir)
            .unwrap_or_else(|| panic!("{}: {path} is in no mounted folder", var.name));
        let volume = volumes
            .iter()
            .find(|v| v.name == mount.name)
            .expect("the mounted volume");
        let keys: Vec<_> = volume
            .secret
            .as_ref()
            .and_then(|s| s.items.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|i| i.path)
            .collect();
        assert!(
            keys.iter().any(|k| k == file),
            "{}: {file} is not among {keys:?}",
            var.name
        );
    }
}

#[test]
fn every_example_shop_renders_containers_souk_parses() {
    let mut checked = 0;
    for path in EXAMPLES {
        let shop = example(path);
        let desired = desired(&shop).unwrap_or_else(|e| panic!("{path}: {e}"));
        for child in &desired.children {
            let Child::Deployment(deployment) = child else {
                continue;
            };
            let pod = deployment
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.clone())
                .expect("a pod spec");
            for container in &pod.containers {
                let argv = command_line(container);
                let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| {
                    panic!(
                        "{path}: container {} of {}: {e}\n{argv:?}",
                        container.name,
                        child.name()
                    )
                });
                let declared: Vec<_> = container
                    .ports
                    .iter()
                    .flatten()
                    .map(|p| p.container_port)
                    .collect();
                let listens = match &cli.command {
                    Command::Serve(service) => listens(service),
                    Command::Relay(Relay::Product { common, .. } | Relay::Order { common, .. }) => {
                        vec![common.metrics_addr.port()]
                    }
                    other => panic!("{path}: container {} runs {other:?}", container.name),
                };
                for port in listens {
                    assert!(
                        declared.contains(&i32::from(port)),
                        "{path}: {} listens on {port}, its ports are {declared:?}",
                        child.name()
                    );
                }
                check_files(container, pod.volumes.as_deref().unwrap_or_default());
                checked += 1;
            }
        }
    }
    // Six services and two relayers per shop.
    assert_eq!(checked, EXAMPLES.len() * 8);
}

/// The ports a served service listens on: its API (gRPC or HTTP) and its operations port.
fn listens(service: &Serve) -> Vec<u16> {
    match service {
        Serve::User { listen, .. }
        | Serve::Product { listen, .. }
        | Serve::Cart { listen, .. }
        | Serve::Payment { listen, .. }
        | Serve::Order { listen, .. } => vec![listen.grpc_addr.port(), listen.metrics_addr.port()],
        Serve::Gateway {
            http_addr,
            metrics_addr,
            ..
        } => vec![http_addr.port(), metrics_addr.port()],
    }
}

#[test]
fn a_variable_souk_does_not_read_is_caught() {
    let path = |args: &[&str]| args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    let gateway = path(&["serve", "gateway"]);
    assert_eq!(
        flag_of(&gateway, "SOUK_HTTP_ADDR").as_deref(),
        Some("--http-addr")
    );
    assert_eq!(flag_of(&gateway, "SOUK_NO_SUCH_SETTING"), None);
    // Another service's setting is not the gateway's.
    assert_eq!(flag_of(&gateway, "SOUK_ORDER_DATABASE_URL"), None);
    assert_eq!(
        flag_of(&path(&["serve", "order"]), "SOUK_ORDER_DATABASE_URL").as_deref(),
        Some("--order-database-url")
    );
}
