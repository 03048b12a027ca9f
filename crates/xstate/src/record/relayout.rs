//! The mark xstate leaves in a snapshot's kvm_xsave region that it re-laid out for another CPU
//! than the one the snapshot's own CPUID describes (`xstate convert SNAPSHOT --to-cpuid B`).
//!
//! A snapshot keeps its guest's CPUID (the guest was told those offsets), so after a re-layout
//! the CPUID no longer describes the region, and a reader trusting the CPUID would misread it.
//! The mark says which layout the region is in: bytes 480..496 of the legacy region's
//! software-available area (464..511, which XSAVE never writes and KVM_SET_XSAVE never reads;
//! KVM_GET_XSAVE writes its mask at 464..471 and zeros after it): the 8 bytes `xstateRL`, then
//! the layout's fingerprint (CRC-32 of every user component's index, size, standard offset and
//! align64 flag, ascending), then 4 zero bytes. Readers refuse a marked region whose fingerprint
//! is not the one of the layout they read it with.

use crate::layout::Layout;

/// Where the mark lies in the region.
pub const AT: core::ops::Range<usize> = 480..496;
/// Its first 8 bytes.
pub const MAGIC: [u8; 8] = *b"xstateRL";

/// The fingerprint of `layout`'s standard geometry.
pub fn fingerprint(layout: &Layout) -> u32 {
    let mut bytes = alloc::vec::Vec::new();
    for c in layout.user_supported().iter().filter(|c| !c.is_legacy()) {
        if let Some(g) = layout.geometry(c) {
            bytes.push(c.index());
            bytes.extend_from_slice(&g.size.to_le_bytes());
            bytes.extend_from_slice(&g.offset.to_le_bytes());
            bytes.push(u8::from(g.align64));
        }
    }
    super::portable::crc32(&[&bytes])
}

/// The fingerprint a region is marked with, if it is.
pub fn read(region: &[u8]) -> Option<u32> {
    let m = region.get(AT)?;
    (m[..8] == MAGIC).then(|| u32::from_le_bytes([m[8], m[9], m[10], m[11]]))
}

/// Marks `region` as laid out for `layout`, or (`None`) clears the mark: the region is in the
/// layout of the snapshot's CPUID again.
pub fn write(region: &mut [u8], layout: Option<&Layout>) {
    if let Some(m) = region.get_mut(AT) {
        m.fill(0);
        if let Some(l) = layout {
            m[..8].copy_from_slice(&MAGIC);
            m[8..12].copy_from_slice(&fingerprint(l).to_le_bytes());
        }
    }
}

/// The layout a snapshot's region is in, as the file says it: the layout of the snapshot's own
/// CPUID (`own`) when the region carries no mark, else the one whose fingerprint the mark
/// holds, which the caller must give (`given`: a fingerprint does not rebuild a layout). A
/// given layout the file does not name is refused, never used: reading a region in another
/// layout would move every component off its place. `Err` is the reason, in words.
pub fn region_layout<'l>(
    region: &[u8],
    own: &'l Layout,
    given: Option<&'l Layout>,
) -> Result<&'l Layout, alloc::string::String> {
    use alloc::format;
    match (read(region), given) {
        (None, None) => Ok(own),
        (None, Some(g)) if fingerprint(g) == fingerprint(own) => Ok(g),
        (None, Some(g)) => Err(format!(
            "the region is in the layout of the snapshot's own CPUID (fingerprint {:#010x}; no re-layout mark), not \
             the one given ({:#010x}): read it without --cpuid",
            fingerprint(own),
            fingerprint(g)
        )),
        (Some(fp), Some(g)) if fingerprint(g) == fp => Ok(g),
        (Some(fp), g) => Err(format!(
            "xstate re-laid this region out for a CPU whose layout fingerprint is {fp:#010x}, not {} ({:#010x}): read \
             it with that CPU's layout (--cpuid)",
            if g.is_some() { "the layout given" } else { "the snapshot's CPUID" },
            fingerprint(g.unwrap_or(own))
        )),
    }
}
