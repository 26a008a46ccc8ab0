//! Whisper log-mel features: the CPU reference against the numpy
//! implementation Smart Turn ships (on real speech), and the WGSL version
//! on the wgpu adapter against the CPU reference. No adapter: the GPU test fails.

use tete_engine::gpu::{AdapterKind, Gpu, LogMel};
use tete_kernels::mel::{self, N_MELS};

const CLIP: &str = "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav";

/// The clip, zero-padded at the end to 8 s as Smart Turn's front end does.
fn eight_seconds() -> Vec<f32> {
    let bytes = std::fs::read(CLIP).unwrap_or_else(|e| panic!("{CLIP}: {e} (apt-get install pocketsphinx-testdata)"));
    let data = bytes.windows(4).position(|w| w == b"data").expect("a data chunk") + 8;
    let mut audio: Vec<f32> =
        bytes[data..].chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0).collect();
    audio.resize(128_000, 0.0);
    audio
}

#[test]
fn cpu_reference_matches_smart_turns_numpy_front_end() {
    let fixture: serde_json::Value = serde_json::from_str(include_str!("fixtures/log_mel_0870.json")).unwrap();
    let stride = fixture["stride"].as_u64().unwrap() as usize;
    let audio = eight_seconds();
    for (key, normalize) in [("plain", false), ("normalized", true)] {
        let got = mel::log_mel(&audio, normalize);
        assert_eq!(got.len(), N_MELS * 800, "80 x 800 for 8 s");
        let want: Vec<f64> = fixture[key]["samples"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let mut max = 0.0f64;
        for (j, w) in want.iter().enumerate() {
            let g = f64::from(got[j * stride]);
            max = max.max((g - w).abs());
            // Tolerance 1e-4: both compute in f64; the difference is the f32 output and summation order.
            assert!(
                (g - w).abs() < 1e-4,
                "{key}: value {} (mel {}, frame {}): ours {g} vs reference {w}",
                j * stride,
                j * stride / 800,
                j * stride % 800
            );
        }
        let mean = got.iter().map(|&v| f64::from(v)).sum::<f64>() / got.len() as f64;
        assert!((mean - fixture[key]["mean"].as_f64().unwrap()).abs() < 1e-5, "{key}: mean {mean}");
        eprintln!("{key}: max |ours - numpy| over {} samples = {max:e}", want.len());
    }
}

#[test]
fn wgsl_log_mel_matches_the_cpu_reference() {
    let gpu = Gpu::open(AdapterKind::Any).unwrap_or_else(|e| panic!("no wgpu adapter: {e}"));
    let log_mel = LogMel::new(&gpu);
    let audio = eight_seconds();
    for normalize in [false, true] {
        let cpu = mel::log_mel(&audio, normalize);
        let gpu_out = log_mel.compute(&gpu, &audio, normalize).unwrap();
        assert_eq!(gpu_out.len(), cpu.len());
        let diffs: Vec<f32> = cpu.iter().zip(&gpu_out).map(|(a, b)| (a - b).abs()).collect();
        let max = diffs.iter().copied().fold(0.0, f32::max);
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        eprintln!("normalize={normalize}: max |wgsl - cpu| = {max:e}, mean {mean:e}");
        // Tolerance: f32 DFT sums of 400 terms against f64; measured on
        // lavapipe: max 5.6e-6, mean 1e-7. Bounds: 1e-4 per value, 1e-6 mean.
        let worst = diffs.iter().position(|&d| d == max).unwrap();
        assert!(
            max < 1e-4,
            "value {worst} (mel {}, frame {}): wgsl {} vs cpu {}",
            worst / 800,
            worst % 800,
            gpu_out[worst],
            cpu[worst]
        );
        assert!(mean < 1e-6, "mean difference {mean}");
    }
    // Short input: no frames, no dispatch.
    assert!(log_mel.compute(&gpu, &[0.0; 100], false).unwrap().is_empty());
}

#[test]
fn engine_cpu_path_matches_the_reference_on_speech() {
    let audio = eight_seconds();
    let mut fast = tete_engine::features::LogMelCpu::new();
    for normalize in [false, true] {
        let want = mel::log_mel(&audio, normalize);
        let got = fast.compute(&audio, normalize);
        let max = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        eprintln!("normalize={normalize}: max |realfft - reference| = {max:e}");
        assert!(max < 1e-4, "normalize={normalize}: {max}");
    }
}
