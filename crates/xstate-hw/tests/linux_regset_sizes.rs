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

/// PTRACE_SETREGSET checks MXCSR against the kernel's own mask, not the buffer's MXCSR_MASK
/// field: a DAZ MXCSR (0x9fc0) with a zero field is accepted and loaded (QEMU's and gdb's
/// images carry a zero field), a reserved bit no CPU has (bit 31) is EINVAL whatever the field
/// says. The library's reader of NT_X86_XSTATE takes the note as the kernel does.
#[test]
fn setregset_checks_mxcsr_against_the_kernels_mask_not_the_field() {
    let Stopped { layout: l, child, .. } = stopped_tracee(22);
    let Some(own) = regset_or_skip(child.pid()) else { return };
    let seized = xstate_hw::ptrace::Seized::new(child.pid()).unwrap();
    let with = |mxcsr: u32, field: u32| {
        let mut b = own.clone();
        b[24..28].copy_from_slice(&mxcsr.to_le_bytes());
        b[28..32].copy_from_slice(&field.to_le_bytes());
        b
    };
    let daz = with(0x9FC0, 0);
    let kernel = seized.set(&daz);
    let back = seized.get();
    let reserved = seized.set(&with(0x8000_1F80, 0xFFFF_FFFF));
    seized.set(&own).unwrap();
    drop(seized);
    assert!(kernel.is_ok(), "PTRACE_SETREGSET of MXCSR 0x9fc0, field 0: {kernel:?}");
    let back = back.unwrap();
    assert_eq!(u32::from_le_bytes(back[24..28].try_into().unwrap()), 0x9FC0, "the task runs with DAZ");
    assert!(xstate::record::linux::NtXstate::parse(&daz, &l).is_ok(), "the reader takes what the kernel takes");
    assert_eq!(reserved.map_err(|e| e.raw_os_error()), Err(Some(libc::EINVAL)));
}
