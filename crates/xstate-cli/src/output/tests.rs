//! Properties of the output-path rules over random file-system situations: whatever the path
//! names, a symlink stays the same link, only the file the chain ends at changes (and gets
//! exactly the bytes, keeping its mode), failures change nothing, and no temporary file is left.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::write_output;

/// What a name in the scratch folder is before the write.
#[derive(Clone, Debug)]
enum Entry {
    Missing,
    File {
        mode: u32,
        len: usize,
    },
    Dir,
    /// A symlink to the entry at this index of the chain (relative or absolute).
    Link {
        to: usize,
        relative: bool,
    },
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        Just(Entry::Missing),
        (prop::sample::select(vec![0o600u32, 0o640, 0o644, 0o755, 0o400]), 0usize..64)
            .prop_map(|(mode, len)| Entry::File { mode, len }),
        Just(Entry::Dir),
        (0usize..4, any::<bool>()).prop_map(|(to, relative)| Entry::Link { to, relative }),
    ]
}

/// A snapshot of a folder: name -> (symlink target, or file bytes and mode, or "dir").
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let md = fs::symlink_metadata(&p).unwrap();
        let v = if md.file_type().is_symlink() {
            format!("link {}", fs::read_link(&p).unwrap().display())
        } else if md.is_dir() {
            "dir".to_string()
        } else {
            format!("file {:o} {:?}", md.permissions().mode() & 0o7777, fs::read(&p).unwrap())
        };
        m.insert(e.file_name().to_string_lossy().into_owned(), v);
    }
    m
}

fn scratch(case: u64) -> PathBuf {
    let d = std::env::temp_dir().join(format!("xstate-output-prop-{}-{case}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn output_paths_keep_links_and_change_only_the_end_of_the_chain(
        entries in prop::collection::vec(entry(), 4),
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        case in any::<u64>(),
    ) {
        let d = scratch(case);
        let name = |i: usize| format!("e{i}");
        for (i, e) in entries.iter().enumerate() {
            let p = d.join(name(i));
            match e {
                Entry::Missing => {}
                Entry::File { mode, len } => {
                    fs::write(&p, vec![0x5A; *len]).unwrap();
                    fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
                }
                Entry::Dir => fs::create_dir(&p).unwrap(),
                Entry::Link { to, relative } => {
                    if *relative { symlink(name(*to), &p).unwrap() } else { symlink(d.join(name(*to)), &p).unwrap() }
                }
            }
        }
        // Where the chain from e0 ends, by the model.
        let mut at = 0;
        let mut seen = vec![false; entries.len()];
        let end = loop {
            if seen[at] { break None; } // a loop
            seen[at] = true;
            match &entries[at] {
                Entry::Link { to, .. } => at = *to,
                Entry::Dir => break None,
                other => break Some((at, other.clone())),
            }
        };
        let before = snapshot(&d);
        let result = write_output(&d.join(name(0)), &bytes);
        let after = snapshot(&d);
        match end {
            None => {
                prop_assert!(result.is_err());
                prop_assert_eq!(&before, &after, "a failed write changed the folder");
            }
            Some((i, e)) => {
                prop_assert!(result.is_ok(), "{:?}", result.err().map(|e| e.message));
                let mode = match e { Entry::File { mode, .. } => Some(mode), _ => None };
                for (k, v) in &after {
                    if *k == name(i) {
                        let md = fs::metadata(d.join(k)).unwrap();
                        prop_assert_eq!(fs::read(d.join(k)).unwrap(), bytes.clone());
                        if let Some(m) = mode { prop_assert_eq!(md.permissions().mode() & 0o7777, m); }
                    } else {
                        prop_assert_eq!(Some(v), before.get(k), "{} changed or appeared", k);
                    }
                }
                prop_assert!(after.len() == before.len() + usize::from(mode.is_none()), "{:?}", after.keys());
            }
        }
        fs::remove_dir_all(&d).unwrap();
    }
}
