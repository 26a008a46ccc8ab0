// The talking-head warp: one RGBA8 frame per (frame record, portrait).
// Must match tete_kernels::warp::render (the CPU reference, which documents
// the steps and the record layout) up to float rounding.
//
// Several frames go through one submission: each dispatch binds one
// record, its replica's portrait and its slice of the output.

const HEADER: u32 = 40u;
const MAX_POINTS: u32 = 128u;
const POINT_WORDS: u32 = 5u;
const H_WIDTH: u32 = 0u;
const H_HEIGHT: u32 = 1u;
const H_POINTS: u32 = 2u;
const H_MOUTH: u32 = 3u;
const H_MOUTH_UPPER: u32 = 4u;
const H_HEAD: u32 = 8u;
const H_ELLIPSE: u32 = 16u;
const H_ROI: u32 = 21u;
const H_MOUTH_BOX: u32 = 25u;
const H_FEATHER: u32 = 29u;
const H_MOUTH_GAIN: u32 = 30u;
const H_TEETH_HEIGHT: u32 = 31u;
const H_TEETH_X: u32 = 32u;
const H_TONGUE: u32 = 34u;
const H_REST_MOUTH: u32 = 38u;
const MAX_MOUTH: u32 = 32u;
const MOUTH_AT: u32 = HEADER + MAX_POINTS * POINT_WORDS;
const REST_MOUTH_AT: u32 = MOUTH_AT + MAX_MOUTH * 2u;
const LID_POINTS: u32 = 9u;
const EYE_WORDS: u32 = 5u + 4u * LID_POINTS;
const EYES_AT: u32 = REST_MOUTH_AT + MAX_MOUTH * 2u;

const CAVITY_EDGE: vec3<f32> = vec3<f32>(92.0, 38.0, 40.0);
const CAVITY_DEEP: vec3<f32> = vec3<f32>(28.0, 8.0, 10.0);
const TEETH: vec3<f32> = vec3<f32>(226.0, 220.0, 206.0);
const TONGUE: vec3<f32> = vec3<f32>(158.0, 72.0, 76.0);

@group(0) @binding(0) var<storage, read> rec: array<u32>;
@group(0) @binding(1) var<storage, read> portrait: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

fn f(i: u32) -> f32 {
    return bitcast<f32>(rec[i]);
}

fn inside(at: u32, p: vec2<f32>) -> bool {
    return p.x >= f(at) && p.y >= f(at + 1u) && p.x <= f(at + 2u) && p.y <= f(at + 3u);
}

fn ease(a: f32, b: f32, x: f32) -> f32 {
    let t = clamp((x - a) / (b - a), 0.0, 1.0);
    return t * t * (3.0 - 2.0 * t);
}

fn head(p: vec2<f32>) -> vec2<f32> {
    let ex = (p.x - f(H_ELLIPSE)) / f(H_ELLIPSE + 2u);
    let ey = (p.y - f(H_ELLIPSE + 1u)) / f(H_ELLIPSE + 3u);
    let e = sqrt(ex * ex + ey * ey);
    let w = 1.0 - ease(1.0, f(H_ELLIPSE + 4u), e);
    if (w <= 0.0) {
        return p;
    }
    let px = p.x - f(H_HEAD);
    let py = p.y - f(H_HEAD + 1u);
    let dx = f(H_HEAD + 2u) * px + f(H_HEAD + 3u) * py + f(H_HEAD + 6u);
    let dy = f(H_HEAD + 4u) * px + f(H_HEAD + 5u) * py + f(H_HEAD + 7u);
    return vec2<f32>(p.x - w * dx, p.y - w * dy);
}

fn features(p: vec2<f32>) -> vec2<f32> {
    if (!inside(H_ROI, p)) {
        return p;
    }
    var sw = 0.0;
    var sx = 0.0;
    var sy = 0.0;
    let n = rec[H_POINTS];
    for (var i = 0u; i < n; i = i + 1u) {
        let at = HEADER + i * POINT_WORDS;
        let radius = f(at + 4u);
        let ox = p.x - f(at);
        let oy = p.y - f(at + 1u);
        let r2 = ox * ox + oy * oy;
        if (r2 < radius * radius) {
            let q = sqrt(r2) / radius;
            let a = 1.0 - q;
            let phi = a * a * a * a * (4.0 * q + 1.0);
            sw = sw + phi;
            sx = sx + phi * f(at + 2u);
            sy = sy + phi * f(at + 3u);
        }
    }
    let norm = max(sw, 1.0);
    return vec2<f32>(p.x - sx / norm, p.y - sy / norm);
}

// y of a lid polyline (increasing x) at x; the bool is false beyond its corners.
fn lid_y(at: u32, x: f32) -> vec2<f32> {
    for (var i = 0u; i < LID_POINTS - 1u; i = i + 1u) {
        let x0 = f(at + 2u * i);
        let x1 = f(at + 2u * i + 2u);
        if (x >= x0 && x <= x1 && x1 > x0) {
            let y0 = f(at + 2u * i + 1u);
            let y1 = f(at + 2u * i + 3u);
            return vec2<f32>(y0 + (y1 - y0) * (x - x0) / (x1 - x0), 1.0);
        }
    }
    return vec2<f32>(0.0, 0.0);
}

fn lids(p: vec2<f32>) -> f32 {
    for (var eye = 0u; eye < 2u; eye = eye + 1u) {
        let at = EYES_AT + eye * EYE_WORDS;
        let closure = f(at);
        if (closure <= 0.0 || !inside(at + 1u, p)) {
            continue;
        }
        let upper = lid_y(at + 5u, p.x);
        let lower = lid_y(at + 5u + 2u * LID_POINTS, p.x);
        if (upper.y == 0.0 || lower.y == 0.0) {
            continue;
        }
        let h = lower.x - upper.x;
        let top = f(at + 2u);
        if (h <= 0.0 || p.y > lower.x || upper.x <= top) {
            continue;
        }
        let drop = closure * h;
        if (p.y <= upper.x) {
            return drop * (p.y - top) / (upper.x - top);
        }
        let cover = clamp(upper.x + drop - p.y + 0.5, 0.0, 1.0);
        return drop * cover;
    }
    return 0.0;
}

fn channel(px: u32, ch: u32) -> f32 {
    return f32((px >> (8u * ch)) & 0xffu);
}

fn sample(p: vec2<f32>) -> vec3<f32> {
    let w = rec[H_WIDTH];
    let h = rec[H_HEIGHT];
    let x = clamp(p.x, 0.0, f32(w - 1u));
    let y = clamp(p.y, 0.0, f32(h - 1u));
    let x0 = u32(floor(x));
    let y0 = u32(floor(y));
    let x1 = min(x0 + 1u, w - 1u);
    let y1 = min(y0 + 1u, h - 1u);
    let fx = x - f32(x0);
    let fy = y - f32(y0);
    let a = portrait[y0 * w + x0];
    let b = portrait[y0 * w + x1];
    let c = portrait[y1 * w + x0];
    let d = portrait[y1 * w + x1];
    var rgb = vec3<f32>(0.0);
    for (var ch = 0u; ch < 3u; ch = ch + 1u) {
        let top = channel(a, ch) * (1.0 - fx) + channel(b, ch) * fx;
        let bottom = channel(c, ch) * (1.0 - fx) + channel(d, ch) * fx;
        rgb[ch] = top * (1.0 - fy) + bottom * fy;
    }
    return rgb;
}

fn segment_distance(a: vec2<f32>, b: vec2<f32>, p: vec2<f32>) -> f32 {
    let v = b - a;
    let w = p - a;
    let len2 = v.x * v.x + v.y * v.y;
    var t = 0.0;
    if (len2 > 0.0) {
        t = clamp((w.x * v.x + w.y * v.y) / len2, 0.0, 1.0);
    }
    let dx = w.x - t * v.x;
    let dy = w.y - t * v.y;
    return sqrt(dx * dx + dy * dy);
}

fn vertex(at: u32, i: u32) -> vec2<f32> {
    return vec2<f32>(f(at + 2u * i), f(at + 2u * i + 1u));
}

// Signed distance to the polygon of n vertices at word `at` (negative
// inside), and the distance to its first upper - 1 edges.
fn polygon(at: u32, n: u32, upper: u32, p: vec2<f32>) -> vec2<f32> {
    var edge = 3.4028235e38;
    var upper_edge = 3.4028235e38;
    var crossings = 0u;
    for (var i = 0u; i < n; i = i + 1u) {
        var j = i + 1u;
        if (j == n) {
            j = 0u;
        }
        let a = vertex(at, i);
        let b = vertex(at, j);
        let d = segment_distance(a, b, p);
        edge = min(edge, d);
        if (j < upper && j > 0u) {
            upper_edge = min(upper_edge, d);
        }
        if ((a.y > p.y) != (b.y > p.y) && p.x < a.x + (p.y - a.y) * (b.x - a.x) / (b.y - a.y)) {
            crossings = crossings + 1u;
        }
    }
    if (crossings % 2u == 1u) {
        return vec2<f32>(-edge, upper_edge);
    }
    return vec2<f32>(edge, upper_edge);
}

// The inner mouth's colour (rgb) and coverage (a).
fn mouth(p: vec2<f32>) -> vec4<f32> {
    let n = rec[H_MOUTH];
    let gain = f(H_MOUTH_GAIN);
    if (n < 3u || gain <= 0.0 || !inside(H_MOUTH_BOX, p)) {
        return vec4<f32>(0.0);
    }
    let feather = f(H_FEATHER);
    let poly = polygon(MOUTH_AT, n, rec[H_MOUTH_UPPER], p);
    let sd = poly.x;
    let upper_edge = poly.y;
    let alpha = clamp(0.5 - sd / feather, 0.0, 1.0) * gain;
    if (alpha <= 0.0) {
        return vec4<f32>(0.0);
    }
    let depth = ease(0.0, 6.0, -sd);
    var c = CAVITY_EDGE + (CAVITY_DEEP - CAVITY_EDGE) * depth;
    let tx = (p.x - f(H_TONGUE)) / f(H_TONGUE + 2u);
    let ty = (p.y - f(H_TONGUE + 1u)) / f(H_TONGUE + 3u);
    let tongue = tx * tx + ty * ty;
    if (tongue < 1.0) {
        let rim = min((1.0 - tongue) * 4.0, 1.0);
        c = c + (TONGUE * (0.75 + 0.25 * (1.0 - tongue)) - c) * rim;
    }
    let teeth_h = f(H_TEETH_HEIGHT);
    let teeth_x = abs(p.x - f(H_TEETH_X)) / f(H_TEETH_X + 1u);
    if (upper_edge < teeth_h && teeth_x < 1.0) {
        c = TEETH * (1.0 - 0.25 * (upper_edge / teeth_h) - 0.3 * teeth_x * teeth_x);
    }
    let rest = rec[H_REST_MOUTH];
    if (rest >= 3u) {
        let own = clamp(0.5 - polygon(REST_MOUTH_AT, rest, 0u, p).x / feather, 0.0, 1.0);
        if (own > 0.0) {
            c = c + (sample(p) - c) * own;
        }
    }
    return vec4<f32>(c, alpha);
}

fn byte(v: f32) -> u32 {
    return u32(clamp(floor(v + 0.5), 0.0, 255.0));
}

@compute @workgroup_size(8, 8, 1)
fn warp_main(@builtin(global_invocation_id) id: vec3<u32>) {
    let w = rec[H_WIDTH];
    let h = rec[H_HEIGHT];
    if (id.x >= w || id.y >= h) {
        return;
    }
    let p = vec2<f32>(f32(id.x), f32(id.y));
    let q = head(p);
    let moved = features(q);
    let s = vec2<f32>(moved.x, moved.y - lids(moved));
    var rgb = sample(s);
    let inner = mouth(q);
    if (inner.a > 0.0) {
        rgb = rgb + (inner.rgb - rgb) * inner.a;
    }
    out[id.y * w + id.x] = byte(rgb.x) | (byte(rgb.y) << 8u) | (byte(rgb.z) << 16u) | 0xff000000u;
}
