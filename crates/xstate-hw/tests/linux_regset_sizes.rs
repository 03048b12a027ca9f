//! What lengths PTRACE_SETREGSET(NT_X86_XSTATE) really accepts, against the `linux` profile
//! (issue 10 item 16): short and long buffers holding the task's own, valid state.

#[macro_use]
mod common;

use xstate::image::validate::{Context, Profile, validate};

use common::{Stopped, regset_or_skip, stopped_tracee};

#[test]
fn linux_profile_takes_the_lengths_the_kernel_takes() {
    let Stopped { layout: l, child, .. } = stopped_tracee(21);
    let Some(own) = regset_or_skip(child.pid()) else { return };
    let size = own.len();
    let xcr0 = xstate::Xfeatures(u64::from_le_bytes(own[464..472].try_into().unwrap()));
    let seized = xstate_hw::ptrace::Seized::new(child.pid()).unwrap();
    let ctx = Context::new(xcr0).with_mxcsr_mask_field(0xFFFF);
    let mut seen = Vec::new();
    for len in [576, 832, size - 64, size - 1, size, size + 1, size + 64, 4096.max(size + 4096), 1 << 20] {
        let mut buf = own.clone();
        buf.resize(len, 0xA5); // a tail the kernel must not read
        let kernel = seized.set(&buf);
        let lib = validate(&buf, &l, Profile::Linux, &ctx);
        seen.push(format!(
            "{len}: kernel {} / linux profile {}",
            kernel.as_ref().map_or_else(|e| e.to_string(), |()| "accepted".into()),
            lib.as_ref().map_or_else(|e| e.to_string(), |()| "valid".into())
        ));
        assert_eq!(kernel.is_ok(), lib.is_ok(), "{len} bytes (task size {size}): {}", seen.last().unwrap());
        if let (Err(k), Err(e)) = (&kernel, &lib) {
            let want = match e.errno().map(|n| n.name()) {
                Some("EFAULT") => libc::EFAULT,
                _ => libc::EINVAL,
            };
            assert_eq!(k.raw_os_error(), Some(want), "errno for {len} bytes: {e}");
        }
    }
    // Put the task's own state back before it reports.
    seized.set(&own).unwrap();
    drop(seized);
    eprintln!("task size {size} (XCR0 {xcr0}):\n  {}", seen.join("\n  "));
}
