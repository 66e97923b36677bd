//! The node agents across network links: hopsdrd in a namespace of its own, each HopsFS
//! datanode behind its own sshd in another, the S3 server in a third, links shaped with tc
//! (`scripts/netns-testbed`, which the agents' benchmark uses too). Not timed: a backup and a
//! restore through the agents bring the cluster back, and each datanode's agent moved its own
//! volumes.

use crate::harness::Env;
use crate::tbcluster::Cluster;

/// Namespaces made by `scripts/netns-testbed`, removed when dropped.
pub struct Net {
    tag: String,
    dir: tempfile::TempDir,
}

impl Net {
    /// `nodes` node namespaces, links shaped at `rate` (tc's syntax, or "off").
    pub fn up(nodes: u32, rate: &str) -> Net {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let tag = format!("{:x}{n}", std::process::id() % 0xffff);
        let dir = tempfile::Builder::new()
            .prefix("hopsdr-netns-")
            .tempdir()
            .unwrap();
        let out = std::process::Command::new("scripts/netns-testbed")
            .args(["up", &tag])
            .arg(dir.path())
            .args([&nodes.to_string(), rate])
            .env("S3_ACCESS_KEY", crate::s3::ACCESS_KEY)
            .env("S3_SECRET_KEY", crate::s3::SECRET_KEY)
            .output()
            .unwrap();
        let net = Net { tag, dir };
        assert!(
            out.status.success(),
            "netns-testbed up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        net
    }

    /// The namespace hopsdrd runs in.
    pub fn head(&self) -> String {
        format!("hd{}head", self.tag)
    }

    /// Node `k`'s address (from 1).
    pub fn address(&self, k: u32) -> String {
        format!("198.18.0.{}", 10 + k)
    }

    /// `[ssh]` for the nodes' sshd.
    pub fn ssh_config(&self) -> String {
        format!(
            "[ssh]\nuser = \"root\"\nport = 22\nidentity_file = \"{}\"\nknown_hosts = \"{}\"\nconnect_timeout = \"5s\"\n",
            self.dir.path().join("client_key").display(),
            self.dir.path().join("known_hosts").display()
        )
    }

    /// `[repository]` in bucket `hopsdr` of the namespaces' S3 server (made here).
    pub fn repository_config(&self, env: &Env) -> String {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(self.dir.path().join("s3/hopsdr")).unwrap();
        let file = env.path().join("netns-s3.secret");
        std::fs::write(&file, format!("{}\n", crate::s3::SECRET_KEY)).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        format!(
            "[repository]\ntype = \"s3\"\nendpoint = \"http://198.18.0.2:9000\"\nregion = \"us-east-1\"\n\
             bucket = \"hopsdr\"\nprefix = \"cluster1\"\npath_style = true\naccess_key_id = \"{}\"\n\
             secret_access_key = {{ file = \"{}\" }}\n",
            crate::s3::ACCESS_KEY,
            file.display()
        )
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = std::process::Command::new("scripts/netns-testbed")
            .args(["down", &self.tag])
            .arg(self.dir.path())
            .output();
    }
}

/// Two datanodes, each in its namespace behind a 10 MB/s link, hopsdrd behind another and the
/// S3 server on an unshaped one: a backup and a restore through the agents bring the cluster
/// back (fingerprint), and each datanode's agent stored and wrote back its own volumes.
#[test]
fn through_agents_across_shaped_links_a_backup_and_a_restore_bring_the_cluster_back() {
    let mut env = Env::new();
    // 24 blocks of 0.5 to 1 MiB, 2 replicas: about 18 MiB per datanode.
    let c = Cluster::create(
        &env,
        &[
            "--hopsfs-datanodes",
            "2",
            "--volumes",
            "1",
            "--files",
            "24",
            "--block-size",
            "1048576",
        ],
    );
    let net = Net::up(2, "80mbit");
    env.netns = Some(net.head());
    env.repository_config = Some(net.repository_config(&env));
    env.extra_config = c.hopsfs_config_on(&[net.address(1), net.address(2)])
        + &crate::restore::restore_config(&env, &c)
        + &crate::agents::agents_enabled_config()
        + &net.ssh_config();
    let before = c.fingerprint();
    let _d = env.start();
    let id = env.backup_ok();
    crate::agents::assert_through_agents(&env, false, 2);
    crate::agents::restore_whole(&env, &c, &id, &before);
    // The plan said so: every datanode at once, by its agent.
    let st = env.ctl_json(&["restore", "status"]);
    let titles: Vec<&str> = st["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["title"].as_str())
        .collect();
    assert!(
        titles
            .iter()
            .any(|t| t.ends_with("datanodes dn1, dn2 (2 in parallel, by their agents)")),
        "{titles:?}"
    );
    let log = env.log();
    for dn in ["dn1", "dn2"] {
        assert!(
            log.lines()
                .any(|l| l.contains("volume written back by the node's agent")
                    && l.contains(&format!("node={dn}"))),
            "{dn}: {log}"
        );
    }
}
