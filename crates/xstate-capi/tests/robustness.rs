//! The C entry points on hostile input, called as C calls them (raw pointers, caller buffers):
//! mutated images and blobs, random masks, profiles, forms and buffer sizes, on the layouts of
//! `xstate::fixtures`. Every call returns 0 or one of the documented negative errnos (never
//! `-ENOTRECOVERABLE`, a caught panic), fills `xstate_error` consistently, leaves a refused
//! output buffer untouched, and every converted image is one XRSTOR on the target would load.

use core::ptr::{null, null_mut};

use proptest::prelude::*;
use xstate_capi::area::*;
use xstate_capi::compat::*;
use xstate_capi::error::xstate_error;
use xstate_capi::image::*;
use xstate_capi::layout::*;
use xstate_capi::record::*;
use xstate_capi::{XSTATE_FORM_COMPACTED, XSTATE_FORM_STANDARD};

const DOCUMENTED: [i32; 7] =
    [libc::EINVAL, libc::EFAULT, libc::EOPNOTSUPP, libc::EIO, libc::ERANGE, libc::ENOENT, libc::EBUSY];

fn new_error() -> xstate_error {
    xstate_error { code: 0, offset: 0, rule: [0; 128], message: [0; 512] }
}

fn text(buf: &[core::ffi::c_char]) -> Option<String> {
    let end = buf.iter().position(|&c| c == 0)?;
    Some(buf[..end].iter().map(|&c| c as u8 as char).collect())
}

/// 0, or a documented errno reported into `e` with a rule and a message.
fn checked(rc: i32, e: &xstate_error, call: &str) -> bool {
    if rc == 0 {
        return true;
    }
    assert!(DOCUMENTED.contains(&-rc), "{call}: returned {rc}: {:?}", text(&e.message));
    assert_eq!(e.code, rc, "{call}");
    assert!(text(&e.message).is_some_and(|m| !m.is_empty()), "{call}: no message");
    assert!(text(&e.rule).is_some_and(|m| !m.is_empty()), "{call}: no rule");
    false
}

fn layouts() -> Vec<*mut xstate_layout> {
    xstate::fixtures::SAMPLES
        .iter()
        .map(|rows| {
            let mut regs = [xstate_cpuid_regs::default(); 64];
            for &(i, eax, ebx, ecx, edx) in rows.iter() {
                regs[i as usize] = xstate_cpuid_regs { eax, ebx, ecx, edx };
            }
            let n = rows.iter().map(|r| r.0 as usize + 1).max().unwrap_or(0);
            let mut l = null_mut();
            let mut e = new_error();
            // SAFETY: `regs` has 64 entries, `l` and `e` are writable.
            let rc = unsafe { xstate_layout_from_cpuid(regs.as_ptr(), n, &mut l, &mut e) };
            assert_eq!(rc, 0, "{:?}", text(&e.message));
            l
        })
        .collect()
}

/// A valid image of `layout` for its whole XCR0 (an area's XSAVE, in `form`), or None.
fn seed_image(layout: *const xstate_layout, form: i32) -> Option<Vec<u8>> {
    let mut e = new_error();
    let mut p = null_mut();
    let mut a = null_mut();
    // SAFETY: live handles and writable outputs throughout.
    unsafe {
        let xcr0 = xstate_layout_xcr0_supported(layout);
        if xstate_policy_from_masks(layout, xcr0, 0, &mut p, &mut e) != 0 {
            return None;
        }
        let ok = xstate_area_new(p, form, &mut a, &mut e) == 0 && xstate_area_set_xcr0(a, xcr0, &mut e) == 0;
        let mut out = vec![0u8; 16384];
        let mut n = out.len();
        let ok = ok && xstate_area_store(a, form, out.as_mut_ptr(), &mut n, &mut e) == 0;
        xstate_area_free(a);
        xstate_policy_free(p);
        ok.then(|| {
            // Every component in use, with bytes of their own.
            out.truncate(n);
            out[512..520].copy_from_slice(&xcr0.to_le_bytes());
            for (i, b) in out.iter_mut().enumerate().skip(576) {
                *b = (i * 7 + 3) as u8;
            }
            out
        })
    }
}

#[derive(Debug, Clone)]
struct Case {
    from: usize,
    to: usize,
    compacted_seed: bool,
    flips: Vec<(usize, u8)>,
    cut: Option<usize>,
    rfbm: u64,
    profile: i32,
    form: i32,
    mask: u64,
    room: usize,
    xcr0: u64,
}

fn masks() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(0x3),
        Just(0x7),
        Just(0xe7),
        Just(0x2e7),
        Just(0x600e7),
        Just(0x1800 | 0xe7),
        any::<u64>()
    ]
}

/// Mostly meaningful values, sometimes hostile ones: `None` for an RFBM means the source
/// layout's whole XCR0, resolved in the test.
fn cases() -> impl Strategy<Value = Case> {
    let flips = prop_oneof![Just(vec![]), proptest::collection::vec((0..12000usize, any::<u8>()), 1..4)];
    let cut = prop_oneof![4 => Just(None), 1 => (0..12000usize).prop_map(Some)];
    let rfbm = prop_oneof![3 => Just(u64::MAX), 2 => masks()];
    let form = prop_oneof![9 => 0..2i32, 1 => -1..3i32];
    let mask = prop_oneof![4 => Just(0u64), 1 => masks()];
    let room = prop_oneof![3 => Just(16384usize), 1 => 0..12000usize];
    ((0..9usize, 0..9usize, any::<bool>()), flips, cut, (rfbm, -1..5i32, form, mask, room, masks())).prop_map(
        |((from, to, compacted_seed), flips, cut, (rfbm, profile, form, mask, room, xcr0))| Case {
            from,
            to,
            compacted_seed,
            flips,
            cut,
            rfbm,
            profile,
            form,
            mask,
            room,
            xcr0,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn hostile_input_gets_an_errno_never_a_panic(c in cases()) {
        let ls = layouts();
        let (from, to) = (ls[c.from], ls[c.to]);
        let mut c = c;
        if c.rfbm == u64::MAX {
            // SAFETY: a live layout handle.
            c.rfbm = unsafe { xstate_layout_xcr0_supported(from) };
        }
        let form = if c.compacted_seed { XSTATE_FORM_COMPACTED } else { XSTATE_FORM_STANDARD };
        let mut img = seed_image(from, form).or_else(|| seed_image(from, XSTATE_FORM_STANDARD)).unwrap();
        for &(at, v) in &c.flips {
            let len = img.len().max(1);
            if let Some(b) = img.get_mut(at % len) {
                *b ^= v;
            }
        }
        if let Some(n) = c.cut {
            img.truncate(n.min(img.len()));
        }
        let mut e = new_error();
        let mut ctx = xstate_context { xcr0: c.xcr0, ..Default::default() };
        // SAFETY: every pointer below is a live handle, a buffer of the length passed, or a
        // writable output, as the C API requires.
        unsafe {
            let rc = xstate_validate(img.as_ptr(), img.len(), from, c.profile, &ctx, &mut e);
            checked(rc, &e, "validate");

            // Conversion into a buffer of `room` bytes.
            let mut out = vec![0xa5u8; c.room];
            let mut n = out.len();
            let rc = xstate_convert(img.as_ptr(), img.len(), from, to, c.rfbm, c.form, c.mask, out.as_mut_ptr(), &mut n, &mut e);
            if rc == -libc::ERANGE {
                prop_assert!(n > c.room);
                prop_assert!(out.iter().all(|&b| b == 0xa5), "a refused call wrote into the buffer");
            } else if checked(rc, &e, "convert") {
                prop_assert!(n <= c.room);
                // The output is what XRSTOR(S) on the target loads with the target's part of RFBM.
                let user = c.rfbm & xstate_layout_xcr0_supported(to);
                let sup = c.rfbm & xstate_layout_xss_supported(to);
                ctx = xstate_context { xcr0: user, xss: if c.form == XSTATE_FORM_COMPACTED { sup } else { 0 }, mxcsr_mask: u32::MAX, ..Default::default() };
                let rc = xstate_validate(out.as_ptr(), n, to, XSTATE_PROFILE_HARDWARE, &ctx, &mut e);
                prop_assert_eq!(rc, 0, "converted image refused: {:?}", text(&e.message));
            }

            // The blobs: the image behind the two masks.
            let mut blob = c.xcr0.to_le_bytes().to_vec();
            blob.extend_from_slice(&c.rfbm.to_le_bytes());
            blob.extend_from_slice(&img);
            let mut info = xstate_blob_info::default();
            for parse in [xstate_xen_domctl_parse, xstate_fc_blob_parse] {
                let rc = parse(blob.as_ptr(), blob.len(), from, null(), &mut info, &mut e);
                if checked(rc, &e, "blob parse") && info.image_len > 0 {
                    prop_assert_eq!(info.image_offset + info.image_len, blob.len());
                }
            }
            let mut n = 0;
            let rc = xstate_xen_domctl_write(c.xcr0, c.rfbm, img.as_ptr(), img.len(), from, to, null(), null_mut(), &mut n, &mut e);
            checked(rc, &e, "domctl write");

            // Compatibility with the image, and a save area loading it.
            let (sf, st) = (xstate_side { layout: from, xcr0: c.rfbm, xss: 0 }, xstate_side { layout: to, xcr0: c.xcr0, xss: 0 });
            let mut r = null_mut();
            let rc = xstate_compat_check(&sf, &st, img.as_ptr(), img.len(), &mut r, &mut e);
            if checked(rc, &e, "compat") {
                for i in 0..xstate_compat_reason_count(r) {
                    prop_assert!(!xstate_compat_reason(r, i).is_null());
                }
            }
            xstate_compat_free(r);
            let mut p = null_mut();
            if checked(xstate_policy_from_masks(from, c.xcr0, 0, &mut p, &mut e), &e, "policy") {
                let mut a = null_mut();
                if checked(xstate_area_new(p, c.form, &mut a, &mut e), &e, "area") {
                    checked(xstate_area_set_xcr0(a, c.rfbm, &mut e), &e, "set_xcr0");
                    let before = xstate_area_size(a);
                    checked(xstate_area_load(a, img.as_ptr(), img.len(), &mut e), &e, "load");
                    prop_assert_eq!(xstate_area_size(a), before);
                }
                xstate_area_free(a);
            }
            xstate_policy_free(p);
        }
        for l in ls {
            // SAFETY: each handle is freed once.
            unsafe { xstate_layout_free(l) };
        }
    }
}

/// Every dump of `../shared/cpuid/dumps` through both dump readers: read, or refused with a
/// documented errno; the counts are the ones docs/C-API.md gives.
#[test]
fn every_corpus_dump_reads_or_is_refused() {
    use std::io::Write;
    let root = std::env::var_os("XSTATE_SHARED")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let dumps = root.join("cpuid/dumps");
    let Ok(vendors) = std::fs::read_dir(&dumps) else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIP: {} not found: the corpus was not read through the C API",
            dumps.display()
        );
        return;
    };
    let mut files: Vec<_> = vendors
        .flatten()
        .flat_map(|v| std::fs::read_dir(v.path()).into_iter().flatten().flatten())
        .map(|f| f.path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    let (mut strict, mut partial, mut neither) = (0, 0, 0);
    let mut refused_with: Vec<i32> = Vec::new();
    for f in &files {
        let path = std::ffi::CString::new(f.to_str().unwrap()).unwrap();
        let (mut l, mut e, mut omitted) = (null_mut(), new_error(), 0u64);
        // SAFETY: a NUL-terminated path and writable outputs; each layout is freed once.
        unsafe {
            let rc = xstate_layout_from_dump(path.as_ptr(), &mut l, &mut e);
            if checked(rc, &e, "from_dump") {
                strict += 1;
            } else {
                assert!(l.is_null());
                let rc = xstate_layout_from_dump_partial(path.as_ptr(), &mut l, &mut omitted, &mut e);
                if checked(rc, &e, "from_dump_partial") {
                    assert_ne!(omitted, 0, "{f:?}: refused strictly but nothing omitted");
                    partial += 1;
                } else {
                    neither += 1;
                    refused_with.push(rc);
                }
            }
            xstate_layout_free(l);
        }
    }
    assert_eq!((files.len(), strict, partial, neither), (352, 282, 61, 9), "docs/C-API.md's counts");
    // 7 without XSAVE; 2 broken (leaf 1 says XSAVE, leaf 0xD is all zero), an unusable dump.
    let count = |errno: i32| refused_with.iter().filter(|&&rc| rc == -errno).count();
    assert_eq!((count(libc::EOPNOTSUPP), count(libc::EINVAL)), (7, 2), "{refused_with:?}");
}
