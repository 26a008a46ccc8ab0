//! Live perception signals: a scripted call (present and smiling, looking
//! away, gone, back with someone else) gives the expected notes in order
//! and an end-of-call summary that mentions them; head angles and the
//! expression come from the real models on the astronaut portrait, and a
//! session's view of the user answers the persona's questions live and
//! after the call. With the real models: face-api's demo photos counted
//! right, a video assembled from real pictures giving its notes in order,
//! and the executor's seeing lane.

mod common;

use candle_core::Device;
use common::{missing, model_dir, model_path};
use std::sync::Arc;

use tete_engine::face::{BlazeFace, FaceMesh, RgbImage};
use tete_engine::perception::{
    Expression, ExpressionNet, Observation, Perceiver, SignalConfig, SignalTracker, UserView,
};

fn one_hot(e: Expression) -> [f32; 7] {
    let mut p = [0.02; 7];
    p[e as usize] = 0.88;
    p
}

fn script() -> Vec<Observation> {
    let mut frames = Vec::new();
    // Four frames a second for 24 s.
    for i in 0..96 {
        let t = i as f64 / 4.0;
        let o = match t {
            t if t < 6.0 => Observation {
                t,
                faces: 1,
                expression: Some(one_hot(Expression::Happy)),
                head: Some((3.0, 2.0)),
                quick: false,
            },
            t if t < 12.0 => Observation {
                t,
                faces: 1,
                expression: Some(one_hot(Expression::Neutral)),
                head: Some((45.0, 5.0)),
                quick: false,
            },
            t if t < 16.0 => Observation { t, ..Default::default() },
            t => {
                let faces = if t < 18.0 { 1 } else { 2 };
                Observation {
                    t,
                    faces,
                    expression: Some(one_hot(Expression::Surprised)),
                    head: Some((0.0, 0.0)),
                    quick: false,
                }
            }
        };
        frames.push(o);
    }
    frames
}

#[test]
fn a_scripted_call_gives_its_notes_in_order() {
    let mut tracker = SignalTracker::new(SignalConfig::default());
    let notes: Vec<(f64, String)> = script().iter().flat_map(|o| tracker.observe(o)).map(|n| (n.t, n.text)).collect();
    for (t, text) in &notes {
        println!("{t:5.2} s  {text}");
    }
    let texts: Vec<&str> = notes.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        texts,
        [
            "the user is in view",
            "the user looks happy",
            "the user looks neutral",
            "the user has looked away for 3 seconds",
            "the user has left the camera's view",
            "the user is in view",
            "the user looks surprised",
            "a second person joined the frame",
        ]
    );
    // Looking away is noted 3 s after it starts (at 6 s), leaving 2 s after the last face (12 s).
    let at = |text: &str| notes.iter().find(|(_, t)| t == text).unwrap().0;
    assert!((at("the user has looked away for 3 seconds") - 9.0).abs() < 0.3);
    assert!((at("the user has left the camera's view") - 13.75).abs() < 0.3);

    let summary = tracker.summary();
    println!("{}", summary.describe());
    assert_eq!(summary.most_people, 2);
    assert!(summary.attention_share > 0.4 && summary.attention_share < 0.75, "{summary:?}");
    let described = summary.describe();
    assert!(described.contains("happy") && described.contains("Up to 2 people"), "{described}");
}

#[test]
fn observations_out_of_order_or_empty_change_nothing() {
    let mut tracker = SignalTracker::new(SignalConfig::default());
    assert!(tracker.summary().describe().contains("never seen"));
    let first = tracker.observe(&Observation { t: 5.0, faces: 1, ..Default::default() });
    assert_eq!(first.len(), 1);
    assert!(tracker.observe(&Observation { t: 4.0, faces: 0, ..Default::default() }).is_empty());
    assert!(tracker.state().present);
}

/// Quick looks (one detector pass) count only the larger faces: they can
/// raise the count and keep the user present, never lower the count or
/// show the user gone; full looks can.
#[test]
fn quick_looks_are_a_lower_bound() {
    let mut tracker = SignalTracker::new(SignalConfig::default());
    let look = |t: f64, faces: usize, quick: bool| Observation { t, faces, quick, ..Default::default() };
    let mut notes = Vec::new();
    // Three people by full looks every 2 s; the quick looks between see one
    // (the others are small) or none (the user is small too).
    for k in 0..8 {
        let t = k as f64 * 0.5;
        let o = if k % 4 == 0 { look(t, 3, false) } else { look(t, if k % 2 == 0 { 0 } else { 1 }, true) };
        notes.extend(tracker.observe(&o).into_iter().map(|n| n.text));
    }
    assert_eq!(notes, ["the user is in view", "3 people are in the frame"]);
    assert_eq!((tracker.state().present, tracker.state().people), (true, 3));
    // A fourth person close enough for a quick look counts once it holds.
    for t in [4.0, 4.5, 5.0] {
        notes.extend(tracker.observe(&look(t, 4, true)).into_iter().map(|n| n.text));
    }
    assert_eq!(notes.last().map(String::as_str), Some("more people joined the frame"));
    assert_eq!(tracker.state().people, 4);
    // Quick looks with no face for 3 s keep the user; a full look ends it.
    for t in [5.5, 6.0, 7.0, 8.0, 8.5] {
        assert!(tracker.observe(&look(t, 0, true)).is_empty(), "at {t}");
    }
    assert!(tracker.state().present);
    let gone = tracker.observe(&look(9.0, 0, false));
    assert_eq!(gone.iter().map(|n| n.text.as_str()).collect::<Vec<_>>(), ["the user has left the camera's view"]);
    // A full look with fewer people lowers the count once it holds.
    tracker.observe(&look(10.0, 2, false));
    tracker.observe(&look(10.5, 1, true));
    tracker.observe(&look(11.0, 2, false));
    assert_eq!(tracker.state().people, 2);
    assert_eq!(tracker.summary().most_people, 4);
}

fn perceiver() -> Perceiver {
    let cpu = Device::Cpu;
    Perceiver::new(
        Arc::new(BlazeFace::load(&model_path("blazeface-short-range"), &cpu).unwrap_or_else(missing)),
        Arc::new(FaceMesh::load(&model_path("facemesh"), &cpu).unwrap_or_else(missing)),
        Arc::new(ExpressionNet::load(&model_path("face-expression"), &cpu).unwrap_or_else(missing)),
    )
}

fn astronaut() -> RgbImage {
    let path = model_dir("astronaut-portrait").join("astronaut.png");
    image::open(&path).unwrap_or_else(|e| missing(format!("{}: {e}", path.display()))).to_rgb8()
}

#[test]
fn the_real_models_see_a_smiling_user_facing_the_camera() {
    let perceiver = perceiver();
    let image = astronaut();
    let o = perceiver.observe(&image, 0.0).unwrap();
    let (yaw, pitch) = o.head.unwrap();
    println!("astronaut: {} face(s), yaw {yaw:.1}°, pitch {pitch:.1}°", o.faces);
    assert_eq!(o.faces, 1);
    assert!(yaw.abs() < 15.0 && pitch.abs() < 20.0, "a frontal portrait: yaw {yaw}, pitch {pitch}");
    // Mirrored, the head turns the other way by about as much.
    let mirrored = perceiver.observe(&image::imageops::flip_horizontal(&image), 0.0).unwrap().head.unwrap();
    assert!((mirrored.0 + yaw).abs() < 4.0, "yaw {yaw} vs mirrored {}", mirrored.0);

    // Two seconds of that frame at 4 fps: present, then happy.
    let mut tracker = SignalTracker::new(SignalConfig::default());
    let notes: Vec<String> =
        (0..8).flat_map(|i| tracker.observe(&Observation { t: i as f64 / 4.0, ..o.clone() })).map(|n| n.text).collect();
    assert_eq!(notes, ["the user is in view", "the user looks happy"]);
    // The coffee cup: nobody there.
    let coffee = RgbImage::from_pixel(320, 240, image::Rgb([90, 60, 40]));
    assert_eq!(perceiver.observe(&coffee, 0.0).unwrap().faces, 0);
}

/// The astronaut in view for 3 s, then an empty frame for 3 s, read by the
/// real models at 4 frames a second: the persona's live question is
/// answered when the answer changes, and after the call its analysis
/// questions are answered from what was seen (or said to be out of reach).
#[test]
fn a_session_answers_the_personas_questions() {
    let perceiver = perceiver();
    let (face, empty) = (astronaut(), RgbImage::from_pixel(256, 256, image::Rgb([90, 60, 40])));
    let (with_face, without) = (perceiver.observe(&face, 0.0).unwrap(), perceiver.observe(&empty, 0.0).unwrap());
    let questions = ["Is the user smiling?".to_string(), "Is the user wearing a hat?".to_string()];
    let mut view = UserView::new(SignalConfig::default(), &questions);
    let mut notes = Vec::new();
    for k in 0..24 {
        let t = k as f64 / 4.0;
        let o = if t < 3.0 { &with_face } else { &without };
        notes.extend(view.observe(&Observation { t, ..o.clone() }).into_iter().map(|n| n.text));
    }
    println!("{notes:?}");
    assert_eq!(
        notes,
        [
            "the user is in view",
            "the user looks happy",
            "Is the user smiling? yes",
            "the user has left the camera's view"
        ]
    );
    assert!(!view.present());
    let analysis = view.analysis(&["Did the user smile?".into(), "What was on the wall?".into()]);
    println!("{analysis:?}");
    assert_eq!(analysis.timeline.len(), notes.len());
    assert!(analysis.answers[0].1.starts_with("The user looked happy for"), "{:?}", analysis.answers);
    assert!(analysis.answers[1].1.starts_with("Perception cannot answer"), "{:?}", analysis.answers);
    assert!((analysis.summary.seconds_in_view - 3.0).abs() < 0.6, "{:?}", analysis.summary);
}

/// The executor's seeing lane: two sessions' frames handed in together are
/// looked at as one batch and give what the perceiver gives frame by
/// frame; a session with a frame out cannot hand another; an overloaded
/// executor makes the lane skip frames instead of looking, and one whose
/// lanes never stop running makes them wait out their budget and go back.
#[test]
fn the_seeing_lane_looks_for_every_session_and_skips_under_load() {
    use std::time::Duration;
    use tete_engine::scheduler::{ExecutorState, LoadProbe, SIGHT_BUDGET, Seen, Sight, Skip};

    let perceiver = perceiver();
    let (face, empty) = (astronaut(), RgbImage::from_pixel(320, 240, image::Rgb([90, 60, 40])));
    let alone = [perceiver.observe(&face, 1.0).unwrap(), perceiver.observe(&empty, 2.0).unwrap()];

    let sight = Sight::start(perceiver.clone(), None).unwrap();
    let (mut a, mut b) = (sight.viewer(), sight.viewer());
    assert!(a.look(1.0, face.clone()));
    assert!(!a.look(1.5, face.clone()), "a second frame while the first is out");
    assert!(b.look(2.0, empty.clone()));
    for (viewer, expected) in [(&mut a, &alone[0]), (&mut b, &alone[1])] {
        let seen = viewer.seen_waiting(Duration::from_secs(60));
        let [Seen::Looked { t, observation: Ok(o), took }] = seen.as_slice() else { panic!("{seen:?}") };
        assert_eq!((*t, o.faces, o.head), (expected.t, expected.faces, expected.head));
        assert!(*took > Duration::ZERO);
        match (o.expression, expected.expression) {
            (Some(got), Some(want)) => {
                let worst = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0f32, f32::max);
                assert!(worst < 1e-4, "batched {got:?} vs alone {want:?}");
            }
            (got, want) => assert_eq!(got, want),
        }
        assert!(!viewer.busy());
    }
    assert_eq!((sight.figures().items, sight.skipped()), (2, 0));

    let state = |load, running| -> LoadProbe { Arc::new(move || ExecutorState { load, running }) };
    let loaded = Sight::start(perceiver.clone(), Some(state(0.95, 0))).unwrap();
    let mut c = loaded.viewer();
    assert!(c.look(3.0, face.clone()));
    assert_eq!(c.seen_waiting(Duration::from_secs(60)), [Seen::Skipped { t: 3.0, why: Skip::Overloaded }]);
    assert_eq!((loaded.figures().items, loaded.skipped()), (0, 1));
    // Once back, the session may hand the next frame.
    assert!(c.look(3.5, empty));

    // A lane that never stops running: the frame waits its budget for
    // the cores, then goes back unseen.
    let busy = Sight::start(perceiver, Some(state(0.2, 1))).unwrap();
    let mut d = busy.viewer();
    let handed = std::time::Instant::now();
    assert!(d.look(4.0, face));
    assert_eq!(d.seen_waiting(Duration::from_secs(60)), [Seen::Skipped { t: 4.0, why: Skip::Stale }]);
    assert!(handed.elapsed() >= SIGHT_BUDGET, "skipped after {:?}", handed.elapsed());
    assert_eq!((busy.figures().items, busy.skipped()), (0, 1));
}

/// A session's looks through the lane: full ones (with the tiles) every
/// two seconds of its clock, quick ones between. On demo photo 2 the quick
/// look finds only the one large face of three.
#[test]
fn a_session_looks_in_full_every_two_seconds() {
    use std::time::Duration;
    use tete_engine::scheduler::{FULL_LOOK_EVERY, Seen, Sight};

    let sight = Sight::start(perceiver(), None).unwrap();
    let mut viewer = sight.viewer();
    let photo = demo_frame(2);
    let mut looks = Vec::new();
    for t in [0.0, 0.5, 1.0, 1.5, FULL_LOOK_EVERY, 2.5] {
        assert!(viewer.look(t, photo.clone()));
        let seen = viewer.seen_waiting(Duration::from_secs(60));
        let [Seen::Looked { observation: Ok(o), .. }] = seen.as_slice() else { panic!("{seen:?}") };
        looks.push((o.t, o.quick, o.faces));
    }
    assert_eq!(
        looks,
        [(0.0, false, 3), (0.5, true, 1), (1.0, true, 1), (1.5, true, 1), (2.0, false, 3), (2.5, true, 1)]
    );
}

/// face-api's demo photos (`demo/sampleN.jpg` in the `@vladmandic/face-api`
/// package `tete models fetch` downloaded for the expression net), read
/// out of the tarball.
fn demo_photo(n: u32) -> RgbImage {
    use std::io::Read;
    let dir = tete_engine::models::Store::new(tete_engine::models::default_home()).downloads_dir();
    let path = dir.join("face-api-1.7.15.tgz");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| missing(format!("{}: {e}", path.display())));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let name = format!("package/demo/sample{n}.jpg");
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_string_lossy() == name {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            return image::load_from_memory(&bytes).unwrap().to_rgb8();
        }
    }
    missing(format!("{name} is not in {}", path.display()))
}

/// A demo photo 640 pixels wide, as a webcam frame would be.
fn demo_frame(n: u32) -> RgbImage {
    let photo = demo_photo(n);
    image::imageops::resize(&photo, 640, photo.height() * 640 / photo.width(), image::imageops::FilterType::Triangle)
}

/// face-api's six demo photos are group shots: the faces are small, and
/// the detector finds them over the whole frame and its 2×2 tiles. The
/// main (largest) face of photo 3 smiles with her teeth showing (happy
/// ranks first); that of photo 4 barely smiles (happy does not).
#[test]
fn the_demo_photos_count_their_people() {
    let perceiver = perceiver();
    let seen: Vec<Observation> = (1..=6).map(|n| perceiver.observe(&demo_frame(n), 0.0).unwrap()).collect();
    let counts: Vec<usize> = seen.iter().map(|o| o.faces).collect();
    let expressions: Vec<Option<Expression>> =
        seen.iter().map(|o| o.expression.map(|p| Expression::most_likely(&p))).collect();
    println!("people in demo photos 1–6: {counts:?}; main faces: {expressions:?}");
    assert_eq!(counts, [3, 3, 3, 4, 5, 4]);
    assert_eq!(expressions[2], Some(Expression::Happy));
    assert!(expressions[3].is_some_and(|e| e != Expression::Happy), "{:?}", expressions[3]);
}

/// A short video assembled from real pictures, read by the real models
/// through the seeing lane at 2 frames a second (the host's rate; a full
/// look every 2 s, quick ones between): the astronaut facing the camera, a woman from demo
/// photo 2 with her head turned (yaw ≈ 36°), an empty frame, the
/// astronaut again, then two astronauts side by side. The notes come in
/// that order, and the end-of-call analysis mentions them.
#[test]
fn a_video_of_real_pictures_gives_its_notes_in_order() {
    use tete_engine::scheduler::{Seen, Sight};
    let sight = Sight::start(perceiver(), None).unwrap();
    let mut viewer = sight.viewer();
    let facing = image::imageops::resize(&astronaut(), 480, 480, image::imageops::FilterType::Triangle);
    let turned = image::imageops::crop_imm(&demo_frame(2), 60, 0, 240, 240).to_image();
    let turned = image::imageops::resize(&turned, 480, 480, image::imageops::FilterType::Triangle);
    let empty = RgbImage::from_pixel(480, 480, image::Rgb([90, 60, 40]));
    let mut two = RgbImage::new(960, 480);
    image::imageops::replace(&mut two, &facing, 0, 0);
    image::imageops::replace(&mut two, &image::imageops::flip_horizontal(&facing), 480, 0);
    let scenes: [(&RgbImage, f64); 5] = [(&facing, 4.0), (&turned, 5.0), (&empty, 4.0), (&facing, 3.0), (&two, 3.0)];

    let mut view = UserView::new(SignalConfig::default(), &[]);
    let mut t = 0.0;
    let mut notes = Vec::new();
    for (picture, seconds) in scenes {
        let end = t + seconds;
        while t < end {
            assert!(viewer.look(t, picture.clone()));
            let seen = viewer.seen_waiting(std::time::Duration::from_secs(60));
            let [Seen::Looked { observation: Ok(o), .. }] = seen.as_slice() else { panic!("{seen:?}") };
            notes.extend(view.observe(o));
            t += 0.5;
        }
    }
    for n in &notes {
        println!("{:5.2} s  {}", n.t, n.text);
    }
    let texts: Vec<&str> = notes.iter().map(|n| n.text.as_str()).collect();
    let expected = [
        "the user is in view",
        "the user looks happy",
        "the user has looked away for 3 seconds",
        "the user has left the camera's view",
        "the user is in view",
        "a second person joined the frame",
    ];
    // In this order (other notes, such as expressions, may come between).
    let mut rest = texts.iter();
    for want in expected {
        assert!(rest.any(|got| *got == want), "{want:?} missing or out of order in {texts:?}");
    }
    let analysis = view.analysis(&["Was anyone else there?".to_string()]);
    let described = analysis.summary.describe();
    println!("{described}\n{:?}", analysis.answers);
    assert_eq!(analysis.summary.most_people, 2);
    assert!(described.contains("Up to 2 people") && described.contains("happy"), "{described}");
    assert!(analysis.summary.attention_share < 0.9, "the turned head counts as looking away: {:?}", analysis.summary);
    assert_eq!(analysis.timeline, notes);
}
