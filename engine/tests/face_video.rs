//! Replicas from video: MP4 files made here (the astronaut replica
//! rendered with idle motion and some talking, encoded with openh264 and
//! muxed with the `mp4` crate) go through `VideoReplica::from_mp4` with the
//! real BlazeFace and FaceMesh. A good video gives a portrait with one
//! closed-mouthed face from its still half, and its talking half teaches
//! the replica the mouth shapes it shows; short, moving, faceless and
//! unreadable videos are refused with the matching error.

mod common;

use std::io::Cursor;
use std::time::Instant;

use candle_core::Device;
use common::{missing, model_dir, model_path};
use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, Profile};
use openh264::formats::{RgbSliceU8, YUVBuffer};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tete_engine::face::animate::{Idle, VisemeTrack, idle_frame, viseme_shape};
use tete_engine::face::video::{VideoReplica, VideoReplicaConfig};
use tete_engine::face::{
    BlazeFace, FaceMesh, LearnedMouth, MouthShape, Pose, Replica, ReplicaConfig, ReplicaError, Rig, render_cpu,
};
use tete_engine::tts::viseme::{Viseme, VisemeEvent};

const SIZE: usize = 256;
const FPS: u32 = 25;

fn models() -> (BlazeFace, FaceMesh) {
    (
        BlazeFace::load(&model_path("blazeface-short-range"), &Device::Cpu).unwrap_or_else(missing),
        FaceMesh::load(&model_path("facemesh"), &Device::Cpu).unwrap_or_else(missing),
    )
}

/// The astronaut framed at the video's size.
fn astronaut(detector: &BlazeFace, mesher: &FaceMesh) -> Replica {
    let path = model_dir("astronaut-portrait").join("astronaut.png");
    let photo = image::open(&path).unwrap_or_else(|e| missing(format!("{}: {e}", path.display()))).to_rgb8();
    let config = ReplicaConfig { size: SIZE as u32, ..ReplicaConfig::default() };
    Replica::from_photo(detector, mesher, &photo, &config).expect("astronaut replica")
}

/// `seconds` of the replica at [`FPS`]: idle life with the mouth closed
/// for the first two seconds, then talking (the jaw opening 3.3 times a
/// second, out of step with the 5 frames a second measured); each frame moved sideways by `shift(t)` pixels.
fn render(replica: &Replica, seconds: f32, shift: impl Fn(f64) -> f64) -> Vec<Vec<u8>> {
    let jaw = |t: f64| {
        let open = 0.9 * (0.5 - 0.5 * (std::f64::consts::TAU * 3.3 * (t - 2.0)).cos()) as f32;
        if t >= 2.0 { MouthShape { open, wide: 0.2, round: 0.0 } } else { MouthShape::default() }
    };
    film(replica, seconds, jaw, shift)
}

/// `seconds` of the replica at [`FPS`] with idle life and the mouth
/// `mouth(t)`, each frame moved sideways by `shift(t)` pixels.
fn film(
    replica: &Replica,
    seconds: f32,
    mouth: impl Fn(f64) -> MouthShape,
    shift: impl Fn(f64) -> f64,
) -> Vec<Vec<u8>> {
    let rig = Rig::new(replica);
    let mut idle = Idle::new(7);
    (0..(seconds * FPS as f32).round() as usize)
        .map(|i| {
            let t = i as f64 / f64::from(FPS);
            let pose = Pose { mouth: mouth(t), ..idle.pose_at(t, 1.0) };
            let rgba = render_cpu(replica, &rig, &pose).expect("render");
            let dx = shift(t).round() as isize;
            let mut rgb = Vec::with_capacity(SIZE * SIZE * 3);
            for y in 0..SIZE {
                for x in 0..SIZE {
                    let from = (x as isize - dx).clamp(0, SIZE as isize - 1) as usize;
                    rgb.extend_from_slice(&rgba[y * SIZE + from].to_le_bytes()[..3]);
                }
            }
            rgb
        })
        .collect()
}

/// RGB frames encoded as H.264 (constrained baseline) and muxed into an
/// MP4 with SPS and PPS in `avcC` and length-prefixed samples.
fn mp4(frames: &[Vec<u8>]) -> Vec<u8> {
    let config = EncoderConfig::new()
        .bitrate(BitRate::from_bps(1_500_000))
        .max_frame_rate(FrameRate::from_hz(FPS as f32))
        .skip_frames(false)
        .profile(Profile::Baseline)
        .num_threads(1);
    let mut encoder = Encoder::with_api_config(openh264::OpenH264API::from_source(), config).unwrap();
    let (mut sps, mut pps) = (Vec::new(), Vec::new());
    let mut samples = Vec::new();
    for rgb in frames {
        let yuv = YUVBuffer::from_rgb8_source(RgbSliceU8::new(rgb, (SIZE, SIZE)));
        let stream = encoder.encode(&yuv).unwrap().to_vec();
        let (mut sample, mut sync) = (Vec::new(), false);
        for nal in annex_b_units(&stream) {
            match nal[0] & 0x1f {
                7 => sps = nal.to_vec(),
                8 => pps = nal.to_vec(),
                kind => {
                    sync |= kind == 5;
                    sample.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                    sample.extend_from_slice(nal);
                }
            }
        }
        assert!(!sample.is_empty(), "the encoder skipped a frame");
        samples.push((sample, sync));
    }
    let avc = mp4::AvcConfig { width: SIZE as u16, height: SIZE as u16, seq_param_set: sps, pic_param_set: pps };
    let track = mp4::TrackConfig {
        track_type: mp4::TrackType::Video,
        timescale: 12_800,
        language: "und".into(),
        media_conf: mp4::MediaConfig::AvcConfig(avc),
    };
    mux(&track, samples)
}

/// An MP4 with one track of the given samples, each 1 / [`FPS`] long.
fn mux(track: &mp4::TrackConfig, samples: Vec<(Vec<u8>, bool)>) -> Vec<u8> {
    let brand = |s: &str| s.parse::<mp4::FourCC>().unwrap();
    let config = mp4::Mp4Config {
        major_brand: brand("isom"),
        minor_version: 512,
        compatible_brands: vec![brand("isom"), brand("iso2"), brand("avc1"), brand("mp41")],
        timescale: 1000,
    };
    let mut writer = mp4::Mp4Writer::write_start(Cursor::new(Vec::new()), &config).unwrap();
    writer.add_track(track).unwrap();
    let delta = track.timescale / FPS;
    for (i, (bytes, is_sync)) in samples.into_iter().enumerate() {
        let sample = mp4::Mp4Sample {
            start_time: i as u64 * u64::from(delta),
            duration: delta,
            rendering_offset: 0,
            is_sync,
            bytes: bytes.into(),
        };
        writer.write_sample(1, &sample).unwrap();
    }
    writer.write_end().unwrap();
    writer.into_writer().into_inner()
}

/// The NAL units of an Annex-B stream, without their start codes.
fn annex_b_units(stream: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut units = Vec::new();
    for (k, &start) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(stream.len(), |&next| next - 3);
        while end > start && stream[end - 1] == 0 {
            end -= 1;
        }
        units.push(&stream[start..end]);
    }
    units
}

fn grey(seconds: f32) -> Vec<Vec<u8>> {
    vec![vec![128u8; SIZE * SIZE * 3]; (seconds * FPS as f32).round() as usize]
}

fn build(detector: &BlazeFace, mesher: &FaceMesh, file: &[u8]) -> Result<VideoReplica, ReplicaError> {
    VideoReplica::from_mp4(detector, mesher, file, &VideoReplicaConfig::default(), |_, _| {})
}

#[test]
fn a_still_then_talking_video_gives_a_portrait_from_its_still_part() {
    let (detector, mesher) = models();
    let replica = astronaut(&detector, &mesher);
    let started = Instant::now();
    let file = mp4(&render(&replica, 4.0, |_| 0.0));
    let made = started.elapsed();

    let started = Instant::now();
    let mut calls = Vec::new();
    let config = VideoReplicaConfig::default();
    let video = VideoReplica::from_mp4(&detector, &mesher, &file, &config, |done, total| calls.push((done, total)))
        .expect("a good video");
    eprintln!(
        "{} kB MP4 made in {made:.2?}; {} frames measured in {:.2?}; still {:?} s, portrait at {} s, motion {:.3}",
        file.len() / 1000,
        video.frames.len(),
        started.elapsed(),
        video.still_segment,
        video.portrait_time,
        video.motion,
    );

    // 4 s at 5 frames a second, each showing the face.
    assert_eq!(video.frames.len(), 20);
    assert!(video.frames.iter().all(|f| f.face.is_some()), "a face in every frame");
    let total = video.frames.len();
    assert_eq!(calls.first(), Some(&(0, total)));
    assert_eq!(calls.last(), Some(&(total, total)));
    assert!(calls.windows(2).all(|w| w[1].0 == w[0].0 + 1), "progress counts up by one: {calls:?}");

    // The talking half opens the mouth; the still segment is in the first.
    let mouth = |from: f32, to: f32| {
        video.frames.iter().filter(|f| f.time >= from && f.time < to).map(|f| f.face.unwrap().mouth).fold(0.0, f32::max)
    };
    // (The astronaut's lips are parted at rest: a gap of about 0.07.)
    let (talking, still) = (mouth(2.0, 4.0), mouth(0.0, 2.0));
    assert!(talking > still + 0.02, "talking {talking} vs still {still}");
    let (start, end) = video.still_segment;
    assert!(start < end && end <= 2.05 && (end - start - 1.0).abs() < 0.01, "still segment {start}–{end} s");
    assert!((start..end).contains(&video.portrait_time));
    assert!(video.motion < 0.05, "idle motion {}", video.motion);

    // The portrait is framed like a photo replica and shows one face.
    let portrait = &video.replica;
    assert_eq!(portrait.size, 512);
    assert_eq!(portrait.landmarks.len(), 468);
    let faces = detector.detect(&portrait.portrait_image()).unwrap();
    assert_eq!(faces.len(), 1, "one face in the portrait");
    let l = &portrait.landmarks;
    let h = ((l[10][0] - l[152][0]).powi(2) + (l[10][1] - l[152][1]).powi(2)).sqrt();
    assert!((h / 512.0 - 0.42).abs() < 0.03, "face height {h} px");

    // The still second's frames, 25 a second, are the idle loop: framed
    // once (the nose moves only as much as the head did, a few pixels),
    // and not all the same picture.
    let idle = &portrait.idle;
    assert!((20..=26).contains(&idle.len()), "{} idle frames", idle.len());
    assert!(idle.iter().all(|f| f.size == 512 && f.landmarks.len() == 468 && f.idle.is_empty()));
    let noses: Vec<[f32; 2]> = idle.iter().map(|f| f.landmarks[1]).collect();
    let spread = noses.iter().map(|n| (n[0] - noses[0][0]).abs().max((n[1] - noses[0][1]).abs())).fold(0.0, f32::max);
    assert!(spread < 12.0, "the loop's framing moves the nose by {spread} px");
    assert!(idle.windows(2).any(|w| w[0].portrait != w[1].portrait), "the idle frames move");
    let dir = tempfile::tempdir().unwrap();
    portrait.save(dir.path()).unwrap();
    let back = Replica::load(dir.path()).unwrap();
    assert_eq!(back.idle.len(), idle.len());
    assert_eq!(back.idle[3].portrait, idle[3].portrait);
    assert_eq!(back.idle[3].landmarks, idle[3].landmarks);

    // Played forwards then backwards, and each frame animates like a portrait.
    let n = idle.len();
    let order: Vec<usize> = (0..2 * n).map(|i| idle_frame(i as f64 / 25.0, 25.0, n)).collect();
    assert!(order.windows(2).all(|w| w[0].abs_diff(w[1]) <= 1), "no jump in the loop: {order:?}");
    assert_eq!((order[0], order[n - 1], order[2 * (n - 1)]), (0, n - 1, 0));
    let frame = &idle[n / 2];
    let open = Pose { mouth: MouthShape { open: 1.0, ..Default::default() }, ..Pose::default() };
    let rendered = render_cpu(frame, &Rig::new(frame), &open).unwrap();
    let changed = rendered.iter().zip(&frame.portrait).filter(|(a, b)| a != b).count();
    assert!(changed > 2000, "an open mouth changes {changed} pixels of an idle frame");
}

/// The astronaut still, then from 2.4 s saying Aa, U, I and PP in turn
/// (0.44 s each, out of step with the 5 frames a second measured) with
/// the coarticulation of [`VisemeTrack`] (which starts opening the mouth
/// a little before), until `seconds`.
fn training_video(replica: &Replica, seconds: f32) -> Vec<Vec<u8>> {
    let cycle = [Viseme::Aa, Viseme::U, Viseme::I, Viseme::PP];
    let start = |k: usize| 2.4 + k as f64 * 0.44;
    let events = (0..((f64::from(seconds) - 2.4) / 0.44) as usize)
        .map(|k| VisemeEvent { viseme: cycle[k % 4], start: start(k), end: start(k + 1) })
        .collect();
    let track = VisemeTrack::new(events);
    film(replica, seconds, |t| track.shape_at(t), |_| 0.0)
}

/// The gap between the inner lips' middles (13, 14) that FaceMesh sees
/// in a rendered RGBA frame, in pixels.
fn lip_gap(detector: &BlazeFace, mesher: &FaceMesh, rgba: &[u32], size: u32) -> f32 {
    let bytes = rgba.iter().flat_map(|p| p.to_le_bytes()[..3].to_vec()).collect();
    let image = image::RgbImage::from_raw(size, size, bytes).unwrap();
    let faces = detector.detect(&image).unwrap();
    assert_eq!(faces.len(), 1, "one face in the rendered frame");
    let mesh = mesher.landmarks(&image, &faces[0]).unwrap();
    let (a, b) = (mesh.points[13], mesh.points[14]);
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

/// Landmarks of the four lip lines, corner to corner.
const LIP_LINES: [usize; 40] = [
    61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 146, 91, 181, 84, 17, 314, 405, 321, 375, 78, 191, 80, 81, 82, 13,
    312, 311, 310, 415, 308, 95, 88, 178, 87, 14, 317, 402, 318, 324,
];

fn face_height(l: &[[f32; 2]]) -> f32 {
    ((l[10][0] - l[152][0]).powi(2) + (l[10][1] - l[152][1]).powi(2)).sqrt()
}

/// Where a learned shape moves a landmark, in face heights.
fn moved(shape: &LearnedMouth, landmark: usize) -> [f32; 2] {
    shape.moves.iter().find(|(i, _)| *i == landmark).unwrap_or_else(|| panic!("landmark {landmark} learned")).1
}

#[test]
fn a_talking_video_teaches_the_replica_its_mouth_shapes() {
    let (detector, mesher) = models();
    let replica = astronaut(&detector, &mesher);
    let file = mp4(&training_video(&replica, 6.4));
    let video = build(&detector, &mesher, &file).expect("a good video");
    let mouths = &video.replica.mouths;
    let speaking = video.frames.iter().filter(|f| f.speaking.is_some()).count();
    eprintln!("{speaking} of {} frames speaking; still {:?} s", video.frames.len(), video.still_segment);
    for shape in &mouths.shapes {
        let (s, target) = (shape.shape, viseme_shape(shape.viseme).0);
        eprintln!(
            "{:?} from {} frames: ({:.2}, {:.2}, {:.2}), target ({:.2}, {:.2}, {:.2}); lower lip drop {:.3}",
            shape.viseme,
            shape.frames,
            s.open,
            s.wide,
            s.round,
            target.open,
            target.wide,
            target.round,
            moved(shape, 14)[1],
        );
    }
    // The talking part is speech, the still seconds are not.
    assert!(video.frames.iter().filter(|f| f.time < 2.0).all(|f| f.speaking.is_none()), "no speech before 2 s");
    assert!(speaking >= 15, "{speaking} frames of speech in 4 s at 5 a second");

    // The open, closed, round and wide mouths shown are learned. FaceMesh
    // sees the rendered U as the rig's half-round mouth, nearer CH and RR
    // than U, and I as half-wide: a round and a wide viseme of each kind.
    let learned = |family: &[Viseme]| {
        family.iter().find_map(|&v| mouths.get(v)).unwrap_or_else(|| panic!("none of {family:?} learned"))
    };
    let (aa, pp) = (learned(&[Viseme::Aa]), learned(&[Viseme::PP]));
    let round = learned(&[Viseme::U, Viseme::O, Viseme::CH, Viseme::RR]);
    let wide = learned(&[Viseme::I, Viseme::E, Viseme::SS]);
    assert!(aa.shape.open > 0.7 && pp.shape.open < 0.15, "Aa {:?}, PP {:?}", aa.shape, pp.shape);
    assert!(round.shape.round > 0.3 && wide.shape.wide > 0.2, "round {:?}, wide {:?}", round.shape, wide.shape);
    // Aa drops the lower lip (0.09 face heights as rendered, about two
    // thirds of that as FaceMesh sees it); PP does not.
    let (aa_drop, pp_drop) = (moved(aa, 14)[1], moved(pp, 14)[1]);
    assert!(aa_drop > pp_drop + 0.03, "lower lip drop: Aa {aa_drop:.3}, PP {pp_drop:.3}");
    // The round mouth is narrower than the wide one: the lips' stretch
    // about the mouth's middle, fitted over the four lip lines.
    let (rest, centre) =
        (&video.replica.landmarks, (video.replica.landmarks[61][0] + video.replica.landmarks[291][0]) / 2.0);
    let stretch = |s: &LearnedMouth| {
        let (along, norm) = s.moves.iter().filter(|(i, _)| LIP_LINES.contains(i)).fold((0.0, 0.0), |(a, n), (i, d)| {
            let x = rest[*i][0] - centre;
            (a + d[0] * x, n + x * x)
        });
        along * face_height(rest) / norm
    };
    let (narrow, broad) = (stretch(round), stretch(wide));
    eprintln!("stretch: {:?} {narrow:.3}, {:?} {broad:.3}", round.viseme, wide.viseme);
    assert!(narrow + 0.02 < broad, "{:?} stretches the lips {narrow:.3}, {:?} {broad:.3}", round.viseme, wide.viseme);

    // Rendered with its learned shapes, the replica opens for Aa and closes for PP.
    let built = &video.replica;
    let rig = Rig::new(built);
    let at = |v: Viseme| {
        let frame = render_cpu(built, &rig, &Pose { mouth: viseme_shape(v).0, ..Pose::default() }).unwrap();
        lip_gap(&detector, &mesher, &frame, built.size)
    };
    let (open, closed) = (at(Viseme::Aa), at(Viseme::PP));
    eprintln!("rendered lip gap: Aa {open:.1} px, PP {closed:.1} px");
    assert!(open > closed + 10.0, "lip gap: Aa {open:.1} px, PP {closed:.1} px");

    // Saved and loaded, the portrait and every idle frame keep them.
    let dir = tempfile::tempdir().unwrap();
    built.save(dir.path()).unwrap();
    let back = Replica::load(dir.path()).unwrap();
    assert_eq!(&back.mouths, mouths);
    assert!(!back.idle.is_empty() && back.idle.iter().all(|f| &f.mouths == mouths), "idle frames keep the shapes");
}

#[test]
fn a_video_without_talking_teaches_no_mouth_shapes() {
    let (detector, mesher) = models();
    let replica = astronaut(&detector, &mesher);
    let file = mp4(&film(&replica, 4.0, |_| MouthShape::default(), |_| 0.0));
    let video = build(&detector, &mesher, &file).expect("a good video");
    assert!(video.frames.iter().all(|f| f.speaking.is_none()), "no speech: {:?}", video.frames);
    assert!(video.replica.mouths.is_empty(), "learned {:?}", video.replica.mouths);
}

/// Phones store portrait video as landscape frames and a display matrix
/// that turns them: frames turned a quarter counter-clockwise, with a
/// `tkhd` matrix turning them back, give an upright portrait.
#[test]
fn a_turned_video_is_set_upright_by_its_display_matrix() {
    let (detector, mesher) = models();
    let replica = astronaut(&detector, &mesher);
    let frames: Vec<Vec<u8>> = render(&replica, 3.2, |_| 0.0)
        .into_iter()
        .map(|rgb| {
            let image = image::RgbImage::from_raw(SIZE as u32, SIZE as u32, rgb).unwrap();
            image::imageops::rotate270(&image).into_raw()
        })
        .collect();
    let mut file = mp4(&frames);
    // tkhd: size, type, version and flags, then (version 0) five 32-bit
    // fields, 8 reserved bytes, four 16-bit fields, and the 3×3 matrix
    // a b u / c d v / x y w; a quarter turn clockwise is (0, 1, -1, 0).
    let tkhd = file.windows(4).position(|w| w == b"tkhd").expect("a tkhd box") - 4;
    assert_eq!(file[tkhd + 8], 0, "a version 0 tkhd");
    let matrix = tkhd + 48;
    for (i, value) in [(0, 0i32), (1, 0x1_0000), (3, -0x1_0000), (4, 0)] {
        file[matrix + 4 * i..matrix + 4 * i + 4].copy_from_slice(&value.to_be_bytes());
    }
    let config = VideoReplicaConfig { sample_fps: 2.5, ..VideoReplicaConfig::default() };
    let video = VideoReplica::from_mp4(&detector, &mesher, &file, &config, |_, _| {}).expect("a turned video");
    let l = &video.replica.landmarks;
    assert!(l[10][1] + 100.0 < l[152][1], "forehead {:?} above chin {:?}", l[10], l[152]);
    assert!((l[10][0] - l[152][0]).abs() < 40.0, "forehead {:?} over chin {:?}", l[10], l[152]);
}

#[test]
fn a_one_second_video_is_too_short() {
    let (detector, mesher) = models();
    let replica = astronaut(&detector, &mesher);
    let file = mp4(&render(&replica, 1.0, |_| 0.0));
    match build(&detector, &mesher, &file) {
        Err(ReplicaError::TooShort { seconds, min }) => assert!((seconds - 1.0).abs() < 0.05 && min == 3.0),
        other => panic!("expected TooShort, got {other:?}"),
    }
}

#[test]
fn a_swinging_head_is_too_much_motion() {
    let (detector, mesher) = models();
    let replica = astronaut(&detector, &mesher);
    // The whole picture swings ±0.3 face widths (the detector's box on
    // the astronaut is about 0.8 of the face height) once every two seconds.
    let width = 0.8 * 0.42 * SIZE as f64;
    let file = mp4(&render(&replica, 4.0, |t| 0.3 * width * (std::f64::consts::PI * t).sin()));
    match build(&detector, &mesher, &file) {
        Err(ReplicaError::TooMuchMotion { motion }) => {
            eprintln!("swinging head: motion {motion:.3} face widths");
            assert!(motion > 0.2, "motion {motion}");
        }
        other => panic!("expected TooMuchMotion, got {other:?}"),
    }
}

#[test]
fn a_grey_video_has_no_face() {
    let (detector, mesher) = models();
    let file = mp4(&grey(4.0));
    assert!(matches!(build(&detector, &mesher, &file), Err(ReplicaError::NoFace)));
}

/// An MP4 with one track of junk samples of another kind.
fn other_track(track_type: mp4::TrackType, media_conf: mp4::MediaConfig) -> Vec<u8> {
    let track = mp4::TrackConfig { track_type, timescale: 12_800, language: "und".into(), media_conf };
    mux(&track, (0..100).map(|i| (vec![i as u8; 200], true)).collect())
}

#[test]
fn unreadable_files_are_video_errors() {
    let (detector, mesher) = models();
    let good = mp4(&grey(3.5));
    let mut rng = StdRng::seed_from_u64(11);
    let garbage: Vec<u8> = (0..50_000).map(|_| rng.random()).collect();
    let audio = other_track(mp4::TrackType::Audio, mp4::MediaConfig::AacConfig(mp4::AacConfig::default()));
    let hevc = other_track(
        mp4::TrackType::Video,
        mp4::MediaConfig::HevcConfig(mp4::HevcConfig { width: SIZE as u16, height: SIZE as u16 }),
    );
    let cases: [(&str, &[u8], &str); 6] = [
        ("empty", &[], "moov"),
        ("garbage", &garbage, "MP4"),
        ("first half", &good[..good.len() / 2], "MP4"),
        ("all but the last byte", &good[..good.len() - 1], "cut short"),
        ("audio only", &audio, "no video track"),
        ("HEVC", &hevc, "H.264"),
    ];
    for (name, file, says) in cases {
        match build(&detector, &mesher, file) {
            Err(ReplicaError::Video(reason)) => {
                eprintln!("{name}: {reason}");
                assert!(reason.contains(says), "{name}: {reason}");
            }
            other => panic!("{name}: expected a video error, got {other:?}"),
        }
    }
}

/// Damaged files give errors, never a panic: bytes of the `moov` box
/// overwritten at random (seeded), and the file cut at many lengths, with
/// the minimum length set out of reach so that a file that still parses
/// stops at `TooShort` before any frame is measured; then bytes of the
/// frames themselves overwritten.
#[test]
fn damaged_files_never_panic() {
    let (detector, mesher) = models();
    let good = mp4(&grey(3.5));
    let config = VideoReplicaConfig { min_seconds: 1e6, ..VideoReplicaConfig::default() };
    let run = |file: &[u8]| match VideoReplica::from_mp4(&detector, &mesher, file, &config, |_, _| {}) {
        Err(ReplicaError::Video(_)) => false,
        Err(ReplicaError::TooShort { .. }) => true,
        other => panic!("expected a video error or TooShort, got {other:?}"),
    };
    assert!(run(&good), "the undamaged file parses");
    let moov = good.windows(4).position(|w| w == b"moov").expect("a moov box") - 4;
    let mut rng = StdRng::seed_from_u64(5);
    let mut parsed = 0;
    for _ in 0..500 {
        let mut file = good.clone();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(moov..file.len());
            file[at] = rng.random();
        }
        parsed += run(&file) as usize;
    }
    for cut in (0..good.len()).step_by(good.len() / 97 + 1) {
        parsed += run(&good[..cut]) as usize;
    }
    eprintln!("{parsed} of the damaged files still parsed");

    // Damaged frames go to the decoder: it conceals or drops them, and the
    // grey video still has no face.
    let config = VideoReplicaConfig { sample_fps: 2.5, ..VideoReplicaConfig::default() };
    let mdat = good.windows(4).position(|w| w == b"mdat").expect("an mdat box") + 4;
    for round in 0..6 {
        let mut file = good.clone();
        for _ in 0..20 {
            let at = rng.random_range(mdat..moov);
            file[at] = rng.random();
        }
        match VideoReplica::from_mp4(&detector, &mesher, &file, &config, |_, _| {}) {
            Err(ReplicaError::NoFace | ReplicaError::Video(_)) => {}
            other => panic!("damaged frames, round {round}: expected NoFace or a video error, got {other:?}"),
        }
    }
}
