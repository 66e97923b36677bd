use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::*;

fn meta(mtime: i64) -> FileMeta {
    FileMeta {
        mode: 0o100644,
        mtime,
        uid: 1001,
        gid: 1001,
    }
}

fn replica(dir: &str, id: u64, gs: u64) -> Record {
    Record::Replica(Replica {
        dir: dir.to_string(),
        id,
        genstamp: gs,
        len: 1024 + id % 3000,
        meta_len: 7 + 4 * (1024 + id % 3000).div_ceil(512),
        meta: meta(1_765_000_000 + (id % 97) as i64),
        meta_file: meta(1_765_000_000 + (id % 97) as i64),
        unit: *blake3::hash(&id.to_le_bytes()).as_bytes(),
    })
}

/// A test-bed-like leaf directory: `BP/current/finalized/subdirX/subdirY`.
fn leaf(x: u64, y: u64) -> String {
    format!("BP-1-127.0.0.1-1/current/finalized/subdir{x}/subdir{y}")
}

fn sorted(mut v: Vec<Record>) -> Vec<Record> {
    v.sort_by(|a, b| a.key().cmp(&b.key()));
    v
}

#[test]
fn every_kind_round_trips() {
    let ops = vec![
        Op::Put(Record::Dir {
            path: "a".into(),
            meta: meta(5),
        }),
        Op::Put(Record::File {
            path: "a/f".into(),
            meta: FileMeta {
                mode: 0o100600,
                ..meta(-3)
            },
            size: 10 << 20,
            content: Content::Units(vec![[1; 32], [2; 32]]),
        }),
        Op::Put(Record::File {
            path: "a/g".into(),
            meta: meta(7),
            size: 3,
            content: Content::Legacy {
                chunks: vec![[3; 32]],
                hash: [4; 32],
            },
        }),
        Op::Put(Record::File {
            path: "a/h".into(),
            meta: meta(7),
            size: 0,
            content: Content::Units(vec![]),
        }),
        Op::Put(Record::Symlink {
            path: "a/l".into(),
            target: "../x".into(),
            meta: FileMeta { uid: 0, ..meta(1) },
        }),
        Op::Put(Record::Replica(Replica {
            meta_file: FileMeta { gid: 5, ..meta(99) },
            ..match replica("b/c", 1_073_741_825, 1001) {
                Record::Replica(r) => r,
                _ => unreachable!(),
            }
        })),
        Op::Put(replica("b/c", 1_073_741_826, 1002)),
    ];
    let page = encode_page(&ops, false);
    assert_eq!(decode_page(&page, false).unwrap(), ops);
    let mut layer = ops.clone();
    layer.push(Op::Delete("b/d".into()));
    let bytes = encode_page(&layer, true);
    assert_eq!(decode_page(&bytes, true).unwrap(), layer);
    assert!(decode_page(&bytes, false).is_err(), "a layer is not a page");
    // Every truncation is detected.
    for n in 0..page.len() {
        assert!(decode_page(&page[..n], false).is_err(), "truncated at {n}");
    }
}

#[test]
fn damage_names_the_record_offset() {
    let ops = vec![
        Op::Put(replica("d", 5, 1)),
        Op::Put(replica("d", 6, 1)),
        Op::Put(replica("d", 7, 1)),
    ];
    let page = encode_page(&ops, false);
    // Swap the order: records 2 and 3 have the same length, so swapping the id deltas of
    // the last record makes it go backwards.
    let mut bad = ops.clone();
    bad.swap(1, 2);
    let bytes = encode_page(&bad, false);
    let e = decode_page(&bytes, false).unwrap_err();
    assert!(e.what.contains("out of order"), "{e}");
    assert!(e.offset > 10 && e.offset < bytes.len(), "{e}");
    // A path escaping its stream.
    let esc = encode_page(
        &[Op::Put(Record::Dir {
            path: "../x".into(),
            meta: meta(0),
        })],
        false,
    );
    assert!(decode_page(&esc, false).is_err());
    assert_eq!(decode_page(&page, false).unwrap(), ops);
}

#[test]
fn a_replica_costs_under_fifty_bytes_in_a_test_bed_leaf() {
    // 256 blocks of one leaf directory, sequential ids and genstamps, as a datanode lays out.
    let dir = leaf(0, 3);
    let ops: Vec<Op> = (0..256u64)
        .map(|i| Op::Put(replica(&dir, 1_073_742_592 + i, 1001 + i)))
        .collect();
    let page = encode_page(&ops, false);
    let per = page.len() as f64 / 256.0;
    let compressed = zstd::bulk::compress(&page, 3).unwrap().len() as f64 / 256.0;
    assert!(per < 50.0, "{per} bytes per replica");
    assert!(
        compressed < 50.0,
        "{compressed} bytes per replica compressed"
    );
}

#[test]
fn pages_follow_leaf_directories() {
    let mut pager = Pager::default();
    let mut pages = Vec::new();
    for y in 0..4 {
        for i in 0..256u64 {
            let id = (y << 8) + i + 1_073_741_824;
            if let Some(p) = pager.push(Op::Put(replica(&leaf(0, y), id, 1000 + id))) {
                pages.push(p);
            }
        }
    }
    pages.extend(pager.finish());
    assert_eq!(pages.len(), 4, "one page per leaf of 256");
    assert!(pages.iter().all(|p| p.len() == 256));
    // Small directories group; a large one is cut at PAGE_MAX.
    let mut pager = Pager::default();
    let mut sizes = Vec::new();
    for d in 0..200u64 {
        for i in 0..5u64 {
            if let Some(p) = pager.push(Op::Put(replica(&format!("s{d:04}"), d * 10 + i, 1))) {
                sizes.push(p.len());
            }
        }
    }
    for i in 0..10_000u64 {
        if let Some(p) = pager.push(Op::Put(replica("t", 100_000 + i, 1))) {
            sizes.push(p.len());
        }
    }
    sizes.extend(pager.finish().map(|p| p.len()));
    assert!(sizes.iter().all(|&n| n <= PAGE_MAX), "{sizes:?}");
    assert!(sizes.iter().any(|&n| n < PAGE_TARGET + 5), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 11_000);
}

/// Stores pages in a map; builds a base or a layer from records/ops.
#[derive(Default)]
struct Store(HashMap<Id, Vec<u8>>);

impl Store {
    fn put(&mut self, plain: Vec<u8>) -> Id {
        let id = *blake3::hash(&plain).as_bytes();
        self.0.insert(id, plain);
        id
    }
    fn pages(&mut self, ops: Vec<Op>, layer: bool) -> Vec<Id> {
        let mut pager = Pager::default();
        let mut out = Vec::new();
        for op in ops {
            if let Some(p) = pager.push(op) {
                out.push(self.put(encode_page(&p, layer)));
            }
        }
        if let Some(p) = pager.finish() {
            out.push(self.put(encode_page(&p, layer)));
        }
        out
    }
    fn read(&self, base: &[Id], layers: &[Vec<Id>]) -> Vec<Record> {
        Merged::new(base.to_vec(), layers.to_vec(), |id: &Id| {
            self.0.get(id).cloned().ok_or("missing")
        })
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
    }
}

fn arb_record() -> impl Strategy<Value = Record> {
    (0u64..3, 0u64..40, 0u64..4, 0u8..3).prop_map(|(d, id, gs, kind)| match kind {
        0 => replica(&format!("dir{d}"), id, gs),
        1 => Record::File {
            path: format!("dir{d}/f{id}"),
            meta: meta(gs as i64),
            size: id,
            content: Content::Units(vec![[gs as u8; 32]]),
        },
        _ => Record::Dir {
            path: format!("dir{d}/sub{id}"),
            meta: meta(gs as i64),
        },
    })
}

fn model(records: &[Record]) -> BTreeMap<String, Record> {
    records
        .iter()
        .map(|r| (r.key().into_owned(), r.clone()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A base and layers made by the differ read back as each backup's records.
    #[test]
    fn layers_read_back_as_each_backup(backups in prop::collection::vec(prop::collection::vec(arb_record(), 0..60), 1..5)) {
        let mut store = Store::default();
        let first: Vec<Record> = model(&backups[0]).into_values().collect();
        let base = store.pages(first.iter().cloned().map(Op::Put).collect(), false);
        prop_assert_eq!(store.read(&base, &[]), first);
        let mut layers: Vec<Vec<Id>> = Vec::new();
        for b in &backups[1..] {
            let new: Vec<Record> = model(b).into_values().collect();
            let old = store.read(&base, &layers);
            let mut ops = Vec::new();
            let mut differ = Differ::new(old.into_iter().map(Ok::<_, ()>));
            for r in new.iter().cloned() {
                differ.push(r, &mut ops).unwrap();
            }
            differ.finish(&mut ops).unwrap();
            layers.push(store.pages(ops, true));
            prop_assert_eq!(store.read(&base, &layers), new);
        }
    }
}

#[test]
fn one_percent_churn_costs_about_one_percent() {
    let mut store = Store::default();
    let mut records = Vec::new();
    for y in 0..40u64 {
        for i in 0..256u64 {
            let id = (y << 8) + i + 1_073_741_824;
            records.push(replica(&leaf(0, y), id, 1000 + id));
        }
    }
    let records = sorted(records);
    let base = store.pages(records.iter().cloned().map(Op::Put).collect(), false);
    let base_bytes: usize = base.iter().map(|p| store.0[p].len()).sum();
    // 1 % of the blocks deleted at random places, as many new ones appended.
    let mut new: Vec<Record> = records
        .iter()
        .enumerate()
        .filter(|(i, _)| (i * 7919) % 100 != 3)
        .map(|(_, r)| r.clone())
        .collect();
    let gone = records.len() - new.len();
    for i in 0..gone as u64 {
        let id = (40 << 8) + i + 1_073_741_824;
        new.push(replica(&leaf(0, 40), id, 1000 + id));
    }
    let new = sorted(new);
    let mut ops = Vec::new();
    let mut differ = Differ::new(store.read(&base, &[]).into_iter().map(Ok::<_, ()>));
    for r in new.iter().cloned() {
        differ.push(r, &mut ops).unwrap();
    }
    differ.finish(&mut ops).unwrap();
    assert_eq!(ops.len(), 2 * gone);
    let layer = store.pages(ops, true);
    let layer_bytes: usize = layer.iter().map(|p| store.0[p].len()).sum();
    let ratio = layer_bytes as f64 / base_bytes as f64;
    assert!(ratio < 0.03, "layer is {ratio:.4} of the base");
    assert_eq!(store.read(&base, &[layer]), new);
}

#[test]
fn a_missing_or_damaged_page_stops_the_read_naming_it() {
    let mut store = Store::default();
    let records: Vec<Record> = (0..300u64).map(|i| replica("d", 1000 + i, 1)).collect();
    let base = store.pages(records.iter().cloned().map(Op::Put).collect(), false);
    assert!(!base.is_empty());
    let victim = *base.last().unwrap();
    let plain = store.0.get_mut(&victim).unwrap();
    let n = plain.len();
    plain.truncate(n - 3);
    let got: Vec<_> = Merged::new(base.clone(), vec![], |id: &Id| {
        store.0.get(id).cloned().ok_or("missing")
    })
    .collect();
    let err = got.iter().find_map(|r| r.as_ref().err()).expect("an error");
    assert!(
        err.to_string()
            .contains(&blake3::Hash::from_bytes(victim).to_hex().to_string()),
        "{err}"
    );
    assert!(got.last().unwrap().is_err(), "nothing after the error");
}

#[test]
fn roots_round_trip() {
    let pages = vec![(256, [1; 32]), (3, [2; 32])];
    let bytes = encode_root(&pages);
    assert_eq!(decode_root(&bytes).unwrap(), pages);
    assert!(decode_root(&bytes[..bytes.len() - 1]).is_err());
}

#[test]
fn replica_names_parse_only_as_hopsfs_writes_them() {
    assert_eq!(
        Replica::parse_names("blk_1073741825", "blk_1073741825_1001.meta"),
        Some((1073741825, 1001))
    );
    assert_eq!(Replica::parse_names("blk_0", "blk_0_0.meta"), Some((0, 0)));
    for (block, meta) in [
        ("blk_01", "blk_01_5.meta"), // leading zero
        ("blk_+1", "blk_+1_5.meta"), // sign
        ("blk_1", "blk_1_05.meta"),  // leading zero in the genstamp
        ("blk_1", "blk_1_+5.meta"),  // sign in the genstamp
        ("blk_1", "blk_2_5.meta"),   // another block's checksum file
        ("blk_1", "blk_12_5.meta"),  // a longer id that starts alike
        ("blk_1", "blk_1_5.met"),    // not a checksum file
        ("blk_1", "blk_1_.meta"),    // no genstamp
        ("blk_", "blk__5.meta"),     // no id
        (
            "blk_18446744073709551616",
            "blk_18446744073709551616_1.meta",
        ), // overflow
        ("blk_1x", "blk_1x_5.meta"),
    ] {
        assert_eq!(Replica::parse_names(block, meta), None, "{block} {meta}");
    }
    let (b, m) = Replica::names(42, 7);
    assert_eq!(Replica::parse_names(&b, &m), Some((42, 7)));
}
