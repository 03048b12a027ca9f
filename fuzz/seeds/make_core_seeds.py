#!/usr/bin/env python3
"""Writes small x86-64 ELF core files as fuzz seeds for record_core and record_read.

Without a seed the fuzzer rarely builds a well-formed ELF core with notes, so the note and
register code behind `read_core` goes unexercised. Each seed is one PT_NOTE segment holding, per
thread, NT_PRSTATUS ("CORE", pr_pid at byte 32) then NT_X86_XSTATE ("LINUX", 0x202: a standard
image with XCR0 at byte 464), and optionally NT_X86_XSAVE_LAYOUT ("LINUX", 0x205: 16 bytes per
extended user component, {feature, size, offset, flags = 0}), as Linux writes them (see
docs/FORMATS.md). The record_core target takes one selector byte before the core; it is
written first.

usage: make_core_seeds.py OUTDIR
"""
import os
import struct
import sys

XCR0 = 0xE7  # x87, SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM
# (feature, size, offset) for the extended components of XCR0 0xe7.
INTEL = [(2, 256, 0x240), (5, 64, 0x440), (6, 512, 0x480), (7, 1024, 0x680)]  # 2688 bytes
AMD_ZEN4 = [(2, 256, 0x240), (5, 64, 0x340), (6, 512, 0x380), (7, 1024, 0x580)]  # 2432 bytes


def note(name, ntype, desc):
    n = name + b"\0"
    pad = lambda b: b + b"\0" * (-len(b) % 4)
    return struct.pack("<III", len(n), len(desc), ntype) + pad(n) + pad(desc)


def image(layout, seed):
    size = max(off + sz for _, sz, off in layout)
    img = bytearray(size)
    struct.pack_into("<H", img, 0, 0x037F)  # FCW
    struct.pack_into("<II", img, 24, 0x1F80, 0xFFFF)  # MXCSR, MXCSR_MASK
    for i in range(160, 416):  # XMM0-15
        img[i] = (i * 7 + seed) & 0xFF
    struct.pack_into("<Q", img, 464, XCR0)  # the kernel's sw_reserved: XCR0
    struct.pack_into("<Q", img, 512, XCR0)  # XSTATE_BV
    for _, sz, off in layout:
        for i in range(off, off + sz):
            img[i] = (i * 13 + seed) & 0xFF
    return bytes(img)


def core(layout, threads, with_layout_note):
    notes = b""
    for t in range(threads):
        prstatus = bytearray(336)
        struct.pack_into("<I", prstatus, 32, 1000 + t)
        notes += note(b"CORE", 1, bytes(prstatus))
        notes += note(b"LINUX", 0x202, image(layout, t))
    if with_layout_note:
        notes += note(b"LINUX", 0x205, b"".join(struct.pack("<IIII", f, s, o, 0) for f, s, o in layout))
    ehdr_size, phdr_size = 64, 56
    ehdr = b"\x7fELF" + bytes([2, 1, 1]) + b"\0" * 9
    ehdr += struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, ehdr_size, 0, 0, ehdr_size, phdr_size, 1, 64, 0, 0)
    off = ehdr_size + phdr_size
    phdr = struct.pack("<IIQQQQQQ", 4, 0, off, 0, 0, len(notes), 0, 4)  # PT_NOTE
    return ehdr + phdr + notes


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    seeds = {
        # selector byte: 0 Skylake-SP, 1 Zen 4, 2 the AMX guest (record_core's fixture choice)
        "intel-layout-note": (0, core(INTEL, 1, True)),
        "zen4-layout-note": (1, core(AMD_ZEN4, 1, True)),
        "intel-no-layout-note": (0, core(INTEL, 1, False)),
        "zen4-no-layout-note-2-threads": (1, core(AMD_ZEN4, 2, False)),
    }
    for name, (sel, data) in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(bytes([sel]) + data)


if __name__ == "__main__":
    main()
