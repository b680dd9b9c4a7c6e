//! The deployment files, checked offline by `k8s/check.py`: every overlay rendered and
//! validated (Kubernetes' schemas, KEDA's, checkov's policies), the Dockerfile read. And
//! the check itself catches what it is for: a broken copy of the tree fails, naming each
//! fault.
//!
//! Needs `kubectl` and a Python with k8s/requirements.txt (`XT_K8S_PYTHON`, as .ci/run
//! sets); skipped without them unless `XT_REQUIRE_K8S` is set.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The Python to run the check with, or `None` (the test skips, saying why).
fn python() -> Option<String> {
    let python = std::env::var("XT_K8S_PYTHON").unwrap_or_else(|_| "python3".into());
    let has = |cmd: &mut Command| cmd.output().is_ok_and(|o| o.status.success());
    let ready = has(Command::new("kubectl").args(["version", "--client"]))
        && has(Command::new(&python).args(["-c", "import yaml, jsonschema, kubernetes_validate"]));
    if ready {
        return Some(python);
    }
    let why = format!(
        "kubectl, or {python} with k8s/requirements.txt, missing (set XT_K8S_PYTHON; .ci/run does)"
    );
    assert!(
        std::env::var_os("XT_REQUIRE_K8S").is_none(),
        "XT_REQUIRE_K8S is set, but {why}"
    );
    eprintln!("skipped: {why}");
    None
}

fn check(python: &str, tree: &Path) -> (bool, String) {
    let out = Command::new(python)
        .arg(root().join("k8s/check.py"))
        .arg("--root")
        .arg(tree)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn replace(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

#[test]
fn every_overlay_renders_validates_and_passes_the_policies() {
    let Some(python) = python() else {
        return;
    };
    let (ok, out) = check(&python, &root());
    assert!(ok, "{out}");
    assert!(
        out.contains("ok: overlays dev, prod and the Dockerfile"),
        "{out}"
    );
}

#[test]
fn a_broken_manifest_or_dockerfile_fails_the_check() {
    let Some(python) = python() else {
        return;
    };
    let tree = xt_testkit::scratch("deploy-broken");
    copy_tree(&root().join("k8s"), &tree.join("k8s"));
    std::fs::copy(root().join("Dockerfile"), tree.join("Dockerfile")).unwrap();
    // A misspelled field, a KEDA metadata value that is not a string, a root user.
    replace(
        &tree.join("k8s/base/worker.yaml"),
        "terminationGracePeriodSeconds: 40",
        "terminationGracePeriodSecond: 40",
    );
    replace(
        &tree.join("k8s/components/keda/scaledobject.yaml"),
        "targetValue: \"8\"",
        "targetValue: 8",
    );
    replace(&tree.join("Dockerfile"), "USER 10001:10001", "USER root");
    let (ok, out) = check(&python, &tree);
    assert!(!ok, "{out}");
    assert!(
        out.contains("'terminationGracePeriodSecond' was unexpected"),
        "{out}"
    );
    assert!(
        out.contains("targetValue: 8 is not of type 'string'"),
        "{out}"
    );
    assert!(out.contains("non-root USER"), "{out}");
}
