//! The demo, whole (issue 14): three machines, the multi-tier application from demo/units
//! started with fleetctl, a browser on its page, and a machine killed under it.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use keel_image::cluster::demo::{self, APP_INSTANCES};
use keel_image::cluster::{Cluster, FLEETCTL};
use qemu_tests::cluster::{formation_timeout, spec};
use qemu_tests::containers::registry_with_built_images;
use qemu_tests::WorkDir;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Debian's chromium, headless, on `url`: the DOM it rendered, and a screenshot in `shot`.
fn chromium(url: &str, shot: &Path, profile: &Path) -> Result<String> {
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1024,768",
    ];
    let profile_arg = format!("--user-data-dir={}", profile.display());
    let run = |extra: &str| -> Result<std::process::Output> {
        Command::new("chromium")
            .args(common)
            .arg(&profile_arg)
            .arg(extra)
            .arg(url)
            .output()
            .context("running chromium (Debian package chromium; `make deps` installs it)")
    };
    let dom = run("--dump-dom")?;
    ensure!(
        dom.status.success(),
        "chromium --dump-dom: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let shot_out = run(&format!("--screenshot={}", shot.display()))?;
    ensure!(
        shot_out.status.success() && shot.is_file(),
        "chromium --screenshot: {}",
        String::from_utf8_lossy(&shot_out.stderr)
    );
    Ok(String::from_utf8_lossy(&dom.stdout).into_owned())
}

/// Cuts app-discovery@`instance` off from every IP address (systemd's cgroup firewall, set on
/// the running unit) and checks: its announcements fail and are retried, it and app@`instance`
/// stay active, and once the cut is lifted the instance is announced again in etcd.
fn sidekick_cut_off_from_etcd_retries(cluster: &Cluster, instance: usize) -> Result<()> {
    let index = demo::machine_of(cluster, &format!("app@{instance}.service"))?
        .with_context(|| format!("app@{instance}.service is on no machine"))?;
    let machine = &cluster.machines()[index];
    let sidekick = format!("app-discovery@{instance}.service");
    let journal_since = |since: &str| {
        machine.ssh_ok(&format!(
            "journalctl --no-pager -o cat -u {sidekick} --since @{since}"
        ))
    };
    let cut_at = machine.ssh_ok(&format!(
        "date +%s && systemctl set-property --runtime {sidekick} IPAddressDeny=any"
    ))?;
    let cut_at = cut_at.trim().to_string();
    // The loop announces every 45 s: its next announcement fails, and it retries every 2 s.
    let deadline = Instant::now() + Duration::from_secs(180);
    let failures = cluster.poll(
        "the cut-off sidekick's failed announcements",
        deadline,
        || {
            let journal = journal_since(&cut_at)?;
            let failed: Vec<&str> = journal
                .lines()
                .filter(|l| l.starts_with("Error:"))
                .collect();
            Ok(if failed.len() >= 2 {
                Ok(failed
                    .iter()
                    .map(|l| format!("  {l}\n"))
                    .collect::<String>())
            } else {
                Err(journal)
            })
        },
    )?;
    let active = machine.ssh(&format!(
        "systemctl is-active app@{instance}.service {sidekick}"
    ))?;
    ensure!(
        active.split_whitespace().collect::<Vec<_>>() == ["active", "active"],
        "with etcd unreachable, app@{instance} and its sidekick: {active}"
    );
    eprintln!(
        "{sidekick} on {} cut off from etcd: it retries, app@{instance} and it stay active:\n{failures}",
        machine.name
    );
    // Lifted by allowing everything (an allow entry wins over a deny entry): emptying the
    // deny list at run time leaves systemd 252's filter attached to the running unit.
    let lifted_at = machine.ssh_ok(&format!(
        "date +%s && systemctl set-property --runtime {sidekick} IPAddressAllow=any"
    ))?;
    let lifted_at = lifted_at.trim().to_string();
    let address = cluster.poll(
        "the sidekick's announcement after the cut",
        deadline,
        || {
            let journal = journal_since(&lifted_at)?;
            Ok(
                match journal.lines().find(|l| l.trim_end().ends_with(":8080")) {
                    Some(address) => Ok(address.trim().to_string()),
                    None => Err(journal),
                },
            )
        },
    )?;
    let stored = cluster
        .first_alive()?
        .ssh_ok(&format!("etcdctl get /services/app/app-{instance}"))?;
    ensure!(
        stored.trim() == address,
        "after the cut, etcd holds {stored:?} for app-{instance}, the sidekick announced {address:?}"
    );
    eprintln!("announced again once etcd was reachable: {address}");
    Ok(())
}

#[test]
#[ignore = "boots three VMs under QEMU: run by make test"]
fn the_demo_app_answers_from_the_cluster_and_survives_losing_a_machine() -> Result<()> {
    let work = WorkDir::new("keel-demo-")?;
    let mut spec = spec(work.path(), "cluster-node.yaml", 3)?;
    spec.machine_user_data
        .insert(0, demo::DATABASE_MACHINE_CONFIG.to_string());
    let port = free_port();
    spec.host_forwards.push((0, port, 80));
    let base = format!("http://127.0.0.1:{port}");
    let registry = registry_with_built_images(&work.path().join("registry"))?;
    spec.guest_forwards
        .push(registry.guest_forward(env!("CARGO_BIN_EXE_tcp-relay")));
    let mut cluster = Cluster::start(&spec)?;
    cluster.wait_formed(formation_timeout(3))?;
    let since = Instant::now();
    let deadline = since + Duration::from_secs(900);
    let first = cluster.first_alive()?;

    // The database and the load balancers first: with no instance alive yet, the load
    // balancer answers 503 with a page that says so, at once.
    demo::put_units(first)?;
    // Bad input: a unit whose [X-Fleet] section is broken is refused by fleetctl submit with
    // fleet's message, and never reaches the registry.
    let broken = first.ssh(&format!(
        "cd {dir} && printf '[Service]\\nExecStart=/bin/true\\n\\n[X-Fleet]\\nMachinOf=db.service\\n' > broken.service && {FLEETCTL} submit broken.service; echo exit=$?; {FLEETCTL} list-unit-files --no-legend",
        dir = demo::UNIT_DIR
    ))?;
    ensure!(
        broken.contains("unrecognized requirement in [X-Fleet] section: \"MachinOf\"")
            && !broken.contains("exit=0")
            && !broken.contains("broken.service\t"),
        "fleetctl submit of a broken [X-Fleet] section: {broken}"
    );
    demo::fleetctl_start(first, demo::BACKEND_UNITS)?;
    demo::wait_placed(&cluster, "db.service", deadline)?;
    let page = cluster.poll("the load balancer's 503 page", deadline, || {
        Ok(match demo::get(&format!("{base}/")) {
            Some((503, body)) => Ok(body),
            other => Err(format!("{other:?}")),
        })
    })?;
    ensure!(
        page.contains("no application instance is alive"),
        "503 page: {page}"
    );
    eprintln!(
        "load balancer up with no instance (503) after {:.0} s",
        since.elapsed().as_secs_f64()
    );

    demo::fleetctl_start(first, &demo::app_units())?;
    demo::wait_answering(&cluster, &base, deadline)?;
    let first_answer = since.elapsed();
    eprintln!(
        "the application answers after {:.0} s\n{}",
        first_answer.as_secs_f64(),
        demo::list_units(&cluster)?
    );

    // Every request succeeds once it is up, and the instances are on different machines.
    let answers = demo::sample(&base, 20);
    ensure!(
        answers.iter().all(Option::is_some),
        "failed requests once up: {answers:?}"
    );
    let machines_before: BTreeSet<String> = answers
        .iter()
        .flatten()
        .map(|a| a.machine.clone())
        .collect();
    ensure!(
        machines_before.len() == APP_INSTANCES,
        "answers came from {machines_before:?}"
    );
    let db_machine = demo::machine_of(&cluster, "db.service")?;
    ensure!(
        db_machine == Some(0),
        "db.service runs on {db_machine:?}, not node1 (role=database)"
    );
    ensure!(
        !machines_before.contains("node1"),
        "an instance runs on the database's machine: {machines_before:?}"
    );
    for text in ["first item", "second item", "third item"] {
        demo::add_item(&base, text).map_err(anyhow::Error::msg)?;
    }

    // A person's browser on the page: it shows who served it and the items.
    // Kept after the test (under the build's output folder), for a person to look at.
    let shots = qemu_tests::out_dir().join("test-output/demo");
    std::fs::create_dir_all(&shots)?;
    let shot = shots.join("demo-page.png");
    let dom = chromium(&format!("{base}/"), &shot, &work.path().join("chromium"))?;
    for wanted in ["Served by machine", "first item", "third item", "3 items"] {
        ensure!(
            dom.contains(wanted),
            "the rendered page lacks {wanted:?}:\n{dom}"
        );
    }
    ensure!(
        machines_before.iter().any(|m| dom.contains(m.as_str())),
        "the page names no instance's machine:\n{dom}"
    );
    eprintln!("screenshot: {}", shot.display());

    // Bad input: a sidekick cut off from etcd keeps retrying and its main unit runs on.
    let kept =
        demo::instance_off_first_machine(&cluster).context("no application instance off node1")?;
    let cut = (1..=APP_INSTANCES).find(|i| *i != kept).unwrap_or(kept);
    sidekick_cut_off_from_etcd_retries(&cluster, cut)?;

    // Kill the machine of one instance: the application answers on, from the survivors only,
    // the instance moves to the free machine, and the items are kept.
    let instance =
        demo::instance_off_first_machine(&cluster).context("no application instance off node1")?;
    let failover = demo::fail_over(&mut cluster, &base, instance, deadline)?;
    eprintln!(
        "failover: killed {}; answers again after {:.1} s (gap {:.1} s, {} failed requests); {} answered from its new machine after {:.1} s; machines after: {:?}",
        failover.killed,
        failover.answering_again.as_secs_f64(),
        failover.gap.as_secs_f64(),
        failover.failed_requests,
        failover.moved_instance,
        failover.instance_moved.as_secs_f64(),
        failover.machines_after
    );
    ensure!(
        !failover.machines_after.contains(&failover.killed),
        "answers after the kill came from the dead machine: {:?}",
        failover.machines_after
    );
    ensure!(
        failover.answering_again < Duration::from_secs(120),
        "the application took {:?} to answer again",
        failover.answering_again
    );
    let all_machines: BTreeSet<String> = machines_before
        .union(&failover.machines_after)
        .cloned()
        .collect();
    ensure!(
        all_machines.len() == 3,
        "over the run, answers came from {all_machines:?}"
    );
    let items = demo::items(&base).map_err(anyhow::Error::msg)?;
    if items != ["first item", "second item", "third item"] {
        bail!("items after the failover: {items:?}");
    }
    eprintln!("{}", demo::list_units(&cluster)?);
    work.passed();
    Ok(())
}
