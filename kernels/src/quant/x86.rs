//! The block dot products on x86-64 with AVX2 and FMA, and with AVX-512
//! VNNI where the processor has it (checked once at run time).
//!
//! A row's grouped part (see the module's layout) is multiplied a group of
//! [`GROUP`] blocks at a time: lane `k` of every vector belongs to block
//! `k` of the group, so the integer products of a block sum up in its own
//! lane over the group's eight steps, and the scales `d_w · d_a` of the
//! eight blocks are applied with one multiply and one multiply-add. The
//! blocks after the last whole group keep the plain layout and go through
//! a per-block loop.
//!
//! Integer sums are exact: a Q4_1 step's byte pairs sum to at most
//! 2·15·127 = 3810 in 16 bits, so the AVX2 path adds a group's eight steps
//! in 16 bits (≤ 30 480) before widening them once; Q8_0 pairs reach
//! 2·128·127 = 32 512 and are widened every step. VNNI's `vpdpbusd`
//! multiplies and adds four byte pairs straight into 32 bits. A group's
//! eight f16 scales (and Q4_1 minimums) are one load and one `vcvtph2ps`;
//! the minimum term `Σ_b m[b] · s_a[b]` is one more multiply-add a group.

use std::arch::x86_64::*;

use half::f16;

use super::{ActRow, BLOCK, GROUP};

/// Which instructions run the products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX2 and FMA: `vpmaddubsw` and `vpmaddwd`.
    Avx2,
    /// AVX-512 VNNI on 256-bit vectors: `vpdpbusd`.
    Vnni,
}

impl Isa {
    /// The fastest this processor runs, unless `TETE_QUANT_ISA=avx2` asks
    /// for AVX2 (to measure what a processor without VNNI gets).
    pub fn best() -> Self {
        static BEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            let avx2 = std::env::var("TETE_QUANT_ISA").is_ok_and(|v| v.eq_ignore_ascii_case("avx2"));
            if !avx2 && Self::Vnni.available() { Self::Vnni } else { Self::Avx2 }
        })
    }

    /// Every instruction set of this build, available here or not.
    pub fn all() -> &'static [Self] {
        &[Self::Avx2, Self::Vnni]
    }

    pub fn available(self) -> bool {
        match self {
            Self::Avx2 => true,
            Self::Vnni => is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl"),
        }
    }
}

/// One block of activations: the scale `max |x| / 127`, the codes
/// `x / scale` rounded to nearest (ties to even), and their sum.
#[inline]
pub fn quantize_block(x: &[f32; BLOCK]) -> (f32, i32, [i8; BLOCK]) {
    // SAFETY: `x` holds the 32 floats the four loads read; the rest are
    // register-only intrinsics, and AVX2 is enabled for this build.
    unsafe {
        let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(x.as_ptr().add(8 * i)));
        let sign = _mm256_set1_ps(-0.0);
        let abs = |v| _mm256_andnot_ps(sign, v);
        let m = _mm256_max_ps(_mm256_max_ps(abs(v[0]), abs(v[1])), _mm256_max_ps(abs(v[2]), abs(v[3])));
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
        let d = amax / 127.0;
        let inv = _mm256_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
        // Rounds to nearest even (MXCSR's default); |x · inv| <= 127 up to rounding.
        let q: [__m256i; 4] = std::array::from_fn(|i| _mm256_cvtps_epi32(_mm256_mul_ps(v[i], inv)));
        let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let sum = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        let sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0b01_00_11_10));
        let sum = _mm_cvtsi128_si32(_mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0b10_11_00_01)));
        // Packing works within 128-bit lanes: 0-3 8-11 4-7 12-15 for the
        // 16-bit halves, then a dword permute puts the bytes in order.
        let lo = _mm256_packs_epi32(q[0], q[1]);
        let hi = _mm256_packs_epi32(q[2], q[3]);
        let bytes = _mm256_packs_epi16(lo, hi);
        let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        let mut out = [0i8; BLOCK];
        _mm256_storeu_si256(out.as_mut_ptr().cast(), bytes);
        (d, sum, out)
    }
}

/// Sum of the 8 lanes.
#[inline(always)]
fn hsum(v: __m256) -> f32 {
    // SAFETY: register-only intrinsics; AVX2 is enabled for this build.
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
    }
}

/// Every block of the row is in reach: `d.len()` blocks of `code_bytes`
/// each, and as many in every activation row.
fn check<const N: usize>(d: &[f16], codes: &[u8], acts: &[ActRow<'_>; N], code_bytes: usize) {
    let blocks = d.len();
    assert!(codes.len() == blocks * code_bytes);
    for a in acts {
        assert!(a.d.len() == blocks && a.q.len() == blocks * BLOCK);
    }
}

/// One Q4_1 weight row (scales `d`, minimums `m`) against `N` activation
/// rows: `Σ_b d_w[b] · d_a[b] · Σ_j q_w q_a + m[b] · s_a[b]`.
#[inline(always)]
pub fn q4_1<const N: usize>(isa: Isa, d: &[f16], m: &[f16], codes: &[u8], acts: &[ActRow<'_>; N]) -> [f32; N] {
    check(d, codes, acts, BLOCK / 2);
    assert!(m.len() == d.len());
    let groups = d.len() / GROUP;
    let grouped = match isa {
        // SAFETY: `check` bounds the groups' reads; the processor has VNNI.
        Isa::Vnni => unsafe { vnni_q4_1::<N>(groups, d, m, codes, acts) },
        // SAFETY: as above; AVX2, FMA and F16C are enabled for this build.
        Isa::Avx2 => unsafe { avx2_q4_1::<N>(groups, d, m, codes, acts) },
    };
    let first = groups * GROUP;
    let tail = blocks_q4_1(&d[first..], &codes[first * BLOCK / 2..], &acts.map(|a| a.blocks_from(first)));
    std::array::from_fn(|t| {
        let minimums: f32 = m[first..].iter().zip(&acts[t].s[first..]).map(|(m, s)| m.to_f32() * s).sum();
        grouped[t] + tail[t] + minimums
    })
}

/// As [`q4_1`], for Q8_0 codes.
#[inline(always)]
pub fn q8_0<const N: usize>(isa: Isa, d: &[f16], codes: &[u8], acts: &[ActRow<'_>; N]) -> [f32; N] {
    check(d, codes, acts, BLOCK);
    let groups = d.len() / GROUP;
    let grouped = match isa {
        // SAFETY: as in `q4_1`.
        Isa::Vnni => unsafe { vnni_q8_0::<N>(groups, d, codes, acts) },
        // SAFETY: as in `q4_1`.
        Isa::Avx2 => unsafe { avx2_q8_0::<N>(groups, d, codes, acts) },
    };
    let first = groups * GROUP;
    let tail = blocks_q8_0(&d[first..], &codes[first * BLOCK..], &acts.map(|a| a.blocks_from(first)));
    std::array::from_fn(|t| grouped[t] + tail[t])
}

/// Eight f16 values from `p` as f32.
macro_rules! load_f16x8 {
    ($p:expr) => {
        _mm256_cvtph_ps(_mm_loadu_si128($p.cast()))
    };
}

/// The grouped part of a Q4_1 row. Each 32 code bytes of a group hold two
/// steps: the low nibbles step `2u`, the high nibbles step `2u + 1`.
macro_rules! grouped_q4_1 {
    ($groups:expr, $d:expr, $m:expr, $codes:expr, $acts:expr, $n:expr, $step:expr, $widen:expr) => {{
        let mask = _mm256_set1_epi8(0x0F);
        let mut acc = [_mm256_setzero_ps(); $n];
        for g in 0..$groups {
            let w = $codes.as_ptr().add(g * GROUP * BLOCK / 2);
            let mut sum = [_mm256_setzero_si256(); $n];
            for u in 0..4 {
                let raw = _mm256_loadu_si256(w.add(32 * u).cast());
                let lo = _mm256_and_si256(raw, mask);
                let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
                for t in 0..$n {
                    let a = $acts[t].q.as_ptr().add(g * GROUP * BLOCK + 64 * u);
                    sum[t] = $step(sum[t], lo, _mm256_loadu_si256(a.cast()));
                    sum[t] = $step(sum[t], hi, _mm256_loadu_si256(a.add(32).cast()));
                }
            }
            let dw = load_f16x8!($d.as_ptr().add(g * GROUP));
            let mw = load_f16x8!($m.as_ptr().add(g * GROUP));
            for t in 0..$n {
                let scale = _mm256_mul_ps(dw, _mm256_loadu_ps($acts[t].d.as_ptr().add(g * GROUP)));
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps($widen(sum[t])), scale, acc[t]);
                acc[t] = _mm256_fmadd_ps(mw, _mm256_loadu_ps($acts[t].s.as_ptr().add(g * GROUP)), acc[t]);
            }
        }
        std::array::from_fn(|t| hsum(acc[t]))
    }};
}

/// The grouped part of a Q8_0 row: eight steps of 32 code bytes a group.
/// `$step` gets the accumulator, `|w|` and the activations with `w`'s sign.
macro_rules! grouped_q8_0 {
    ($groups:expr, $d:expr, $codes:expr, $acts:expr, $n:expr, $step:expr) => {{
        let mut acc = [_mm256_setzero_ps(); $n];
        for g in 0..$groups {
            let w = $codes.as_ptr().add(g * GROUP * BLOCK);
            let mut sum = [_mm256_setzero_si256(); $n];
            for s in 0..8 {
                let w = _mm256_loadu_si256(w.add(32 * s).cast());
                let wabs = _mm256_sign_epi8(w, w);
                for t in 0..$n {
                    let a = _mm256_loadu_si256($acts[t].q.as_ptr().add(g * GROUP * BLOCK + 32 * s).cast());
                    sum[t] = $step(sum[t], wabs, _mm256_sign_epi8(a, w));
                }
            }
            let dw = load_f16x8!($d.as_ptr().add(g * GROUP));
            for t in 0..$n {
                let scale = _mm256_mul_ps(dw, _mm256_loadu_ps($acts[t].d.as_ptr().add(g * GROUP)));
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[t]), scale, acc[t]);
            }
        }
        std::array::from_fn(|t| hsum(acc[t]))
    }};
}

/// # Safety
/// The row and every activation row hold at least `groups` whole groups.
#[inline(always)]
unsafe fn avx2_q4_1<const N: usize>(
    groups: usize,
    d: &[f16],
    m: &[f16],
    codes: &[u8],
    acts: &[ActRow<'_>; N],
) -> [f32; N] {
    // SAFETY: the caller bounds the reads; AVX2 is enabled for this build.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let step = |sum, w, a| _mm256_add_epi16(sum, _mm256_maddubs_epi16(w, a));
        let widen = |sum| _mm256_madd_epi16(sum, ones);
        grouped_q4_1!(groups, d, m, codes, acts, N, step, widen)
    }
}

/// # Safety
/// As [`avx2_q4_1`], and the processor has AVX-512 VNNI and VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn vnni_q4_1<const N: usize>(
    groups: usize,
    d: &[f16],
    m: &[f16],
    codes: &[u8],
    acts: &[ActRow<'_>; N],
) -> [f32; N] {
    // SAFETY: the caller bounds the reads and has checked the features.
    unsafe {
        let step = |sum, w, a| _mm256_dpbusd_epi32(sum, w, a);
        grouped_q4_1!(groups, d, m, codes, acts, N, step, |sum| sum)
    }
}

/// # Safety
/// As [`avx2_q4_1`].
#[inline(always)]
unsafe fn avx2_q8_0<const N: usize>(groups: usize, d: &[f16], codes: &[u8], acts: &[ActRow<'_>; N]) -> [f32; N] {
    // SAFETY: as in `avx2_q4_1`.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let step = |sum, w, a| _mm256_add_epi32(sum, _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), ones));
        grouped_q8_0!(groups, d, codes, acts, N, step)
    }
}

/// # Safety
/// As [`vnni_q4_1`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn vnni_q8_0<const N: usize>(groups: usize, d: &[f16], codes: &[u8], acts: &[ActRow<'_>; N]) -> [f32; N] {
    // SAFETY: as in `vnni_q4_1`.
    unsafe {
        let step = |sum, w, a| _mm256_dpbusd_epi32(sum, w, a);
        grouped_q8_0!(groups, d, codes, acts, N, step)
    }
}

/// Runs `block` over every block, even ones into one set of accumulators
/// and odd ones into another (two dependency chains hide the FMA
/// latency), and sums each accumulator's lanes.
#[inline(always)]
fn two_chains<const N: usize>(blocks: usize, mut block: impl FnMut(usize, &mut [__m256; N])) -> [f32; N] {
    // SAFETY: register-only intrinsics; AVX2 is enabled for this build.
    let zero = unsafe { _mm256_setzero_ps() };
    let (mut even, mut odd) = ([zero; N], [zero; N]);
    let mut b = 0;
    while b + 1 < blocks {
        block(b, &mut even);
        block(b + 1, &mut odd);
        b += 2;
    }
    if b < blocks {
        block(b, &mut even);
    }
    // SAFETY: as above.
    std::array::from_fn(|t| hsum(unsafe { _mm256_add_ps(even[t], odd[t]) }))
}

/// Blocks in the plain Q4_1 layout (16 bytes a block), one at a time.
#[inline(always)]
fn blocks_q4_1<const N: usize>(d: &[f16], codes: &[u8], acts: &[ActRow<'_>; N]) -> [f32; N] {
    check(d, codes, acts, BLOCK / 2);
    // SAFETY: `check` bounds every load: block `b` reads codes
    // [16b, 16b + 16) of each row and activation codes [32b, 32b + 32).
    unsafe {
        let mask = _mm_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let block = |b: usize, acc: &mut [__m256; N]| {
            let q: [__m256i; N] = std::array::from_fn(|t| _mm256_loadu_si256(acts[t].q.as_ptr().add(BLOCK * b).cast()));
            let raw = _mm_loadu_si128(codes.as_ptr().add(16 * b).cast());
            let lo = _mm_and_si128(raw, mask);
            let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
            let w = _mm256_set_m128i(hi, lo);
            let dw = d.get_unchecked(b).to_f32();
            for t in 0..N {
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(w, q[t]), ones);
                let scale = _mm256_set1_ps(dw * *acts[t].d.get_unchecked(b));
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, acc[t]);
            }
        };
        two_chains(d.len(), block)
    }
}

/// Blocks in the plain Q8_0 layout (32 signed bytes a block), one at a time.
#[inline(always)]
fn blocks_q8_0<const N: usize>(d: &[f16], codes: &[u8], acts: &[ActRow<'_>; N]) -> [f32; N] {
    check(d, codes, acts, BLOCK);
    // SAFETY: as in `blocks_q4_1`, with 32 code bytes per block.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let block = |b: usize, acc: &mut [__m256; N]| {
            let q: [__m256i; N] = std::array::from_fn(|t| _mm256_loadu_si256(acts[t].q.as_ptr().add(BLOCK * b).cast()));
            let w = _mm256_loadu_si256(codes.as_ptr().add(BLOCK * b).cast());
            // |w| as unsigned times a with w's sign: maddubs needs one unsigned side.
            let wabs = _mm256_sign_epi8(w, w);
            let dw = d.get_unchecked(b).to_f32();
            for t in 0..N {
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(wabs, _mm256_sign_epi8(q[t], w)), ones);
                let scale = _mm256_set1_ps(dw * *acts[t].d.get_unchecked(b));
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, acc[t]);
            }
        };
        two_chains(d.len(), block)
    }
}
