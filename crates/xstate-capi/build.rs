fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    println!("cargo:rerun-if-changed=xstate.map");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libxstate.so.0");
    println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={dir}/xstate.map");
}
