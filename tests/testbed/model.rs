//! The cluster model: creation from a seed, HopsFS blocks and volumes, fingerprint, destroy,
//! redeploy, churn.

use crate::state::{Cluster, Config, Runtime, TOOLS};
use anyhow::{bail, Context, Result};
use rusqlite::{params, Connection};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const FIRST_BLOCK_ID: u64 = 1_073_741_825;
pub const FIRST_GENSTAMP: u64 = 1001;
pub const FIRST_INODE: u64 = 100_000;

pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(mix(seed))
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The data node owning a row: a node's backup holds only its rows.
pub fn owner(cfg: &Config, tbl: &str, pk: u64) -> u32 {
    let h = tbl
        .bytes()
        .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64));
    (mix(pk ^ h) % cfg.data_nodes as u64) as u32 + 1
}

pub fn insert_row(
    db: &Connection,
    cfg: &Config,
    d: &str,
    t: &str,
    pk: u64,
    val: &str,
) -> Result<()> {
    db.prepare_cached(
        "INSERT OR REPLACE INTO ndb_rows(db, tbl, pk, node, val) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![d, t, pk as i64, owner(cfg, t, pk), val])?;
    Ok(())
}

pub fn table_exists(db: &Connection, d: &str, t: &str) -> Result<bool> {
    let n: i64 = db.query_row(
        "SELECT count(*) FROM ndb_tables WHERE db = ?1 AND tbl = ?2",
        params![d, t],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

/// A block of the HopsFS metadata (`hops.hdfs_blocks`).
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    pub id: u64,
    pub inode: u64,
    pub genstamp: u64,
    pub len: u64,
    pub replicas: Vec<u32>,
}

impl Block {
    pub fn val(&self) -> String {
        let r: Vec<String> = self.replicas.iter().map(|d| d.to_string()).collect();
        format!(
            "{} {} {} {}",
            self.inode,
            self.genstamp,
            self.len,
            r.join(",")
        )
    }
    pub fn parse(id: u64, val: &str) -> Option<Block> {
        let mut it = val.split(' ');
        let inode = it.next()?.parse().ok()?;
        let genstamp = it.next()?.parse().ok()?;
        let len = it.next()?.parse().ok()?;
        let replicas = it
            .next()
            .unwrap_or("")
            .split(',')
            .filter_map(|s| s.parse().ok())
            .collect();
        Some(Block {
            id,
            inode,
            genstamp,
            len,
            replicas,
        })
    }
}

/// The HopsFS metadata as restored in RonDB, if its tables exist.
pub struct HdfsMeta {
    pub cluster_id: String,
    pub block_pool_id: String,
    pub blocks: Vec<Block>,
    pub inodes: BTreeMap<u64, String>,
}

pub fn hdfs_meta(db: &Connection) -> Result<Option<HdfsMeta>> {
    for t in ["hdfs_variables", "hdfs_blocks", "hdfs_inodes"] {
        if !table_exists(db, "hops", t)? {
            return Ok(None);
        }
    }
    let mut vars = HashMap::new();
    let mut st =
        db.prepare("SELECT val FROM ndb_rows WHERE db = 'hops' AND tbl = 'hdfs_variables'")?;
    for v in st.query_map([], |r| r.get::<_, String>(0))? {
        let v = v?;
        if let Some((k, x)) = v.split_once('=') {
            vars.insert(k.to_string(), x.to_string());
        }
    }
    let (Some(cluster_id), Some(block_pool_id)) =
        (vars.remove("clusterID"), vars.remove("blockpoolID"))
    else {
        return Ok(None);
    };
    let mut blocks = Vec::new();
    let mut st = db.prepare(
        "SELECT pk, val FROM ndb_rows WHERE db = 'hops' AND tbl = 'hdfs_blocks' ORDER BY pk",
    )?;
    for r in st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))? {
        let (pk, val) = r?;
        if let Some(b) = Block::parse(pk as u64, &val) {
            blocks.push(b);
        }
    }
    let mut inodes = BTreeMap::new();
    let mut st =
        db.prepare("SELECT pk, val FROM ndb_rows WHERE db = 'hops' AND tbl = 'hdfs_inodes'")?;
    for r in st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))? {
        let (pk, val) = r?;
        inodes.insert(pk as u64, val.split(' ').next().unwrap_or("").to_string());
    }
    Ok(Some(HdfsMeta {
        cluster_id,
        block_pool_id,
        blocks,
        inodes,
    }))
}

/// The bytes of a block: a function of (seed, block id, generation stamp) and its length.
pub fn block_content(seed: u64, id: u64, gs: u64, len: u64) -> Vec<u8> {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let mut h = blake3::Hasher::new_keyed(&key);
    h.update(&id.to_le_bytes());
    h.update(&gs.to_le_bytes());
    let mut buf = vec![0u8; len as usize];
    h.finalize_xof().fill(&mut buf);
    buf
}

/// `.meta` file as a HopsFS datanode writes it (BlockMetadataHeader): version 1 (big-endian
/// short), checksum type 2 (CRC32C), 512 bytes per checksum (big-endian int), then the
/// big-endian CRC32C of every 512-byte chunk of the block, the last one partial.
pub fn meta_content(data: &[u8]) -> Vec<u8> {
    const BYTES_PER_CHECKSUM: usize = 512;
    let mut m = vec![0, 1, 2];
    m.extend_from_slice(&(BYTES_PER_CHECKSUM as u32).to_be_bytes());
    for chunk in data.chunks(BYTES_PER_CHECKSUM) {
        let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, chunk) as u32;
        m.extend_from_slice(&crc.to_be_bytes());
    }
    m
}

pub fn subdirs(id: u64) -> String {
    format!("subdir{}/subdir{}", (id >> 16) & 0xff, (id >> 8) & 0xff)
}

pub fn vol_of(cfg: &Config, id: u64) -> u32 {
    (id % cfg.volumes.max(1) as u64) as u32 + 1
}

pub fn bp_current(cl: &Cluster, dn: u32, vol: u32, bpid: &str) -> PathBuf {
    cl.volume(dn, vol)
        .join("current")
        .join(bpid)
        .join("current")
}

pub fn write_replica(cl: &Cluster, dn: u32, b: &Block, data: &[u8], rbw: bool) -> Result<()> {
    let bp = bp_current(cl, dn, vol_of(&cl.cfg, b.id), &cl.cfg.block_pool_id);
    let dir = if rbw {
        bp.join("rbw")
    } else {
        bp.join("finalized").join(subdirs(b.id))
    };
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("blk_{}", b.id)), data)?;
    std::fs::write(
        dir.join(format!("blk_{}_{}.meta", b.id, b.genstamp)),
        meta_content(data),
    )?;
    Ok(())
}

/// Removes every replica file of block `id` (finalized or rbw, any genstamp) from datanode `dn`.
pub fn remove_replica(cl: &Cluster, dn: u32, id: u64) -> Result<()> {
    let bp = bp_current(cl, dn, vol_of(&cl.cfg, id), &cl.cfg.block_pool_id);
    for dir in [bp.join("finalized").join(subdirs(id)), bp.join("rbw")] {
        remove_block_files(&dir, id)?;
    }
    Ok(())
}

/// Removes `blk_<id>` and every `blk_<id>_<genstamp>.meta` from directory `d`.
pub fn remove_block_files(d: &Path, id: u64) -> Result<()> {
    let Ok(rd) = std::fs::read_dir(d) else {
        return Ok(());
    };
    let exact = format!("blk_{id}");
    let prefix = format!("blk_{id}_");
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n == exact || (n.starts_with(&prefix) && n.ends_with(".meta")) {
            std::fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

fn props(p: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            l.split_once('=')
                .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
        })
        .collect()
}

fn uuid(rng: &mut Rng) -> String {
    let a = rng.next();
    let b = rng.next();
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// Writes a fresh volume: `current/VERSION` and the block pool's VERSION, `finalized/`, `rbw/`.
pub fn format_volume(cl: &Cluster, dn: u32, vol: u32, cluster_id: &str, bpid: &str) -> Result<()> {
    let mut rng = Rng::new(cl.cfg.seed ^ ((dn as u64) << 20) ^ vol as u64);
    let cur = cl.volume(dn, vol).join("current");
    std::fs::create_dir_all(&cur)?;
    let node_uuid = uuid(&mut rng);
    std::fs::write(
        cur.join("VERSION"),
        format!(
            "#Wed Nov 25 21:00:00 UTC 2026\nstorageID=DS-{}\nclusterID={cluster_id}\ncTime=0\ndatanodeUuid={node_uuid}\nstorageType=DATA_NODE\nlayoutVersion=-57\n",
            uuid(&mut rng)
        ),
    )?;
    let bp = cur.join(bpid).join("current");
    std::fs::create_dir_all(bp.join("finalized"))?;
    std::fs::create_dir_all(bp.join("rbw"))?;
    std::fs::write(
        bp.join("VERSION"),
        format!(
            "#Wed Nov 25 21:00:00 UTC 2026\nnamespaceID={}\ncTime=0\nblockpoolID={bpid}\nlayoutVersion=-57\n",
            cl.cfg.namespace_id
        ),
    )?;
    Ok(())
}

/// Whether volume `vol` of datanode `dn` belongs to the cluster and block pool of the metadata.
pub fn volume_matches(cl: &Cluster, dn: u32, vol: u32, cluster_id: &str, bpid: &str) -> bool {
    let cur = cl.volume(dn, vol).join("current");
    let v = props(&cur.join("VERSION"));
    let b = props(&cur.join(bpid).join("current").join("VERSION"));
    v.get("clusterID").map(String::as_str) == Some(cluster_id)
        && v.get("storageType").map(String::as_str) == Some("DATA_NODE")
        && b.get("blockpoolID").map(String::as_str) == Some(bpid)
}

/// The replica file of block `b` on datanode `dn` if it has the right length and genstamp
/// (finalized, or rbw after an append), in any volume of the metadata's cluster and block pool
/// (a datanode scans all its volumes: a restore onto another volume layout is found too).
/// `matches` caches volume_matches per (dn, vol).
pub fn replica_file(
    cl: &Cluster,
    meta: &HdfsMeta,
    dn: u32,
    b: &Block,
    matches: &mut HashMap<(u32, u32), bool>,
) -> Option<PathBuf> {
    let first = vol_of(&cl.cfg, b.id);
    let vols = std::iter::once(first).chain((1..=cl.cfg.volumes).filter(|v| *v != first));
    for vol in vols {
        let ok = *matches
            .entry((dn, vol))
            .or_insert_with(|| volume_matches(cl, dn, vol, &meta.cluster_id, &meta.block_pool_id));
        if !ok {
            continue;
        }
        let bp = bp_current(cl, dn, vol, &meta.block_pool_id);
        for dir in [bp.join("finalized").join(subdirs(b.id)), bp.join("rbw")] {
            let f = dir.join(format!("blk_{}", b.id));
            let m = dir.join(format!("blk_{}_{}.meta", b.id, b.genstamp));
            if let (Ok(md), true) = (std::fs::metadata(&f), m.exists()) {
                if md.len() == b.len {
                    return Some(f);
                }
            }
        }
    }
    None
}

pub struct CreateArgs {
    pub dir: PathBuf,
    pub data_nodes: u32,
    pub hopsfs_datanodes: u32,
    pub volumes: u32,
    pub rows: u64,
    pub files: u64,
    pub block_size: u64,
    pub replication: Option<u32>,
    pub seed: u64,
    pub multi_part: u32,
    pub compressed: bool,
    pub safemode_poll_ms: u64,
    pub safemode_extension_ms: u64,
    pub replication_interval_ms: u64,
    pub api_slots: u32,
    pub binlog: bool,
    pub wildcard_addresses: bool,
}

pub fn create(a: CreateArgs) -> Result<()> {
    if a.dir.join("cluster.json").exists() {
        bail!(
            "failed to create cluster: '{}' already holds one",
            a.dir.display()
        );
    }
    if a.data_nodes == 0 || a.data_nodes > 48 || a.hopsfs_datanodes == 0 {
        bail!("failed to create cluster: need 1..48 data nodes and at least one datanode");
    }
    if a.replication
        .is_some_and(|r| r == 0 || r > a.hopsfs_datanodes)
    {
        bail!("failed to create cluster: replication must be 1 to the number of datanodes");
    }
    let mut rng = Rng::new(a.seed);
    let ns = (rng.next() % 2_000_000_000) as u32;
    let cfg = Config {
        seed: a.seed,
        data_nodes: a.data_nodes,
        hopsfs_datanodes: a.hopsfs_datanodes,
        volumes: a.volumes.max(1),
        rows: a.rows,
        files: a.files,
        block_size: a.block_size.max(2),
        replication: a.replication,
        multi_part: a.multi_part,
        compressed: a.compressed,
        mgm_node_id: 65,
        mgm_ip: "10.0.0.1".into(),
        mgm_port: 1186,
        version: "22.10.3".into(),
        cluster_id: format!("CID-{}", uuid(&mut rng)),
        block_pool_id: format!(
            "BP-{}-10.0.0.1-{}",
            rng.next() % 2_000_000_000,
            1_700_000_000_000 + rng.next() % 100_000_000_000
        ),
        namespace_id: ns,
        safemode_poll_ms: a.safemode_poll_ms,
        safemode_extension_ms: a.safemode_extension_ms,
        replication_interval_ms: a.replication_interval_ms.max(1),
        api_slots: a.api_slots,
        binlog: a.binlog,
        wildcard_addresses: a.wildcard_addresses,
    };
    let rt = Runtime {
        gcp: 6_738_000,
        next_block_id: FIRST_BLOCK_ID,
        next_inode: FIRST_INODE,
        next_genstamp: FIRST_GENSTAMP,
        next_row: 1,
        ..Runtime::default()
    };
    let dir = std::fs::canonicalize({
        std::fs::create_dir_all(&a.dir)?;
        &a.dir
    })?;
    let mut cl = Cluster::new_locked(&dir, cfg, rt)?;
    // bin/: the tools.
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let exe = std::env::current_exe()?;
    for t in TOOLS {
        let l = bin.join(t);
        let _ = std::fs::remove_file(&l);
        std::os::unix::fs::symlink(&exe, &l)?;
    }
    std::fs::write(bin.join("testbed.dir"), format!("{}\n", dir.display()))?;
    deploy(&mut cl, false)?;
    populate(&mut cl)?;
    cl.save()
}

/// A new deployment's HopsFS ids: the cluster's own for the first, fresh ones for every
/// redeployment (the namenode is formatted anew).
fn deployment_ids(cl: &Cluster) -> (String, String, u32) {
    let c = &cl.cfg;
    if cl.rt.deployments <= 1 {
        return (
            c.cluster_id.clone(),
            c.block_pool_id.clone(),
            c.namespace_id,
        );
    }
    let mut rng = Rng::new(c.seed ^ 0xde91 ^ (cl.rt.deployments << 32));
    let cid = format!("CID-{}", uuid(&mut rng));
    let bp = format!(
        "BP-{}-{}-{}",
        rng.next() % 2_000_000_000,
        c.mgm_ip,
        1_700_000_000_000 + rng.next() % 100_000_000_000
    );
    (cid, bp, (rng.next() % 2_000_000_000) as u32)
}

/// A deployment of the cluster after `wipe`. `empty`: RonDB holds nothing, the HopsFS
/// datanodes are stopped with empty volumes (the test-bed's old redeploy). Otherwise what the
/// Hopsworks recipes leave: the Hopsworks schemas and disk-data objects in RonDB, the namenode
/// formatted (new cluster and block pool ids in `hops.hdfs_variables`), the datanodes started
/// with volumes formatted for it. In both the MySQL server and the NDB API services run.
pub fn deploy(cl: &mut Cluster, empty: bool) -> Result<()> {
    wipe(cl)?;
    cl.rt.deployments += 1;
    for n in 1..=cl.cfg.data_nodes {
        std::fs::create_dir_all(cl.backup_data_dir(n))?;
    }
    for dn in 1..=cl.cfg.hopsfs_datanodes {
        for v in 1..=cl.cfg.volumes {
            std::fs::create_dir_all(cl.volume(dn, v))?;
        }
    }
    let db = cl.db()?;
    if !empty {
        let (cid, bp, ns) = deployment_ids(cl);
        let cfg = cl.cfg.clone();
        crate::hopsworks::create_schemas(&db)?;
        for (pk, v) in [
            format!("clusterID={cid}"),
            format!("blockpoolID={bp}"),
            format!("namespaceID={ns}"),
        ]
        .iter()
        .enumerate()
        {
            insert_row(&db, &cfg, "hops", "hdfs_variables", pk as u64 + 1, v)?;
        }
        insert_row(
            &db,
            &cfg,
            "metastore",
            "DBS",
            1,
            "default hopsfs:///apps/hive/warehouse",
        )?;
        for dn in 1..=cfg.hopsfs_datanodes {
            for v in 1..=cfg.volumes {
                format_volume(cl, dn, v, &cid, &bp)?;
            }
        }
        cl.rt.dn_started = (1..=cfg.hopsfs_datanodes).collect();
    }
    drop(db);
    crate::hopsworks::start_all(cl)?;
    cl.save()
}

/// The lost cluster: RonDB state, backups on the nodes, volumes, topics, indexes all gone, no
/// service runs, no API slot is held.
pub fn wipe(cl: &mut Cluster) -> Result<()> {
    for f in ["rondb.sqlite", "rondb.sqlite-wal", "rondb.sqlite-shm"] {
        let _ = std::fs::remove_file(cl.dir.join(f));
    }
    for d in ["ndb", "hopsfs", "epipe"] {
        let p = cl.dir.join(d);
        if p.exists() {
            std::fs::remove_dir_all(&p)
                .with_context(|| format!("failed to remove '{}'", p.display()))?;
        }
    }
    crate::api::clear(&cl.dir)?;
    let keep = Runtime {
        gcp: cl.rt.gcp,
        next_block_id: cl.rt.next_block_id,
        next_inode: cl.rt.next_inode,
        next_genstamp: cl.rt.next_genstamp,
        next_row: cl.rt.next_row,
        deployments: cl.rt.deployments,
        mysqld_restarts: cl.rt.mysqld_restarts,
        ..Runtime::default()
    };
    cl.rt = keep;
    cl.save()
}

fn populate(cl: &mut Cluster) -> Result<()> {
    let cfg = cl.cfg.clone();
    let mut db = cl.db()?;
    let tx = db.transaction()?;
    crate::hopsworks::create_table(&tx, &crate::hopsworks::FEATURE_STORE)?;
    let mut rng = Rng::new(cfg.seed ^ 0x5eed);
    for pk in 1..=cfg.rows {
        let v = format!("ev-{pk}-{:016x}{:016x}", rng.next(), rng.next());
        insert_row(&tx, &cfg, "app", "events", pk, &v)?;
    }
    cl.rt.next_row = cfg.rows + 1;
    let projects = 3u64;
    for p in 1..=projects {
        insert_row(&tx, &cfg, "hopsworks", "project", p, &format!("proj{p}"))?;
        let v = format!("proj{p}_logs {} 1", 1 + p % 3);
        insert_row(&tx, &cfg, "hopsworks", "project_topics", p, &v)?;
        cl.rt
            .kafka_topics
            .insert(format!("proj{p}_logs"), ((1 + p % 3) as u32, 1));
        insert_row(
            &tx,
            &cfg,
            "metastore",
            "DBS",
            1 + p,
            &format!("proj{p}_featurestore hopsfs:///apps/hive/warehouse/proj{p}.db"),
        )?;
    }
    for i in 0..cfg.files {
        new_file(
            cl,
            &tx,
            &mut rng,
            &format!("/Projects/proj{}/f{i}", 1 + i % projects),
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Creates a file of one block: metadata rows and the replicas on `replication` datanodes.
pub fn new_file(cl: &mut Cluster, db: &Connection, rng: &mut Rng, path: &str) -> Result<Block> {
    let cfg = cl.cfg.clone();
    let inode = cl.rt.next_inode;
    cl.rt.next_inode += 1;
    let id = cl.rt.next_block_id;
    cl.rt.next_block_id += 1;
    let gs = cl.rt.next_genstamp;
    cl.rt.next_genstamp += 1;
    let half = cfg.block_size / 2;
    let len = half + rng.below(cfg.block_size - half + 1);
    let m = cfg.hopsfs_datanodes as u64;
    let first = rng.below(m);
    let replicas: Vec<u32> = (0..cfg.replication() as u64)
        .map(|k| ((first + k) % m) as u32 + 1)
        .collect();
    let b = Block {
        id,
        inode,
        genstamp: gs,
        len,
        replicas,
    };
    insert_row(
        db,
        &cfg,
        "hops",
        "hdfs_inodes",
        inode,
        &format!("{path} parent={}", 1 + inode % 7),
    )?;
    insert_row(db, &cfg, "hops", "hdfs_blocks", id, &b.val())?;
    let data = block_content(cfg.seed, id, gs, len);
    for dn in &b.replicas {
        write_replica(cl, *dn, &b, &data, false)?;
    }
    Ok(b)
}

/// Each row of `sql` as one line: `<word> <column> <column> ...`.
pub fn rows_as_lines(db: &Connection, sql: &str, word: &str) -> Result<Vec<String>> {
    use rusqlite::types::ValueRef;
    let mut st = db.prepare(sql)?;
    let n = st.column_count();
    let rows = st.query_map([], |r| {
        let mut l = word.to_string();
        for i in 0..n {
            l.push(' ');
            match r.get_ref(i)? {
                ValueRef::Integer(x) => l.push_str(&x.to_string()),
                ValueRef::Text(t) => l.push_str(&String::from_utf8_lossy(t)),
                ValueRef::Real(f) => l.push_str(&f.to_string()),
                ValueRef::Null => l.push_str("NULL"),
                ValueRef::Blob(b) => l.push_str(&format!("{b:?}")),
            }
        }
        Ok(l)
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// One hex digest of all logical state.
pub fn fingerprint(cl: &Cluster) -> Result<String> {
    let db = cl.db()?;
    let mut h = blake3::Hasher::new();
    for (sql, word) in [
        ("SELECT db, tbl FROM ndb_tables ORDER BY db, tbl", "table"),
        (
            "SELECT db, tbl, name, online, uniq FROM ndb_indexes ORDER BY db, tbl, name",
            "index",
        ),
        (
            "SELECT db, tbl, name, parent_db, parent_tbl FROM ndb_fks ORDER BY db, tbl, name",
            "fk",
        ),
        (
            "SELECT kind, name FROM ndb_disk_objects ORDER BY name",
            "disk",
        ),
    ] {
        for l in rows_as_lines(&db, sql, word)? {
            h.update(l.as_bytes());
            h.update(b"\n");
        }
    }
    // Rows without their data node: the logical content, whatever the number of data nodes.
    let mut st = db.prepare("SELECT db, tbl, pk, val FROM ndb_rows ORDER BY db, tbl, pk")?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        h.update(
            format!(
                "row {}.{} {} {}\n",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?
            )
            .as_bytes(),
        );
    }
    for (t, (p, r)) in &cl.rt.kafka_topics {
        h.update(format!("topic {t} {p} {r}\n").as_bytes());
    }
    if let Some(meta) = hdfs_meta(&db)? {
        let mut matches = HashMap::new();
        for b in &meta.blocks {
            let data = block_content(cl.cfg.seed, b.id, b.genstamp, b.len);
            let mut good = 0;
            for dn in 1..=cl.cfg.hopsfs_datanodes {
                if let Some(f) = replica_file(cl, &meta, dn, b, &mut matches) {
                    if std::fs::read(&f).map(|x| x == data).unwrap_or(false) {
                        good += 1;
                    }
                }
            }
            h.update(format!("block {} {} {} {good}\n", b.id, b.genstamp, b.len).as_bytes());
        }
    }
    Ok(h.finalize().to_hex().to_string())
}

/// Changes exactly `blocks` distinct blocks at once, in one transaction, a third each (in turn):
/// a new file of one block, a deleted file (its replicas removed at once, as the datanodes do
/// once the namenode's invalidation reaches them) and an append (the block moved to rbw/ with a
/// new genstamp and a longer length). What a benchmark needs for an exact "1 % churn"; `churn`
/// is the slow, lifelike one.
pub fn churn_blocks(dir: &Path, blocks: u64) -> Result<()> {
    let mut cl = Cluster::open(dir)?;
    let cfg = cl.cfg.clone();
    let db = cl.db()?;
    let Some(meta) = hdfs_meta(&db)? else {
        anyhow::bail!(
            "cluster churn --blocks: the cluster has no HopsFS metadata (hops.hdfs_blocks)"
        );
    };
    let existing = meta.blocks.len() as u64;
    let changed_existing = blocks - blocks / 3 - u64::from(blocks % 3 > 0);
    if changed_existing > existing {
        anyhow::bail!(
            "cluster churn --blocks {blocks}: only {existing} blocks exist; ask for at most {}",
            existing * 3 / 2
        );
    }
    let mut rng = Rng::new(cfg.seed ^ 0xb10c ^ cl.rt.next_block_id);
    let mut picked = std::collections::HashSet::new();
    let mut order = Vec::new();
    while (order.len() as u64) < changed_existing {
        let i = rng.below(existing) as usize;
        if picked.insert(i) {
            order.push(i);
        }
    }
    let mut existing_picks = order.into_iter();
    db.execute_batch("BEGIN")?;
    for k in 0..blocks {
        match k % 3 {
            0 => {
                let path = format!("/Projects/churn/f{}", cl.rt.next_inode);
                new_file(&mut cl, &db, &mut rng, &path)?;
            }
            1 => {
                let b = &meta.blocks[existing_picks.next().expect("counted above")];
                db.execute(
                    "DELETE FROM ndb_rows WHERE db='hops' AND tbl='hdfs_blocks' AND pk=?1",
                    params![b.id as i64],
                )?;
                db.execute(
                    "DELETE FROM ndb_rows WHERE db='hops' AND tbl='hdfs_inodes' AND pk=?1",
                    params![b.inode as i64],
                )?;
                for dn in &b.replicas {
                    remove_replica(&cl, *dn, b.id)?;
                }
            }
            _ => {
                let mut b = meta.blocks[existing_picks.next().expect("counted above")].clone();
                for dn in &b.replicas {
                    remove_replica(&cl, *dn, b.id)?;
                }
                b.genstamp = cl.rt.next_genstamp;
                cl.rt.next_genstamp += 1;
                b.len += 1 + rng.below(cfg.block_size / 4 + 1);
                let data = block_content(cfg.seed, b.id, b.genstamp, b.len);
                for dn in &b.replicas {
                    write_replica(&cl, *dn, &b, &data, true)?;
                }
                insert_row(&db, &cfg, "hops", "hdfs_blocks", b.id, &b.val())?;
            }
        }
    }
    db.execute_batch("COMMIT")?;
    cl.save()?;
    Ok(())
}

/// Keeps changing the cluster for `seconds`: inserts rows, creates files, deletes files (block
/// files removed 2 s after the metadata), appends (block to rbw/ with a new genstamp).
pub fn churn(dir: &Path, seconds: f64) -> Result<()> {
    let start = Instant::now();
    let mut pending: Vec<(Instant, Vec<u32>, u64)> = Vec::new();
    let mut n = 0u64;
    loop {
        let now = Instant::now();
        let running = now.duration_since(start).as_secs_f64() < seconds;
        if !running && pending.is_empty() {
            break;
        }
        {
            let mut cl = Cluster::open(dir)?;
            let cfg = cl.cfg.clone();
            let mut rng = Rng::new(cfg.seed ^ 0xc4u64 ^ cl.rt.next_row.wrapping_mul(7919) ^ n);
            n += 1;
            let (due, later): (Vec<_>, Vec<_>) = pending.drain(..).partition(|p| p.0 <= now);
            pending = later;
            for (_, dns, id) in due {
                for dn in dns {
                    remove_replica(&cl, dn, id)?;
                }
            }
            if running {
                let db = cl.db()?;
                if table_exists(&db, "app", "events")? {
                    for _ in 0..5 {
                        let pk = cl.rt.next_row;
                        cl.rt.next_row += 1;
                        insert_row(
                            &db,
                            &cfg,
                            "app",
                            "events",
                            pk,
                            &format!("ev-{pk}-{:016x}", rng.next()),
                        )?;
                    }
                }
                if let Some(meta) = hdfs_meta(&db)? {
                    match rng.below(3) {
                        0 => {
                            let path = format!("/Projects/churn/f{}", cl.rt.next_inode);
                            new_file(&mut cl, &db, &mut rng, &path)?;
                        }
                        1 if !meta.blocks.is_empty() => {
                            let b = &meta.blocks[rng.below(meta.blocks.len() as u64) as usize];
                            db.execute("DELETE FROM ndb_rows WHERE db='hops' AND tbl='hdfs_blocks' AND pk=?1", params![b.id as i64])?;
                            db.execute("DELETE FROM ndb_rows WHERE db='hops' AND tbl='hdfs_inodes' AND pk=?1", params![b.inode as i64])?;
                            pending.push((now + Duration::from_secs(2), b.replicas.clone(), b.id));
                        }
                        _ if !meta.blocks.is_empty() => {
                            let mut b =
                                meta.blocks[rng.below(meta.blocks.len() as u64) as usize].clone();
                            for dn in &b.replicas {
                                remove_replica(&cl, *dn, b.id)?;
                            }
                            b.genstamp = cl.rt.next_genstamp;
                            cl.rt.next_genstamp += 1;
                            b.len += 1 + rng.below(cfg.block_size / 4 + 1);
                            let data = block_content(cfg.seed, b.id, b.genstamp, b.len);
                            for dn in &b.replicas {
                                write_replica(&cl, *dn, &b, &data, true)?;
                            }
                            insert_row(&db, &cfg, "hops", "hdfs_blocks", b.id, &b.val())?;
                        }
                        _ => {}
                    }
                }
            }
            cl.save()?;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_files_hold_the_crc32c_of_every_512_byte_chunk() {
        // The CRC-32C check value, one partial chunk.
        let m = meta_content(b"123456789");
        assert_eq!(m, [0, 1, 2, 0, 0, 2, 0, 0xE3, 0x06, 0x92, 0x83]);
        // 1025 bytes: three chunks, the last of one byte.
        let data: Vec<u8> = (0..1025u32).map(|i| i as u8).collect();
        let m = meta_content(&data);
        assert_eq!(m.len(), 7 + 3 * 4);
        let last = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, &data[1024..]) as u32;
        assert_eq!(m[15..19], last.to_be_bytes());
        assert_eq!(meta_content(&[]), [0, 1, 2, 0, 0, 2, 0]);
    }
}
