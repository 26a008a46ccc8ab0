//! Face analysis on real models: BlazeFace and FaceMesh in candle against
//! the original `.tflite` files (ai-edge-litert) on inputs both sides build
//! bit for bit from the astronaut portrait, the whole pipeline against
//! MediaPipe's own solutions on that portrait, and images without a face,
//! tiny or oddly shaped. Fixture: `fixtures/face_reference.py`.

mod common;

use std::io::Read;
use std::time::Instant;

use candle_core::{Device, Tensor};
use common::{max_diff, missing, model_dir, model_path};
use tete_engine::face::{
    BlazeFace, BoundingBox, Detection, DetectorConfig, FaceError, FaceMesh, Keypoint, LANDMARKS, RgbImage,
};
use tete_engine::models::{Store, default_home};

fn fixture() -> serde_json::Value {
    serde_json::from_str(include_str!("fixtures/face_reference.json")).unwrap()
}

fn blazeface() -> BlazeFace {
    BlazeFace::load(&model_path("blazeface-short-range"), &Device::Cpu).unwrap_or_else(missing)
}

fn facemesh() -> FaceMesh {
    FaceMesh::load(&model_path("facemesh"), &Device::Cpu).unwrap_or_else(missing)
}

fn astronaut() -> RgbImage {
    let path = model_dir("astronaut-portrait").join("astronaut.png");
    image::open(&path).unwrap_or_else(|e| missing(format!("{}: {e}", path.display()))).to_rgb8()
}

/// scikit-image's coffee.png (a cup of coffee, 600×400), read out of the
/// wheel `tete models fetch` downloaded for the astronaut portrait.
fn coffee() -> RgbImage {
    let dir = Store::new(default_home()).downloads_dir();
    let wheel = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| missing(format!("{}: {e}", dir.display())))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("scikit_image-")))
        .unwrap_or_else(|| missing(format!("no scikit_image wheel in {}", dir.display())));
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&wheel).unwrap()).unwrap();
    let mut bytes = Vec::new();
    zip.by_name("skimage/data/coffee.png").unwrap().read_to_end(&mut bytes).unwrap();
    image::load_from_memory(&bytes).unwrap().to_rgb8()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// The portrait averaged over 4×4 blocks, in [-1, 1]: the reference's BlazeFace input.
fn blazeface_input(image: &RgbImage) -> Tensor {
    let mut data = Vec::with_capacity(128 * 128 * 3);
    for (y, x, c) in (0..128u32).flat_map(|y| (0..128u32).flat_map(move |x| (0..3).map(move |c| (y, x, c)))) {
        let sum: u32 = (0..16).map(|i| image.get_pixel(4 * x + i % 4, 4 * y + i / 4)[c] as u32).sum();
        data.push(sum as f32 / 16.0 / 127.5 - 1.0);
    }
    Tensor::from_vec(data, (1, 128, 128, 3), &Device::Cpu).unwrap()
}

/// The 192×192 window at (x0, y0), in [0, 1]: the reference's FaceMesh input.
fn facemesh_input(image: &RgbImage, x0: u32, y0: u32) -> Tensor {
    let mut data = Vec::with_capacity(192 * 192 * 3);
    for y in y0..y0 + 192 {
        for x in x0..x0 + 192 {
            data.extend(image.get_pixel(x, y).0.map(|v| v as f32 / 255.0));
        }
    }
    Tensor::from_vec(data, (1, 192, 192, 3), &Device::Cpu).unwrap()
}

#[test]
fn blazeface_matches_tflite() {
    let model = blazeface();
    let reference = &fixture()["blazeface"];
    let raw = model.forward(&blazeface_input(&astronaut())).unwrap();
    let anchors: Vec<usize> =
        reference["anchors"].as_array().unwrap().iter().map(|a| a.as_u64().unwrap() as usize).collect();
    let got_logits: Vec<f32> = anchors.iter().map(|&a| raw.logits[a]).collect();
    let want_regressors: Vec<f32> = reference["regressors"].as_array().unwrap().iter().flat_map(floats).collect();
    let got_regressors: Vec<f32> =
        anchors.iter().flat_map(|&a| raw.regressors[a * 16..(a + 1) * 16].iter().copied()).collect();
    let (logit_diff, li) = max_diff(&got_logits, &floats(&reference["logits"]));
    let (reg_diff, ri) = max_diff(&got_regressors, &want_regressors);
    println!(
        "BlazeFace vs TFLite over {} anchors: max |diff| logits {logit_diff:.2e}, regressors {reg_diff:.2e}",
        anchors.len()
    );
    // Regressors are in 128-pixel units (|values| up to ~60 here); f32 sums
    // in another order move them by ~1e-4.
    assert!(
        logit_diff < 1e-3,
        "logit of anchor {}: {} vs {}",
        anchors[li],
        got_logits[li],
        floats(&reference["logits"])[li]
    );
    assert!(
        reg_diff < 2e-3,
        "regressor {} of anchor {}: {} vs {}",
        ri % 16,
        anchors[ri / 16],
        got_regressors[ri],
        want_regressors[ri]
    );
    let best = raw.logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
    assert_eq!(best as u64, reference["best"].as_u64().unwrap(), "best anchor");
}

#[test]
fn facemesh_matches_tflite() {
    let model = facemesh();
    let reference = &fixture()["facemesh"];
    let (x0, y0) = (reference["x0"].as_u64().unwrap() as u32, reference["y0"].as_u64().unwrap() as u32);
    let (points, flag) = model.forward(&facemesh_input(&astronaut(), x0, y0)).unwrap();
    assert_eq!(points.len(), LANDMARKS);
    let got: Vec<f32> = points.iter().flatten().copied().collect();
    let want = floats(&reference["landmarks"]);
    let (diff, i) = max_diff(&got, &want);
    let want_flag = reference["flag"].as_f64().unwrap() as f32;
    println!("FaceMesh vs TFLite: max |diff| landmarks {diff:.2e} (192-px units), flag logit {flag} vs {want_flag}");
    assert!(diff < 2e-3, "landmark {} coordinate {}: {} vs {}", i / 3, i % 3, got[i], want[i]);
    assert!((flag - want_flag).abs() < 2e-3, "flag logit {flag} vs {want_flag}");

    let (_, coffee_flag) = model.forward(&facemesh_input(&coffee(), 0, 0)).unwrap();
    let want_coffee = reference["coffee_flag"].as_f64().unwrap() as f32;
    println!("FaceMesh on coffee: flag logit {coffee_flag} vs {want_coffee}");
    assert!((coffee_flag - want_coffee).abs() < 2e-3, "coffee flag logit {coffee_flag} vs {want_coffee}");
}

/// Milliseconds per call of `f`, over `n` calls after one warm-up.
fn time_ms<T>(n: u32, mut f: impl FnMut() -> T) -> f64 {
    f();
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(f());
    }
    start.elapsed().as_secs_f64() * 1000.0 / n as f64
}

#[test]
fn pipeline_matches_mediapipe_on_astronaut() {
    let (detector, mesher) = (blazeface(), facemesh());
    let image = astronaut();
    let reference = &fixture()["mediapipe"];
    let faces = detector.detect(&image).unwrap();
    assert_eq!(faces.len(), 1, "{faces:?}");
    let face = &faces[0];
    let want = &reference["detection"];
    let want_box = floats(&want["box"]);
    let got_box = [face.bbox.xmin, face.bbox.ymin, face.bbox.width, face.bbox.height];
    let want_keypoints: Vec<f32> = want["keypoints"].as_array().unwrap().iter().flat_map(floats).collect();
    let got_keypoints: Vec<f32> = face.keypoints.iter().flatten().copied().collect();
    let (box_diff, _) = max_diff(&got_box, &want_box);
    let (kp_diff, _) = max_diff(&got_keypoints, &want_keypoints);
    let want_score = want["score"].as_f64().unwrap() as f32;
    println!(
        "detection: box {got_box:?} score {:.4}; MediaPipe box {want_box:?} score {want_score:.4}; \
         max |diff| box {box_diff:.2} px, keypoints {kp_diff:.2} px",
        face.score
    );
    // Sanity: the face of the 512×512 portrait is near (225, 130), ~95 px wide.
    let [cx, cy] = face.bbox.center();
    assert!((200.0..250.0).contains(&cx) && (105.0..155.0).contains(&cy), "box centre ({cx}, {cy})");
    assert!((70.0..120.0).contains(&face.bbox.width) && (70.0..120.0).contains(&face.bbox.height), "{:?}", face.bbox);
    for k in [Keypoint::RightEye, Keypoint::LeftEye, Keypoint::NoseTip, Keypoint::Mouth] {
        assert!(face.bbox.contains(face.keypoint(k)), "{k:?} at {:?} outside {:?}", face.keypoint(k), face.bbox);
    }
    assert!(face.keypoint(Keypoint::RightEye)[0] < face.keypoint(Keypoint::LeftEye)[0], "eyes in image order");
    // MediaPipe samples the letterbox bilinearly (cv::warpAffine), we
    // resize with a triangle filter: the inputs differ, so a few pixels.
    assert!(box_diff < 3.0 && kp_diff < 3.0, "box {box_diff} px, keypoints {kp_diff} px from MediaPipe's");
    assert!((face.score - want_score).abs() < 0.05, "score {} vs MediaPipe's {want_score}", face.score);

    let mesh = mesher.landmarks(&image, face).unwrap();
    assert_eq!(mesh.points.len(), LANDMARKS);
    let want_mesh: Vec<[f32; 3]> = reference["mesh"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let p = floats(p);
            [p[0], p[1], p[2]]
        })
        .collect();
    let dist = |a: &[f32; 3], b: &[f32; 3]| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
    let errors: Vec<f32> = mesh.points.iter().zip(&want_mesh).map(|(a, b)| dist(a, b)).collect();
    let mean = errors.iter().sum::<f32>() / errors.len() as f32;
    let worst = errors.iter().copied().fold(0.0, f32::max);
    let z_worst = mesh.points.iter().zip(&want_mesh).map(|(a, b)| (a[2] - b[2]).abs()).fold(0.0, f32::max);
    println!(
        "mesh: presence {:.4}, roi {:?}; vs MediaPipe: mean {mean:.2} px, worst {worst:.2} px in (x, y), worst {z_worst:.2} in z",
        mesh.presence, mesh.roi
    );
    assert!(mesh.presence > 0.9, "presence {}", mesh.presence);
    // A box one half larger on each side holds the whole mesh (forehead and
    // chin reach beyond the detector's box).
    let b = face.bbox;
    let outer = BoundingBox {
        xmin: b.xmin - b.width / 2.0,
        ymin: b.ymin - b.height / 2.0,
        width: 2.0 * b.width,
        height: 2.0 * b.height,
    };
    for (i, p) in mesh.points.iter().enumerate() {
        assert!(outer.contains([p[0], p[1]]), "landmark {i} at {p:?} outside {outer:?}");
    }
    let inside = mesh.points.iter().filter(|p| b.contains([p[0], p[1]])).count();
    println!("{inside} of {LANDMARKS} landmarks inside the detection box");
    // The inputs differ as the detections do (resize filter, sub-pixel ROI):
    // a few pixels on a 95-pixel face.
    assert!(
        mean < 2.0 && worst < 5.0 && z_worst < 5.0,
        "mesh off MediaPipe's by mean {mean}, worst {worst}, z {z_worst}"
    );

    let detect_ms = time_ms(10, || detector.detect(&image).unwrap());
    let mesh_ms = time_ms(10, || mesher.landmarks(&image, face).unwrap());
    let detect_net_ms = time_ms(10, || detector.forward(&blazeface_input(&image)).unwrap());
    let mesh_input = facemesh_input(&image, 129, 35);
    let mesh_net_ms = time_ms(10, || mesher.forward(&mesh_input).unwrap());
    let build = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!(
        "CPU, {build} build: {detect_ms:.1} ms per detection (512×512), {mesh_ms:.1} ms per mesh; \
         nets alone {detect_net_ms:.1} ms and {mesh_net_ms:.1} ms (no timed assertion)"
    );
}

#[test]
fn no_face_in_grey_noise_or_coffee() {
    let detector = blazeface();
    let grey = RgbImage::from_pixel(640, 480, image::Rgb([128, 128, 128]));
    let mut state = 0x2545_f491_u32;
    let noise = RgbImage::from_fn(320, 240, |_, _| {
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        };
        image::Rgb([next(), next(), next()])
    });
    for (name, image) in [("grey", grey), ("noise", noise), ("coffee", coffee())] {
        let faces = detector.detect(&image).unwrap();
        println!("{name} {:?}: {} faces", image.dimensions(), faces.len());
        assert!(faces.is_empty(), "{name}: {faces:?}");
    }
}

#[test]
fn tiny_and_odd_images_do_not_panic() {
    let (detector, mesher) = (blazeface(), facemesh());
    let portrait = astronaut();
    let odd = image::imageops::resize(&portrait, 641, 479, image::imageops::FilterType::Triangle);
    for (w, h) in [(8, 8), (1, 300), (300, 1), (1, 1)] {
        let image = RgbImage::from_pixel(w, h, image::Rgb([90, 60, 40]));
        let faces = detector.detect(&image).unwrap();
        assert!(faces.is_empty(), "{w}×{h}: {faces:?}");
        let tiled = detector.detect_tiled(&image, &DetectorConfig::default(), 2).unwrap();
        assert!(tiled.is_empty(), "{w}×{h} in tiles: {tiled:?}");
        // A mesh of a made-up face covering the whole image: edge pixels replicate.
        let made_up = Detection {
            bbox: BoundingBox { xmin: 0.0, ymin: 0.0, width: w as f32, height: h as f32 },
            keypoints: [[0.0, 0.0], [w as f32, 0.0], [0.0; 2], [0.0; 2], [0.0; 2], [0.0; 2]],
            score: 1.0,
        };
        let mesh = mesher.landmarks(&image, &made_up).unwrap();
        assert!(mesh.points.iter().flatten().all(|v| v.is_finite()), "{w}×{h}");
    }
    // The portrait stretched to 641×479 still shows one face.
    let faces = detector.detect(&odd).unwrap();
    println!("641×479 stretched portrait: {faces:?}");
    assert_eq!(faces.len(), 1);
    assert_eq!(detector.detect_tiled(&odd, &DetectorConfig::default(), 2).unwrap().len(), 1);
    let empty = RgbImage::new(0, 0);
    assert!(matches!(detector.detect(&empty), Err(FaceError::EmptyImage { .. })));
    let tiled = detector.detect_tiled(&empty, &DetectorConfig::default(), 2);
    assert!(matches!(tiled, Err(FaceError::EmptyImage { .. })));
    assert!(matches!(mesher.landmarks(&empty, &faces[0]), Err(FaceError::EmptyImage { .. })));
    // A tensor of the wrong shape is an error, not a panic.
    let wrong = Tensor::zeros((1, 64, 64, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(detector.forward(&wrong), Err(FaceError::Input { .. })));
    assert!(matches!(mesher.forward(&wrong), Err(FaceError::Input { .. })));
}
