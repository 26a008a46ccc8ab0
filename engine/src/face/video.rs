//! A replica from a short video of the person (MP4 with H.264), as phones
//! and webcams record it: the frames are decoded, sampled a few times a
//! second and measured with BlazeFace and FaceMesh; the video is refused
//! when the person is missing, not alone, too small, the clip too short or
//! the head moving too much. The portrait is the best frame of the
//! stillest stretch with the mouth closed and the eyes open, the segment
//! that shows how the person looks while listening, framed as
//! [`Replica::from_photo`] frames a photo; that stretch's frames, framed
//! the same way, become the replica's idle loop. The frames in which the
//! person talks teach the replica their own mouth shapes
//! ([`LearnedMouths`]).
//!
//! Only non-fragmented MP4 (and QuickTime) files are read, and only their
//! first H.264 video track. Every size and offset in the file is checked
//! against the file before it is used: a broken upload is an error, never
//! a panic.

mod demux;
mod mouths;

use std::ops::ControlFlow;

use image::imageops;
use openh264::formats::YUVSource as _;

use super::replica::{Framing, Replica, ReplicaConfig, ReplicaError};
use super::rig::{CHIN, FOREHEAD, MouthShape, Pose, Rig, dist};
use super::{BlazeFace, FaceMesh, RgbImage, render_cpu};
use demux::Track;
pub use mouths::{LearnedMouth, LearnedMouths};

/// FaceMesh's nose tip: the steadiest point to follow the head with.
const NOSE_TIP: usize = 1;
/// Inner lips at the middle, upper and lower.
const LIPS: (usize, usize) = (13, 14);
/// Each eye's upper and lower lid at the middle.
const LIDS: [(usize, usize); 2] = [(159, 145), (386, 374)];

/// What a usable video is and how it is sampled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoReplicaConfig {
    /// Framing of the portrait and the limits on a face.
    pub replica: ReplicaConfig,
    /// Shortest usable video, in seconds.
    pub min_seconds: f32,
    /// Only this many seconds from the start are read; a longer video is
    /// not refused, its end is ignored.
    pub max_seconds: f32,
    /// Frames measured per second of video (the others are only decoded).
    pub sample_fps: f32,
    /// Largest head motion: how far the nose tip strays from its usual
    /// place in nine frames out of ten, in face widths.
    pub max_motion: f32,
    /// Share of the measured frames that must show the one face.
    pub min_face_share: f32,
    /// Length of the still segment the portrait is taken from, in seconds.
    pub still_seconds: f32,
    /// Frames per second kept of the still segment for the idle loop.
    pub idle_fps: f32,
    /// How near (in [`MouthShape`] distance) a talking frame's mouth must
    /// be to a viseme's shape to teach it.
    pub mouth_tolerance: f32,
}

impl Default for VideoReplicaConfig {
    fn default() -> Self {
        Self {
            replica: ReplicaConfig::default(),
            min_seconds: 3.0,
            max_seconds: 60.0,
            sample_fps: 5.0,
            max_motion: 0.2,
            min_face_share: 0.5,
            still_seconds: 1.0,
            idle_fps: 25.0,
            mouth_tolerance: 0.25,
        }
    }
}

/// One measured frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameStats {
    /// Presentation time in seconds from the first frame.
    pub time: f32,
    /// The face, when exactly one large enough was found.
    pub face: Option<FaceStats>,
    /// The mouth in the rig's terms, when this frame is part of the
    /// person's speech (lips moving, or closed between moving frames).
    pub speaking: Option<MouthShape>,
}

/// The face in one frame, from its landmarks. Openings are fractions of
/// the forehead-to-chin height, so they compare across frames and people.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceStats {
    /// The nose tip in the video's pixels (where the head is).
    pub nose: [f32; 2],
    /// Width of the detection box in the video's pixels.
    pub width: f32,
    /// Gap between the inner lips: about 0 closed, 0.1 and more open.
    pub mouth: f32,
    /// Mean gap between the eyelids: about 0.05 open, near 0 shut.
    pub eyes: f32,
}

/// A replica built from a video, with what was measured on the way.
#[derive(Debug, Clone)]
pub struct VideoReplica {
    pub replica: Replica,
    /// Every measured frame, in time order.
    pub frames: Vec<FrameStats>,
    /// The still, mouth-closed, eyes-open segment (idle, listening), as
    /// (start, end) in seconds.
    pub still_segment: (f32, f32),
    /// When the portrait frame was shown, in seconds.
    pub portrait_time: f32,
    /// The head motion measured over the video, in face widths.
    pub motion: f32,
}

/// What one measured frame showed.
enum Seen {
    Nobody,
    Several(usize),
    Small(f32),
    Face(FaceStats, Vec<[f32; 2]>),
}

impl VideoReplica {
    /// Builds a replica from the bytes of an MP4 file. `progress(done,
    /// total)` is called as frames are measured (the slow part), starting
    /// with `done == 0`.
    pub fn from_mp4(
        detector: &BlazeFace,
        mesher: &FaceMesh,
        file: &[u8],
        config: &VideoReplicaConfig,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Self, ReplicaError> {
        let size = config.replica.size;
        if size == 0 || !size.is_multiple_of(8) {
            return Err(ReplicaError::BadSize(size));
        }
        let track = Track::read(file, f64::from(config.max_seconds)).map_err(ReplicaError::Video)?;
        if track.seconds < f64::from(config.min_seconds) {
            return Err(ReplicaError::TooShort { seconds: track.seconds as f32, min: config.min_seconds });
        }
        let picks = pick(&track.times, f64::from(config.sample_fps.max(0.1)));
        let total = picks.len();
        progress(0, total);
        let mut seen = Vec::with_capacity(total);
        track.decode(file, |index, picture| {
            if seen.len() < total && picks[seen.len()] == index {
                seen.push(look(detector, mesher, &to_rgb(picture, track.quarter_turns), &config.replica)?);
                progress(seen.len(), total);
            }
            Ok(if seen.len() == total { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
        })?;
        check(&seen, config)?;

        let motion = motion(seen.iter().filter_map(|s| match s {
            Seen::Face(stats, _) => Some(stats),
            _ => None,
        }));
        if motion > config.max_motion {
            return Err(ReplicaError::TooMuchMotion { motion });
        }
        let times: Vec<f32> = picks.iter().map(|&k| track.times[k] as f32).collect();
        let (window, best) = still(&seen, &times, config);

        // Second pass: the portrait frame, and every frame of the still
        // segment (at most `idle_fps` a second) for the idle loop, all
        // framed like the portrait so the loop does not jitter.
        let Seen::Face(_, best_points) = &seen[best] else {
            return Err(ReplicaError::Video("the chosen frame has no face".into()));
        };
        let step = 1.0 / config.sample_fps.max(0.1);
        let (start, end) = (f64::from(times[window.0]), f64::from(times[window.1] + step));
        let idle_step = 1.0 / f64::from(config.idle_fps.max(1.0));
        let (mut portrait, mut idle, mut next_idle) = (None, Vec::new(), f64::NEG_INFINITY);
        let mut framing = None;
        track.decode(file, |index, picture| {
            let t = track.times[index];
            let is_portrait = index == picks[best];
            let is_idle = t >= start - 1e-3 && t < end && t >= next_idle - 1e-3;
            if is_portrait || is_idle {
                let image = to_rgb(picture, track.quarter_turns);
                let framing = *framing.get_or_insert_with(|| {
                    Framing::around(best_points, image.width(), image.height(), &config.replica)
                });
                if is_portrait {
                    portrait = Some(framing.apply(&image, best_points));
                }
                if is_idle {
                    next_idle = t + idle_step;
                    if let Seen::Face(_, points) = look(detector, mesher, &image, &config.replica)? {
                        idle.push(framing.apply(&image, &points));
                    }
                }
            }
            Ok(if portrait.is_some() && t >= end { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
        })?;
        let Some(mut replica) = portrait else {
            return Err(ReplicaError::Video("the chosen frame could not be decoded again".into()));
        };
        if idle.len() >= 2 {
            replica.idle = idle;
        }

        // The talking frames' mouths, and the parametric rig's as seen on
        // the portrait rendered with it, scaled to the size the face had
        // in the video (FaceMesh sees a mouth's motion differently at
        // different sizes).
        let faces: Vec<Option<&[[f32; 2]]>> =
            seen.iter().map(|s| if let Seen::Face(_, points) = s { Some(points.as_slice()) } else { None }).collect();
        let rig = Rig::new(&replica);
        let side = framing.map_or(replica.size, |f| f.side()).max(8);
        let scale = replica.size as f32 / side as f32;
        let mut see = |mouth: MouthShape| -> Result<Option<Vec<[f32; 2]>>, ReplicaError> {
            let frame = render_cpu(&replica, &rig, &Pose { mouth, ..Pose::default() })?;
            let bytes = frame.iter().flat_map(|p| p.to_le_bytes()[..3].to_vec()).collect();
            let image = RgbImage::from_raw(replica.size, replica.size, bytes).expect("size² pixels of 3 bytes");
            let image = imageops::resize(&image, side, side, imageops::FilterType::Triangle);
            Ok(match look(detector, mesher, &image, &config.replica)? {
                Seen::Face(_, points) => Some(points.iter().map(|p| [p[0] * scale, p[1] * scale]).collect()),
                _ => None,
            })
        };
        let learned = mouths::learn(&faces, &times, window, &replica.landmarks, &mut see, config.mouth_tolerance)?;
        replica.set_mouths(learned.mouths);
        let duration = track.seconds as f32;
        let frames = seen
            .iter()
            .zip(&times)
            .zip(learned.speaking)
            .map(|((s, &time), speaking)| FrameStats {
                time,
                face: if let Seen::Face(f, _) = s { Some(*f) } else { None },
                speaking,
            })
            .collect();
        Ok(Self {
            replica,
            frames,
            still_segment: (times[window.0], (times[window.1] + step).min(duration)),
            portrait_time: times[best],
            motion,
        })
    }
}

/// Which pictures (indices into the sorted presentation times) to
/// measure: the first, then one each 1 / `fps` seconds.
fn pick(times: &[f64], fps: f64) -> Vec<usize> {
    let step = 1.0 / fps;
    let mut next = f64::NEG_INFINITY;
    let mut picks = Vec::new();
    for (k, &t) in times.iter().enumerate() {
        // A millisecond of slack, so 25 fps sampled at 5 fps takes every fifth.
        if t >= next - 1e-3 {
            picks.push(k);
            next = t + step;
        }
    }
    picks
}

/// A decoded picture as an upright RGB image.
fn to_rgb(picture: &openh264::decoder::DecodedYUV<'_>, quarter_turns: u8) -> RgbImage {
    let (w, h) = picture.dimensions();
    let mut bytes = vec![0u8; w * h * 3];
    picture.write_rgb8(&mut bytes);
    let image = RgbImage::from_raw(w as u32, h as u32, bytes).expect("w·h·3 bytes");
    match quarter_turns {
        1 => imageops::rotate90(&image),
        2 => imageops::rotate180(&image),
        3 => imageops::rotate270(&image),
        _ => image,
    }
}

/// Finds and measures the face in one frame, counting people the way
/// [`Replica::from_photo`] does.
fn look(
    detector: &BlazeFace,
    mesher: &FaceMesh,
    image: &RgbImage,
    config: &ReplicaConfig,
) -> Result<Seen, ReplicaError> {
    let detections = detector.detect(image)?;
    let largest = detections.iter().map(|d| d.bbox.width).fold(0.0f32, f32::max);
    let people: Vec<_> = detections.iter().filter(|d| d.bbox.width >= config.other_face_fraction * largest).collect();
    let face = match people.as_slice() {
        [] => return Ok(Seen::Nobody),
        [one] => *one,
        many => return Ok(Seen::Several(many.len())),
    };
    if face.bbox.width < config.min_face_px {
        return Ok(Seen::Small(face.bbox.width));
    }
    let mesh = mesher.landmarks(image, face)?;
    if mesh.presence < 0.5 {
        return Ok(Seen::Nobody);
    }
    let points: Vec<[f32; 2]> = mesh.points.iter().map(|p| [p[0], p[1]]).collect();
    let height = dist(points[FOREHEAD], points[CHIN]).max(1.0);
    let eyes = LIDS.iter().map(|&(a, b)| dist(points[a], points[b])).sum::<f32>() / LIDS.len() as f32;
    let stats = FaceStats {
        nose: points[NOSE_TIP],
        width: face.bbox.width,
        mouth: dist(points[LIPS.0], points[LIPS.1]) / height,
        eyes: eyes / height,
    };
    Ok(Seen::Face(stats, points))
}

/// Refuses a video in which the one person is not clearly in view: other
/// people in more than a fifth of the frames, or the face missing or too
/// small in too many.
fn check(seen: &[Seen], config: &VideoReplicaConfig) -> Result<(), ReplicaError> {
    let mut several = (0, 0);
    let mut small = Vec::new();
    let mut faces = 0;
    for s in seen {
        match s {
            Seen::Nobody => {}
            Seen::Several(count) => several = (several.0 + 1, several.1.max(*count)),
            Seen::Small(width) => small.push(*width),
            Seen::Face(..) => faces += 1,
        }
    }
    if several.0 * 5 > seen.len() {
        return Err(ReplicaError::SeveralFaces { count: several.1 });
    }
    if (faces as f32) < config.min_face_share * seen.len() as f32 || faces == 0 {
        if small.len() > faces {
            let width = percentile(&mut small, 0.5);
            return Err(ReplicaError::FaceTooSmall { width, min: config.replica.min_face_px });
        }
        return Err(ReplicaError::NoFace);
    }
    Ok(())
}

/// The value below which a share `q` of `values` lies (nearest rank).
fn percentile(values: &mut [f32], q: f32) -> f32 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f32::total_cmp);
    let rank = (q * (values.len() - 1) as f32).round() as usize;
    values[rank.min(values.len() - 1)]
}

/// Head motion: the distance of the nose tip from its median place that
/// nine frames in ten stay within, over the median face width. A single
/// wrong detection does not count; a head that keeps moving does.
fn motion<'a>(faces: impl Iterator<Item = &'a FaceStats> + Clone) -> f32 {
    let mut xs: Vec<f32> = faces.clone().map(|f| f.nose[0]).collect();
    let mut ys: Vec<f32> = faces.clone().map(|f| f.nose[1]).collect();
    let mut widths: Vec<f32> = faces.clone().map(|f| f.width).collect();
    let centre = [percentile(&mut xs, 0.5), percentile(&mut ys, 0.5)];
    let width = percentile(&mut widths, 0.5).max(1.0);
    let mut off: Vec<f32> = faces.map(|f| dist(f.nose, centre) / width).collect();
    percentile(&mut off, 0.9)
}

/// The still segment and its best frame: over every run of consecutive
/// measured frames with the face that spans `still_seconds`, the one whose
/// head strays least, mouth is most closed and eyes most open (all three
/// in fractions of the face, so they add up). Returns the segment as
/// (first, last) measured frame and the best frame in it.
fn still(seen: &[Seen], times: &[f32], config: &VideoReplicaConfig) -> ((usize, usize), usize) {
    let face = |i: usize| match &seen[i] {
        Seen::Face(stats, _) => Some(stats),
        _ => None,
    };
    let mut eyes: Vec<f32> = (0..seen.len()).filter_map(face).map(|f| f.eyes).collect();
    // Open eyes: as open as they are in most frames (blinks are short).
    let open = percentile(&mut eyes, 0.9);
    let step = 1.0 / config.sample_fps.max(0.1);
    let closedness = |f: &FaceStats| f.mouth + (open - f.eyes).max(0.0);

    // Where the nose is on average over frames first..=last (all with a face),
    // and how far one frame's nose is from there in face widths.
    let centre = |first: usize, last: usize| {
        let n = (last - first + 1) as f32;
        (first..=last).filter_map(face).fold([0.0, 0.0], |c, f| [c[0] + f.nose[0] / n, c[1] + f.nose[1] / n])
    };
    let stray = |f: &FaceStats, centre: [f32; 2]| dist(f.nose, centre) / f.width.max(1.0);

    let mut best: Option<(bool, f32, (usize, usize))> = None;
    for first in (0..seen.len()).filter(|&i| face(i).is_some()) {
        let mut last = first;
        while last + 1 < seen.len() && face(last + 1).is_some() && times[last + 1] < times[first] + config.still_seconds
        {
            last += 1;
        }
        let c = centre(first, last);
        let n = (last - first + 1) as f32;
        let cost = (first..=last).filter_map(face).map(|f| stray(f, c)).fold(0.0, f32::max)
            + (first..=last).filter_map(face).map(closedness).sum::<f32>() / n;
        // A run cut short by a missing face counts only if nothing longer exists.
        let long = times[last] + step >= times[first] + 0.9 * config.still_seconds;
        if best.is_none_or(|(was_long, was_cost, _)| (long, -cost) > (was_long, -was_cost)) {
            best = Some((long, cost, (first, last)));
        }
    }
    let (first, last) = best.map_or((0, 0), |(_, _, window)| window);
    let c = centre(first, last);
    let cost = |i: usize| face(i).map_or(f32::INFINITY, |f| closedness(f) + stray(f, c));
    let chosen = (first..=last).min_by(|&a, &b| cost(a).total_cmp(&cost(b))).unwrap_or(first);
    ((first, last), chosen)
}
