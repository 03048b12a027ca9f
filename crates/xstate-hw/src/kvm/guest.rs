//! A tiny real guest: a few instructions of 64-bit code that move vector and opmask registers
//! between guest memory and the registers, then exit to the host with `OUT 0x80`.
//!
//! The guest runs in long mode at CPL 3 (IOPL 3, so the OUT is a KVM_EXIT_IO rather than a #GP)
//! with the first 2 MiB identity-mapped by one user-accessible 2 MiB page. CPL 3 because the KVM
//! of this project's machines is `kvm_pvm`, which runs guest supervisor code through an
//! instruction emulator that cannot execute VEX/EVEX instructions ("INTERNAL_ERROR in batch
//! emul"); guest user code runs natively there, and equally under VMX/SVM. Its code is assembled
//! into this crate by `global_asm!` and copied into guest memory, so no hand-encoded bytes are
//! involved. Each routine takes nothing and uses RAX as its base:
//!
//! | routine | effect |
//! |---|---|
//! | `Routine::LoadAvx` | YMM0-15 := 32-byte blocks at [`LOAD_DATA`] |
//! | `Routine::StoreAvx` | 32-byte blocks at [`STORE_DATA`] := YMM0-15 |
//! | `Routine::LoadAvx512` | ZMM0-31 := 64-byte blocks at [`LOAD_DATA`], k0-7 := 8-byte blocks after them |
//! | `Routine::StoreAvx512` | the reverse, at [`STORE_DATA`] |
//!
//! The host decides what the guest may use through its CPUID (KVM_SET_CPUID2) and XCR0
//! (KVM_SET_XCRS); CR4.OSXSAVE is set so the guest can use what XCR0 enables.

use std::io;

use kvm_bindings::{kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::VcpuExit;
use xstate::cpuid::CpuidData;
use xstate::{Component, Layout, Xfeatures};

use super::{KvmSystem, Vcpu};

/// Guest memory size: 2 MiB at guest-physical 0.
pub const MEM_SIZE: usize = 2 << 20;
/// Where the guest code is copied.
pub const CODE: u64 = 0x8000;
/// Where the load routines read their values.
pub const LOAD_DATA: u64 = 0x10000;
/// Where the store routines write the registers.
pub const STORE_DATA: u64 = 0x20000;
/// Bytes of data the AVX-512 routines move: 32 ZMM x 64 + 8 opmask x 8.
pub const AVX512_DATA: usize = 32 * 64 + 8 * 8;
/// Bytes of data the AVX routines move: 16 YMM x 32.
pub const AVX_DATA: usize = 16 * 32;

const PML4: u64 = 0x1000;
const PDPT: u64 = 0x2000;
const PD: u64 = 0x3000;

core::arch::global_asm!(
    ".pushsection .text.xstate_guest,\"ax\",@progbits",
    ".globl xstate_guest_load_avx",
    "xstate_guest_load_avx:",
    "mov eax, 0x10000",
    ".irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15",
    "vmovdqu ymm\\i, [rax + \\i*32]",
    ".endr",
    "out 0x80, al",
    ".globl xstate_guest_store_avx",
    "xstate_guest_store_avx:",
    "mov eax, 0x20000",
    ".irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15",
    "vmovdqu [rax + \\i*32], ymm\\i",
    ".endr",
    "out 0x80, al",
    ".globl xstate_guest_load_avx512",
    "xstate_guest_load_avx512:",
    "mov eax, 0x10000",
    ".irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    "vmovdqu64 zmm\\i, [rax + \\i*64]",
    ".endr",
    ".irp i,0,1,2,3,4,5,6,7",
    "kmovq k\\i, [rax + 2048 + \\i*8]",
    ".endr",
    "out 0x80, al",
    ".globl xstate_guest_store_avx512",
    "xstate_guest_store_avx512:",
    "mov eax, 0x20000",
    ".irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    "vmovdqu64 [rax + \\i*64], zmm\\i",
    ".endr",
    ".irp i,0,1,2,3,4,5,6,7",
    "kmovq [rax + 2048 + \\i*8], k\\i",
    ".endr",
    "out 0x80, al",
    ".globl xstate_guest_end",
    "xstate_guest_end:",
    ".popsection",
);

unsafe extern "C" {
    static xstate_guest_load_avx: u8;
    static xstate_guest_store_avx: u8;
    static xstate_guest_load_avx512: u8;
    static xstate_guest_store_avx512: u8;
    static xstate_guest_end: u8;
}

/// One of the guest's routines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routine {
    /// YMM0-15 from [`LOAD_DATA`].
    LoadAvx,
    /// YMM0-15 to [`STORE_DATA`].
    StoreAvx,
    /// ZMM0-31 and k0-7 from [`LOAD_DATA`].
    LoadAvx512,
    /// ZMM0-31 and k0-7 to [`STORE_DATA`].
    StoreAvx512,
}

/// The guest code bytes and each routine's offset in them.
fn code() -> (&'static [u8], [usize; 4]) {
    // SAFETY: the symbols are defined by the global_asm! above, in one section, in this order;
    // we only take their addresses and read the bytes between the first and the end label,
    // which are mapped (executable code is readable).
    unsafe {
        let start = &raw const xstate_guest_load_avx;
        let end = &raw const xstate_guest_end;
        let len = end as usize - start as usize;
        let off = |p: *const u8| p as usize - start as usize;
        (
            std::slice::from_raw_parts(start, len),
            [
                0,
                off(&raw const xstate_guest_store_avx),
                off(&raw const xstate_guest_load_avx512),
                off(&raw const xstate_guest_store_avx512),
            ],
        )
    }
}

/// Guest memory: an anonymous mapping registered as slot 0.
struct Memory {
    ptr: *mut u8,
}

impl Memory {
    fn new() -> io::Result<Memory> {
        // SAFETY: anonymous private mapping of MEM_SIZE bytes, owned by this struct until drop.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MEM_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Memory { ptr: p as *mut u8 })
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is MEM_SIZE bytes, readable and writable, and lives as long as self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, MEM_SIZE) }
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping.
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, MEM_SIZE);
        }
    }
}

/// A VM with one vCPU in 64-bit mode, guest memory holding the routines.
pub struct Guest {
    vcpu: Vcpu,
    mem: Memory,
    offsets: [usize; 4],
}

impl Guest {
    /// Creates the VM, applies `cpuid` (KVM_SET_CPUID2) and `xcr0` (KVM_SET_XCRS), maps memory,
    /// builds the page tables and enters long mode.
    pub fn new(kvm: &KvmSystem, cpuid: &CpuidData, xcr0: Xfeatures) -> io::Result<Guest> {
        let mut vcpu = kvm.create_vcpu()?;
        vcpu.set_cpuid(cpuid)?;
        vcpu.set_xcr0(xcr0)?;
        let mut mem = Memory::new()?;
        let (code, offsets) = code();
        {
            let m = mem.bytes();
            m[CODE as usize..CODE as usize + code.len()].copy_from_slice(code);
            let put = |m: &mut [u8], at: u64, v: u64| m[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
            // Present, writable, user, accessed (and dirty, PS for the 2 MiB page).
            put(m, PML4, PDPT | 0x67);
            put(m, PDPT, PD | 0x67);
            put(m, PD, 0xE7);
        }
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: MEM_SIZE as u64,
            userspace_addr: mem.ptr as u64,
        };
        let (vm, fd) = vcpu.raw();
        // SAFETY: the region describes `mem`, which outlives the VM (both are owned by `Guest`,
        // and `vcpu`, which owns the VM, is dropped before `mem`: fields drop in declaration order).
        unsafe { vm.set_user_memory_region(region) }.map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        let mut sregs = fd.get_sregs().map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        let code_seg = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: 0x1b,
            type_: 0xb,
            present: 1,
            dpl: 3,
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            ..Default::default()
        };
        let data_seg = kvm_segment { selector: 0x23, type_: 0x3, l: 0, db: 1, ..code_seg };
        sregs.cs = code_seg;
        sregs.ds = data_seg;
        sregs.es = data_seg;
        sregs.fs = data_seg;
        sregs.gs = data_seg;
        sregs.ss = data_seg;
        sregs.cr3 = PML4;
        // CR4: PAE (5), OSFXSR (9), OSXMMEXCPT (10), OSXSAVE (18).
        sregs.cr4 = 1 << 5 | 1 << 9 | 1 << 10 | 1 << 18;
        // CR0: PE, MP, ET, NE, WP, PG.
        sregs.cr0 = 0x8005_0033;
        // EFER: LME, LMA.
        sregs.efer = 0x500;
        fd.set_sregs(&sregs).map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        Ok(Guest { vcpu, mem, offsets })
    }

    /// The vCPU, for XSAVE and XCR access.
    pub fn vcpu(&self) -> &Vcpu {
        &self.vcpu
    }

    /// Guest memory.
    pub fn memory(&mut self) -> &mut [u8] {
        self.mem.bytes()
    }

    /// Runs `r` from its first instruction to its final `OUT 0x80`.
    pub fn run(&mut self, r: Routine) -> io::Result<()> {
        let idx = match r {
            Routine::LoadAvx => 0,
            Routine::StoreAvx => 1,
            Routine::LoadAvx512 => 2,
            Routine::StoreAvx512 => 3,
        };
        let (_, fd) = self.vcpu.raw();
        let mut regs = fd.get_regs().map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        regs.rip = CODE + self.offsets[idx] as u64;
        regs.rsp = 0x7000;
        // IOPL 3, so the routine's final OUT exits to the host instead of faulting.
        regs.rflags = 0x3002;
        fd.set_regs(&regs).map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        loop {
            match fd.run() {
                Ok(VcpuExit::IoOut(0x80, _)) => return Ok(()),
                Ok(VcpuExit::Intr) => continue,
                Ok(other) => {
                    let mut desc = format!("{other:?}");
                    if desc == "InternalError" {
                        // SAFETY: after KVM_EXIT_INTERNAL_ERROR the `internal` member of the run
                        // structure's exit union is the one KVM filled in.
                        let i = unsafe { fd.get_kvm_run().__bindgen_anon_1.internal };
                        desc = format!(
                            "InternalError (suberror {}, data {:x?})",
                            i.suberror,
                            &i.data[..(i.ndata as usize).min(16)]
                        );
                    }
                    let rip = fd.get_regs().map(|r| r.rip).unwrap_or(0);
                    return Err(io::Error::other(format!("guest {r:?} stopped with {desc} at rip {rip:#x}")));
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
                Err(e) => return Err(io::Error::from_raw_os_error(e.errno())),
            }
        }
    }
}

/// The register values a routine moves, laid out as in guest memory (ZMM/YMM i at `width * i`,
/// then k0-7), written into a standard image at `layout`'s offsets: XMM in the legacy region,
/// the upper YMM halves in AVX, ZMM_Hi256 and Hi16_ZMM, opmask. `avx512` selects the ZMM/k form.
/// Returns false if the layout lacks a component the form needs or `image` is too short.
pub fn write_registers(layout: &Layout, image: &mut [u8], data: &[u8], avx512: bool) -> bool {
    let off = |c: Component| layout.geometry(c).map(|g| g.offset as usize);
    let (n, w) = if avx512 { (32, 64) } else { (16, 32) };
    let (Some(avx), zh, hz, k) =
        (off(Component::AVX), off(Component::ZMM_HI256), off(Component::HI16_ZMM), off(Component::OPMASK))
    else {
        return false;
    };
    if avx512 && (zh.is_none() || hz.is_none() || k.is_none()) {
        return false;
    }
    let need = if avx512 { n * w + 64 } else { n * w };
    // The image need only be the standard size of the components written: KVM's buffer is sized
    // by the guest permission (4096 bytes without AMX), not by this host's largest layout.
    let end = layout.standard_size(Xfeatures(if avx512 { 0xE7 } else { 0x7 }));
    if data.len() < need || end.is_none_or(|e| image.len() < e as usize) {
        return false;
    }
    for i in 0..n {
        let r = &data[w * i..w * i + w];
        if i < 16 {
            image[160 + 16 * i..176 + 16 * i].copy_from_slice(&r[..16]);
            image[avx + 16 * i..avx + 16 * i + 16].copy_from_slice(&r[16..32]);
            if let (true, Some(z)) = (avx512, zh) {
                image[z + 32 * i..z + 32 * i + 32].copy_from_slice(&r[32..64]);
            }
        } else if let Some(z) = hz {
            image[z + 64 * (i - 16)..z + 64 * (i - 16) + 64].copy_from_slice(r);
        }
    }
    if let (true, Some(k)) = (avx512, k) {
        image[k..k + 64].copy_from_slice(&data[n * w..n * w + 64]);
    }
    true
}
