//! The committed generated code must be exactly what the `.proto` files compile to.

use std::path::Path;

#[test]
fn generated_code_matches_the_proto_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let committed = root.join("src/gen/souk.v1.rs");
    let fds = protox::compile(souk_protos::PROTO_FILES, [root]).expect("the .proto files compile");

    let out = std::env::temp_dir().join(format!("souk-protos-{}", std::process::id()));
    std::fs::create_dir_all(&out).expect("temp dir");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(&out)
        .compile_fds(fds)
        .expect("code generation");
    let fresh = std::fs::read_to_string(out.join("souk.v1.rs")).expect("generated file");
    let _ = std::fs::remove_dir_all(&out);

    if std::env::var_os("SOUK_UPDATE_GENERATED").is_some() {
        std::fs::write(&committed, &fresh).expect("write generated code");
        return;
    }
    let current = std::fs::read_to_string(&committed).unwrap_or_default();
    assert!(
        current == fresh,
        "protos/src/gen/souk.v1.rs is stale: run `SOUK_UPDATE_GENERATED=1 cargo test -p souk-protos`"
    );
}
