//! probe
#[unsafe(no_mangle)]
/// probe
pub extern "C" fn xstate_probe() -> i32 { 1 }
#[unsafe(no_mangle)]
/// probe
pub extern "C" fn other_probe() -> i32 { 1 }
