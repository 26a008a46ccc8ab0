//! The block dot products for targets without AVX2 and FMA: plain loops
//! over the layout's index functions.

use half::f16;

use super::{ActRow, BLOCK, byte_of, nibble_of, read_nibble};

/// One instruction set here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Portable,
}

impl Isa {
    pub fn best() -> Self {
        Self::Portable
    }

    /// Every instruction set of this build, available here or not.
    pub fn all() -> &'static [Self] {
        &[Self::Portable]
    }

    pub fn available(self) -> bool {
        true
    }
}

/// One block of activations: the scale `max |x| / 127`, the codes
/// `x / scale` rounded to nearest (ties to even), and their sum.
pub fn quantize_block(x: &[f32; BLOCK]) -> (f32, i32, [i8; BLOCK]) {
    let amax = x.iter().fold(0.0f32, |a, &x| a.max(x.abs()));
    let d = amax / 127.0;
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    let q: [i8; BLOCK] = std::array::from_fn(|i| (x[i] * inv).round_ties_even().clamp(-127.0, 127.0) as i8);
    (d, q.iter().map(|&q| i32::from(q)).sum(), q)
}

fn row<const N: usize>(d: &[f16], acts: &[ActRow<'_>; N], code: impl Fn(usize, usize) -> i32) -> [f32; N] {
    let blocks = d.len();
    std::array::from_fn(|t| {
        let a = &acts[t];
        (0..blocks)
            .map(|b| {
                let dot: i32 = (0..BLOCK).map(|j| code(b, j) * i32::from(a.q[byte_of(blocks, b, j)])).sum();
                d[b].to_f32() * a.d[b] * dot as f32
            })
            .sum()
    })
}

pub fn q4_1<const N: usize>(_: Isa, d: &[f16], m: &[f16], codes: &[u8], acts: &[ActRow<'_>; N]) -> [f32; N] {
    let blocks = d.len();
    let products = row(d, acts, |b, j| i32::from(read_nibble(codes, nibble_of(blocks, b, j))));
    std::array::from_fn(|t| products[t] + m.iter().zip(acts[t].s).map(|(m, s)| m.to_f32() * s).sum::<f32>())
}

pub fn q8_0<const N: usize>(_: Isa, d: &[f16], codes: &[u8], acts: &[ActRow<'_>; N]) -> [f32; N] {
    let blocks = d.len();
    row(d, acts, |b, j| i32::from(codes[byte_of(blocks, b, j)] as i8))
}
