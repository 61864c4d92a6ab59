//! The v2 command line against a real etcd (Debian's etcd-server): what CoreOS's sidekicks
//! write is what v3 clients read, TTLs run out, watches see changes, and every v3 command
//! reaches Debian's etcdctl.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use agent_common::testing::TestEtcd;

struct Ctl {
    endpoint: String,
}

impl Ctl {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_etcdctl"));
        cmd.env_remove("ETCDCTL_API")
            .env("ETCDCTL_ENDPOINTS", &self.endpoint)
            .args(args);
        cmd
    }
    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running etcdctl")
    }
    /// stdout of a command that must succeed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
    /// Debian's etcdctl with the v3 API, as a v3 client sees the store.
    fn v3(&self, args: &[&str]) -> String {
        let out = Command::new("/usr/bin/etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint])
            .args(args)
            .output()
            .expect("Debian's etcdctl (package etcd-client)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

fn setup() -> (TestEtcd, Ctl) {
    let etcd = TestEtcd::start();
    let ctl = Ctl {
        endpoint: etcd.endpoint(),
    };
    (etcd, ctl)
}

#[test]
fn a_sidekicks_set_with_ttl_is_one_store_with_v3_and_runs_out() {
    let (_etcd, ctl) = setup();
    assert_eq!(
        ctl.ok(&["set", "/services/web/host1", "10.1.2.3:80", "--ttl", "3"]),
        "10.1.2.3:80\n"
    );
    assert_eq!(ctl.ok(&["get", "/services/web/host1"]), "10.1.2.3:80\n");
    assert_eq!(
        ctl.v3(&["get", "/services/web/host1", "--print-value-only"]),
        "10.1.2.3:80\n"
    );
    // And the other way: what a v3 client puts, v2 commands read and list.
    ctl.v3(&["put", "/services/web/host2", "10.1.9.9:80"]);
    assert_eq!(
        ctl.ok(&["ls", "/services/web"]),
        "/services/web/host1\n/services/web/host2\n"
    );
    assert_eq!(ctl.ok(&["ls", "/", "-p"]), "/services/\n");
    assert_eq!(
        ctl.ok(&["ls", "--recursive", "/"]),
        "/services\n/services/web\n/services/web/host1\n/services/web/host2\n"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = ctl.run(&["get", "/services/web/host1"]);
        if !out.status.success() {
            assert_eq!(out.status.code(), Some(4));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.starts_with("Error:  100: Key not found (/services/web/host1) ["),
                "{err}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the TTL of 3 s never ran out");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(ctl.v3(&["get", "/services/web/host1"]), "");
    assert_eq!(ctl.ok(&["get", "/services/web/host2"]), "10.1.9.9:80\n");
}

#[test]
fn rm_mk_update_and_swaps_answer_as_v2_does() {
    let (_etcd, ctl) = setup();
    ctl.ok(&["set", "/a/b", "1"]);
    assert_eq!(ctl.ok(&["rm", "/a/b"]), "PrevNode.Value: 1\n");
    let missing = ctl.run(&["rm", "/a/b"]);
    assert_eq!(missing.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("100: Key not found (/a/b)"));

    ctl.ok(&["mk", "/m", "first"]);
    let again = ctl.run(&["mk", "/m", "second"]);
    assert_eq!(again.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&again.stderr).contains("105: Key already exists (/m)"));
    assert_eq!(ctl.ok(&["get", "/m"]), "first\n");
    assert!(!ctl.run(&["update", "/nothing", "x"]).status.success());
    assert_eq!(ctl.ok(&["update", "/m", "third"]), "third\n");
    let swap = ctl.run(&["set", "/m", "x", "--swap-with-value", "wrong"]);
    assert!(
        String::from_utf8_lossy(&swap.stderr).contains("101: Compare failed ([wrong != third])")
    );
    ctl.ok(&["set", "/m", "x", "--swap-with-value", "third"]);

    ctl.ok(&["set", "/dir/one", "1"]);
    ctl.ok(&["set", "/dir/sub/two", "2"]);
    let not_file = ctl.run(&["rm", "/dir"]);
    assert!(String::from_utf8_lossy(&not_file.stderr).contains("102: Not a file (/dir)"));
    let on_dir = ctl.run(&["set", "/dir", "v"]);
    assert!(String::from_utf8_lossy(&on_dir.stderr).contains("102: Not a file (/dir)"));
    let get_dir = ctl.run(&["get", "/dir"]);
    assert_eq!(get_dir.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&get_dir.stderr),
        "/dir: is a directory\n"
    );
    ctl.ok(&["rm", "--recursive", "/dir"]);
    assert_eq!(ctl.v3(&["get", "/dir", "--prefix", "--keys-only"]), "");
    let json = ctl.ok(&["-o", "json", "get", "/m"]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["action"], "get");
    assert_eq!(json["node"]["value"], "x");
}

#[test]
fn watch_and_exec_watch_see_sets_deletes_and_expiry() {
    let (_etcd, ctl) = setup();
    let watch = ctl
        .command(&["watch", "--recursive", "/services"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let script = format!(
        "echo \"$ETCD_WATCH_ACTION $ETCD_WATCH_KEY $ETCD_WATCH_VALUE\" >> {}",
        log.path().display()
    );
    let mut exec_watch = ctl
        .command(&[
            "exec-watch",
            "--recursive",
            "/services",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .spawn()
        .unwrap();
    // Both watchers are up once a write made after their start reaches them; write until the
    // exec-watch log shows one.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(log.path()).unwrap().is_empty() {
        assert!(Instant::now() < deadline, "exec-watch saw no change");
        ctl.ok(&["set", "/services/web/a", "one"]);
        std::thread::sleep(Duration::from_millis(500));
    }
    let watched = watch.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&watched.stdout),
        "[set] /services/web/a\none\n"
    );
    ctl.ok(&["rm", "/services/web/a"]);
    ctl.ok(&["set", "/services/web/b", "two", "--ttl", "2"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(log.path())
        .unwrap()
        .contains("expire /services/web/b")
    {
        assert!(
            Instant::now() < deadline,
            "exec-watch did not see the TTL run out: {}",
            std::fs::read_to_string(log.path()).unwrap()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    exec_watch.kill().unwrap();
    exec_watch.wait().unwrap();
    let seen = std::fs::read_to_string(log.path()).unwrap();
    assert!(seen.contains("delete /services/web/a \n"), "{seen}");
    assert!(seen.contains("set /services/web/b two\n"), "{seen}");
}

#[test]
fn v3_commands_go_to_debians_etcdctl_and_an_unreachable_etcd_says_so() {
    let (_etcd, ctl) = setup();
    // Without ETCDCTL_API, `put` and `member list` are v3 commands: Debian's etcdctl runs them.
    ctl.ok(&["put", "/v3/key", "v"]);
    assert!(ctl.ok(&["member", "list"]).contains(", started,"));
    assert_eq!(ctl.ok(&["get", "/v3/key"]), "v\n");

    let dead = Ctl {
        endpoint: "http://127.0.0.1:1".into(),
    };
    let out = dead.run(&["set", "/k", "v", "--ttl", "60"]);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("Error:  client: etcd cluster is unavailable or misconfigured"),
        "{err}"
    );
}
