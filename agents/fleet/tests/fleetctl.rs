//! fleetctl against fleet's API served from the in-memory test double
//! (`fleet::api::memory::MemoryStore`; the etcd-backed registry is tested against real etcd
//! elsewhere): unit life cycles with --replace, --no-block and --block-attempts, `cat`
//! round trips, the listings with --fields/--full/--no-legend, templates, global units, and,
//! through the built binary, FLEETCTL_* variables and the ssh command lines of status,
//! journal and ssh (with a stand-in `ssh` on PATH).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fleet::api::memory::MemoryStore;
use fleet::api::{serve, Listener};
use fleet::model::TargetState;
use fleet::unit::UnitFile;

const M1: &str = "113f16a7b2c94a8cb6d9bbdab5a3b6b4";
const M2: &str = "85c0c5959f0b4a47a7c5a1e2d3f4b5c6";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

struct Cluster {
    store: Arc<MemoryStore>,
    endpoint: String,
    dir: tempfile::TempDir,
}

impl Cluster {
    async fn new() -> Cluster {
        let store = Arc::new(MemoryStore::new());
        store.add_machine(M1, "172.17.8.103", &[("az", "us-west-1b")]);
        store.add_machine(M2, "172.17.8.102", &[("az", "us-west-1a"), ("disk", "ssd")]);
        let dir = tempfile::tempdir().unwrap();
        let listener = Listener::unix(dir.path().join("fleet.sock")).unwrap();
        let endpoint = listener.endpoint();
        tokio::spawn(serve(store.clone(), listener));
        Cluster {
            store,
            endpoint,
            dir,
        }
    }

    /// Runs the fleetctl library as `fleetctl --endpoint <ours> ARGS...`.
    async fn run(&self, args: &[&str]) -> Run {
        let mut argv = vec!["fleetctl", "--endpoint", &self.endpoint];
        argv.extend_from_slice(args);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = fleet::fleetctl::run_args(argv, &mut out, &mut err).await;
        Run {
            code,
            stdout: String::from_utf8(out).unwrap(),
            stderr: String::from_utf8(err).unwrap(),
        }
    }

    /// Like [`Cluster::run`], expecting success and no complaints; returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args).await;
        assert_eq!(r.code, 0, "fleetctl {args:?}: {}{}", r.stdout, r.stderr);
        assert_eq!(r.stderr, "", "fleetctl {args:?}");
        r.stdout
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }
}

const HELLO: &str = "[Unit]\nDescription=Hello World\n\n[Service]\nExecStart=/bin/bash -c \"while true; do echo \\\"Hello, world\\\"; sleep 1; done\"\n";

fn short_hash(text: &str) -> String {
    UnitFile::parse(text).unwrap().short_hash()
}

#[tokio::test]
async fn submit_load_start_stop_unload_destroy() {
    let c = Cluster::new().await;
    let file = c.write("hello.service", HELLO);

    assert_eq!(
        c.ok(&["submit", &file]).await,
        "Unit hello.service inactive\n"
    );
    // Submitting again changes nothing and says nothing.
    assert_eq!(c.ok(&["submit", &file]).await, "");
    let hash = short_hash(HELLO);
    assert_eq!(
        c.ok(&["list-unit-files"]).await,
        format!("UNIT\t\tHASH\tDSTATE\t\tSTATE\t\tTARGET\nhello.service\t{hash}\tinactive\tinactive\t-\n")
    );
    // cat gives back the file's text, unchanged.
    assert_eq!(c.ok(&["cat", "hello.service"]).await, HELLO);
    assert_eq!(c.ok(&["cat", "hello"]).await, HELLO);

    assert_eq!(
        c.ok(&["load", &file]).await,
        "Unit hello.service loaded on 113f16a7.../172.17.8.103\n"
    );
    assert_eq!(
        c.ok(&["list-units"]).await,
        "UNIT\t\tMACHINE\t\t\t\tACTIVE\t\tSUB\nhello.service\t113f16a7.../172.17.8.103\tinactive\tdead\n"
    );
    assert_eq!(
        c.ok(&["start", "hello.service"]).await,
        "Unit hello.service launched on 113f16a7.../172.17.8.103\n"
    );
    // Already launched: nothing to trigger.
    assert_eq!(c.ok(&["start", "hello.service"]).await, "");
    assert_eq!(
        c.ok(&["list-units"]).await,
        "UNIT\t\tMACHINE\t\t\t\tACTIVE\tSUB\nhello.service\t113f16a7.../172.17.8.103\tactive\trunning\n"
    );
    assert_eq!(
        c.ok(&["list-unit-files", "--no-legend"]).await,
        format!("hello.service\t{hash}\tlaunched\tlaunched\t113f16a7.../172.17.8.103\n")
    );

    assert_eq!(
        c.ok(&["stop", "hello.service"]).await,
        "Unit hello.service loaded on 113f16a7.../172.17.8.103\n"
    );
    assert_eq!(c.ok(&["stop", "hello.service"]).await, "");
    assert_eq!(
        c.ok(&["unload", "hello.service"]).await,
        "Unit hello.service inactive\n"
    );
    assert_eq!(c.ok(&["unload", "hello.service"]).await, "");
    assert_eq!(c.ok(&["list-units", "--no-legend"]).await, "");
    let r = c.run(&["stop", "hello.service"]).await;
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr,
        "Unable to stop unit hello.service in state inactive\n"
    );

    // restart: a stopped unit is started; a running one stopped then started.
    let r = c.run(&["restart", "hello.service"]).await;
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (
            1,
            "Unable to restart unit hello.service in state inactive\n"
        )
    );
    c.ok(&["start", "hello.service"]).await;
    assert_eq!(
        c.ok(&["restart", "hello.service"]).await,
        "Unit hello.service loaded on 113f16a7.../172.17.8.103\n\
         Unit hello.service launched on 113f16a7.../172.17.8.103\n\
         Unit(hello.service) was restarted.\n"
    );
    let r = c.run(&["restart", "nothing.service"]).await;
    assert_eq!((r.code, r.stderr.as_str()), (1, "No units were found\n"));

    assert_eq!(
        c.ok(&["destroy", "hello.service"]).await,
        "Destroyed hello.service\n"
    );
    assert!(c.store.peek("hello.service").is_none());
    assert_eq!(c.ok(&["list-unit-files", "--no-legend"]).await, "");
    // Units that do not exist are skipped, as fleetctl did.
    assert_eq!(c.ok(&["destroy", "hello.service"]).await, "");

    // start submits and loads what is missing, and mangles bare names.
    c.write("other.service", "[Service]\nExecStart=/bin/sleep 1d\n");
    let other = c.path("other");
    assert_eq!(
        c.ok(&["start", &other]).await,
        "Unit other.service inactive\nUnit other.service launched on 113f16a7.../172.17.8.103\n"
    );
}

#[tokio::test]
async fn cat_round_trips_and_errors() {
    let c = Cluster::new().await;
    // Comments, blank lines, continuations and repeated sections are parsed; cat prints
    // the unit as the cluster holds it, which parses back to the same unit.
    let messy = "# a comment\n[Unit]\nDescription=Messy\n\n\n[Service]\nExecStart=/bin/echo \\\n  a b\nEnvironment=A=1\n[Unit]\nAfter=network.target\n[Service]\nEnvironment=\n";
    let file = c.write("messy.service", messy);
    c.ok(&["submit", &file]).await;
    let shown = c.ok(&["cat", "messy.service"]).await;
    assert_eq!(shown, UnitFile::parse(messy).unwrap().to_text());
    assert_eq!(
        UnitFile::parse(&shown).unwrap(),
        UnitFile::parse(messy).unwrap()
    );
    // Saved and submitted again under another name, it is the same unit.
    let again = c.write("again.service", &shown);
    c.ok(&["submit", &again]).await;
    assert_eq!(c.ok(&["cat", "again.service"]).await, shown);

    let r = c.run(&["cat", "nope.service"]).await;
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (1, "Unit nope.service not found\n")
    );
    let r = c.run(&["cat", "a.service", "b.service"]).await;
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (1, "One unit file must be provided\n")
    );
    let r = c.run(&["submit", &c.path("missing.service")]).await;
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr,
        "Error creating units: unable to find Unit(missing.service) in Registry or on filesystem\n"
    );
    let bad = c.write("bad.service", "ExecStart=/bin/true\n");
    let r = c.run(&["submit", &bad]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .starts_with("Error creating units: failed getting Unit("),
        "{}",
        r.stderr
    );
    let r = c.run(&["submit"]).await;
    assert_eq!((r.code, r.stderr.as_str()), (0, "No units given\n"));
}

#[tokio::test]
async fn replace_destroys_and_recreates_changed_units() {
    let c = Cluster::new().await;
    let v1 = "[Service]\nExecStart=/bin/sleep 1\n";
    let v2 = "[Service]\nExecStart=/bin/sleep 2\n";
    let v3 = "[Service]\nExecStart=/bin/sleep 3\n";
    let file = c.write("app.service", v1);
    c.ok(&["submit", &file]).await;

    // Changed locally, submitted without --replace: a warning, nothing replaced.
    c.write("app.service", v2);
    let r = c.run(&["submit", &file]).await;
    assert_eq!(r.code, 0);
    assert_eq!(
        r.stderr,
        format!("WARNING: Unit app.service in registry differs from local unit file {file}. Add --replace to override.\n")
    );
    assert_eq!(c.ok(&["cat", "app.service"]).await, v1);

    // With --replace (after the command, as fleetctl), the unit is submitted again.
    assert_eq!(
        c.ok(&["submit", "--replace", &file]).await,
        "Unit app.service inactive\n"
    );
    assert_eq!(c.ok(&["cat", "app.service"]).await, v2);
    assert_eq!(
        c.ok(&["submit", "--replace", &file]).await,
        "Found same Unit(app.service) in Registry, nothing to do\n"
    );

    // A launched unit is replaced by start --replace (before the command works too).
    c.ok(&["start", &file]).await;
    c.write("app.service", v3);
    assert_eq!(
        c.ok(&["--replace", "start", &file]).await,
        "Unit app.service inactive\nUnit app.service launched on 113f16a7.../172.17.8.103\n"
    );
    assert_eq!(c.ok(&["cat", "app.service"]).await, v3);
    let u = c.store.peek("app.service").unwrap();
    assert_eq!(
        (u.desired_state, u.current_state),
        (TargetState::Launched, Some(TargetState::Launched))
    );

    // ... but not by submit or load, which may not cross states.
    c.write("app.service", v1);
    for command in ["submit", "load"] {
        let r = c.run(&[command, "--replace", &file]).await;
        assert_eq!(r.code, 0);
        assert_eq!(
            r.stderr,
            "Warning: can not replace Unit(app.service) in state 'launched', use the appropriate command\n"
        );
        assert_eq!(c.ok(&["cat", "app.service"]).await, v3);
    }

    // load --replace replaces a loaded unit and loads it again.
    c.ok(&["stop", "app.service"]).await;
    assert_eq!(
        c.ok(&["load", "--replace", &file]).await,
        "Unit app.service inactive\nUnit app.service loaded on 113f16a7.../172.17.8.103\n"
    );
    assert_eq!(c.ok(&["cat", "app.service"]).await, v1);

    // With --replace, a unit with neither a local file nor a template is an error.
    let r = c.run(&["start", "--replace", "app.service"]).await;
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr,
        "Error creating units: error Unit app.service does not seem to be a template unit\n"
    );
}

#[tokio::test]
async fn no_block_and_block_attempts() {
    let c = Cluster::new().await;
    c.store.set_auto_converge(false);
    let a = c.write("a.service", "[Service]\nExecStart=/bin/true\n");
    let b = c.write("b.service", "[Service]\nExecStart=/bin/false\n");

    // --no-block: the desired state is set, and fleetctl does not wait.
    assert_eq!(
        c.ok(&["start", "--no-block", &a]).await,
        "Unit a.service inactive\nTriggered unit a.service start\n"
    );
    assert_eq!(
        c.store.peek("a.service").unwrap().desired_state,
        TargetState::Launched
    );
    assert_eq!(c.store.peek("a.service").unwrap().current_state, None);

    // --block-attempts: gives up after that many looks.
    let started = std::time::Instant::now();
    let r = c.run(&["--block-attempts", "2", "start", &b]).await;
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout, "Unit b.service inactive\n");
    assert_eq!(
        r.stderr,
        "Error waiting for units: timed out waiting for unit b.service to report state launched\n\
         Error waiting for unit states, exit status: 1\n"
    );
    assert!(started.elapsed() >= Duration::from_millis(400));

    // Without a limit it waits until the cluster gets there.
    c.store.converge();
    let c2 = c.store.clone();
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        c2.converge();
    });
    assert_eq!(
        c.ok(&["stop", &a, &b]).await,
        "Unit a.service loaded on 113f16a7.../172.17.8.103\nUnit b.service loaded on 85c0c595.../172.17.8.102\n"
    );
    stopper.await.unwrap();

    // --no-block for stop and unload, FLEETCTL_NO_BLOCK-style value syntax.
    assert_eq!(
        c.ok(&["unload", "--no-block=true", "a.service"]).await,
        "Triggered unit a.service unload\n"
    );
    assert_eq!(
        c.store.peek("a.service").unwrap().desired_state,
        TargetState::Inactive
    );
    c.store.converge();
    c.ok(&["start", "--no-block", "b.service"]).await;
    c.store.converge();
    assert_eq!(
        c.ok(&["stop", "--no-block", "b.service"]).await,
        "Triggered unit b.service stop\n"
    );
    // destroy --no-block does not look again.
    assert_eq!(
        c.ok(&["destroy", "--no-block", "a.service", "b"]).await,
        "Destroyed a.service\nDestroyed b.service\n"
    );
}

#[tokio::test]
async fn listings_fields_full_and_legend() {
    let c = Cluster::new().await;
    assert_eq!(
        c.ok(&["list-machines"]).await,
        "MACHINE\t\tIP\t\tMETADATA\n\
         113f16a7...\t172.17.8.103\taz=us-west-1b\n\
         85c0c595...\t172.17.8.102\taz=us-west-1a,disk=ssd\n"
    );
    assert_eq!(
        c.ok(&["list-machines", "-l", "--no-legend"]).await,
        format!("{M1}\t172.17.8.103\taz=us-west-1b\n{M2}\t172.17.8.102\taz=us-west-1a,disk=ssd\n")
    );
    assert_eq!(
        c.ok(&["list-machines", "--fields", "ip,machine"]).await,
        "IP\t\tMACHINE\n172.17.8.103\t113f16a7...\n172.17.8.102\t85c0c595...\n"
    );
    let r = c.run(&["list-machines", "--fields", "ip,bogus"]).await;
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (1, "Invalid key in output format: \"bogus\"\n")
    );
    let r = c.run(&["list-units", "--fields", ""]).await;
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (1, "Must define output format\n")
    );

    let hello = c.write("hello.service", HELLO);
    let g = "[Unit]\nDescription=Everywhere\n\n[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nGlobal=true\n";
    let global = c.write("global.service", g);
    c.ok(&["start", &hello]).await;
    assert_eq!(
        c.ok(&["start", &global]).await,
        "Unit global.service inactive\nTriggered global unit global.service start\n"
    );
    let full_hash = UnitFile::parse(HELLO).unwrap().hash();
    let g_hash = UnitFile::parse(g).unwrap().hash();
    assert_eq!(
        c.ok(&[
            "list-units",
            "--full",
            "--fields",
            "unit,machine,hash,load,active,sub"
        ])
        .await,
        format!(
            "UNIT\t\tMACHINE\t\t\t\t\t\tHASH\t\t\t\t\t\tLOAD\tACTIVE\tSUB\n\
             global.service\t{M1}/172.17.8.103\t{g_hash}\tloaded\tactive\trunning\n\
             global.service\t{M2}/172.17.8.102\t{g_hash}\tloaded\tactive\trunning\n\
             hello.service\t{M1}/172.17.8.103\t{full_hash}\tloaded\tactive\trunning\n"
        )
    );
    assert_eq!(
        c.ok(&["list-units", "--fields=unit,hash", "--no-legend"])
            .await,
        format!(
            "global.service\t{}\nglobal.service\t{}\nhello.service\t{}\n",
            &g_hash[..7],
            &g_hash[..7],
            &full_hash[..7]
        )
    );
    assert_eq!(
        c.ok(&[
            "list-unit-files",
            "--fields",
            "unit,global,dstate,state,target,desc"
        ])
        .await,
        "UNIT\t\tGLOBAL\tDSTATE\t\tSTATE\t\tTARGET\t\t\t\tDESC\n\
         global.service\ttrue\tlaunched\t-\t\tglobal\t\t\t\tEverywhere\n\
         hello.service\tfalse\tlaunched\tlaunched\t113f16a7.../172.17.8.103\tHello World\n"
    );
    let r = c
        .run(&[
            "list-unit-files",
            "--fields",
            "unit,tmachine",
            "--no-legend",
        ])
        .await;
    assert_eq!(r.code, 0);
    assert_eq!(
        r.stderr,
        "WARNING: The \"tmachine\" field is deprecated. Use \"target\" instead\n"
    );
    assert_eq!(
        r.stdout,
        "global.service\tglobal\nhello.service\t113f16a7.../172.17.8.103\n"
    );
    let r = c
        .run(&[
            "list-unit-files",
            "--max-print-units",
            "1",
            "--fields",
            "unit",
        ])
        .await;
    assert_eq!(r.stdout, "UNIT\nglobal.service\n");
    assert_eq!(r.stderr, "Further units after 1-th are omitted\n");

    // Global units: stop and unload are triggered, not waited for.
    assert_eq!(
        c.ok(&["stop", "global.service"]).await,
        "Triggered global unit global.service stop\n"
    );
    assert_eq!(
        c.ok(&["unload", "global"]).await,
        "Triggered global unit global.service unload\n"
    );
}

#[tokio::test]
async fn template_instances() {
    let c = Cluster::new().await;
    let template = "[Unit]\nDescription=Web %i\n\n[Service]\nExecStart=/bin/echo %i\n";
    c.write("web@.service", template);
    // Instances come from the local template when they have no file of their own.
    let (w1, w2) = (c.path("web@1.service"), c.path("web@2.service"));
    assert_eq!(
        c.ok(&["start", &w1, &w2]).await,
        "Unit web@1.service inactive\nUnit web@2.service inactive\n\
         Unit web@1.service launched on 113f16a7.../172.17.8.103\n\
         Unit web@2.service launched on 85c0c595.../172.17.8.102\n"
    );
    assert_eq!(c.ok(&["cat", "web@2.service"]).await, template);
    assert_eq!(
        c.ok(&["list-unit-files", "--fields", "unit", "--no-legend"])
            .await,
        "web@1.service\nweb@2.service\n"
    );

    // The template itself may be submitted (not started); instances then come from it.
    c.ok(&["submit", &c.path("web@.service")]).await;
    std::fs::remove_file(c.path("web@.service")).unwrap();
    c.ok(&["load", &c.path("web@3.service")]).await;
    assert_eq!(c.ok(&["cat", "web@3.service"]).await, template);
    let r = c.run(&["start", "web@.service"]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .starts_with("Error starting units: cannot activate template"),
        "{}",
        r.stderr
    );

    let r = c.run(&["start", &c.path("api@1.service")]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("unable to find template Unit(api@.service)"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn unreachable_and_bad_endpoints() {
    let c = Cluster::new().await;
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = fleet::fleetctl::run_args(
        [
            "fleetctl",
            "--endpoint",
            "unix:///nonexistent/fleet.sock",
            "list-units",
        ],
        &mut out,
        &mut err,
    )
    .await;
    let err = String::from_utf8(err).unwrap();
    assert_eq!(code, 1);
    assert!(
        err.starts_with(
            "Error retrieving list of units from repository: connecting to /nonexistent/fleet.sock"
        ),
        "{err}"
    );

    let mut err = Vec::new();
    let code = fleet::fleetctl::run_args(
        [
            "fleetctl",
            "--endpoint",
            "unix://var/run/fleet.sock",
            "list-units",
        ],
        &mut out,
        &mut err,
    )
    .await;
    assert_eq!(code, 1);
    assert!(String::from_utf8(err)
        .unwrap()
        .starts_with("Unable to initialize client: "));

    // A backend failure comes back as the API's message.
    c.store.fail_with(Some("etcd is unreachable"));
    let r = c.run(&["list-machines"]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.starts_with("Error retrieving list of active machines from fleet API (registry: etcd is unreachable (500))"), "{}", r.stderr);

    // Command-line mistakes are clap's, exit code 2.
    let r = c.run(&["frobnicate"]).await;
    assert_eq!(r.code, 2);
    let r = c.run(&["version"]).await;
    assert_eq!(
        r.stdout,
        format!("fleetctl version {}\n", env!("CARGO_PKG_VERSION"))
    );
}

/// The binary, with the server of this test reachable and a fake `ssh` on PATH.
async fn binary(c: &Cluster, env: &[(&str, &str)], args: &[&str]) -> Run {
    let fake_bin = c.dir.path().join("bin");
    std::fs::create_dir_all(&fake_bin).unwrap();
    let ssh = fake_bin.join("ssh");
    if !ssh.exists() {
        std::fs::write(&ssh, "#!/bin/sh\necho \"ssh $*\"\nexit 3\n").unwrap();
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        fake_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleetctl"));
    cmd.args(args).env("PATH", path).env("HOME", c.dir.path());
    for (k, _) in std::env::vars() {
        if k.starts_with("FLEETCTL_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("fleetctl hung")
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

#[tokio::test]
async fn the_binary_reads_fleetctl_variables() {
    let c = Cluster::new().await;
    // Over TCP this time: the same store behind a second listener.
    let tcp = Listener::tcp("127.0.0.1:0").await.unwrap();
    let http = tcp.endpoint();
    tokio::spawn(serve(c.store.clone(), tcp));

    let r = binary(
        &c,
        &[("FLEETCTL_ENDPOINT", &http)],
        &["list-machines", "--no-legend"],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "113f16a7...\t172.17.8.103\taz=us-west-1b\n85c0c595...\t172.17.8.102\taz=us-west-1a,disk=ssd\n");
    let r = binary(
        &c,
        &[
            ("FLEETCTL_ENDPOINT", &c.endpoint),
            ("FLEETCTL_NO_LEGEND", "true"),
            ("FLEETCTL_FULL", "1"),
        ],
        &["list-machines", "--fields=machine"],
    )
    .await;
    assert_eq!(r.stdout, format!("{M1}\n{M2}\n"), "{}", r.stderr);
    // The command line wins over the environment.
    let r = binary(
        &c,
        &[("FLEETCTL_ENDPOINT", "unix:///nonexistent.sock")],
        &[
            "--endpoint",
            &http,
            "list-machines",
            "--fields=ip",
            "--no-legend",
        ],
    )
    .await;
    assert_eq!(r.stdout, "172.17.8.103\n172.17.8.102\n", "{}", r.stderr);
    // FLEETCTL_REQUEST_TIMEOUT: a server that never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let endpoint = format!("http://{addr}");
    let r = binary(
        &c,
        &[
            ("FLEETCTL_ENDPOINT", &endpoint),
            ("FLEETCTL_REQUEST_TIMEOUT", "0.3"),
        ],
        &["list-unit-files"],
    )
    .await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("request timed out after 300ms"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn status_journal_and_ssh_run_ssh() {
    let c = Cluster::new().await;
    let hello = c.write("hello.service", HELLO);
    c.ok(&["start", &hello]).await;
    let env = [
        ("FLEETCTL_ENDPOINT", c.endpoint.as_str()),
        ("FLEETCTL_STRICT_HOST_KEY_CHECKING", "false"),
    ];
    let quiet = "ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=10";

    let r = binary(&c, &env, &["status", "hello.service"]).await;
    assert_eq!(r.code, 3, "the remote exit code: {}", r.stderr);
    assert_eq!(
        r.stdout,
        format!("{quiet} -p 22 core@172.17.8.103 -- systemctl status -l hello.service\n")
    );

    let r = binary(
        &c,
        &env,
        &[
            "--ssh-username",
            "elroy",
            "journal",
            "--lines",
            "100",
            "--ssh-port",
            "2222",
            "hello",
        ],
    )
    .await;
    assert_eq!(
        r.stdout,
        format!("{quiet} -p 2222 elroy@172.17.8.103 -- journalctl --unit hello.service --no-pager -n 100 --output short\n")
    );
    let r = binary(&c, &env, &["journal", "-f", "--sudo", "hello.service"]).await;
    assert_eq!(
        r.stdout,
        format!("{quiet} -p 22 -t core@172.17.8.103 -- sudo journalctl --unit hello.service --no-pager -n 10 --output short -f\n")
    );

    // ssh by machine ID prefix or by unit; the rest of the line is the command.
    let r = binary(&c, &env, &["ssh", "85c0", "ls", "-l", "/"]).await;
    assert_eq!(
        r.stdout,
        format!("{quiet} -p 22 core@172.17.8.102 -- ls -l /\n"),
        "{}",
        r.stderr
    );
    let r = binary(&c, &env, &["ssh", "hello.service"]).await;
    assert_eq!(r.stdout, format!("{quiet} -p 22 -t core@172.17.8.103\n"));
    let r = binary(&c, &env, &["ssh", "-A", "--machine", "113f", "uptime"]).await;
    assert_eq!(
        r.stdout,
        format!("{quiet} -p 22 -A core@172.17.8.103 -- uptime\n")
    );
    let r = binary(&c, &env, &["ssh", "nothing"]).await;
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (
            1,
            "Unable to proceed: could not find matching unit or machine\n"
        )
    );
    let r = binary(
        &c,
        &env,
        &["ssh", "--machine", "1", "--unit", "hello.service"],
    )
    .await;
    assert_eq!(
        r.stderr,
        "Both machine and unit flags provided, please specify only one.\n"
    );

    // Strict host key checking (the default) keeps fingerprints in ~/.fleetctl/known_hosts.
    let r = binary(
        &c,
        &[("FLEETCTL_ENDPOINT", &c.endpoint)],
        &["ssh", "85c0c595", "true"],
    )
    .await;
    let known = c.dir.path().join(".fleetctl/known_hosts");
    assert_eq!(
        r.stdout,
        format!(
            "ssh -o StrictHostKeyChecking=ask -o UserKnownHostsFile={} -o ConnectTimeout=10 -p 22 core@172.17.8.102 -- true\n",
            known.display()
        )
    );
    assert!(known.parent().unwrap().is_dir());

    // Units that are not running.
    c.ok(&["unload", "hello.service"]).await;
    let r = binary(&c, &env, &["journal", "hello.service"]).await;
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (1, "Unit hello.service does not appear to be running.\n")
    );
    let r = binary(&c, &env, &["status", "hello.service"]).await;
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (1, "Unit hello.service does not appear to be loaded.\n")
    );
    let r = binary(&c, &env, &["status", "nope.service"]).await;
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (1, "Unit nope.service does not exist.\n")
    );
}

#[tokio::test]
async fn tunnel_through_fd_forward() {
    // --tunnel runs `ssh ... fleetctl fd-forward /path/to/fleet.sock` and speaks HTTP over its
    // standard streams. Here the stand-in ssh runs that command locally.
    let c = Cluster::new().await;
    let fake_bin = c.dir.path().join("tunnel-bin");
    std::fs::create_dir_all(&fake_bin).unwrap();
    let fleetctl = PathBuf::from(env!("CARGO_BIN_EXE_fleetctl"));
    std::fs::write(
        fake_bin.join("ssh"),
        format!(
            "#!/bin/sh\n# drop everything up to --, then run the remote command here\nwhile [ \"$1\" != \"--\" ]; do shift; done; shift\nshift\nexec {} \"$@\"\n",
            fleetctl.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(fake_bin.join("ssh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        fake_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = tokio::process::Command::new(&fleetctl)
        .args([
            "--endpoint",
            &c.endpoint,
            "--tunnel",
            "bastion",
            "list-machines",
            "--fields=ip",
            "--no-legend",
        ])
        .env("PATH", path)
        .env("HOME", c.dir.path())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "172.17.8.103\n172.17.8.102\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(Path::new(&c.endpoint.trim_start_matches("unix://")).exists());
}

/// A broken [X-Fleet] section (the demo's bad-input case; the same is checked against a real
/// fleetd in qemu-tests' demo test) is refused at submit with fleet's own message, and nothing
/// lands in the registry.
#[tokio::test]
async fn a_broken_x_fleet_section_is_refused_at_submit() {
    let c = Cluster::new().await;
    let file = c.write(
        "broken.service",
        "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nMachinOf=db.service\n",
    );
    let run = c.run(&["submit", &file]).await;
    eprintln!(
        "code {} stdout {:?} stderr {:?}",
        run.code, run.stdout, run.stderr
    );
    assert_ne!(run.code, 0);
    assert!(
        run.stderr
            .contains("unrecognized requirement in [X-Fleet] section: \"MachinOf\""),
        "{}",
        run.stderr
    );
    assert_eq!(c.ok(&["list-unit-files", "--no-legend"]).await, "");
}
