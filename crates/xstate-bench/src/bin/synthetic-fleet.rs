//! Writes a synthetic fleet for the fleet-page benchmark: `synthetic-fleet N DIR [SHARED]`.
//!
//! Each of the N hosts is one of the corpus's complete dumps (`SHARED/cpuid/dumps`, default
//! `../shared`) as a VMM would present it: half of them with every feature, the others with a
//! random set of feature groups and XSAVE instruction features masked (as CPU templates do), so
//! the fleet has many more layout classes than the corpus. Each is written as the policy JSON
//! `xstate policy --json` writes (`DIR/host-NNNNN.json`). The choice is a fixed xorshift sequence,
//! so a given N always writes the same fleet.

use std::path::{Path, PathBuf};

use xstate::Xfeatures;
use xstate::cpuid::{self, CpuidData, CpuidFormat};
use xstate::layout::Layout;
use xstate::policy::{Feature, Policy, Selection};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read the dumps folder") {
        let p = e.expect("a folder entry").path();
        if p.is_dir() { files(&p, out) } else { out.push(p) }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|s| s.parse().ok()).expect("usage: synthetic-fleet N DIR [SHARED]");
    let dir = PathBuf::from(args.next().expect("usage: synthetic-fleet N DIR [SHARED]"));
    let shared = PathBuf::from(args.next().unwrap_or_else(|| "../shared".into()));
    let mut paths = Vec::new();
    files(&shared.join("cpuid/dumps"), &mut paths);
    paths.sort();
    let layouts: Vec<Layout> = paths
        .iter()
        .filter_map(|p| cpuid::parse(&std::fs::read_to_string(p).ok()?).ok())
        .filter_map(|d| Layout::from_leaf0d(d.leaf0d()).ok())
        .collect();
    std::fs::create_dir_all(&dir).expect("create DIR");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let optional = [Feature::Avx512, Feature::Pku, Feature::Mpx, Feature::Amx, Feature::Cet, Feature::Pt, Feature::Lwp];
    let instructions = [Feature::Xsaveopt, Feature::Xsaves, Feature::Xgetbv1];
    let mut written = 0;
    while written < n {
        let host = &layouts[(next() % layouts.len() as u64) as usize];
        let mut sel = Selection::all();
        if next() % 2 == 1 {
            for f in optional.iter().chain(&instructions) {
                if next() % 3 == 0 {
                    sel = sel.without(*f);
                }
            }
        }
        // A selection that breaks a dependency on this host is skipped, as a VMM would refuse it.
        let Ok(p) = Policy::derive(host, &sel) else { continue };
        let Ok(leaf) = p.leaf0d(p.xcr0_max(), Xfeatures::EMPTY) else { continue };
        let v = cpuid::to_json_value(&CpuidData::from_leaf0d(CpuidFormat::Json, leaf));
        let text = serde_json::to_string(&v).expect("JSON");
        std::fs::write(dir.join(format!("host-{written:05}.json")), text).expect("write a host");
        written += 1;
    }
    println!("{n} hosts written to {}", dir.display());
}
