//! `include/xstate.h` is what cbindgen makes of this crate's `extern "C"` items and constants:
//! this test fails when the two drift apart (a signature, a struct field, a constant changed
//! on one side only). `XSTATE_BLESS_HEADER=1 cargo test -p xstate-capi --test header` rewrites
//! the header from the Rust side.

use std::path::Path;

#[test]
fn header_matches_the_rust_signatures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).unwrap();
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen reads the crate")
        .write(&mut generated);
    let generated = String::from_utf8(generated).unwrap();
    let path = dir.join("../../include/xstate.h");
    if std::env::var_os("XSTATE_BLESS_HEADER").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    if checked_in != generated {
        let first = checked_in.lines().zip(generated.lines()).position(|(a, b)| a != b);
        panic!(
            "include/xstate.h differs from the Rust signatures (first differing line: {:?}); \
             regenerate it with XSTATE_BLESS_HEADER=1 cargo test -p xstate-capi --test header",
            first.map(|i| i + 1)
        );
    }
}
