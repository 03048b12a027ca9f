#!/usr/bin/env python3
"""Seeds for the qemu, cloud_hypervisor and firecracker fuzz targets, from ../shared/fixtures.

    make_vmm_seeds.py TARGET OUTDIR

qemu: each fixture stream cut down to what the walker must understand: the header, the
configuration, the RAM section's block list (its page records dropped), commands, the device
sections up to and including the cpu section (kvmclock's, which tells KVM, where present), EOF and a vmdesc describing just those devices,
prefixed with the selector byte. cloud_hypervisor and firecracker: the fixture file prefixed
with selector bytes.
"""
import json, os, struct, sys

target, out = sys.argv[1], sys.argv[2]
here = os.path.dirname(os.path.abspath(__file__))
shared = os.environ.get("XSTATE_SHARED") or os.path.join(here, "..", "..", "..", "shared")
fix = os.path.join(shared, "fixtures")
os.makedirs(out, exist_ok=True)


def cut_qemu(d):
    L = len(d)
    p = next(p for p in range(L - 1, 5, -1) if d[p] == 0x7B and d[p - 5] == 6 and struct.unpack(">I", d[p - 4:p])[0] == L - p)
    vm = json.loads(d[p:])
    ps = vm["page_size"]
    pos = 8
    keep = [d[:8]]

    def be(n):
        nonlocal pos
        v = int.from_bytes(d[pos:pos + n], "big")
        pos += n
        return v

    def walk(desc):
        nonlocal pos
        for f in desc.get("fields", []):
            pos += f.get("array_len", 1) * f["size"]
        for s in desc.get("subsections", []):
            pos += 2 + d[pos + 1] + 4
            walk(s)

    def ram():
        nonlocal pos
        while True:
            h = be(8)
            fl = h & (ps - 1)
            if fl & 0x04:
                total = h & ~(ps - 1)
                while total:
                    l = d[pos]
                    pos += 1 + l
                    total -= be(8)
                continue
            if fl & 0x10:
                return
            if fl & 0x200:
                continue
            if not fl & 0x20:
                pos += 1 + d[pos]
            pos += 1 if fl & 0x02 else ps

    last = b"kvmclock" if any(x["name"] == "kvmclock" for x in vm["devices"]) else b"cpu"
    devices = iter(vm["devices"])
    kept = []
    while True:
        start = pos
        t = d[pos]
        pos += 1
        if t == 7:
            walk(vm["configuration"])
            keep.append(d[start:pos])
        elif t == 8:
            be(2)
            n = be(2)
            pos += n
            keep.append(d[start:pos])
        elif t in (1, 4):
            be(4)
            name = bytes(d[pos + 1:pos + 1 + d[pos]])
            pos += 1 + d[pos] + 8
            if name == b"ram":
                ram()
            else:
                dev = next(devices)
                walk(dev)
                kept.append(dev)
            pos += 5
            keep.append(d[start:pos])
            if name == last:
                break
        elif t in (2, 3):
            be(4)
            ram()
            pos += 5
        else:
            raise SystemExit(f"unexpected section type {t}")
    vm["devices"] = kept
    text = json.dumps(vm).encode()
    return b"".join(keep) + b"\x00\x06" + struct.pack(">I", len(text)) + text


if target == "qemu":
    for name in ("kvm64u.mig", "tcg64u.mig"):
        src = os.path.join(fix, "qemu", name)
        if os.path.isfile(src):
            s = cut_qemu(open(src, "rb").read())
            for sel in (0x04, 0x12):
                open(os.path.join(out, f"{name}-{sel:02x}"), "wb").write(bytes([sel]) + s)
elif target == "cloud_hypervisor":
    src = os.path.join(fix, "cloud-hypervisor", "state.json")
    if os.path.isfile(src):
        open(os.path.join(out, "state.json"), "wb").write(b"\x24" + open(src, "rb").read())
elif target == "firecracker":
    src = os.path.join(fix, "firecracker", "vmstate")
    if os.path.isfile(src):
        open(os.path.join(out, "vmstate"), "wb").write(b"\x24\x01" + open(src, "rb").read())
    # The bincode-era fixtures (Firecracker v1.14.4, one and two vCPUs) are in the repository:
    # the structural path.
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "crates", "xstate", "tests",
                        "fixtures", "firecracker-v1.14")
    for name in ["vmstate", "vmstate-2vcpu"]:
        src = os.path.join(here, name)
        if os.path.isfile(src):
            open(os.path.join(out, name + "-bincode"), "wb").write(b"\x24\x01" + open(src, "rb").read())
    # The two-vCPU bitcode fixture (Firecracker v1.16.1): content location across vCPUs.
    src = os.path.join(here, "..", "firecracker-v1.16", "vmstate-2vcpu")
    if os.path.isfile(src):
        open(os.path.join(out, "vmstate-2vcpu-bitcode"), "wb").write(b"\x24\x01" + open(src, "rb").read())
