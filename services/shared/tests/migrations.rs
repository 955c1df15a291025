//! Every service that writes to an outbox or consumes events carries an exact copy of the
//! reference outbox and inbox migrations (`services/shared/migrations/`), which the shared
//! queries are checked against.

use std::{fs, path::Path};

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
    for entry in fs::read_dir(services).expect("services") {
        let dir = entry.expect("entry").path();
        if dir == shared || !dir.join("src").is_dir() {
            continue;
        }
        let source: String = fs::read_dir(dir.join("src"))
            .expect("src")
            .map(|f| fs::read_to_string(f.expect("file").path()).unwrap_or_default())
            .collect();
        let needs = [
            (source.contains("outbox::enqueue"), &outbox_name, &outbox),
            (source.contains("Participation"), &inbox_name, &inbox),
        ];
        for (needed, name, text) in needs {
            if !needed {
                continue;
            }
            let copy = fs::read_to_string(dir.join("migrations").join(name)).unwrap_or_else(|_| {
                panic!(
                    "{} lacks migrations/{}",
                    dir.display(),
                    name.to_string_lossy()
                )
            });
            assert_eq!(
                &copy,
                text,
                "{}: migrations/{} differs from the reference",
                dir.display(),
                name.to_string_lossy()
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 4,
        "product and order write outboxes and consume events: {checked} copies checked"
    );
}
