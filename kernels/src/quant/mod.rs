//! Quantized matrix products for the resident LLM.
//!
//! Weights are kept in two block formats of 32 values, as GGUF files carry
//! them: Q4_1 (a scale `d` and minimum `m` per block, 4-bit codes,
//! `w = d·q + m`) and Q8_0 (a scale per block, signed 8-bit codes,
//! `w = d·q`). Scales are f16, as in the file, in their own arrays, so the
//! inner loop reads codes only and eight blocks' scales are one load.
//! Activations are quantized per 32-block to signed 8-bit ([`QActs`]:
//! scale `d`, codes, and `s = d·Σq` for the minimum term), as llama.cpp
//! does, so a block's product is an integer dot product of 32 pairs:
//! `dw·da·Σ qw·qa (+ mw·sa)`.
//!
//! **Layout.** Within each row (of weights or activations), every whole
//! group of [`GROUP`] = 8 consecutive blocks is stored step by step: step
//! `s` (elements `4s .. 4s + 4` of each block) holds those four codes of
//! block 0 of the group, then of block 1, and so on, 32 bytes a step. A
//! vector lane then stays with one block through the group, so a block's
//! integer products add up in its lane and the eight blocks' scales are
//! applied together, once per group instead of once per block. Q4_1
//! packs two steps in 32 bytes (step `2u` in the low nibbles, `2u + 1` in
//! the high ones). The blocks after the last whole group keep the plain
//! layout (Q4_1: element `j` in the low nibble of byte `j`, element
//! `j + 16` in its high nibble). [`byte_of`] and [`nibble_of`] say where
//! an element is; the constructors take the plain GGUF layout.
//!
//! [`QMatrix::matmul`] multiplies `m` token rows at once: each weight group
//! is unpacked once and used for up to four tokens (prefill and batched
//! decode), and rows are split across rayon's threads. The AVX2 path is
//! compiled when the build enables AVX2 and FMA (the workspace builds for
//! x86-64-v3); on a processor with AVX-512 VNNI the products use
//! `vpdpbusd` instead ([`Isa::best`], checked at run time).
//! [`QMatrix::matmul_reference`] defines the exact result: the same
//! quantized values multiplied in f64.

#![allow(unsafe_code)]

use rayon::prelude::*;

/// Scales are stored as this (the `half` crate's f16).
pub use half::f16;

use crate::KernelError;

#[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
mod portable;
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
mod x86;

#[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
use portable as simd;
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
use x86 as simd;

/// The instruction sets the products can run on.
pub use simd::Isa;

/// Values per quantization block.
pub const BLOCK: usize = 32;

/// Blocks stored interleaved, one to a vector lane.
pub const GROUP: usize = 8;

/// Token rows multiplied together against one unpacked weight group
/// (eight measured slower with VNNI's 32 registers).
const TOKENS: usize = 4;

/// Where element `j` of block `b` sits among the 8-bit codes of a row of
/// `blocks` blocks (Q8_0 weights and quantized activations).
pub fn byte_of(blocks: usize, b: usize, j: usize) -> usize {
    if b < blocks / GROUP * GROUP {
        let (g, k) = (b / GROUP, b % GROUP);
        g * GROUP * BLOCK + (j / 4) * GROUP * 4 + k * 4 + j % 4
    } else {
        b * BLOCK + j
    }
}

/// Where element `j` of block `b` sits among the 4-bit codes of a row of
/// `blocks` blocks: the byte, and whether it is the high nibble.
pub fn nibble_of(blocks: usize, b: usize, j: usize) -> (usize, bool) {
    if b < blocks / GROUP * GROUP {
        let (g, k, s) = (b / GROUP, b % GROUP, j / 4);
        (g * GROUP * BLOCK / 2 + (s / 2) * GROUP * 4 + k * 4 + j % 4, s % 2 == 1)
    } else {
        (b * BLOCK / 2 + j % (BLOCK / 2), j >= BLOCK / 2)
    }
}

fn read_nibble(codes: &[u8], (byte, high): (usize, bool)) -> u8 {
    if high { codes[byte] >> 4 } else { codes[byte] & 0x0F }
}

/// A weight block format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QKind {
    /// 4-bit codes with a scale and a minimum per block.
    Q4_1,
    /// Signed 8-bit codes with a scale per block.
    Q8_0,
}

impl QKind {
    /// Bytes of codes per block.
    fn code_bytes(self) -> usize {
        match self {
            Self::Q4_1 => BLOCK / 2,
            Self::Q8_0 => BLOCK,
        }
    }
}

/// A `rows × cols` weight matrix in one block format, row-major.
#[derive(Debug, Clone)]
pub struct QMatrix {
    kind: QKind,
    rows: usize,
    cols: usize,
    /// Per block: the scale, `rows · cols / 32` of them.
    d: Vec<f16>,
    /// Per block: the minimum (Q4_1 only, else empty).
    m: Vec<f16>,
    /// Codes, row by row in the module's layout: Q4_1 two to a byte, Q8_0
    /// one `i8` a byte.
    codes: Vec<u8>,
}

impl QMatrix {
    /// A Q4_1 matrix from its scales, minimums and packed codes.
    pub fn q4_1(rows: usize, cols: usize, d: Vec<f16>, m: Vec<f16>, codes: Vec<u8>) -> Result<Self, KernelError> {
        let blocks = Self::blocks_of(rows, cols)?;
        if d.len() != blocks || m.len() != blocks || codes.len() != blocks * BLOCK / 2 {
            return Err(KernelError::BadMatrix(format!(
                "Q4_1 {rows}x{cols} needs {blocks} scales, {blocks} minimums and {} code bytes; got {}, {} and {}",
                blocks * BLOCK / 2,
                d.len(),
                m.len(),
                codes.len()
            )));
        }
        let kb = cols / BLOCK;
        let mut laid = vec![0u8; codes.len()];
        for (plain, row) in codes.chunks_exact(kb * BLOCK / 2).zip(laid.chunks_exact_mut(kb * BLOCK / 2)) {
            for b in 0..kb {
                for j in 0..BLOCK {
                    let (byte, high) = nibble_of(kb, b, j);
                    let code = nibble(&plain[b * BLOCK / 2..(b + 1) * BLOCK / 2], j);
                    row[byte] |= if high { code << 4 } else { code };
                }
            }
        }
        Ok(Self { kind: QKind::Q4_1, rows, cols, d, m, codes: laid })
    }

    /// A Q8_0 matrix from its scales and codes.
    pub fn q8_0(rows: usize, cols: usize, d: Vec<f16>, codes: Vec<i8>) -> Result<Self, KernelError> {
        let blocks = Self::blocks_of(rows, cols)?;
        if d.len() != blocks || codes.len() != blocks * BLOCK {
            return Err(KernelError::BadMatrix(format!(
                "Q8_0 {rows}x{cols} needs {blocks} scales and {} codes; got {} and {}",
                blocks * BLOCK,
                d.len(),
                codes.len()
            )));
        }
        let codes: Vec<u8> = codes.into_iter().map(|c| c as u8).collect();
        let kb = cols / BLOCK;
        let mut laid = vec![0u8; codes.len()];
        for (plain, row) in codes.chunks_exact(kb * BLOCK).zip(laid.chunks_exact_mut(kb * BLOCK)) {
            lay_out_row(plain, row, kb);
        }
        Ok(Self { kind: QKind::Q8_0, rows, cols, d, m: Vec::new(), codes: laid })
    }

    /// Quantizes row-major f32 `values` to Q8_0 (scale = max |w| / 127 per
    /// block, rounded to f16; the codes are rounded against that scale).
    pub fn quantize_q8_0(rows: usize, cols: usize, values: &[f32]) -> Result<Self, KernelError> {
        Self::check_values(rows, cols, values)?;
        let mut d = Vec::with_capacity(values.len() / BLOCK);
        let mut codes = Vec::with_capacity(values.len());
        for block in values.chunks_exact(BLOCK) {
            let amax = block.iter().fold(0.0f32, |a, &x| a.max(x.abs()));
            let scale = f16::from_f32(amax / 127.0);
            let inv = if scale.to_f32() > 0.0 { 1.0 / scale.to_f32() } else { 0.0 };
            codes.extend(block.iter().map(|&x| (x * inv).round().clamp(-127.0, 127.0) as i8));
            d.push(scale);
        }
        Self::q8_0(rows, cols, d, codes)
    }

    /// Quantizes row-major f32 `values` to Q4_1 (16 steps from each block's minimum to its maximum).
    pub fn quantize_q4_1(rows: usize, cols: usize, values: &[f32]) -> Result<Self, KernelError> {
        Self::check_values(rows, cols, values)?;
        let blocks = values.len() / BLOCK;
        let (mut d, mut m, mut codes) = (Vec::with_capacity(blocks), Vec::with_capacity(blocks), Vec::new());
        for block in values.chunks_exact(BLOCK) {
            let lo = f16::from_f32(block.iter().copied().fold(f32::INFINITY, f32::min));
            let hi = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let scale = f16::from_f32((hi - lo.to_f32()) / 15.0);
            let inv = if scale.to_f32() > 0.0 { 1.0 / scale.to_f32() } else { 0.0 };
            let q = |x: f32| ((x - lo.to_f32()) * inv).round().clamp(0.0, 15.0) as u8;
            codes.extend((0..BLOCK / 2).map(|j| q(block[j]) | (q(block[j + BLOCK / 2]) << 4)));
            d.push(scale);
            m.push(lo);
        }
        Self::q4_1(rows, cols, d, m, codes)
    }

    /// The Q8_0 form of this matrix: itself when it is Q8_0, else its values requantized.
    pub fn to_q8_0(&self) -> Self {
        if self.kind == QKind::Q8_0 {
            return self.clone();
        }
        let mut values = vec![0.0; self.rows * self.cols];
        for (r, row) in values.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row(r, row);
        }
        // The shape was valid for `self`, so it is for the copy.
        Self::quantize_q8_0(self.rows, self.cols, &values).expect("same shape")
    }

    /// Stacks matrices with the same column count: their rows one after the
    /// other. Mixed formats are all brought to Q8_0.
    pub fn concat_rows(parts: &[QMatrix]) -> Result<Self, KernelError> {
        let first = parts.first().ok_or_else(|| KernelError::BadMatrix("no matrices to stack".into()))?;
        if let Some(p) = parts.iter().find(|p| p.cols != first.cols) {
            return Err(KernelError::BadMatrix(format!("stacking {} columns onto {}", p.cols, first.cols)));
        }
        let same = parts.iter().all(|p| p.kind == first.kind);
        let converted: Vec<QMatrix>;
        let parts = if same {
            parts
        } else {
            converted = parts.iter().map(QMatrix::to_q8_0).collect();
            &converted
        };
        let rows = parts.iter().map(|p| p.rows).sum();
        Ok(Self {
            kind: parts[0].kind,
            rows,
            cols: first.cols,
            d: parts.iter().flat_map(|p| p.d.iter().copied()).collect(),
            m: parts.iter().flat_map(|p| p.m.iter().copied()).collect(),
            codes: parts.iter().flat_map(|p| p.codes.iter().copied()).collect(),
        })
    }

    fn blocks_of(rows: usize, cols: usize) -> Result<usize, KernelError> {
        if cols == 0 || !cols.is_multiple_of(BLOCK) || rows == 0 {
            return Err(KernelError::BadMatrix(format!(
                "a {rows}x{cols} matrix: rows must be positive and columns a positive multiple of {BLOCK}"
            )));
        }
        rows.checked_mul(cols / BLOCK).ok_or_else(|| KernelError::BadMatrix(format!("{rows}x{cols} overflows")))
    }

    fn check_values(rows: usize, cols: usize, values: &[f32]) -> Result<(), KernelError> {
        let blocks = Self::blocks_of(rows, cols)?;
        if values.len() != blocks * BLOCK {
            return Err(KernelError::BadMatrix(format!(
                "{rows}x{cols} needs {} values, got {}",
                blocks * BLOCK,
                values.len()
            )));
        }
        Ok(())
    }

    pub fn kind(&self) -> QKind {
        self.kind
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes the weights occupy (codes and f16 scales).
    pub fn bytes(&self) -> usize {
        self.codes.len() + 2 * (self.d.len() + self.m.len())
    }

    /// Row `r` as f32 into `out` (`cols` long).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let kb = self.cols / BLOCK;
        let cb = self.kind.code_bytes();
        let codes = &self.codes[r * kb * cb..(r + 1) * kb * cb];
        for (b, out) in out[..self.cols].chunks_exact_mut(BLOCK).enumerate() {
            let i = r * kb + b;
            for (j, o) in out.iter_mut().enumerate() {
                *o = match self.kind {
                    QKind::Q4_1 => {
                        self.d[i].to_f32() * f32::from(read_nibble(codes, nibble_of(kb, b, j))) + self.m[i].to_f32()
                    }
                    QKind::Q8_0 => self.d[i].to_f32() * f32::from(codes[byte_of(kb, b, j)] as i8),
                };
            }
        }
    }

    /// `out[t][r] = Σ_c w[r][c] · x[t][c]` for the `x.tokens()` rows of `x`,
    /// with `out` holding `tokens · rows` floats.
    pub fn matmul(&self, x: &QActs, out: &mut [f32]) {
        self.matmul_on(Isa::best(), x, out)
    }

    /// [`matmul`](Self::matmul) on the given instructions, which the
    /// processor must have ([`Isa::available`]).
    pub fn matmul_on(&self, isa: Isa, x: &QActs, out: &mut [f32]) {
        assert!(isa.available(), "this processor lacks {isa:?}");
        assert_eq!(x.cols, self.cols, "activations have {} columns, the matrix {}", x.cols, self.cols);
        assert_eq!(out.len(), x.m * self.rows, "output holds {} floats, {} needed", out.len(), x.m * self.rows);
        let threads = rayon::current_num_threads().max(1);
        // Two chunks a thread: enough to even out a busy core (four and eight measured slower).
        let chunk = self.rows.div_ceil(2 * threads).max(16);
        if x.m == 1 {
            // One row at a time: each thread streams through its rows'
            // codes in order (several rows at once measured slower here).
            let acts = [x.row(0)];
            out.par_chunks_mut(chunk).enumerate().for_each(|(c, out)| {
                for (i, o) in out.iter_mut().enumerate() {
                    *o = self.dot_row(isa, c * chunk + i, &acts)[0];
                }
            });
            return;
        }
        // Each chunk of rows fills its own part of a scratch, token by
        // token, and the parts are then copied into place. Tokens go in
        // groups through a chunk's rows, which stay in cache between groups.
        let mut scratch = vec![0.0f32; self.rows * x.m];
        scratch.par_chunks_mut(chunk * x.m).enumerate().for_each(|(c, part)| {
            let mut t = 0;
            while t < x.m {
                t += match x.m - t {
                    1 => self.token_group::<1>(isa, x, t, c * chunk, part),
                    2 => self.token_group::<2>(isa, x, t, c * chunk, part),
                    3 => self.token_group::<3>(isa, x, t, c * chunk, part),
                    _ => self.token_group::<TOKENS>(isa, x, t, c * chunk, part),
                };
            }
        });
        out.par_chunks_mut(self.rows).enumerate().for_each(|(t, out)| {
            for (out, part) in out.chunks_mut(chunk).zip(scratch.chunks(chunk * x.m)) {
                let n = out.len();
                out.copy_from_slice(&part[t * n..(t + 1) * n]);
            }
        });
    }

    /// Tokens `t .. t + N` against the rows from `r0` that `part` holds
    /// (token-major: `part.len() / x.m` rows a token); returns `N`.
    #[inline(always)]
    fn token_group<const N: usize>(&self, isa: Isa, x: &QActs, t: usize, r0: usize, part: &mut [f32]) -> usize {
        let acts: [ActRow<'_>; N] = std::array::from_fn(|i| x.row(t + i));
        let rows = part.len() / x.m;
        for i in 0..rows {
            for (k, v) in self.dot_row(isa, r0 + i, &acts).into_iter().enumerate() {
                part[(t + k) * rows + i] = v;
            }
        }
        N
    }

    /// Weight row `r` against the activation rows `acts`.
    #[inline(always)]
    fn dot_row<const N: usize>(&self, isa: Isa, r: usize, acts: &[ActRow<'_>; N]) -> [f32; N] {
        let kb = self.cols / BLOCK;
        let cb = self.kind.code_bytes();
        let d = &self.d[r * kb..(r + 1) * kb];
        let codes = &self.codes[r * kb * cb..(r + 1) * kb * cb];
        match self.kind {
            QKind::Q4_1 => simd::q4_1::<N>(isa, d, &self.m[r * kb..(r + 1) * kb], codes, acts),
            QKind::Q8_0 => simd::q8_0::<N>(isa, d, codes, acts),
        }
    }

    /// The reference for [`matmul`](Self::matmul): the dequantized weights
    /// times the dequantized activations, summed in f64.
    pub fn matmul_reference(&self, x: &QActs, out: &mut [f32]) {
        let mut w = vec![0.0f32; self.cols];
        let a: Vec<Vec<f32>> = (0..x.m).map(|t| x.dequantize_row(t)).collect();
        for r in 0..self.rows {
            self.dequantize_row(r, &mut w);
            for (t, a) in a.iter().enumerate() {
                out[t * self.rows + r] =
                    w.iter().zip(a).map(|(&w, &a)| f64::from(w) * f64::from(a)).sum::<f64>() as f32;
            }
        }
    }
}

/// Element `j` of a block of Q4_1 codes in the plain layout.
fn nibble(codes: &[u8], j: usize) -> u8 {
    if j < BLOCK / 2 { codes[j] & 0x0F } else { codes[j - BLOCK / 2] >> 4 }
}

/// A row of 8-bit codes from the plain layout (`blocks` blocks one after
/// the other) into the grouped one.
fn lay_out_row<T: Copy>(plain: &[T], row: &mut [T], blocks: usize) {
    for (b, block) in plain.chunks_exact(BLOCK).enumerate() {
        put_block(row, blocks, b, block);
    }
}

/// Block `b`'s 32 codes, in plain order, to their places in a row of `blocks` blocks.
fn put_block<T: Copy>(row: &mut [T], blocks: usize, b: usize, codes: &[T]) {
    if b < blocks / GROUP * GROUP {
        for (s, step) in codes.chunks_exact(4).enumerate() {
            let at = byte_of(blocks, b, 4 * s);
            row[at..at + 4].copy_from_slice(step);
        }
    } else {
        row[b * BLOCK..(b + 1) * BLOCK].copy_from_slice(codes);
    }
}

/// One row of `kb` blocks of activations into codes `q` (grouped layout),
/// scales `d` and the scaled code sums `s`.
fn quantize_row(kb: usize, x: &[f32], q: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    for (b, block) in x.chunks_exact(BLOCK).enumerate() {
        let (scale, sum, codes) = simd::quantize_block(block.try_into().expect("a block"));
        d[b] = scale;
        s[b] = scale * sum as f32;
        put_block(q, kb, b, &codes);
    }
}

/// Activation floats below which [`QActs::quantize`] stays on one thread.
const PARALLEL_QUANTIZE: usize = 1 << 13;

/// Activation rows quantized to signed 8-bit per 32-block (scale
/// `max |x| / 127`, rounded to nearest, ties to even), reused between calls.
#[derive(Debug, Default, Clone)]
pub struct QActs {
    m: usize,
    cols: usize,
    d: Vec<f32>,
    /// `d · Σ q` per block, for the Q4_1 minimum term.
    s: Vec<f32>,
    q: Vec<i8>,
}

/// One quantized activation row.
#[derive(Clone, Copy)]
struct ActRow<'a> {
    d: &'a [f32],
    s: &'a [f32],
    q: &'a [i8],
}

impl ActRow<'_> {
    /// The blocks from `first` on, `first` a multiple of [`GROUP`].
    #[cfg_attr(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")), allow(dead_code))]
    fn blocks_from(self, first: usize) -> Self {
        Self { d: &self.d[first..], s: &self.s[first..], q: &self.q[first * BLOCK..] }
    }
}

impl QActs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Quantizes `x`, `m` rows of `cols` floats (`cols` a multiple of 32).
    pub fn quantize(&mut self, x: &[f32], m: usize, cols: usize) {
        assert!(cols.is_multiple_of(BLOCK) && x.len() == m * cols, "{} floats are not {m} rows of {cols}", x.len());
        self.m = m;
        self.cols = cols;
        let blocks = m * cols / BLOCK;
        self.d.resize(blocks, 0.0);
        self.s.resize(blocks, 0.0);
        self.q.resize(m * cols, 0);
        let kb = cols / BLOCK;
        let row = |(((x, q), d), s)| quantize_row(kb, x, q, d, s);
        if x.len() < PARALLEL_QUANTIZE {
            let rows = x.chunks_exact(cols).zip(self.q.chunks_exact_mut(cols));
            rows.zip(self.d.chunks_exact_mut(kb)).zip(self.s.chunks_exact_mut(kb)).for_each(row);
        } else {
            let rows = x.par_chunks_exact(cols).zip(self.q.par_chunks_exact_mut(cols));
            rows.zip(self.d.par_chunks_exact_mut(kb)).zip(self.s.par_chunks_exact_mut(kb)).for_each(row);
        }
    }

    /// Rows quantized by the last [`quantize`](Self::quantize).
    pub fn tokens(&self) -> usize {
        self.m
    }

    fn row(&self, t: usize) -> ActRow<'_> {
        let kb = self.cols / BLOCK;
        ActRow {
            d: &self.d[t * kb..(t + 1) * kb],
            s: &self.s[t * kb..(t + 1) * kb],
            q: &self.q[t * self.cols..(t + 1) * self.cols],
        }
    }

    /// Row `t` as the f32 values its codes stand for.
    pub fn dequantize_row(&self, t: usize) -> Vec<f32> {
        let row = self.row(t);
        let kb = self.cols / BLOCK;
        (0..self.cols).map(|i| row.d[i / BLOCK] * f32::from(row.q[byte_of(kb, i / BLOCK, i % BLOCK)])).collect()
    }
}
