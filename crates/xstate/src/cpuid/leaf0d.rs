//! CPUID leaf 0xD, "Processor Extended State Enumeration" (SDM Vol. 2A, CPUID; Vol. 1 §13.2).

use super::Regs;
use crate::component::Component;
use crate::xfeatures::Xfeatures;

/// All 64 subleaves of CPUID leaf 0xD, with a record of which ones the source actually gave.
///
/// A subleaf the source did not record reads as zero, as an unsupported subleaf does on hardware.
/// [`Leaf0d::recorded`] tells the two apart, so that a dump which left out a supported
/// component's subleaf is reported as incomplete rather than read as a zero-sized component.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Leaf0d {
    sub: [Regs; 64],
    recorded: u64,
}

impl Default for Leaf0d {
    fn default() -> Self {
        Leaf0d::new()
    }
}

impl core::fmt::Debug for Leaf0d {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut l = f.debug_map();
        for i in 0..64u8 {
            if self.recorded(i) {
                let r = self.get(i);
                l.entry(&i, &format_args!("{:08x}-{:08x}-{:08x}-{:08x}", r.eax, r.ebx, r.ecx, r.edx));
            }
        }
        l.finish()
    }
}

/// CPUID 0xD.1 EAX: which XSAVE instructions and facilities exist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct XsaveFeatures(pub u32);

impl XsaveFeatures {
    /// EAX\[0\]: XSAVEOPT.
    pub const fn xsaveopt(self) -> bool {
        self.0 & 1 != 0
    }
    /// EAX\[1\]: XSAVEC and the compacted form of XRSTOR.
    pub const fn xsavec(self) -> bool {
        self.0 & 2 != 0
    }
    /// EAX\[2\]: XGETBV with ECX = 1 (XCR0 & XINUSE).
    pub const fn xgetbv1(self) -> bool {
        self.0 & 4 != 0
    }
    /// EAX\[3\]: XSAVES/XRSTORS and IA32_XSS.
    pub const fn xsaves(self) -> bool {
        self.0 & 8 != 0
    }
    /// EAX\[4\]: extended feature disable (IA32_XFD, IA32_XFD_ERR).
    pub const fn xfd(self) -> bool {
        self.0 & 16 != 0
    }
    /// True if any compacted-format instruction exists (XSAVEC or XSAVES).
    pub const fn compaction(self) -> bool {
        self.0 & 0xA != 0
    }
    /// Names of the set bits, e.g. `["xsaveopt", "xsavec"]`.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        ["xsaveopt", "xsavec", "xgetbv1", "xsaves", "xfd"]
            .into_iter()
            .enumerate()
            .filter(move |(i, _)| self.0 >> i & 1 != 0)
            .map(|(_, n)| n)
    }
}

/// CPUID 0xD.i for a component i in 2..=62, decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ComponentLeaf {
    /// EAX: size in bytes.
    pub size: u32,
    /// EBX: offset in the standard format (0 for supervisor components).
    pub offset: u32,
    /// ECX\[0\]: the component is a supervisor component (IA32_XSS).
    pub supervisor: bool,
    /// ECX\[1\]: in the compacted format the component starts on a 64-byte boundary.
    pub align64: bool,
    /// ECX\[2\]: the component can be armed in IA32_XFD.
    pub xfd: bool,
    /// ECX\[31:3\] and EDX, which are reserved and read zero on every CPU seen.
    pub reserved: u64,
}

impl Leaf0d {
    /// All subleaves zero and unrecorded.
    pub const fn new() -> Leaf0d {
        Leaf0d { sub: [Regs::new(0, 0, 0, 0); 64], recorded: 0 }
    }

    /// Sets subleaf `i` (0..64) and marks it recorded.
    pub fn set(&mut self, i: u8, regs: Regs) {
        if i < 64 {
            self.sub[i as usize] = regs;
            self.recorded |= 1 << i;
        }
    }

    /// Subleaf `i` (zero if out of range or not recorded).
    pub fn get(&self, i: u8) -> Regs {
        if i < 64 { self.sub[i as usize] } else { Regs::default() }
    }

    /// Whether the source gave subleaf `i`.
    pub fn recorded(&self, i: u8) -> bool {
        i < 64 && self.recorded >> i & 1 != 0
    }

    /// The mask of recorded subleaves.
    pub fn recorded_mask(&self) -> u64 {
        self.recorded
    }

    /// 0xD.0 EDX:EAX: the user components XCR0 may enable.
    pub fn xcr0_supported(&self) -> Xfeatures {
        let r = self.sub[0];
        Xfeatures((r.edx as u64) << 32 | r.eax as u64)
    }

    /// 0xD.0 EBX: the standard-format size for the *current* XCR0 (depends on the OS).
    pub fn standard_size_enabled(&self) -> u32 {
        self.sub[0].ebx
    }

    /// 0xD.0 ECX: the standard-format size with every supportable user component on.
    pub fn standard_size_max(&self) -> u32 {
        self.sub[0].ecx
    }

    /// 0xD.1 EAX: XSAVEOPT, XSAVEC, XGETBV1, XSAVES, XFD.
    pub fn features(&self) -> XsaveFeatures {
        XsaveFeatures(self.sub[1].eax)
    }

    /// 0xD.1 EBX: the compacted size for the current XCR0 | IA32_XSS (0 on CPUs without
    /// compaction).
    pub fn compacted_size_enabled(&self) -> u32 {
        self.sub[1].ebx
    }

    /// 0xD.1 EDX:ECX: the supervisor components IA32_XSS may enable.
    pub fn xss_supported(&self) -> Xfeatures {
        let r = self.sub[1];
        Xfeatures((r.edx as u64) << 32 | r.ecx as u64)
    }

    /// True if 0xD.0 is all zero, which is what a CPU without XSAVE returns.
    pub fn xsave_enumerated(&self) -> bool {
        !self.sub[0].is_zero()
    }

    /// 0xD.i decoded, for a component i in 2..=62 (zero for 0, 1 and 63).
    pub fn component(&self, c: Component) -> ComponentLeaf {
        let i = c.index();
        if i < 2 {
            return ComponentLeaf::default();
        }
        let r = self.sub[i as usize];
        ComponentLeaf {
            size: r.eax,
            offset: r.ebx,
            supervisor: r.ecx & 1 != 0,
            align64: r.ecx & 2 != 0,
            xfd: r.ecx & 4 != 0,
            reserved: (r.edx as u64) << 32 | (r.ecx & !7) as u64,
        }
    }

    /// Iterates the recorded subleaves as `(index, regs)`.
    pub fn iter(&self) -> impl Iterator<Item = (u8, Regs)> + '_ {
        (0..64u8).filter(|&i| self.recorded(i)).map(|i| (i, self.sub[i as usize]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_masks_and_flags() {
        let mut l = Leaf0d::new();
        l.set(0, Regs::new(0x7, 0x340, 0x3C0, 0x4000_0000));
        l.set(1, Regs::new(0x1F, 0x29C0, 0x1800, 0));
        l.set(18, Regs::new(0x2000, 0xB00, 6, 0));
        assert_eq!(l.xcr0_supported(), Xfeatures(0x4000_0000_0000_0007));
        assert_eq!(l.xss_supported(), Xfeatures(0x1800));
        assert!(l.features().xsavec() && l.features().xfd());
        let t = l.component(Component::TILEDATA);
        assert_eq!((t.size, t.offset, t.supervisor, t.align64, t.xfd), (0x2000, 0xB00, false, true, true));
        assert!(l.recorded(18) && !l.recorded(17));
        assert_eq!(
            l.features().names().collect::<alloc::vec::Vec<_>>(),
            ["xsaveopt", "xsavec", "xgetbv1", "xsaves", "xfd"]
        );
    }
}
