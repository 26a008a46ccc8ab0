//! WaveNet's gated activation, `tanh(a) · sigmoid(b)`, in plain f32 loops
//! that the compiler vectorises (libm's scalar `tanhf` and `expf` cost more
//! than the convolutions around them in a VITS flow). The exponential is
//! Cephes' `expf` (degree-6 polynomial after a two-part ln 2 reduction,
//! about 1 ulp); [`cpu::tanh_sigmoid`](crate::cpu::tanh_sigmoid) is the f64
//! reference the tests compare against.

/// `out[i] = tanh(a[i]) · sigmoid(b[i])`.
pub fn tanh_sigmoid(a: &[f32], b: &[f32], out: &mut [f32]) {
    assert!(a.len() == out.len() && b.len() == out.len(), "lengths differ");
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        // tanh(a) = 1 − 2 / (e^{2a} + 1): exact limits ±1, absolute error
        // of a few ulp of 1 near 0.
        let tanh = 1.0 - 2.0 / (exp(2.0 * a) + 1.0);
        let sigmoid = 1.0 / (1.0 + exp(-b));
        *o = tanh * sigmoid;
    }
}

/// e^x for x in [−87, 88] (clamped outside, where the gate saturates anyway).
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu;

    #[test]
    fn matches_the_f64_reference() {
        let n = 20_001;
        let a: Vec<f32> = (0..n).map(|i| (i as f32 - 10_000.0) * 2e-3).collect(); // −20..20
        let b: Vec<f32> = a.iter().rev().map(|v| v * 1.7 + 0.3).collect();
        let mut out = vec![0.0; n];
        tanh_sigmoid(&a, &b, &mut out);
        let reference = cpu::tanh_sigmoid(&a, &b);
        for (i, (o, r)) in out.iter().zip(&reference).enumerate() {
            assert!((o - r).abs() <= 3e-7, "element {i} (a {}, b {}): {o}, reference {r}", a[i], b[i]);
        }
        let mut extreme = [0.0; 4];
        tanh_sigmoid(&[-1e4, 1e4, 200.0, f32::MIN_POSITIVE], &[1e4, 1e4, -200.0, 0.0], &mut extreme);
        assert_eq!(extreme[..2], [-1.0, 1.0]);
        assert!(extreme[2].abs() < 1e-30 && extreme[3].abs() < 1e-30, "{extreme:?}");
    }
}
