//! The configuration compatibility corpus (`tests/compat/`): nginx configurations written the way
//! real sites write them. Each must pass `imbang -t`; when Debian's nginx is installed, each must
//! pass `nginx -t` too, which proves the corpus is made of configurations nginx accepts.
//!
//! A configuration that needs a module imbang does not have yet is listed in [`PENDING`] with
//! what it waits for, and the test asserts that `imbang -t` still refuses it: when the module
//! lands, the test fails until the entry is removed, so the list is always the truth.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{TempDir, imbang_bin};

/// Corpus entries `imbang -t` refuses today, and why.
const PENDING: &[(&str, &str)] = &[];

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat")
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A self-signed ECDSA certificate for the TLS entries, made with the openssl command line.
fn make_certificate(dir: &Path) {
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=mydomain.xyz",
            "-keyout",
        ])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .expect("openssl (Debian's openssl package) makes the test certificate");
    assert!(status.status.success(), "openssl req: {status:?}");
}

struct Run {
    ok: bool,
    output: String,
}

fn run(program: &Path, prefix: &Path) -> Run {
    let out = Command::new(program)
        .arg("-t")
        .arg("-p")
        .arg(format!("{}/", prefix.display()))
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    Run {
        ok: out.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn every_corpus_config_passes_imbang_t_and_nginx_t() {
    let nginx = Path::new("/usr/sbin/nginx");
    if !nginx.exists() {
        eprintln!("compat: /usr/sbin/nginx is absent (Debian's nginx-light): nginx -t is skipped");
    }
    let dir = TempDir::new("compat");
    copy_tree(&corpus(), dir.path());
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("nginx.conf").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 10, "the corpus has its entries: {names:?}");
    for (pending, _) in PENDING {
        assert!(
            names.iter().any(|n| n == pending),
            "PENDING names {pending}, which is not in the corpus"
        );
    }

    let mut failures = Vec::new();
    for name in &names {
        let prefix = dir.path().join(name);
        std::fs::create_dir_all(prefix.join("logs")).unwrap();
        std::fs::create_dir_all(prefix.join("temp")).unwrap();
        if std::fs::read_to_string(prefix.join("nginx.conf"))
            .unwrap()
            .contains("ssl_certificate")
        {
            make_certificate(&prefix);
        }
        if nginx.exists() {
            let theirs = run(nginx, &prefix);
            assert!(
                theirs.ok,
                "nginx -t refuses corpus entry {name}:\n{}",
                theirs.output
            );
        }
        let ours = run(&imbang_bin(), &prefix);
        let waits_for = PENDING.iter().find(|(n, _)| n == name).map(|(_, why)| *why);
        match (ours.ok, waits_for) {
            (true, None) | (false, Some(_)) => {}
            (false, None) => failures.push(format!("imbang -t refuses {name}:\n{}", ours.output)),
            (true, Some(why)) => failures.push(format!(
                "imbang -t now accepts {name} (it waited for {why}): remove it from PENDING"
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
