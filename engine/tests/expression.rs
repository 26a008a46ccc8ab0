//! face-api's expression net in candle against face-api itself in tfjs
//! (CPU backend) on inputs both sides build bit for bit: three synthetic
//! 112×112 images from an integer formula and two non-square crops of the
//! astronaut portrait, whose pad-to-square and resize are compared too.
//! Then the whole path on the portrait's face as BlazeFace finds it (she
//! smiles), and bad inputs. Fixture: `fixtures/face_expression_reference.mjs`.

mod common;

use std::time::Instant;

use candle_core::{Device, Tensor};
use common::{max_diff, missing, model_dir, model_path};
use tete_engine::face::{BlazeFace, RgbImage};
use tete_engine::perception::expression::{INPUT, prepare};
use tete_engine::perception::{Expression, ExpressionNet, PerceptionError};

fn fixture() -> serde_json::Value {
    serde_json::from_str(include_str!("fixtures/face_expression_reference.json")).unwrap()
}

fn net() -> ExpressionNet {
    ExpressionNet::load(&model_path("face-expression"), &Device::Cpu).unwrap_or_else(missing)
}

fn astronaut() -> RgbImage {
    let path = model_dir("astronaut-portrait").join("astronaut.png");
    image::open(&path).unwrap_or_else(|e| missing(format!("{}: {e}", path.display()))).to_rgb8()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// The fixture's synthetic image `n`, in pixel units:
/// tri((x·(c+2) + y·(3−c) + 37·n·(c+1))·(n+1)), tri a triangle wave of period 510.
fn synthetic(n: usize) -> Vec<f32> {
    let tri = |t: usize| (t as i64 % 510 - 255).abs() as f32;
    let mut data = Vec::with_capacity(INPUT * INPUT * 3);
    for y in 0..INPUT {
        for x in 0..INPUT {
            data.extend((0..3).map(|c| tri((x * (c + 2) + y * (3 - c) + 37 * n * (c + 1)) * (n + 1))));
        }
    }
    data
}

#[test]
fn matches_tfjs() {
    let net = net();
    let reference = fixture();
    let portrait = astronaut();
    let entries = reference["inputs"].as_array().unwrap();
    let mut batch = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let name = entry["name"].as_str().unwrap();
        let Some(rect) = reference["crops"].get(name) else {
            batch.extend(synthetic(i));
            continue;
        };
        let rect: Vec<u32> = rect.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let [x, y, w, h] = rect[..] else { panic!("crop {rect:?}") };
        let crop = image::imageops::crop_imm(&portrait, x, y, w, h).to_image();
        let prepared = prepare(&crop).unwrap();
        let every_101: Vec<f32> = prepared.iter().step_by(101).copied().collect();
        let (diff, at) = max_diff(&every_101, &floats(&entry["prepared_every_101"]));
        let sum: f64 = prepared.iter().map(|&v| v as f64).sum();
        let want_sum = entry["prepared_sum"].as_f64().unwrap();
        println!("{name}: prepared input vs tfjs: max |diff| {diff:.2e} (pixel units), sum {sum} vs {want_sum}");
        // Both sides compute the bilinear weights in f64 and round once to f32.
        assert!(diff < 1e-4, "{name}: prepared value {}: {} vs tfjs", at * 101, every_101[at]);
        assert!((sum - want_sum).abs() < 1e-2, "{name}: prepared sum {sum} vs {want_sum}");
        // One crop alone gives its row of the batch.
        let alone = net.probabilities(&crop).unwrap();
        let (diff, _) = max_diff(&alone, &floats(&entry["probabilities"]));
        assert!(diff < 1e-4, "{name} alone: {alone:?}");
        batch.extend(prepared);
    }
    let input = Tensor::from_vec(batch, (entries.len(), INPUT, INPUT, 3), &Device::Cpu).unwrap();
    let logits = net.logits(&input).unwrap().to_vec2::<f32>().unwrap();
    let probabilities = net.forward(&input).unwrap().to_vec2::<f32>().unwrap();
    let (mut worst_logit, mut worst_probability) = (0f32, 0f32);
    for (i, entry) in entries.iter().enumerate() {
        let name = entry["name"].as_str().unwrap();
        let (want_logits, want_probabilities) = (floats(&entry["logits"]), floats(&entry["probabilities"]));
        let (logit_diff, li) = max_diff(&logits[i], &want_logits);
        let (probability_diff, pi) = max_diff(&probabilities[i], &want_probabilities);
        println!("{name}: max |diff| logits {logit_diff:.2e}, probabilities {probability_diff:.2e}");
        // f32 sums in another order than tfjs's, through 16 convolutions: logits
        // (|values| up to ~24 here) move by ~1e-5.
        assert!(logit_diff < 1e-3, "{name} logit {li}: {} vs tfjs {}", logits[i][li], want_logits[li]);
        assert!(
            probability_diff < 1e-4,
            "{name} probability {pi}: {} vs tfjs {}",
            probabilities[i][pi],
            want_probabilities[pi]
        );
        worst_logit = worst_logit.max(logit_diff);
        worst_probability = worst_probability.max(probability_diff);
    }
    println!(
        "candle vs tfjs over {} inputs: max |diff| logits {worst_logit:.2e}, probabilities {worst_probability:.2e}",
        entries.len()
    );
}

#[test]
fn astronaut_smiles() {
    let (detector, net) =
        (BlazeFace::load(&model_path("blazeface-short-range"), &Device::Cpu).unwrap_or_else(missing), net());
    let image = astronaut();
    let faces = detector.detect(&image).unwrap();
    assert_eq!(faces.len(), 1, "{faces:?}");
    // The box clipped to the image, then floored, as face-api's
    // extractFaceTensors does (`Box::clipAtImageBorders`).
    let crop = tete_engine::perception::face_crop(&image, &faces[0].bbox).unwrap();
    let (w, h) = crop.dimensions();
    let (x0, y0) = (faces[0].bbox.xmin.max(0.0).floor(), faces[0].bbox.ymin.max(0.0).floor());
    let probabilities = net.probabilities(&crop).unwrap();
    let named: Vec<String> =
        Expression::ALL.iter().map(|e| format!("{} {:.2e}", e.label(), probabilities[*e as usize])).collect();
    println!("astronaut, face {w}×{h} at ({x0}, {y0}): {}", named.join(", "));
    assert_eq!(Expression::most_likely(&probabilities), Expression::Happy, "{named:?}");
    assert!((probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-5);

    // Timing, after a warm-up call. candle runs large element-wise ops and
    // matmuls on its thread pools: on a busy machine with few cores, its
    // spinning workers can cost more than they save (RAYON_NUM_THREADS=1).
    net.probabilities(&crop).unwrap();
    let runs = 10;
    let start = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(net.probabilities(&crop).unwrap());
    }
    let single = start.elapsed().as_secs_f64() * 1000.0 / runs as f64;
    let crops = [&crop; 4];
    let start = Instant::now();
    for _ in 0..runs / 2 {
        std::hint::black_box(net.probabilities_batch(&crops).unwrap());
    }
    let batched = start.elapsed().as_secs_f64() * 1000.0 / (runs / 2 * crops.len()) as f64;
    println!("expression net on the CPU: {single:.1} ms per crop alone, {batched:.1} ms per crop in a batch of 4");
}

#[test]
fn bad_inputs_are_errors() {
    let net = net();
    assert!(matches!(net.probabilities(&RgbImage::new(0, 0)), Err(PerceptionError::EmptyImage { .. })));
    assert!(matches!(net.probabilities(&RgbImage::new(7, 0)), Err(PerceptionError::EmptyImage { .. })));
    assert!(matches!(net.probabilities_batch(&[]), Err(PerceptionError::Input { .. })));
    for dims in [vec![1, 112, 112], vec![1, 96, 112, 3], vec![1, 112, 112, 4], vec![0, 112, 112, 3]] {
        let input = Tensor::zeros(dims.as_slice(), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(net.forward(&input), Err(PerceptionError::Input { .. })), "{dims:?}");
    }
    // A thin sliver still works: padded to a square like any crop.
    let sliver = RgbImage::from_pixel(1, 300, image::Rgb([90, 60, 40]));
    let p = net.probabilities(&sliver).unwrap();
    assert!(p.iter().all(|v| v.is_finite()) && (p.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{p:?}");

    let nowhere = std::env::temp_dir().join("tete-no-such-model.safetensors");
    assert!(matches!(ExpressionNet::load(&nowhere, &Device::Cpu), Err(PerceptionError::Load { .. })));
    // Another model's weights: the first tensor looked for is not there.
    let other = ExpressionNet::load(&model_path("blazeface-short-range"), &Device::Cpu);
    assert!(matches!(other, Err(PerceptionError::Missing { .. })), "{:?}", other.err());
}
