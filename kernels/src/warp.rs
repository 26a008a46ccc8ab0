//! The talking-head warp: one output frame from a replica's portrait and a
//! frame record (head motion, feature displacements, the open mouth).
//!
//! This is the CPU reference. `shaders/face_warp.wgsl` and
//! `cuda/face_warp.cu` do the same arithmetic on the same record; they
//! differ from it only by float rounding (fused multiply-adds), which moves
//! a channel by at most a level or two where a value sits on a rounding
//! boundary.
//!
//! Per output pixel `p` (pixel centres at integer coordinates):
//! 1. **Head**: `q = p − w(p)·(M·(p − c) + t)`, where `M` is the head's
//!    rotation and scale minus the identity, `t` its translation, and `w`
//!    is 1 inside the head ellipse and falls smoothly to 0 at `k` times its
//!    radii, so the background stays still.
//! 2. **Features** (lips, jaw, eyelids): control points sit where the
//!    feature moves *to*, each with its displacement `d` and radius `R`;
//!    `s = q − Σφᵢdᵢ / max(1, Σφᵢ)` with Wendland's compact kernel
//!    `φ = (1 − r/R)⁴(4r/R + 1)`. Outside the points' bounding box nothing
//!    moves, and the sum is skipped.
//! 3. The portrait is sampled bilinearly at `s` (clamped to the edge).
//! 4. **Eyelids**: each eye's opening (between its upper and lower lid at
//!    rest) is covered from the top down to `closure` of its height by the
//!    lid: the skin above the eye slides down, stretched over the band
//!    between the eye and a straight line above it (the top of the eye's
//!    box, below the brow), so the lash line ends where the lid stops.
//! 5. **Mouth**: inside the polygon of the displaced inner lips, the inner
//!    mouth is composited with an edge feathered over `feather` pixels:
//!    where the portrait's own mouth was open (inside the polygon of the
//!    inner lips at rest: teeth in a smile) the portrait shows through
//!    unmoved, as teeth stay with the skull; elsewhere a dark cavity, drawn
//!    upper teeth under the upper lip and the tongue.

use crate::KernelError;

/// Words of the record header (see the `H_*` indices).
pub const HEADER: usize = 40;
/// Most feature control points a record holds.
pub const MAX_POINTS: usize = 128;
/// Words per control point: x, y, dx, dy, radius.
pub const POINT_WORDS: usize = 5;
/// Most vertices of the inner-mouth polygon.
pub const MAX_MOUTH: usize = 32;
/// Words of one frame record.
pub const RECORD_WORDS: usize = EYES_AT + 2 * EYE_WORDS;
/// Points along each eyelid, corner to corner, in increasing x.
pub const LID_POINTS: usize = 9;
/// Words per eye: closure, bounding box (4), upper lid, lower lid.
pub const EYE_WORDS: usize = 5 + 4 * LID_POINTS;
pub const EYES_AT: usize = REST_MOUTH_AT + MAX_MOUTH * 2;
/// Where the displaced mouth polygon starts, and the one at rest after it.
pub const MOUTH_AT: usize = HEADER + MAX_POINTS * POINT_WORDS;
pub const REST_MOUTH_AT: usize = MOUTH_AT + MAX_MOUTH * 2;

// Header layout. Integers are stored as u32, everything else as f32 bits.
pub const H_WIDTH: usize = 0;
pub const H_HEIGHT: usize = 1;
pub const H_POINTS: usize = 2;
pub const H_MOUTH: usize = 3;
/// Vertices of the polygon that belong to the upper lip (they come first).
pub const H_MOUTH_UPPER: usize = 4;
/// Head centre (2), `M` row-major (4), translation (2).
pub const H_HEAD: usize = 8;
/// Ellipse centre (2), radii (2), outer factor `k` (1).
pub const H_ELLIPSE: usize = 16;
/// Bounding box of the control points' reach: x0, y0, x1, y1.
pub const H_ROI: usize = 21;
/// Bounding box of the mouth polygon plus the feather: x0, y0, x1, y1.
pub const H_MOUTH_BOX: usize = 25;
pub const H_FEATHER: usize = 29;
/// How strongly the inner mouth is drawn (0 when the lips touch).
pub const H_MOUTH_GAIN: usize = 30;
pub const H_TEETH_HEIGHT: usize = 31;
/// Teeth centre x and half-width.
pub const H_TEETH_X: usize = 32;
/// Tongue ellipse: centre (2), radii (2).
pub const H_TONGUE: usize = 34;
/// Vertices of the mouth polygon at rest.
pub const H_REST_MOUTH: usize = 38;

const CAVITY_EDGE: [f32; 3] = [92.0, 38.0, 40.0];
const CAVITY_DEEP: [f32; 3] = [28.0, 8.0, 10.0];
const TEETH: [f32; 3] = [226.0, 220.0, 206.0];
const TONGUE: [f32; 3] = [158.0, 72.0, 76.0];

/// Checks a record and the buffers it is rendered with.
pub fn check(record: &[u32], portrait_len: usize, out_len: usize) -> Result<(u32, u32), KernelError> {
    if record.len() != RECORD_WORDS {
        return Err(KernelError::BadRecord(format!("{} words, expected {RECORD_WORDS}", record.len())));
    }
    let (width, height) = (record[H_WIDTH], record[H_HEIGHT]);
    crate::cpu::check_i420_frame(width, height)?;
    let pixels = width as usize * height as usize;
    for (what, len) in [("portrait", portrait_len), ("output", out_len)] {
        if len != pixels {
            return Err(KernelError::BadBufferLength { what, width, height, expected: pixels, actual: len });
        }
    }
    if record[H_POINTS] as usize > MAX_POINTS {
        return Err(KernelError::BadRecord(format!("{} control points, at most {MAX_POINTS}", record[H_POINTS])));
    }
    let (mouth, upper) = (record[H_MOUTH] as usize, record[H_MOUTH_UPPER] as usize);
    if mouth > MAX_MOUTH || upper > mouth || record[H_REST_MOUTH] as usize > MAX_MOUTH {
        return Err(KernelError::BadRecord(format!(
            "mouth polygon of {mouth} vertices ({upper} upper), at most {MAX_MOUTH}"
        )));
    }
    Ok((width, height))
}

/// Renders one frame into `out` (RGBA8, R in the low byte, like `portrait`).
///
/// Each 32-pixel tile of a row only visits the control points that can
/// reach it (what the head step moves a pixel by is bounded first), which
/// skips exactly the points the full loop would find out of reach, so the
/// sum — and the output — is unchanged.
pub fn render(record: &[u32], portrait: &[u32], out: &mut [u32]) -> Result<(), KernelError> {
    let (width, height) = check(record, portrait.len(), out.len())?;
    let r = record;
    // How far the head step can move a pixel vertically: |M₁₀|·|x − cx| +
    // |M₁₁|·|y − cy| + |t_y|, with the distances bounded by the frame.
    let span = (width + height) as f32;
    let margin_y = (f(r, H_HEAD + 4).abs() + f(r, H_HEAD + 5).abs()) * span + f(r, H_HEAD + 7).abs() + 1.0;
    let margin_x = (f(r, H_HEAD + 2).abs() + f(r, H_HEAD + 3).abs()) * span + f(r, H_HEAD + 6).abs() + 1.0;
    // Rows are cut into tiles of this many pixels, each with its own points.
    const TILE: usize = 32;
    use rayon::prelude::*;
    out.par_chunks_mut(width as usize).enumerate().for_each(|(y, row)| {
        let yf = y as f32;
        let point = |i: usize| {
            let at = HEADER + i * POINT_WORDS;
            (f(r, at), f(r, at + 1), f(r, at + 4))
        };
        let near_row: Vec<usize> = (0..r[H_POINTS] as usize)
            .filter(|&i| {
                let (_, cy, radius) = point(i);
                (yf - cy).abs() < radius + margin_y
            })
            .collect();
        let mut near = Vec::with_capacity(near_row.len());
        for (tile, pixels) in row.chunks_mut(TILE).enumerate() {
            let x0 = (tile * TILE) as f32;
            let half = (pixels.len() as f32 - 1.0) / 2.0;
            near.clear();
            near.extend(near_row.iter().copied().filter(|&i| {
                let (cx, _, radius) = point(i);
                (x0 + half - cx).abs() < radius + margin_x + half
            }));
            for (dx, px) in pixels.iter_mut().enumerate() {
                *px = pixel(record, portrait, &near, x0 + dx as f32, yf);
            }
        }
    });
    Ok(())
}

fn f(record: &[u32], i: usize) -> f32 {
    f32::from_bits(record[i])
}

fn smoothstep(a: f32, b: f32, x: f32) -> f32 {
    let t = ((x - a) / (b - a)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

fn inside(b: [f32; 4], x: f32, y: f32) -> bool {
    x >= b[0] && y >= b[1] && x <= b[2] && y <= b[3]
}

fn rect(record: &[u32], at: usize) -> [f32; 4] {
    [f(record, at), f(record, at + 1), f(record, at + 2), f(record, at + 3)]
}

/// The head-motion step: where output pixel (x, y) comes from before the
/// features move.
fn head(r: &[u32], x: f32, y: f32) -> (f32, f32) {
    let (ex, ey) = ((x - f(r, H_ELLIPSE)) / f(r, H_ELLIPSE + 2), (y - f(r, H_ELLIPSE + 1)) / f(r, H_ELLIPSE + 3));
    // Beyond the outer ellipse's box the weight is exactly 0: skip the rest.
    let k = f(r, H_ELLIPSE + 4);
    if ex.abs() >= k || ey.abs() >= k {
        return (x, y);
    }
    let e = (ex * ex + ey * ey).sqrt();
    let w = 1.0 - smoothstep(1.0, f(r, H_ELLIPSE + 4), e);
    if w <= 0.0 {
        return (x, y);
    }
    let (px, py) = (x - f(r, H_HEAD), y - f(r, H_HEAD + 1));
    let dx = f(r, H_HEAD + 2) * px + f(r, H_HEAD + 3) * py + f(r, H_HEAD + 6);
    let dy = f(r, H_HEAD + 4) * px + f(r, H_HEAD + 5) * py + f(r, H_HEAD + 7);
    (x - w * dx, y - w * dy)
}

/// The feature step: the displacement field of the control points.
fn features(r: &[u32], near: &[usize], x: f32, y: f32) -> (f32, f32) {
    if !inside(rect(r, H_ROI), x, y) {
        return (x, y);
    }
    let (mut sw, mut sx, mut sy) = (0.0f32, 0.0f32, 0.0f32);
    for &i in near {
        let at = HEADER + i * POINT_WORDS;
        let (cx, cy, radius) = (f(r, at), f(r, at + 1), f(r, at + 4));
        let (ox, oy) = (x - cx, y - cy);
        let r2 = ox * ox + oy * oy;
        if r2 < radius * radius {
            let q = r2.sqrt() / radius;
            let a = 1.0 - q;
            let phi = a * a * a * a * (4.0 * q + 1.0);
            sw += phi;
            sx += phi * f(r, at + 2);
            sy += phi * f(r, at + 3);
        }
    }
    let n = sw.max(1.0);
    (x - sx / n, y - sy / n)
}

/// Bilinear sample of the portrait at (x, y), clamped to its edge.
fn sample(r: &[u32], portrait: &[u32], x: f32, y: f32) -> [f32; 3] {
    let (w, h) = (r[H_WIDTH] as usize, r[H_HEIGHT] as usize);
    let x = x.clamp(0.0, (w - 1) as f32);
    let y = y.clamp(0.0, (h - 1) as f32);
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let at = |xx: usize, yy: usize| portrait[yy * w + xx];
    let (a, b, c, d) = (at(x0, y0), at(x1, y0), at(x0, y1), at(x1, y1));
    let mut rgb = [0.0f32; 3];
    for (ch, v) in rgb.iter_mut().enumerate() {
        let sh = 8 * ch as u32;
        let get = |p: u32| ((p >> sh) & 0xff) as f32;
        let top = get(a) * (1.0 - fx) + get(b) * fx;
        let bottom = get(c) * (1.0 - fx) + get(d) * fx;
        *v = top * (1.0 - fy) + bottom * fy;
    }
    rgb
}

/// Distance from (x, y) to the segment a–b.
fn segment_distance(ax: f32, ay: f32, bx: f32, by: f32, x: f32, y: f32) -> f32 {
    let (vx, vy) = (bx - ax, by - ay);
    let (wx, wy) = (x - ax, y - ay);
    let len2 = vx * vx + vy * vy;
    let t = if len2 > 0.0 { ((wx * vx + wy * vy) / len2).clamp(0.0, 1.0) } else { 0.0 };
    let (dx, dy) = (wx - t * vx, wy - t * vy);
    (dx * dx + dy * dy).sqrt()
}

/// Signed distance from (x, y) to the polygon of `n` vertices at word
/// `at` (negative inside), and the distance to its first `upper - 1` edges.
fn polygon(r: &[u32], at: usize, n: usize, upper: usize, x: f32, y: f32) -> (f32, f32) {
    let vx = |i: usize| f(r, at + 2 * i);
    let vy = |i: usize| f(r, at + 2 * i + 1);
    let (mut edge, mut upper_edge, mut crossings) = (f32::MAX, f32::MAX, 0u32);
    for i in 0..n {
        let j = if i + 1 == n { 0 } else { i + 1 };
        let (ax, ay, bx, by) = (vx(i), vy(i), vx(j), vy(j));
        let d = segment_distance(ax, ay, bx, by, x, y);
        edge = edge.min(d);
        if j < upper && j > 0 {
            upper_edge = upper_edge.min(d);
        }
        if (ay > y) != (by > y) && x < ax + (y - ay) * (bx - ax) / (by - ay) {
            crossings += 1;
        }
    }
    (if crossings % 2 == 1 { -edge } else { edge }, upper_edge)
}

/// y of a lid polyline (increasing x) at x, or None beyond its corners.
fn lid_y(r: &[u32], at: usize, x: f32) -> Option<f32> {
    let px = |i: usize| f(r, at + 2 * i);
    let py = |i: usize| f(r, at + 2 * i + 1);
    for i in 0..LID_POINTS - 1 {
        let (x0, x1) = (px(i), px(i + 1));
        if x >= x0 && x <= x1 && x1 > x0 {
            return Some(py(i) + (py(i + 1) - py(i)) * (x - x0) / (x1 - x0));
        }
    }
    None
}

/// The eyelid step: how far up the portrait is sampled at (x, y) so the
/// lids close, and the coverage of the lid's lower edge there.
fn lids(r: &[u32], x: f32, y: f32) -> f32 {
    for eye in 0..2 {
        let at = EYES_AT + eye * EYE_WORDS;
        let closure = f(r, at);
        if closure <= 0.0 || !inside(rect(r, at + 1), x, y) {
            continue;
        }
        let (Some(upper), Some(lower)) = (lid_y(r, at + 5, x), lid_y(r, at + 5 + 2 * LID_POINTS, x)) else {
            continue;
        };
        let h = lower - upper;
        let top = f(r, at + 2);
        if h <= 0.0 || y > lower || upper <= top {
            continue;
        }
        let drop = closure * h;
        if y <= upper {
            return drop * (y - top) / (upper - top);
        }
        // Inside the eye: lid above its edge, the eye below, one pixel of blend.
        let cover = (upper + drop - y + 0.5).clamp(0.0, 1.0);
        return drop * cover;
    }
    0.0
}

/// The inner mouth at (x, y): its colour and coverage (0 outside).
fn mouth(r: &[u32], portrait: &[u32], x: f32, y: f32) -> ([f32; 3], f32) {
    let n = r[H_MOUTH] as usize;
    let gain = f(r, H_MOUTH_GAIN);
    if n < 3 || gain <= 0.0 || !inside(rect(r, H_MOUTH_BOX), x, y) {
        return ([0.0; 3], 0.0);
    }
    let feather = f(r, H_FEATHER);
    let (signed, upper_edge) = polygon(r, MOUTH_AT, n, r[H_MOUTH_UPPER] as usize, x, y);
    let alpha = (0.5 - signed / feather).clamp(0.0, 1.0) * gain;
    if alpha <= 0.0 {
        return ([0.0; 3], 0.0);
    }
    let depth = smoothstep(0.0, 6.0, -signed);
    let mut c = [0.0f32; 3];
    for ch in 0..3 {
        c[ch] = CAVITY_EDGE[ch] + (CAVITY_DEEP[ch] - CAVITY_EDGE[ch]) * depth;
    }
    let (tx, ty) = ((x - f(r, H_TONGUE)) / f(r, H_TONGUE + 2), (y - f(r, H_TONGUE + 1)) / f(r, H_TONGUE + 3));
    let tongue = tx * tx + ty * ty;
    if tongue < 1.0 {
        // Shaded towards its middle, its rim blended into the cavity.
        let shade = 0.75 + 0.25 * (1.0 - tongue);
        let rim = ((1.0 - tongue) * 4.0).min(1.0);
        for ch in 0..3 {
            c[ch] += (TONGUE[ch] * shade - c[ch]) * rim;
        }
    }
    let teeth_h = f(r, H_TEETH_HEIGHT);
    let teeth_x = (x - f(r, H_TEETH_X)).abs() / f(r, H_TEETH_X + 1);
    if upper_edge < teeth_h && teeth_x < 1.0 {
        let shade = 1.0 - 0.25 * (upper_edge / teeth_h) - 0.3 * teeth_x * teeth_x;
        for ch in 0..3 {
            c[ch] = TEETH[ch] * shade;
        }
    }
    let rest = r[H_REST_MOUTH] as usize;
    if rest >= 3 {
        let (signed, _) = polygon(r, REST_MOUTH_AT, rest, 0, x, y);
        let own = (0.5 - signed / feather).clamp(0.0, 1.0);
        if own > 0.0 {
            let teeth = sample(r, portrait, x, y);
            for ch in 0..3 {
                c[ch] += (teeth[ch] - c[ch]) * own;
            }
        }
    }
    (c, alpha)
}

fn pixel(r: &[u32], portrait: &[u32], near: &[usize], x: f32, y: f32) -> u32 {
    let (qx, qy) = head(r, x, y);
    // Nothing moves here: the bilinear sample at a pixel centre is that
    // pixel exactly, so copy it (the result is the same as the full path).
    if qx == x && qy == y && !inside(rect(r, H_ROI), x, y) && !inside(rect(r, H_MOUTH_BOX), x, y) {
        let in_eye = (0..2).any(|e| {
            let at = EYES_AT + e * EYE_WORDS;
            f(r, at) > 0.0 && inside(rect(r, at + 1), x, y)
        });
        if !in_eye {
            return (portrait[y as usize * r[H_WIDTH] as usize + x as usize] & 0x00ff_ffff) | 0xff00_0000;
        }
    }
    let (sx, sy) = features(r, near, qx, qy);
    let sy = sy - lids(r, sx, sy);
    let mut rgb = sample(r, portrait, sx, sy);
    let (inner, alpha) = mouth(r, portrait, qx, qy);
    if alpha > 0.0 {
        for ch in 0..3 {
            rgb[ch] += (inner[ch] - rgb[ch]) * alpha;
        }
    }
    let byte = |v: f32| (v + 0.5).floor().clamp(0.0, 255.0) as u32;
    byte(rgb[0]) | (byte(rgb[1]) << 8) | (byte(rgb[2]) << 16) | 0xff00_0000
}
