//! Small FAT drives for VMs: NoCloud seeds (`cidata`) and OpenStack config drives (`config-2`),
//! which Keel's provisioner finds by label. Made with mkfs.vfat and mtools, no mounting.

use std::collections::BTreeSet;
use std::path::Path;

use super::VmError;
use crate::tools;

/// Writes `img`, a FAT drive labelled `label` holding `files` (paths inside the drive, with
/// `/` between folders, and their contents). Attach it with `VmConfig::extra_drives`.
pub fn vfat_drive(img: &Path, label: &str, files: &[(&str, &[u8])]) -> Result<(), VmError> {
    let tool_err = |e: tools::ToolError| {
        VmError::io(
            format!("making {}", img.display()),
            std::io::Error::other(e.to_string()),
        )
    };
    let staging = tempfile::Builder::new()
        .prefix("keel-drive-")
        .tempdir_in(img.parent().unwrap_or(Path::new(".")))
        .map_err(|e| VmError::io("making a staging folder", e))?;
    let partial = staging.path().join("drive.img");
    tools::run(
        tools::command("mkfs.vfat", ["-n", label, "-C"])
            .arg(&partial)
            .arg("4096"),
    )
    .map_err(tool_err)?;
    let mtools = |args: &[&std::ffi::OsStr]| {
        let mut cmd = tools::command(args[0].to_str().expect("tool name"), ["-i"]);
        cmd.arg(&partial)
            .args(&args[1..])
            .env("MTOOLS_SKIP_CHECK", "1");
        tools::run(&mut cmd).map_err(tool_err)
    };
    // Every folder above a file, parents first (the set's order puts "a" before "a/b").
    let folders: BTreeSet<String> = files
        .iter()
        .flat_map(|(path, _)| {
            let parts: Vec<&str> = path.split('/').collect();
            (1..parts.len()).map(move |n| parts[..n].join("/"))
        })
        .collect();
    for folder in &folders {
        mtools(&["mmd".as_ref(), format!("::/{folder}").as_ref()])?;
    }
    for (n, (path, content)) in files.iter().enumerate() {
        let local = staging.path().join(format!("file-{n}"));
        std::fs::write(&local, content)
            .map_err(|e| VmError::io(format!("writing {}", local.display()), e))?;
        mtools(&[
            "mcopy".as_ref(),
            local.as_os_str(),
            format!("::/{path}").as_ref(),
        ])?;
    }
    std::fs::rename(&partial, img)
        .map_err(|e| VmError::io(format!("moving the drive to {}", img.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_drive_holds_its_files_under_their_folders() {
        if tools::find("mkfs.vfat").is_none() || tools::find("mtype").is_none() {
            eprintln!("skipped: dosfstools and mtools are not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("config-2.img");
        vfat_drive(
            &img,
            "config-2",
            &[
                ("openstack/latest/user_data", b"#cloud-config\n"),
                ("openstack/latest/meta_data.json", b"{}"),
                (
                    "ec2/latest/meta-data.json",
                    b"{\"local-ipv4\":\"10.0.0.1\"}",
                ),
            ],
        )
        .unwrap();
        let read = |path: &str| {
            tools::run(
                tools::command("mtype", ["-i"])
                    .arg(&img)
                    .arg(format!("::/{path}"))
                    .env("MTOOLS_SKIP_CHECK", "1"),
            )
            .unwrap()
        };
        assert_eq!(read("openstack/latest/user_data"), "#cloud-config\n");
        assert_eq!(
            read("ec2/latest/meta-data.json"),
            "{\"local-ipv4\":\"10.0.0.1\"}"
        );
        let label = tools::run(
            tools::command("mlabel", ["-s", "-i"])
                .arg(&img)
                .arg("::")
                .env("MTOOLS_SKIP_CHECK", "1"),
        )
        .unwrap();
        assert!(label.contains("config-2"), "{label}");
        // Only the drive is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
