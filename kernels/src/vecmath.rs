//! Small f32 vector routines for the LLM's forward pass, written so the
//! compiler vectorises them (eight independent sums, no calls into libm).

use std::f32::consts::LOG2_E;

/// ln 2 split in two so `n · ln 2` is exact in the high part (Cody–Waite).
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;

/// `e^x` to within 2 ulp for x in [−87.3, 88] (clamped there): `2^n · e^r`
/// with `r = x − n ln 2` in [−ln2/2, ln2/2] and a degree-6 Taylor polynomial,
/// whose truncation error there is below 1.2e-7 of the result.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.336_54, 88.0);
    let n = (x * LOG2_E).round();
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let mut p: f32 = 1.0 / 720.0;
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = p.mul_add(r, c);
    }
    // n + 127 is in [1, 254] after the clamp: a normal power of two.
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Σ a·b with eight independent sums.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(a, b)| a * b).sum();
    for (a, b) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] = a[i].mul_add(b[i], acc[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Positions in a key tile of [`tile_dot`].
pub const TILE: usize = 8;

/// `q · k_p` for the [`TILE`] keys of a tile stored feature-major
/// (`rows[f · TILE + p]` is feature `f` of key `p`, `q.len()` features):
/// eight-wide multiply-adds in four independent chains.
#[inline(always)]
pub fn tile_dot(q: &[f32], rows: &[f32]) -> [f32; TILE] {
    assert_eq!(rows.len(), q.len() * TILE, "a tile holds {} rows of {TILE}", q.len());
    let mut acc = [[0.0f32; TILE]; 4];
    let (quads, rest) = (q.chunks_exact(4), q.len() / 4 * 4);
    for (j, q4) in quads.enumerate() {
        for (c, &qf) in q4.iter().enumerate() {
            let row = &rows[(4 * j + c) * TILE..][..TILE];
            for l in 0..TILE {
                acc[c][l] = qf.mul_add(row[l], acc[c][l]);
            }
        }
    }
    for (f, &qf) in q.iter().enumerate().skip(rest) {
        let row = &rows[f * TILE..][..TILE];
        for l in 0..TILE {
            acc[0][l] = qf.mul_add(row[l], acc[0][l]);
        }
    }
    std::array::from_fn(|l| (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]))
}

/// `out += w · v`.
#[inline(always)]
pub fn axpy(w: f32, v: &[f32], out: &mut [f32]) {
    out.iter_mut().zip(v).for_each(|(o, &v)| *o = w.mul_add(v, *o));
}

/// Softmax in place; returns nothing for an empty slice.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = exp(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    x.iter_mut().for_each(|v| *v *= inv);
}

/// `out = silu(gate) · up` (SwiGLU), `silu(g) = g / (1 + e^−g)`.
pub fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for (o, (&g, &u)) in out.iter_mut().zip(gate.iter().zip(up)) {
        *o = g / (1.0 + exp(-g)) * u;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_f64() {
        let mut worst = 0.0f64;
        let mut at = 0.0;
        let mut x = -87.0f32;
        while x < 87.99 {
            let e = f64::from(x).exp();
            let rel = ((f64::from(exp(x)) - e) / e).abs();
            if rel > worst {
                (worst, at) = (rel, x);
            }
            x += 0.001_3;
        }
        assert!(worst < 2.5e-7, "exp({at}): relative error {worst}");
        assert_eq!(exp(-1000.0), exp(-87.336_54), "clamped below");
        assert_eq!(exp(1000.0), exp(88.0), "clamped above");
        assert!(exp(f32::NEG_INFINITY) < 1e-37 && exp(f32::NEG_INFINITY) >= 0.0);
        assert!(exp(1000.0).is_finite(), "clamped above");
    }

    #[test]
    fn tile_dot_matches_f64() {
        for features in [64, 13, 1] {
            let q: Vec<f32> = (0..features).map(|i| (i as f32 * 0.37).sin()).collect();
            let rows: Vec<f32> = (0..features * TILE).map(|i| (i as f32 * 0.11).cos()).collect();
            let got = tile_dot(&q, &rows);
            for (p, &g) in got.iter().enumerate() {
                let e: f64 = (0..features).map(|f| f64::from(q[f]) * f64::from(rows[f * TILE + p])).sum();
                assert!((f64::from(g) - e).abs() < 1e-5 * (1.0 + e.abs()), "{features} features, key {p}: {g} vs {e}");
            }
        }
    }

    #[test]
    fn softmax_and_swiglu_match_f64() {
        let x: Vec<f32> = (0..37).map(|i| (i as f32 * 0.77).sin() * 9.0).collect();
        let mut s = x.clone();
        softmax(&mut s);
        let max = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let sum: f64 = x.iter().map(|&v| (f64::from(v) - max).exp()).sum();
        for (i, (&v, &o)) in x.iter().zip(&s).enumerate() {
            let e = (f64::from(v) - max).exp() / sum;
            assert!((f64::from(o) - e).abs() < 1e-6 * e.max(1e-3), "softmax {i}: {o} vs {e}");
        }
        let up: Vec<f32> = (0..37).map(|i| (i as f32 * 0.31).cos()).collect();
        let mut out = vec![0.0; 37];
        swiglu(&x, &up, &mut out);
        for i in 0..37 {
            let g = f64::from(x[i]);
            let e = g / (1.0 + (-g).exp()) * f64::from(up[i]);
            assert!((f64::from(out[i]) - e).abs() < 1e-5 * (1.0 + e.abs()), "swiglu {i}: {} vs {e}", out[i]);
        }
    }
}
