//! XSAVE, XSAVEOPT, XSAVEC and XRSTOR executed on buffers, with faults caught.
//!
//! Every operation runs inside one `asm!` block that first saves the calling thread's own
//! extended state (XSAVE, RFBM = XCR0, into a private buffer), then does the requested
//! XRSTOR/XSAVE*, then restores the thread's state. So crafted MXCSR, x87 control words or tile
//! configurations never leak into the Rust code around it, and a fault in the middle (caught by
//! [`crate::fault`]) still ends with the thread's state restored.
//!
//! XSAVES/XRSTORS need CPL 0 and are not available here.

use core::arch::asm;

use xstate::aligned::AlignedBuf;
use xstate::component::legacy::{COMPACTED, MXCSR_MASK, XCOMP_BV, mxcsr_mask_of_field};
use xstate::cpuid::CpuidData;
use xstate::image::ImageBuf;
use xstate::{Layout, LayoutError, Xfeatures};

use crate::cpu;
use crate::fault::{self, COOKIE, Fault};

/// The save instruction to execute after the restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SaveInstr {
    /// XSAVE64: standard format, every RFBM component.
    Xsave,
    /// XSAVEOPT64: standard format with the init (and modified) optimisations.
    Xsaveopt,
    /// XSAVEC64: compacted format, components in use only.
    Xsavec,
}

impl SaveInstr {
    /// The mnemonic.
    pub fn name(self) -> &'static str {
        match self {
            SaveInstr::Xsave => "XSAVE",
            SaveInstr::Xsaveopt => "XSAVEOPT",
            SaveInstr::Xsavec => "XSAVEC",
        }
    }
}

/// Why the running CPU cannot be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum HostError {
    /// CPUID.1:ECX.OSXSAVE is clear: the OS has not enabled XSAVE.
    NoOsxsave,
    /// The CPU's leaf 0xD does not make a layout.
    Layout(LayoutError),
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostError::NoOsxsave => f.write_str("XSAVE is not enabled by the OS (CPUID.1:ECX.OSXSAVE = 0)"),
            HostError::Layout(e) => write!(f, "this CPU's CPUID leaf 0xD: {e}"),
        }
    }
}

impl std::error::Error for HostError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HostError::Layout(e) => Some(e),
            _ => None,
        }
    }
}

/// Why [`Host::xrstor_then_save_into`] did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OperandError {
    /// The output buffer is not 64-byte aligned (the save would raise #GP).
    Misaligned {
        /// Its address.
        addr: usize,
    },
    /// The output buffer is shorter than what the save may write.
    TooShort {
        /// Its length.
        len: usize,
        /// The save's extent on this CPU.
        needed: usize,
    },
    /// The XRSTOR or the save faulted.
    Fault(Fault),
}

impl std::fmt::Display for OperandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OperandError::Misaligned { addr } => write!(f, "save operand at {addr:#x} is not 64-byte aligned"),
            OperandError::TooShort { len, needed } => {
                write!(f, "save operand is {len} bytes, the save may write {needed}")
            }
            OperandError::Fault(x) => std::fmt::Display::fmt(x, f),
        }
    }
}

impl std::error::Error for OperandError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OperandError::Fault(x) => Some(x),
            _ => None,
        }
    }
}

/// The running CPU, read once: its CPUID, layout and XCR0, and the buffer sizes that keep every
/// instruction inside memory we own.
#[derive(Clone, Debug)]
pub struct Host {
    cpuid: CpuidData,
    layout: Layout,
    xcr0: Xfeatures,
    /// Bytes any XSAVE/XSAVEC/XRSTOR with RFBM within XCR0 may touch, plus a margin.
    area: usize,
}

/// Bytes beyond the predicted extent that every buffer carries, so a CPU that writes past what
/// its CPUID says is caught (the sentinel there changes) instead of corrupting memory.
pub const MARGIN: usize = 4096;

impl Host {
    /// Reads CPUID and XCR0 and installs the fault handler.
    pub fn probe() -> Result<Host, HostError> {
        if !cpu::osxsave() {
            return Err(HostError::NoOsxsave);
        }
        let cpuid = cpu::host_cpuid();
        let layout = Layout::from_leaf0d(cpuid.leaf0d()).map_err(HostError::Layout)?;
        let xcr0 = cpu::xcr0().ok_or(HostError::NoOsxsave)?;
        let std = layout.standard_size(xcr0).unwrap_or(0).max(layout.standard_size_max());
        let cmp = layout.compacted_size(xcr0 & layout.user_supported()).unwrap_or(0);
        let reported = cpuid.leaf0d().standard_size_enabled().max(cpuid.leaf0d().compacted_size_enabled());
        let area = (std.max(cmp).max(reported) as usize).next_multiple_of(64) + MARGIN;
        fault::install();
        Ok(Host { cpuid, layout, xcr0, area })
    }

    /// The CPUID leaves read at probe time.
    pub fn cpuid(&self) -> &CpuidData {
        &self.cpuid
    }

    /// The layout from this CPU's leaf 0xD.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// XCR0 at probe time.
    pub fn xcr0(&self) -> Xfeatures {
        self.xcr0
    }

    /// Size of the buffers [`Host::xrstor_then_save`] returns: the largest extent any save can
    /// write, plus [`MARGIN`].
    pub fn area_size(&self) -> usize {
        self.area
    }

    /// True if the CPU enumerates the instruction (CPUID 0xD.1 EAX).
    pub fn has(&self, i: SaveInstr) -> bool {
        let f = self.layout.features();
        match i {
            SaveInstr::Xsave => true,
            SaveInstr::Xsaveopt => f.xsaveopt(),
            SaveInstr::Xsavec => f.xsavec(),
        }
    }

    /// The CPU's MXCSR mask: the MXCSR_MASK field XSAVE writes after restoring an init image,
    /// with 0 read as 0xFFBF (SDM Vol. 1 §11.6.6). Intel parts report 0xFFFF, AMD Zen 4 0x2FFFF.
    pub fn mxcsr_mask(&self) -> Result<u32, Fault> {
        let init = ImageBuf::init(576, Xfeatures::EMPTY);
        let out = self.xrstor_then_save(init.image().bytes(), self.xcr0, SaveInstr::Xsave, self.xcr0, 0)?;
        let field = out.get(MXCSR_MASK..MXCSR_MASK + 4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        Ok(mxcsr_mask_of_field(field))
    }

    /// The image copied into an aligned buffer long enough for any XRSTOR to read (zeros beyond
    /// the image's own bytes).
    fn staged(&self, image: &[u8]) -> AlignedBuf {
        let mut b = AlignedBuf::zeroed(image.len().max(self.area));
        b[..image.len()].copy_from_slice(image);
        b
    }

    /// XRSTOR64 of `image` with RFBM = `rfbm` (the CPU ANDs it with XCR0); the form (standard or
    /// compacted) is the image's XCOMP_BV\[63\]. Bytes past the end of `image` read as zero.
    /// Returns the fault, if XRSTOR raised one; the thread's own state is restored either way.
    pub fn xrstor(&self, image: &[u8], rfbm: Xfeatures) -> Result<(), Fault> {
        let img = self.staged(image);
        let mut scratch = AlignedBuf::zeroed(self.area);
        let mut out = AlignedBuf::zeroed(64);
        // SAFETY: `img` and `scratch` are 64-byte aligned and `self.area` bytes long, which
        // covers the largest standard or compacted extent for any RFBM within XCR0 (from this
        // CPU's own CPUID) plus a margin; `run` with no save instruction does not touch `out`.
        unsafe { run(Op::Restore, scratch.as_mut_ptr(), img.as_ptr(), rfbm.bits(), out.as_mut_ptr(), 0) }
    }

    /// XRSTOR64 of `image` (RFBM = `rfbm`), then `save` with RFBM = `save_rfbm` into a fresh
    /// buffer of [`Host::area_size`] bytes pre-filled with `fill`. Returns that buffer, or the
    /// fault either instruction raised.
    pub fn xrstor_then_save(
        &self,
        image: &[u8],
        rfbm: Xfeatures,
        save: SaveInstr,
        save_rfbm: Xfeatures,
        fill: u8,
    ) -> Result<AlignedBuf, Fault> {
        let img = self.staged(image);
        let mut scratch = AlignedBuf::zeroed(self.area);
        let mut out = AlignedBuf::zeroed(self.area);
        out.fill(fill);
        let op = match save {
            SaveInstr::Xsave => Op::Xsave,
            SaveInstr::Xsaveopt => Op::Xsaveopt,
            SaveInstr::Xsavec => Op::Xsavec,
        };
        // SAFETY: all three buffers are 64-byte aligned and `self.area` bytes long, which covers
        // what XRSTOR may read and what any save with RFBM within XCR0 may write.
        unsafe { run(op, scratch.as_mut_ptr(), img.as_ptr(), rfbm.bits(), out.as_mut_ptr(), save_rfbm.bits())? };
        Ok(out)
    }

    /// XRSTOR64 of `image` (RFBM = `rfbm`), then `save` with RFBM = `save_rfbm` into the
    /// caller's `out`, which must be 64-byte aligned and hold every byte the save may write on
    /// this CPU (standard_size, or for XSAVEC compacted_size, of `save_rfbm` ∩ XCR0); bytes the
    /// save does not write keep their values. Refuses an unsuitable `out` with
    /// [`OperandError`] before executing anything.
    pub fn xrstor_then_save_into(
        &self,
        image: &[u8],
        rfbm: Xfeatures,
        save: SaveInstr,
        save_rfbm: Xfeatures,
        out: &mut [u8],
    ) -> Result<(), OperandError> {
        if !(out.as_ptr() as usize).is_multiple_of(64) {
            return Err(OperandError::Misaligned { addr: out.as_ptr() as usize });
        }
        let m = save_rfbm & self.xcr0;
        let extent = match save {
            SaveInstr::Xsave | SaveInstr::Xsaveopt => self.layout.standard_size(m & self.layout.user_supported()),
            SaveInstr::Xsavec => self.layout.compacted_size(m),
        };
        let needed = (extent.unwrap_or(u32::MAX) as usize).max(576);
        if out.len() < needed {
            return Err(OperandError::TooShort { len: out.len(), needed });
        }
        let img = self.staged(image);
        let mut scratch = AlignedBuf::zeroed(self.area);
        let op = match save {
            SaveInstr::Xsave => Op::Xsave,
            SaveInstr::Xsaveopt => Op::Xsaveopt,
            SaveInstr::Xsavec => Op::Xsavec,
        };
        // SAFETY: `img` and `scratch` are 64-byte aligned and `self.area` bytes long (see
        // `xrstor_then_save`); `out` is 64-byte aligned (checked) and at least as long as the
        // extent this CPU's own leaf 0xD gives for the save's RFBM within XCR0 (checked), which
        // is all the save writes.
        unsafe { run(op, scratch.as_mut_ptr(), img.as_ptr(), rfbm.bits(), out.as_mut_ptr(), save_rfbm.bits()) }
            .map_err(OperandError::Fault)
    }

    /// The CPU as a converter, for benchmarks: XRSTOR64 of `image` (RFBM `rfbm`) followed by
    /// `save` (same RFBM) into one output buffer, `iterations` times, inside a single save/restore
    /// of the thread's own state. The image is first tried once with faults caught; an image the
    /// CPU refuses returns that fault and the loop does not run.
    pub fn restore_save_loop(
        &self,
        image: &[u8],
        rfbm: Xfeatures,
        save: SaveInstr,
        iterations: u64,
    ) -> Result<(), Fault> {
        self.xrstor_then_save(image, rfbm, save, rfbm, 0)?;
        let img = self.staged(image);
        let mut scratch = AlignedBuf::zeroed(self.area);
        let mut out = AlignedBuf::zeroed(self.area);
        let (sp, ip, op, r) = (scratch.as_mut_ptr(), img.as_ptr(), out.as_mut_ptr(), rfbm.bits());
        macro_rules! looped {
            ($save:literal) => {
                // SAFETY: the buffers are 64-byte aligned and `self.area` bytes long (see
                // `xrstor_then_save`); the same image and RFBM just completed without a fault,
                // and XRSTOR/XSAVE* are deterministic for the same input, so the loop cannot
                // fault. The thread's own state is saved first and restored last.
                unsafe {
                    asm!(
                        "mov eax, -1",
                        "mov edx, -1",
                        "xsave64 [{scratch}]",
                        "2:",
                        "mov rax, {r}",
                        "mov rdx, {r}",
                        "shr rdx, 32",
                        "xrstor64 [{img}]",
                        $save,
                        "dec r14",
                        "jnz 2b",
                        "mov eax, -1",
                        "mov edx, -1",
                        "xrstor64 [{scratch}]",
                        scratch = in(reg) sp,
                        img = in(reg) ip,
                        out = in(reg) op,
                        r = in(reg) r,
                        inout("r14") iterations.max(1) => _,
                        out("rax") _,
                        out("rdx") _,
                        clobber_abi("C"),
                    )
                }
            };
        }
        match save {
            SaveInstr::Xsave => looped!("xsave64 [{out}]"),
            SaveInstr::Xsaveopt => looped!("xsaveopt64 [{out}]"),
            SaveInstr::Xsavec => looped!("xsavec64 [{out}]"),
        }
        Ok(())
    }

    /// How many bytes XRSTOR64 of `image` with RFBM = `rfbm` reads: the smallest multiple of 64,
    /// B, such that the instruction completes with everything from B on made inaccessible (a
    /// PROT_NONE page). A fault other than #PF (the image is invalid) is returned as such.
    pub fn xrstor_footprint(&self, image: &[u8], rfbm: Xfeatures) -> Result<usize, Fault> {
        let mut lo = 0usize; // faults (nothing is readable)
        let mut hi = self.area.next_multiple_of(64);
        // First make sure the whole area suffices, and learn about non-#PF faults.
        self.xrstor_guarded(image, rfbm, hi)?;
        while hi - lo > 64 {
            let mid = (lo + hi) / 2 / 64 * 64;
            match self.xrstor_guarded(image, rfbm, mid) {
                Ok(()) => hi = mid,
                Err(f) if f.is_page_fault() => lo = mid,
                Err(f) => return Err(f),
            }
        }
        Ok(hi)
    }

    /// XRSTOR with only the first `readable` bytes of the image accessible.
    fn xrstor_guarded(&self, image: &[u8], rfbm: Xfeatures, readable: usize) -> Result<(), Fault> {
        let page = 4096usize;
        let data_pages = readable.next_multiple_of(page);
        let total = data_pages + page;
        // SAFETY: an anonymous private mapping of `total` bytes that we own until the munmap
        // below; the last page is made PROT_NONE. The image starts `readable` bytes before that
        // page, at a 64-byte aligned address because `readable` is a multiple of 64 and the
        // guard page is page-aligned. Only `readable` bytes are written into it.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert!(base != libc::MAP_FAILED, "mmap failed");
            let guard = (base as *mut u8).add(data_pages);
            assert_eq!(libc::mprotect(guard as *mut libc::c_void, page, libc::PROT_NONE), 0);
            let start = guard.sub(readable);
            let n = readable.min(image.len());
            std::ptr::copy_nonoverlapping(image.as_ptr(), start, n);
            let mut scratch = AlignedBuf::zeroed(self.area);
            let mut out = AlignedBuf::zeroed(64);
            let r = run(Op::Restore, scratch.as_mut_ptr(), start, rfbm.bits(), out.as_mut_ptr(), 0);
            libc::munmap(base, total);
            r
        }
    }

    /// Convenience: XCOMP_BV\[63\] of an image, i.e. the form XRSTOR will use.
    pub fn is_compacted(image: &[u8]) -> bool {
        image
            .get(XCOMP_BV..XCOMP_BV + 8)
            .is_some_and(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) & COMPACTED != 0)
    }
}

#[derive(Clone, Copy)]
enum Op {
    Restore,
    Xsave,
    Xsaveopt,
    Xsavec,
}

/// Saves the thread's state into `scratch`, XRSTOR64s `image` with RFBM `rfbm`, runs the save
/// instruction of `op` into `out` with RFBM `save_rfbm`, and restores the thread's state from
/// `scratch`. A fault in the XRSTOR or the save skips to the final restore.
///
/// # Safety
///
/// `scratch`, `image` and `out` must be 64-byte aligned; `scratch` must hold at least the
/// standard size of XCR0 and have a zero XSAVE header; `image` must be readable for as many
/// bytes as XRSTOR may read, or be followed by memory whose access faults (a guard page);
/// `out` must be writable for as many bytes as the save may write (not touched for
/// `Op::Restore`).
unsafe fn run(
    op: Op,
    scratch: *mut u8,
    image: *const u8,
    rfbm: u64,
    out: *mut u8,
    save_rfbm: u64,
) -> Result<(), Fault> {
    let mut res = [0u64; 3];
    macro_rules! guarded {
        ($save:literal) => {
            // SAFETY: see the function's contract. XSAVE/XRSTOR of `scratch` use RFBM = all ones
            // (i.e. XCR0) and bracket everything else, so the vector, x87, MXCSR and tile state
            // the compiler relies on is as it was when the block ends; `clobber_abi("C")` makes no
            // such assumption anyway. R12/R13 carry the recovery address and cookie for
            // `fault::on_fault`, which resumes at label 2 with RAX/RDX/RSI describing the fault.
            unsafe {
                asm!(
                    "mov eax, -1",
                    "mov edx, -1",
                    "xsave64 [{scratch}]",
                    "lea r12, [rip + 2f]",
                    "mov r13, {cookie}",
                    "mov rax, {rfbm}",
                    "mov rdx, {rfbm}",
                    "shr rdx, 32",
                    "xrstor64 [{image}]",
                    "mov rax, {srfbm}",
                    "mov rdx, {srfbm}",
                    "shr rdx, 32",
                    $save,
                    "xor eax, eax",
                    "xor edx, edx",
                    "xor esi, esi",
                    "2:",
                    "mov [{res}], rax",
                    "mov [{res} + 8], rdx",
                    "mov [{res} + 16], rsi",
                    "xor r13d, r13d",
                    "xor r12d, r12d",
                    "mov eax, -1",
                    "mov edx, -1",
                    "xrstor64 [{scratch}]",
                    scratch = in(reg) scratch,
                    image = in(reg) image,
                    out = in(reg) out,
                    rfbm = in(reg) rfbm,
                    srfbm = in(reg) save_rfbm,
                    res = in(reg) res.as_mut_ptr(),
                    cookie = const COOKIE,
                    out("rax") _,
                    out("rdx") _,
                    out("rsi") _,
                    out("r12") _,
                    out("r13") _,
                    clobber_abi("C"),
                )
            }
        };
    }
    match op {
        Op::Restore => guarded!("/* {out} */"),
        Op::Xsave => guarded!("xsave64 [{out}]"),
        Op::Xsaveopt => guarded!("xsaveopt64 [{out}]"),
        Op::Xsavec => guarded!("xsavec64 [{out}]"),
    }
    if res[0] == 0 { Ok(()) } else { Err(Fault { signal: res[0] as i32, code: res[1] as i32, addr: res[2] }) }
}
