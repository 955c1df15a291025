//! Prints the `Shop` CRD as YAML: `cargo run -p souk-operator --bin crdgen > crds/shop.yaml`.

use std::io::Write;

use kube::CustomResourceExt;

fn main() -> anyhow::Result<()> {
    let yaml = serde_yaml::to_string(&souk_operator::Shop::crd())?;
    std::io::stdout().lock().write_all(yaml.as_bytes())?;
    Ok(())
}
