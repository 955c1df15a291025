//! The operator–souk contract, checked: every example Shop is rendered by the operator, and the
//! arguments and environment of each container it would run are parsed by souk's own parser
//! (`Cli`). A setting renamed on one side only, a subcommand the operator names and souk does not
//! have, or a value souk refuses, fails here instead of in a cluster.

use std::path::Path;

use clap::{CommandFactory, Parser};
use k8s_openapi::api::core::v1::{Container, EnvVar, Volume};
use souk_operator::Shop;
use souk_operator::desired::{Child, desired};

use super::{Cli, Command};

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

/// The flag souk reads `variable` into, from the environment names its parser declares.
fn flag_of(variable: &str) -> Option<String> {
    let mut cli = Cli::command();
    cli.build();
    let mut commands = vec![&cli];
    commands.extend(cli.get_subcommands());
    commands
        .into_iter()
        .flat_map(|c| c.get_arguments())
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
    let mut argv = vec!["souk".to_owned()];
    argv.extend(container.args.clone().unwrap_or_default());
    for var in container.env.iter().flatten() {
        let flag = flag_of(&var.name).unwrap_or_else(|| {
            panic!(
                "container {} is given {}, which souk does not read",
                container.name, var.name
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
                match (&cli.command, container.name.as_str()) {
                    (Command::Serve(args), _) => {
                        let port = match args.service {
                            super::Service::Gateway => args.http_addr.port(),
                            _ => args.grpc_addr.port(),
                        };
                        let declared: Vec<_> = container
                            .ports
                            .iter()
                            .flatten()
                            .map(|p| p.container_port)
                            .collect();
                        assert!(
                            declared.contains(&i32::from(port)),
                            "{path}: {} listens on {port}, its ports are {declared:?}",
                            child.name()
                        );
                        assert!(declared.contains(&i32::from(args.metrics_addr.port())));
                    }
                    (Command::Relay(args), "relayer") => {
                        let declared: Vec<_> = container
                            .ports
                            .iter()
                            .flatten()
                            .map(|p| p.container_port)
                            .collect();
                        assert!(declared.contains(&i32::from(args.metrics_addr.port())));
                    }
                    (other, name) => panic!("{path}: container {name} runs {other:?}"),
                }
                check_files(container, pod.volumes.as_deref().unwrap_or_default());
                checked += 1;
            }
        }
    }
    // Six services and two relayers per shop.
    assert_eq!(checked, EXAMPLES.len() * 8);
}

#[test]
fn a_variable_souk_does_not_read_is_caught() {
    assert_eq!(flag_of("SOUK_HTTP_ADDR").as_deref(), Some("--http-addr"));
    assert_eq!(flag_of("SOUK_NO_SUCH_SETTING"), None);
}
