//! Links libxstate_capi.so with the SONAME scripts/install-capi installs it under. Its exports
//! are exactly the `#[no_mangle] extern "C"` functions (rustc's own export list for a cdylib),
//! all named `xstate_*`; `tests/c_api.rs` checks that with `nm -D`.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libxstate.so.0");
}
