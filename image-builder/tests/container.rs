//! The container image builder for real: mmdebstrap from the host's apt sources, the repo's own
//! specs (configs/containers), a real registry (Debian's docker-registry on a free loopback
//! port). Each test builds with caches of its own, so "cold" means cold.

use std::path::{Path, PathBuf};

use keel_image::container::{self, ContainerError};
use keel_image::registry::Registry;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn spec(name: &str) -> PathBuf {
    repo()
        .join("configs/containers")
        .join(format!("{name}.yaml"))
}

/// Same spec, same package versions, cold caches on both sides: the same digest, the same
/// archive bytes.
#[test]
fn the_same_spec_gives_the_same_image_digest() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = container::build(
        &spec("http"),
        None,
        &a.path().join("out"),
        &a.path().join("cache"),
    )
    .unwrap();
    let second = container::build(
        &spec("http"),
        None,
        &b.path().join("out"),
        &b.path().join("cache"),
    )
    .unwrap();
    assert!(!first.cached && !second.cached);
    assert_eq!(
        first.image.manifest.digest(),
        second.image.manifest.digest()
    );
    assert_eq!(
        std::fs::read(&first.archive).unwrap(),
        std::fs::read(&second.archive).unwrap()
    );
    // A warm rebuild takes the cached packages and still gives the same image.
    let warm = container::build(
        &spec("http"),
        None,
        &a.path().join("out"),
        &a.path().join("cache"),
    )
    .unwrap();
    assert!(warm.cached);
    assert_eq!(warm.image.manifest.digest(), first.image.manifest.digest());
    // The layout reads back as what was built.
    let read = container::read_layout(&first.layout).unwrap();
    assert_eq!(read.reference, "http:latest");
    assert_eq!(read.manifest.digest(), first.image.manifest.digest());
    // The shell image carries no package manager state.
    let shell = container::build(
        &spec("shell"),
        None,
        &a.path().join("out"),
        &a.path().join("cache"),
    )
    .unwrap();
    let layer = flate2::read::GzDecoder::new(shell.image.layer.bytes.as_slice());
    let mut archive = tar::Archive::new(layer);
    let paths: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(paths.contains(&"bin/busybox".to_string()), "{paths:?}");
    assert!(paths.contains(&"bin/sh".to_string()), "{paths:?}");
    assert!(
        !paths
            .iter()
            .any(|p| p.starts_with("var/lib/dpkg") || p.starts_with("usr/share/doc")),
        "{paths:?}"
    );
}

#[test]
fn bad_specs_name_file_line_and_package_and_leave_no_image() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let base = std::fs::read_to_string(spec("shell")).unwrap();
    let unknown_key = write("key.yaml", &base.replace("cmd:", "command:"));
    let err = container::build(
        &unknown_key,
        Some(&repo().join("overlays")),
        &out,
        &dir.path().join("cache"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("key.yaml:") && err.contains("unknown field `command`"),
        "{err}"
    );
    let wrong_type = write(
        "type.yaml",
        &base.replace("source_date_epoch: 1700000000", "source_date_epoch: soon"),
    );
    let err = container::build(
        &wrong_type,
        Some(&repo().join("overlays")),
        &out,
        &dir.path().join("cache"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("type.yaml:") && err.contains("source_date_epoch"),
        "{err}"
    );
    let no_package = write(
        "package.yaml",
        &base.replace(
            "packages: [busybox-static]",
            "packages:\n  - busybox-static\n  - keel-no-such-package",
        ),
    );
    let line = std::fs::read_to_string(&no_package)
        .unwrap()
        .lines()
        .position(|l| l.contains("keel-no-such-package"))
        .unwrap()
        + 1;
    let err = container::build(
        &no_package,
        Some(&repo().join("overlays")),
        &out,
        &dir.path().join("cache"),
    )
    .unwrap_err();
    assert!(
        matches!(err, ContainerError::UnknownPackage { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "{}:{line}: package \"keel-no-such-package\"",
            no_package.display()
        )),
        "{text}"
    );
    // Nothing landed: no image, no half-written file, no cached tree.
    let landed: Vec<_> = std::fs::read_dir(&out)
        .map(|d| d.count())
        .into_iter()
        .collect();
    assert!(landed.iter().all(|n| *n == 0), "{landed:?}");
    let cached: Vec<_> = std::fs::read_dir(dir.path().join("cache/containers"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(cached.is_empty(), "{cached:?}");
}

/// The images go into Debian's docker-registry and come back out by the distribution API, as
/// docker pulls them.
#[test]
fn images_push_to_a_real_registry() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let built = container::build(&spec("shell"), None, &out, &dir.path().join("cache")).unwrap();
    let registry = Registry::start(&dir.path().join("registry")).unwrap();
    assert!(registry.addr().ip().is_loopback());
    assert_eq!(registry.push_all(&out).unwrap(), ["shell:latest"]);
    // Again: every blob is there already, the manifest is the same.
    assert_eq!(
        registry.push(&built.image).unwrap(),
        built.image.manifest.digest()
    );
    let response = ureq::get(&format!("{}/v2/shell/manifests/latest", registry.url()))
        .set("Accept", "application/vnd.oci.image.manifest.v1+json")
        .call()
        .unwrap();
    assert_eq!(
        response.header("Docker-Content-Digest"),
        Some(built.image.manifest.digest().as_str())
    );
    let layer = ureq::get(&format!(
        "{}/v2/shell/blobs/{}",
        registry.url(),
        built.image.layer.digest()
    ))
    .call()
    .unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut layer.into_reader(), &mut bytes).unwrap();
    assert_eq!(bytes, built.image.layer.bytes);
    // A registry that is not up says so.
    let url = registry.url();
    drop(registry);
    let err = keel_image::registry::push::push(&url, &built.image)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("no registry answers at {url}")),
        "{err}"
    );
}
