//! The extended-state notes of an x86-64 Linux ELF core dump, read with the `object` crate
//! (Linux `fs/binfmt_elf.c`, `arch/x86/kernel/fpu/xstate.c`): per thread an NT_PRSTATUS (name "CORE", `pr_pid` at byte 32) followed by
//! that thread's NT_X86_XSTATE (name "LINUX", type 0x202); once per process, on Linux 6.12+,
//! NT_X86_XSAVE_LAYOUT (type 0x205). gdb's `gcore` writes the same notes but no layout note.
//!
//! Only the framing is read here; [`super::linux::NtXstate`] and [`super::linux::LayoutNote`]
//! check the contents against a layout.

use alloc::vec::Vec;

use object::LittleEndian;
use object::elf::{FileHeader64, PT_NOTE};
use object::read::elf::{FileHeader, ProgramHeader};

use super::linux::{NT_X86_XSAVE_LAYOUT, NT_X86_XSTATE};
use super::{Detail, Format, RecordError, Rule};

const ET_CORE: u16 = 4;
const EM_X86_64: u16 = 62;
const NT_PRSTATUS: u32 = 1;
const PR_PID: usize = 32;

/// One thread's extended state in a core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadXstate<'a> {
    /// The thread id from the preceding NT_PRSTATUS, if there was one.
    pub tid: Option<u32>,
    /// The NT_X86_XSTATE descriptor.
    pub xstate: &'a [u8],
}

/// The extended-state notes of a core.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoreNotes<'a> {
    /// Every thread's NT_X86_XSTATE, in note order (the dumping thread first).
    pub threads: Vec<ThreadXstate<'a>>,
    /// The NT_X86_XSAVE_LAYOUT descriptor, if the kernel wrote one.
    pub layout: Option<&'a [u8]>,
}

fn elf_error(_: object::Error) -> RecordError {
    RecordError::new(
        Format::ElfCore,
        Rule::Unrecognised,
        None,
        Detail::Text("not a well-formed 64-bit little-endian ELF file"),
    )
}

/// Reads the notes of a little-endian x86-64 ELF core (`ET_CORE`, `EM_X86_64`).
pub fn read_core(data: &[u8]) -> Result<CoreNotes<'_>, RecordError> {
    let f = Format::ElfCore;
    let header = FileHeader64::<LittleEndian>::parse(data).map_err(elf_error)?;
    let endian = header.endian().map_err(elf_error)?;
    for (off, field, found, want) in [
        (16, "e_type (ET_CORE)", header.e_type(endian).0, ET_CORE),
        (18, "e_machine (EM_X86_64)", header.e_machine(endian).0, EM_X86_64),
    ] {
        if found != want {
            return Err(RecordError::value(f, Rule::TypeCode, off, field, found.into(), want.into()));
        }
    }
    let mut out = CoreNotes::default();
    let mut tid = None;
    for ph in header.program_headers(endian, data).map_err(elf_error)? {
        if ph.p_type(endian) != PT_NOTE {
            continue;
        }
        let Some(mut notes) = ph.notes(endian, data).map_err(elf_error)? else { continue };
        while let Some(note) = notes.next().map_err(elf_error)? {
            let ty = note.n_type(endian).0;
            match (note.name(), ty) {
                (b"CORE", NT_PRSTATUS) => {
                    tid = super::le::u32_at(note.desc(), PR_PID);
                }
                (b"LINUX", NT_X86_XSTATE) => out.threads.push(ThreadXstate { tid, xstate: note.desc() }),
                (b"LINUX", NT_X86_XSAVE_LAYOUT) => out.layout = Some(note.desc()),
                _ => {}
            }
        }
    }
    Ok(out)
}

/// The padding of a PT_NOTE's notes: the descriptor and the next note start on a multiple of
/// `p_align` from the note's start, 8 where `p_align` is 8, else 4 (what `object` reads).
fn note_align(p_align: u64) -> usize {
    if p_align == 8 { 8 } else { 4 }
}

/// A copy of the core `data` whose notes are `replace`d: `replace(name, type, desc)` gives a
/// new descriptor or `None` to keep the note as it is. Each PT_NOTE segment with a changed note
/// is written anew at the end of the file (8-byte aligned) and its program header pointed
/// there (`p_offset`, `p_filesz`); every other byte stays where it was, so the memory segments
/// and their offsets are untouched. A core without a changed note comes back unchanged.
pub fn rewrite_notes(
    data: &[u8],
    mut replace: impl FnMut(&[u8], u32, &[u8]) -> Result<Option<Vec<u8>>, RecordError>,
) -> Result<Vec<u8>, RecordError> {
    let header = FileHeader64::<LittleEndian>::parse(data).map_err(elf_error)?;
    let endian = header.endian().map_err(elf_error)?;
    read_core(data)?;
    let phoff = header.e_phoff(endian) as usize;
    let phentsize = usize::from(header.e_phentsize(endian));
    let mut out = data.to_vec();
    for (i, ph) in header.program_headers(endian, data).map_err(elf_error)?.iter().enumerate() {
        if ph.p_type(endian) != PT_NOTE {
            continue;
        }
        let Some(mut notes) = ph.notes(endian, data).map_err(elf_error)? else { continue };
        let a = note_align(ph.p_align(endian));
        let pad = |seg: &mut Vec<u8>, start: usize| seg.resize(start + (seg.len() - start).div_ceil(a) * a, 0);
        let mut seg = Vec::new();
        let mut changed = false;
        while let Some(note) = notes.next().map_err(elf_error)? {
            let (name, ty, desc) = (note.name(), note.n_type(endian).0, note.desc());
            let new = replace(name, ty, desc)?;
            changed |= new.is_some();
            let desc = new.as_deref().unwrap_or(desc);
            // The name as the file has it: with its NUL (n_namesz counts it).
            let name_bytes = note.name_bytes();
            let start = seg.len();
            seg.extend_from_slice(&(name_bytes.len() as u32).to_le_bytes());
            seg.extend_from_slice(&(desc.len() as u32).to_le_bytes());
            seg.extend_from_slice(&ty.to_le_bytes());
            seg.extend_from_slice(name_bytes);
            pad(&mut seg, start);
            seg.extend_from_slice(desc);
            pad(&mut seg, start);
        }
        if !changed {
            continue;
        }
        out.resize(out.len().div_ceil(8) * 8, 0);
        let at = out.len() as u64;
        out.extend_from_slice(&seg);
        // Elf64_Phdr: p_type, p_flags (u32), p_offset (u64 at 8), p_vaddr, p_paddr, p_filesz (at 32).
        let h = phoff + i * phentsize;
        out[h + 8..h + 16].copy_from_slice(&at.to_le_bytes());
        out[h + 32..h + 40].copy_from_slice(&(seg.len() as u64).to_le_bytes());
    }
    Ok(out)
}
