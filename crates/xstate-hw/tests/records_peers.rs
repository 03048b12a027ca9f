//! Records against the peers that define them: what the kernel hands out through ptrace and
//! what KVM_GET_XSAVE2 returns parse as NT_X86_XSTATE and kvm_xsave records; records xstate
//! writes are accepted back by PTRACE_SETREGSET and KVM_SET_XSAVE, and the state arrives.

#[macro_use]
mod common;

use xstate::Component;
use xstate::image::{Image, ImageBuf};
use xstate::record::kvm::{KvmXcrs, KvmXsave};
use xstate::record::linux::NtXstate;
use xstate::record::{Contents, Format, Options, State, read, write};
use xstate_hw::ptrace;
use xstate_hw::selfcheck::{Rng, crafted_image};

use common::{Stopped, host, kvm_or_skip, regset_or_skip, stopped_tracee};

#[test]
fn ptrace_regset_is_an_nt_xstate_record() {
    let Stopped { layout: l, xcr0, child, .. } = stopped_tracee(55);
    let Some(got) = regset_or_skip(child.pid()) else { return };
    let n = NtXstate::parse(&got, &l).expect("the kernel's regset is a valid NT_X86_XSTATE record");
    assert_eq!(n.xcr0, xcr0);
    // A record xstate writes (from another state, through the generic writer) is taken back.
    let other = crafted_image(&l, xcr0, &mut Rng::new(56));
    let c = Contents::one(
        Format::Image,
        State::new(Some(ImageBuf::from_bytes(&other).unwrap()), Some(xcr0)).with_xcr0(xcr0),
    );
    let rec = write(Format::NtXstate, &c, &l, &l, &Options::default()).unwrap();
    ptrace::set_xstate(child.pid(), &rec).expect("PTRACE_SETREGSET accepts xstate's NT_X86_XSTATE");
    let seen = child.resume_and_report().unwrap();
    for c in xcr0.iter().filter(|c| !c.is_legacy() && *c != Component::TILECFG) {
        let r = l.standard_range(c).unwrap();
        assert_eq!(seen[r.clone()], other[r], "{c} arrived");
    }
    assert_eq!(seen[160..416], other[160..416], "XMM arrived");
}

#[test]
fn kvm_buffers_are_kvm_xsave_records() {
    let Some(kvm) = kvm_or_skip() else { return };
    let l = host().layout().clone();
    let vcpu = kvm.create_vcpu().unwrap();
    vcpu.set_cpuid(&kvm.supported_cpuid().unwrap()).unwrap();
    let supported = kvm.supported_xcr0().unwrap() & l.user_supported();
    let size = vcpu.xsave_buffer_size();
    let fmt = if size == 4096 { Format::KvmXsave } else { Format::KvmXsave2 };
    let mut opts = Options::default();
    (opts.kvm_supported, opts.kvm_xsave2_size) = (Some(supported), Some(size));
    let got = vcpu.get_xsave().unwrap();
    KvmXsave::parse(fmt, &got, size, &l, supported, 0xFFFF).expect("KVM's buffer is a valid record");
    read(fmt, &got, &l, &opts).unwrap();
    // An xstate-written record with a crafted state goes in and comes back.
    let img = crafted_image(&l, supported, &mut Rng::new(77));
    let c = Contents::one(Format::Image, State::new(Some(ImageBuf::from_bytes(&img).unwrap()), Some(supported)));
    let rec = write(fmt, &c, &l, &l, &opts).unwrap();
    assert_eq!(rec.len(), size);
    vcpu.set_xsave(&rec).expect("KVM_SET_XSAVE accepts xstate's record");
    let back = vcpu.get_xsave().unwrap();
    let (a, b) = (Image::new(&back).unwrap(), Image::new(&img).unwrap());
    for comp in supported.iter().filter(|c| !c.is_legacy()) {
        if b.xstate_bv().contains(comp) {
            assert_eq!(a.component(&l, comp), b.component(&l, comp), "{comp}");
        }
    }
    // kvm_xcrs written by xstate: KVM_SET_XCRS takes the XCR0 it carries.
    let xcrs = KvmXcrs::with_xcr0(supported);
    let parsed = KvmXcrs::parse(&xcrs.to_bytes(), &l, supported).unwrap();
    vcpu.set_xcr0(parsed.xcr0().unwrap()).expect("KVM_SET_XCRS");
    assert_eq!(vcpu.xcr0().unwrap(), Some(supported));
}
