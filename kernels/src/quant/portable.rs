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
