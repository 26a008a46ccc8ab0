//! The `tete` binary as a user runs it.

use std::process::Command;

fn tete(home: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tete"))
        .args(args)
        .env("TETE_HOME", home)
        .env_remove("TETE_MODELS_MANIFEST")
        .output()
        .expect("running tete");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn serve_on_cuda_without_a_driver_fails_clearly() {
    let home = tempfile::tempdir().unwrap();
    let (ok, out) = tete(home.path(), &["serve", "--device", "cuda", "--bind", "127.0.0.1:0"]);
    assert!(!ok, "{out}");
    assert!(!out.contains("panicked"), "{out}");
    assert!(out.contains("no CUDA support") || out.contains("no NVIDIA driver"), "{out}");
}

#[test]
fn bad_device_names_are_rejected() {
    let home = tempfile::tempdir().unwrap();
    let (ok, out) = tete(home.path(), &["serve", "--device", "tpu"]);
    assert!(!ok);
    assert!(out.contains("expected auto, cpu, cuda"), "{out}");
}

#[test]
fn bad_video_sizes_are_rejected() {
    let home = tempfile::tempdir().unwrap();
    for size in ["100", "32", "2048", "big"] {
        let (ok, out) = tete(home.path(), &["serve", "--video-size", size]);
        assert!(!ok, "--video-size {size} was taken");
        assert!(out.contains("--video-size") && out.contains(size), "{size}: {out}");
    }
}

#[test]
fn models_list_shows_every_model_and_serve_refuses_without_them() {
    let home = tempfile::tempdir().unwrap();
    let (ok, out) = tete(home.path(), &["models", "list"]);
    assert!(ok, "{out}");
    for id in [
        "silero-vad",
        "smart-turn-v3.2",
        "whisper-tiny.en",
        "whisper-base",
        "smollm2-135m-instruct",
        "piper-en_US-joe-medium",
        "facemesh",
        "face-expression",
    ] {
        assert!(out.lines().any(|l| l.starts_with(id) && l.contains("missing")), "{id} not listed as missing:\n{out}");
    }
    assert!(out.contains("not ready: run `tete models fetch`"), "{out}");

    let (ok, out) = tete(home.path(), &["serve", "--device", "cpu", "--bind", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(out.contains("default models are not ready") && out.contains("tete models fetch"), "{out}");
}

#[test]
fn a_broken_manifest_is_reported_not_panicked_on() {
    let home = tempfile::tempdir().unwrap();
    let bad = home.path().join("models.toml");
    std::fs::write(&bad, "[registries\nbroken").unwrap();
    let (ok, out) = tete(home.path(), &["--manifest", bad.to_str().unwrap(), "models", "list"]);
    assert!(!ok);
    assert!(out.contains("models.toml is invalid") && !out.contains("panicked"), "{out}");
}

#[test]
fn api_keys_are_created_listed_and_revoked() {
    let home = tempfile::tempdir().unwrap();
    let (ok, out) = tete(home.path(), &["keys", "create", "ci"]);
    assert!(ok, "{out}");
    let secret = out.lines().last().unwrap().trim().to_string();
    assert!(secret.starts_with("tete_") && secret.len() > 40, "{out}");
    let id = out.split_whitespace().nth(2).unwrap().to_string();
    let (ok, listed) = tete(home.path(), &["keys", "list"]);
    assert!(ok && listed.contains(&id) && listed.contains("active") && !listed.contains(&secret), "{listed}");
    let (ok, out) = tete(home.path(), &["keys", "revoke", &id]);
    assert!(ok, "{out}");
    let (_, listed) = tete(home.path(), &["keys", "list"]);
    assert!(listed.contains("revoked"), "{listed}");
    let (ok, out) = tete(home.path(), &["keys", "revoke", &id]);
    assert!(!ok && out.contains("no active key"), "{out}");
}
