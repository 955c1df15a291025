//! Every service that writes to an outbox or consumes events (as `souk_contract::Service` says)
//! carries an exact copy of the reference outbox and inbox migrations
//! (`services/shared/migrations/`), which the shared queries are checked against.

use std::{fs, path::Path};

use souk_contract::Service;

#[test]
fn services_carry_exact_copies_of_the_outbox_and_inbox_migrations() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR"));
    let services = shared.parent().expect("services/");
    let reference = |name: &str| {
        let path = fs::read_dir(shared.join("migrations"))
            .expect("reference migrations")
            .map(|entry| entry.expect("entry").path())
            .find(|path| path.to_string_lossy().ends_with(name))
            .expect("reference file");
        (
            path.file_name().expect("name").to_owned(),
            fs::read_to_string(&path).expect("read"),
        )
    };
    let (outbox_name, outbox) = reference("_outbox.sql");
    let (inbox_name, inbox) = reference("_inbox.sql");

    let mut checked = 0;
    for service in Service::WITH_DATABASE {
        let dir = services.join(service.name());
        // An outbox is drained by a relayer; a service on the bus with a database of its own
        // consumes events through its inbox.
        let needs = [
            (service.has_relayer(), &outbox_name, &outbox),
            (service.uses_bus(), &inbox_name, &inbox),
        ];
        for (needed, name, text) in needs {
            let copy = fs::read_to_string(dir.join("migrations").join(name));
            let copy = match copy {
                Ok(copy) => copy,
                Err(_) if !needed => continue,
                Err(_) => panic!("{service} lacks migrations/{}", name.to_string_lossy()),
            };
            assert_eq!(
                &copy,
                text,
                "{service}: migrations/{} differs from the reference",
                name.to_string_lossy()
            );
            checked += 1;
        }
    }
    assert_eq!(
        checked, 5,
        "product and order write outboxes; product, cart and order consume events"
    );
}
