//! Offline rendering: the objects one `Shop` file turns into, as multi-document YAML, for review
//! and for validation against the Kubernetes schemas in CI (`souk-operator render FILE`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rand_core::CryptoRngCore;

use crate::desired::{desired, secrets};
use crate::shop::Shop;

/// Stands in for the uid the API server would give the Shop, so owner references are complete.
const PLACEHOLDER_UID: &str = "00000000-0000-0000-0000-000000000000";

/// Renders the objects of the `Shop` in `yaml` (namespace `default` unless it names one). The
/// generated Secrets are included with fresh random contents.
pub fn render(yaml: &str, rng: &mut impl CryptoRngCore) -> anyhow::Result<String> {
    let mut shop: Shop = serde_yaml::from_str(yaml)?;
    let meta: &mut ObjectMeta = &mut shop.metadata;
    meta.namespace.get_or_insert_with(|| "default".to_owned());
    meta.uid.get_or_insert_with(|| PLACEHOLDER_UID.to_owned());
    meta.generation.get_or_insert(1);

    let desired = desired(&shop)?;
    let mut documents = Vec::new();
    for which in &desired.generated_secrets {
        documents.push(serde_yaml::to_string(&secrets::generate(
            &shop, which, rng,
        )?)?);
    }
    for child in &desired.children {
        documents.push(serde_yaml::to_string(&child.to_json()?)?);
    }
    Ok(documents
        .iter()
        .map(|doc| format!("---\n{doc}"))
        .collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn every_example_renders() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).expect("crds/examples") {
            let path = entry.expect("entry").path();
            let yaml = std::fs::read_to_string(&path).expect("read");
            let out =
                render(&yaml, &mut OsRng).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(out.contains("kind: Deployment"), "{}", path.display());
            seen += 1;
        }
        assert!(seen >= 2, "expected at least two examples, found {seen}");
    }

    #[test]
    fn a_bad_example_is_refused_with_the_reason() {
        let yaml = "apiVersion: souk.dev/v1alpha1\nkind: Shop\nmetadata: {name: demo}\nspec:\n  services: {cart: {replicas: -2}}\n";
        let err = render(yaml, &mut OsRng).expect_err("refused").to_string();
        assert_eq!(
            err,
            "spec.services.cart.replicas is -2; set it to 0 or more"
        );
    }
}
