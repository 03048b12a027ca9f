//! The seed's story end to end: a Xen domain's CPUID policy grows and shrinks, each vCPU's save
//! area is re-sized from it (refused as busy where `xcr0_accum` exceeds the new maximum), the
//! toolstack reads the old `{xcr0, xcr0_accum, standard image}` blob, writes the
//! forward-compatible blob with a compacted image (supervisor state included, which the old
//! blob cannot express) and reads it back on a host of the other vendor, where the old blob
//! does not even have the right size. Sizes and fields are checked at every step.
//!
//! ```sh
//! cargo run -p xstate --example xen_policy_change
//! ```
//!
//! `crates/xstate/tests/xen_story.rs` runs the same story as a test.

use std::sync::Arc;

use xstate::area::{AreaError, SaveArea};
use xstate::fixtures::{self, AMD_ZEN4, INTEL_SAPPHIRE_RAPIDS};
use xstate::image::state::State as Loaded;
use xstate::image::{Form, Image, ImageBuf, Target, convert};
use xstate::policy::{Policy, Selection, XenGuest};
use xstate::record::fc_blob::FcBlob;
use xstate::record::xen::{DomctlBlob, XenHost};
use xstate::record::{self, Format, Options, Rule};
use xstate::{Component, Layout, Xfeatures};

/// What the story measured, for the test to check and `main` to print.
#[derive(Debug)]
pub struct Story {
    /// Area sizes of vCPU 0 under the first, grown and (for vCPU 1) shrunk policy.
    pub area_sizes: [usize; 3],
    /// The old blob's size: 16 + standard_size(xcr0_accum) on the Intel host.
    pub old_blob: usize,
    /// The forward-compatible blob's size: 16 + compacted_size(XCOMP_BV).
    pub fc_blob: usize,
    /// Its fields read back on the AMD host: xstates, xstates_accum, XCR0, XSS.
    pub fc_fields: [Xfeatures; 4],
    /// What the AMD host says to the old blob.
    pub old_blob_on_amd: String,
    /// The standard image on the AMD host after re-layout (its size).
    pub amd_standard: usize,
}

/// The MXCSR_MASK field of the Intel host the areas live on (Intel parts report 0xFFFF).
const MXCSR_MASK: u32 = 0xFFFF;

fn policy(host: &Layout, features: &str) -> Result<Arc<Policy>, String> {
    let s = Selection::parse(features).map_err(|e| e.to_string())?;
    Policy::derive(host, &s).map(Arc::new).map_err(|e| format!("{features}: {e}"))
}

fn check(cond: bool, what: &str) -> Result<(), String> {
    if cond { Ok(()) } else { Err(format!("check failed: {what}")) }
}

/// A compacted image for `rfbm` on `l` with every component of `bv` filled with a pattern.
fn state_image(l: &Layout, rfbm: Xfeatures, bv: Xfeatures) -> Result<ImageBuf, String> {
    let size = l.compacted_size(rfbm).ok_or("compacted size")? as usize;
    let mut img = ImageBuf::init(size, Xfeatures(rfbm.bits() | 1 << 63));
    img[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
    for (i, b) in img[160..416].iter_mut().enumerate() {
        *b = i as u8;
    }
    for c in bv.iter().filter(|c| !c.is_legacy()) {
        let off = l.compacted_offset(c, rfbm).ok_or("offset")? as usize;
        let len = l.geometry(c).ok_or("geometry")?.size as usize;
        for (k, b) in img[off..off + len].iter_mut().enumerate() {
            *b = (c.index() as usize * 31 + k) as u8 | 1;
        }
        if c == Component::CET_U {
            // IA32_U_CET and IA32_PL3_SSP: reserved bits clear, a canonical aligned SSP.
            img[off..off + 16].copy_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0x08, 0xF0, 0xFF, 0xFF, 0xFF, 0x7F, 0, 0]);
        }
    }
    img.set_xstate_bv(bv);
    Ok(img)
}

/// Runs the story on the Intel Sapphire Rapids and AMD Zen 4 fixtures.
pub fn run() -> Result<Story, String> {
    let intel = fixtures::layout(INTEL_SAPPHIRE_RAPIDS);
    let amd = fixtures::layout(AMD_ZEN4);
    let cet_u = Xfeatures::of(Component::CET_U);

    // 1. The domain starts with AVX and CET (supervisor state: compacted areas).
    let p1 = policy(&intel, "avx,cet")?;
    let mut vcpu0 = SaveArea::new(p1.clone(), Form::Compacted, MXCSR_MASK).map_err(|e| e.to_string())?;
    let mut vcpu1 = SaveArea::new(p1.clone(), Form::Compacted, MXCSR_MASK).map_err(|e| e.to_string())?;
    let size1 = vcpu0.len();
    check(size1 == intel.compacted_size(Xfeatures(0x7) | Xfeatures::CET).unwrap() as usize, "area sized by policy")?;
    vcpu0.set_xcr0(Xfeatures(0x7)).map_err(|e| e.to_string())?;
    vcpu0.set_xss(cet_u).map_err(|e| e.to_string())?;
    vcpu1.set_xcr0(Xfeatures(0x3)).map_err(|e| e.to_string())?;

    // 2. The policy grows (AVX-512, PKU): both areas grow, state kept; vCPU 0 uses AVX-512.
    let p2 = policy(&intel, "avx,avx512,pku,cet")?;
    for a in [&mut vcpu0, &mut vcpu1] {
        a.set_policy(p2.clone()).map_err(|e| e.to_string())?;
    }
    let size2 = vcpu0.len();
    check(size2 == intel.compacted_size(Xfeatures(0x2E7) | Xfeatures::CET).unwrap() as usize, "grown area")?;
    vcpu0.set_xcr0(Xfeatures(0x2E7)).map_err(|e| e.to_string())?;
    let rfbm = Xfeatures(0x2E7) | cet_u;
    vcpu0.load(&state_image(&intel, rfbm, Xfeatures(0xE7) | cet_u)?).map_err(|e| e.to_string())?;
    check(vcpu0.xcr0_accum() == Xfeatures(0x2E7), "xcr0_accum grew")?;

    // 3. The policy shrinks back: busy for vCPU 0 (its xcr0_accum has AVX-512 and PKRU), fine
    //    for vCPU 1, whose area shrinks.
    match vcpu0.set_policy(p1.clone()) {
        Err(AreaError::Busy { outside, .. }) => check(outside == Xfeatures(0x2E0), "busy bits")?,
        other => return Err(format!("shrink of vCPU 0: {other:?}")),
    }
    check(vcpu0.len() == size2, "a refused change changes nothing")?;
    vcpu1.set_policy(p1).map_err(|e| e.to_string())?;
    let size3 = vcpu1.len();
    check(size3 == size1, "shrunk area")?;

    // 4. The toolstack reads vCPU 0's old blob: standard image of xcr0_accum, no XSS.
    let accum = vcpu0.xcr0_accum();
    let std_img = vcpu0.store_with(Form::Standard, accum).map_err(|e| e.to_string())?;
    let old = DomctlBlob { xcr0: vcpu0.xcr0(), xcr0_accum: accum, image: Some(&std_img) }.to_bytes();
    let xen = XenHost::for_guest(&intel, XenGuest::HvmHap);
    let parsed = DomctlBlob::parse(&old, &intel, &xen).map_err(|e| e.to_string())?;
    check(old.len() == 16 + intel.standard_size(accum).unwrap() as usize, "old blob size")?;
    check((parsed.xcr0, parsed.xcr0_accum) == (Xfeatures(0x2E7), Xfeatures(0x2E7)), "old blob fields")?;
    check(DomctlBlob::parse(&old, &intel, &XenHost::for_guest(&intel, XenGuest::Pv)).is_err(), "no PKRU for PV")?;

    // 5. It writes the forward-compatible blob: XCR0 | XSS first, a compacted image with the
    //    supervisor state (CET_U) the old blob cannot express.
    let xstates = vcpu0.xcr0() | vcpu0.xss();
    let xstates_accum = accum | vcpu0.xss_accum();
    let comp = vcpu0.store_with(Form::Compacted, xstates_accum).map_err(|e| e.to_string())?;
    let fc = FcBlob { xstates, xstates_accum, image: Some(&comp) }.to_bytes();
    check(fc.len() == 16 + intel.compacted_size(xstates_accum).unwrap() as usize, "fc blob size")?;
    let e = DomctlBlob::parse(&fc, &intel, &xen).err().ok_or("the old rules take supervisor state")?;
    check(e.rule == Rule::Image, "old rules refuse it in validate_xstate()")?;

    // 6. Read back on AMD Zen 4: same compacted geometry for these components, same fields.
    let back = FcBlob::parse(&fc, &amd, &FcBlob::host_of(&amd)).map_err(|e| e.to_string())?;
    let c = record::read(Format::FcBlob, &fc, &amd, &Options::default()).map_err(|e| e.to_string())?;
    let st = c.state().ok_or("a state")?;
    let fields = [back.xstates, back.xstates_accum, st.xcr0.unwrap_or_default(), st.xss.unwrap_or_default()];
    check(fields == [xstates, xstates_accum, Xfeatures(0x2E7), cet_u], "fields on AMD")?;
    // The old blob is Intel's standard layout: on AMD its size is wrong.
    let old_on_amd = DomctlBlob::parse(&old, &amd, &XenHost::of(&amd)).err().ok_or("the old blob fits AMD")?;
    // The compacted image loads the same registers on both vendors, supervisor state included.
    let on_amd =
        Loaded::new(Image::new(back.image.ok_or("an image")?).map_err(|e| e.to_string())?, &amd, xstates_accum);
    let on_intel = Loaded::new(comp.image(), &intel, xstates_accum);
    check(on_amd.values().is_some() && on_amd.values() == on_intel.values(), "same state on both vendors")?;
    // Its user part, re-laid out for AMD's standard form (AVX-512 at 0x340, not 0x440), is a
    // valid old blob there once the supervisor state is set aside.
    let user = Xfeatures(0x2E7);
    let user_only = vcpu0.store_with(Form::Compacted, user).map_err(|e| e.to_string())?;
    let amd_std = convert(&user_only, &intel, &amd, user, Target::Standard).map_err(|e| e.to_string())?;
    let amd_blob = DomctlBlob { xcr0: user, xcr0_accum: user, image: Some(&amd_std) }.to_bytes();
    DomctlBlob::parse(&amd_blob, &amd, &XenHost::of(&amd)).map_err(|e| e.to_string())?;
    let a = Loaded::new(Image::new(&amd_std).map_err(|e| e.to_string())?, &amd, user).values();
    let i = Loaded::new(std_img.image(), &intel, user).values();
    check(a.is_some() && a == i, "same registers on both vendors")?;
    Ok(Story {
        area_sizes: [size1, size2, size3],
        old_blob: old.len(),
        fc_blob: fc.len(),
        fc_fields: fields,
        old_blob_on_amd: old_on_amd.to_string(),
        amd_standard: amd_std.len(),
    })
}

#[allow(dead_code)] // the test includes this file and calls run()
fn main() {
    match run() {
        Ok(s) => {
            println!(
                "vCPU areas (compacted): {} -> {} (grown) -> {} (vCPU 1 shrunk; vCPU 0 busy)",
                s.area_sizes[0], s.area_sizes[1], s.area_sizes[2]
            );
            println!("old blob on Intel: {} bytes (16 + standard_size(xcr0_accum))", s.old_blob);
            println!("forward-compatible blob: {} bytes (16 + compacted_size(XCOMP_BV)), CET_U included", s.fc_blob);
            println!(
                "read on AMD Zen 4: xstates {}, xstates_accum {}, XCR0 {}, XSS {}",
                s.fc_fields[0], s.fc_fields[1], s.fc_fields[2], s.fc_fields[3]
            );
            println!("old blob on AMD: {}", s.old_blob_on_amd);
            println!("AMD standard image after re-layout: {} bytes", s.amd_standard);
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
