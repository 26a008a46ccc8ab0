//! Direct 1-D convolutions for long, narrow signals (a HiFi-GAN decoder:
//! 32–256 channels, up to tens of thousands of samples, kernels 2–7).
//!
//! A general matrix product would first stack the taps of the input (a copy
//! `kernel` times the input's size) and then pack it again; here a register
//! tile of [`MR`] output channels × [`NR`] samples reads the taps straight
//! from the zero-padded input rows, so nothing is copied and the output is
//! accumulated in place (`out += bias + W ∗ x`, which also gives the
//! residual add of a resblock for free). The samples are split between the
//! threads of rayon's pool, each thread walking its own columns in blocks of
//! [`NB`] so the input rows of a block stay in cache while every output
//! channel passes over them.
//!
//! [`cpu::conv1d`](crate::cpu::conv1d) and
//! [`cpu::conv_transpose1d`](crate::cpu::conv_transpose1d) are the
//! references the tests compare against.

// The register tile and the threads' shared output need raw pointers.
#![allow(unsafe_code)]

use rayon::prelude::*;

/// Output channels per register tile.
const MR: usize = 4;
/// Samples per register tile (three 8-lane vectors).
const NR: usize = 24;
/// Samples per cache block.
const NB: usize = 8 * NR;

/// A multi-channel signal, channel-major. Each row is `pad` zeros, `len`
/// samples, then `pad + NR` zeros, so convolutions read their taps and whole
/// tiles without bounds checks; only the samples are ever written.
///
/// Buffers come from and return to a small per-thread pool: a decoder's
/// signals are tens of megabytes, and fresh ones from the system cost more
/// in page faults than the memory traffic of the ops that fill them.
#[derive(Debug)]
pub struct Signal {
    channels: usize,
    len: usize,
    pad: usize,
    stride: usize,
    data: Vec<f32>,
}

impl Signal {
    /// Zeros, with room for taps up to `pad` samples either side.
    pub fn zeros(channels: usize, len: usize, pad: usize) -> Self {
        let stride = len + 2 * pad + NR;
        Self { channels, len, pad, stride, data: pool::take(channels * stride) }
    }

    /// Zero padding around samples left as they are in a reused buffer:
    /// for an output that is written whole before it is read.
    pub fn for_overwrite(channels: usize, len: usize, pad: usize) -> Self {
        let stride = len + 2 * pad + NR;
        let mut data = pool::take_stale(channels * stride);
        for row in data.chunks_exact_mut(stride) {
            row[..pad].fill(0.0);
            row[pad + len..].fill(0.0);
        }
        Self { channels, len, pad, stride, data }
    }

    /// From `channels` rows of `len` samples each.
    pub fn from_rows(samples: &[f32], channels: usize, len: usize, pad: usize) -> Self {
        assert_eq!(samples.len(), channels * len, "{channels} rows of {len} samples");
        let mut signal = Self::zeros(channels, len, pad);
        for (c, row) in samples.chunks_exact(len.max(1)).enumerate().take(channels) {
            signal.row_mut(c).copy_from_slice(row);
        }
        signal
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn pad(&self) -> usize {
        self.pad
    }

    pub fn row(&self, c: usize) -> &[f32] {
        &self.data[c * self.stride + self.pad..][..self.len]
    }

    pub fn row_mut(&mut self, c: usize) -> &mut [f32] {
        &mut self.data[c * self.stride + self.pad..][..self.len]
    }

    /// The samples, row after row.
    pub fn to_rows(&self) -> Vec<f32> {
        (0..self.channels).flat_map(|c| self.row(c).iter().copied()).collect()
    }

    /// `f(own row, source row)` for every channel, in parallel.
    pub fn map_rows(&mut self, source: &Signal, f: impl Fn(&mut [f32], &[f32]) + Sync) {
        assert_eq!((self.channels, self.len), (source.channels, source.len), "shapes differ");
        let (pad, len) = (self.pad, self.len);
        self.data.par_chunks_mut(self.stride).enumerate().for_each(|(c, row)| f(&mut row[pad..][..len], source.row(c)));
    }

    /// `f(channel, own row)` for every channel, in parallel.
    pub fn for_each_row(&mut self, f: impl Fn(usize, &mut [f32]) + Sync) {
        let (pad, len) = (self.pad, self.len);
        self.data.par_chunks_mut(self.stride).enumerate().for_each(|(c, row)| f(c, &mut row[pad..][..len]));
    }
}

impl Clone for Signal {
    fn clone(&self) -> Self {
        let mut data = pool::take(0);
        data.extend_from_slice(&self.data);
        Self { data, ..*self }
    }
}

impl Drop for Signal {
    fn drop(&mut self) {
        pool::give(std::mem::take(&mut self.data));
    }
}

/// Zeroed buffers, reused on the thread that frees them.
mod pool {
    use std::cell::RefCell;

    /// Buffers kept per thread: a decoder stage holds five signals at once.
    const KEEP: usize = 8;

    thread_local! {
        static FREE: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
    }

    /// `len` zeros, in the smallest free buffer that holds them. Filled by
    /// writes (not calloc), so the pages are mapped once, writable.
    pub fn take(len: usize) -> Vec<f32> {
        let mut buffer = take_buffer(len);
        buffer.clear();
        buffer.resize(len, 0.0);
        buffer
    }

    fn take_buffer(len: usize) -> Vec<f32> {
        let reused = FREE.with_borrow_mut(|free| {
            let best = free.iter().enumerate().filter(|(_, b)| b.capacity() >= len).min_by_key(|(_, b)| b.capacity());
            best.map(|(i, _)| i).map(|i| free.swap_remove(i))
        });
        reused.unwrap_or_else(|| Vec::with_capacity(len))
    }

    /// `len` floats, zero or left from the buffer's last use.
    pub fn take_stale(len: usize) -> Vec<f32> {
        let mut buffer = take_buffer(len);
        buffer.resize(len, 0.0);
        buffer.truncate(len);
        buffer
    }

    pub fn give(buffer: Vec<f32>) {
        if buffer.capacity() == 0 {
            return;
        }
        FREE.with_borrow_mut(|free| {
            free.push(buffer);
            if free.len() > KEEP {
                let smallest = (0..free.len()).min_by_key(|&i| free[i].capacity()).unwrap_or(0);
                free.swap_remove(smallest);
            }
        });
    }
}

/// A convolution with its weights packed for the register tile:
/// `[C_out / MR][kernel][C_in][MR]`, output channels past `C_out` zero.
#[derive(Clone, Debug)]
pub struct Conv1d {
    packed: Vec<f32>,
    bias: Vec<f32>,
    c_out: usize,
    c_in: usize,
    kernel: usize,
    dilation: usize,
}

impl Conv1d {
    /// From PyTorch's layout: `weight` `[C_out][C_in][kernel]`, `bias` `[C_out]`.
    pub fn new(
        weight: &[f32],
        bias: Option<&[f32]>,
        c_out: usize,
        c_in: usize,
        kernel: usize,
        dilation: usize,
    ) -> Self {
        assert_eq!(weight.len(), c_out * c_in * kernel, "weight is not [{c_out}][{c_in}][{kernel}]");
        Self::from_fn(c_out, c_in, kernel, dilation, bias, |co, ci, j| weight[(co * c_in + ci) * kernel + j])
    }

    fn from_fn(
        c_out: usize,
        c_in: usize,
        kernel: usize,
        dilation: usize,
        bias: Option<&[f32]>,
        weight: impl Fn(usize, usize, usize) -> f32,
    ) -> Self {
        assert!(kernel > 0 && dilation > 0 && c_out > 0 && c_in > 0);
        let blocks = c_out.div_ceil(MR);
        let mut packed = vec![0.0; blocks * kernel * c_in * MR];
        for co in 0..c_out {
            for j in 0..kernel {
                for ci in 0..c_in {
                    packed[((co / MR * kernel + j) * c_in + ci) * MR + co % MR] = weight(co, ci, j);
                }
            }
        }
        let mut padded_bias = vec![0.0; blocks * MR];
        if let Some(bias) = bias {
            assert_eq!(bias.len(), c_out, "bias is not [{c_out}]");
            padded_bias[..c_out].copy_from_slice(bias);
        }
        Self { packed, bias: padded_bias, c_out, c_in, kernel, dilation }
    }

    pub fn c_out(&self) -> usize {
        self.c_out
    }

    /// Padding either side that keeps the length ("same").
    pub fn same_pad(&self) -> usize {
        self.dilation * (self.kernel - 1) / 2
    }

    /// `out += bias + conv(x)` with "same" zero padding; `x` needs at least
    /// [`same_pad`](Self::same_pad) samples of padding.
    pub fn forward_into(&self, x: &Signal, out: &mut Signal) {
        self.forward_fused(x, Residual::InPlace, out, None);
    }

    /// `out = residual + bias + conv(x)` as [`Residual`] says, and with
    /// `leaky = Some((signal, slope))` also `signal = leaky_relu(out)`: the
    /// element-wise work of a resblock done on each tile while it is in cache.
    pub fn forward_fused(&self, x: &Signal, residual: Residual, out: &mut Signal, leaky: Option<(&mut Signal, f32)>) {
        assert!(x.pad >= self.same_pad(), "input padding {} < {}", x.pad, self.same_pad());
        assert_eq!(x.len, out.len, "lengths differ");
        let shape = (out.channels, out.len);
        let (residual, add, zero) = match residual {
            Residual::Overwrite => (None, false, true),
            Residual::InPlace => (None, false, false),
            Residual::From(r) => (Some(r), false, false),
            Residual::Add(r) => (Some(r), true, false),
        };
        let residual = residual.map(|r| {
            assert_eq!((r.channels, r.len), shape, "residual shape");
            Rows { ptr: r.data.as_ptr().cast_mut(), stride: r.stride, pad: r.pad }
        });
        let leaky = leaky.map(|(l, slope)| {
            assert_eq!((l.channels, l.len), shape, "leaky output shape");
            (Rows { ptr: l.data.as_mut_ptr(), stride: l.stride, pad: l.pad }, slope)
        });
        self.run(x, x.pad - self.same_pad(), out, Epilogue { zero, residual, add, leaky });
    }

    /// Output sample `t` of every row, for all `t < out.len`, from input
    /// positions `first + t + j·dilation` of `x`'s padded rows.
    fn run(&self, x: &Signal, first: usize, out: &mut Signal, epilogue: Epilogue) {
        assert_eq!(x.channels, self.c_in, "input channels");
        assert_eq!(out.channels, self.c_out, "output channels");
        let len = out.len;
        let tiles = len.div_ceil(NR);
        if tiles == 0 {
            return;
        }
        // The last tile starts before `len` and reads NR samples at each tap:
        // within a row's stride, so inside the buffer for the last row too.
        let reach = first + len - 1 + (self.kernel - 1) * self.dilation + NR;
        assert!(reach <= x.stride, "taps reach past the input's padding");
        // Long signals are split by samples; short ones (a text encoder's
        // few hundred positions) by output channels, which balances better.
        let threads = rayon::current_num_threads();
        let row_blocks = self.c_out.div_ceil(MR);
        let by_rows = tiles < 8 * threads && row_blocks >= 4 * threads;
        let (parts, per_part) = if by_rows {
            (threads, row_blocks.div_ceil(threads))
        } else {
            let parts = threads.clamp(1, tiles.div_ceil(2));
            (parts, tiles.div_ceil(parts) * NR)
        };
        let out = Rows { ptr: out.data.as_mut_ptr(), stride: out.stride, pad: out.pad };
        (0..parts).into_par_iter().for_each(|part| {
            let (samples, blocks) = if by_rows {
                (0..len, part * per_part..((part + 1) * per_part).min(row_blocks))
            } else {
                (part * per_part..((part + 1) * per_part).min(len), 0..row_blocks)
            };
            // SAFETY: the parts write disjoint ranges of columns or of rows
            // of the output (and the leaky output), all inside their `len`
            // samples and `c_out` rows; both are borrowed mutably for the
            // whole call, the residual immutably.
            unsafe { self.columns(x, first, samples, blocks, &out, &epilogue) };
        });
    }

    /// # Safety
    /// `out` and the epilogue's rows are `c_out` rows of at least
    /// `samples.end` samples; no other thread touches these samples of
    /// output rows `MR · blocks` of `out` or of the leaky output.
    unsafe fn columns(
        &self,
        x: &Signal,
        first: usize,
        samples: std::ops::Range<usize>,
        blocks: std::ops::Range<usize>,
        out: &Rows,
        epilogue: &Epilogue,
    ) {
        let k = self.kernel * self.c_in * MR;
        let mut scratch = [0.0f32; MR * NR];
        let (mut block, end) = (samples.start, samples.end);
        while block < end {
            let block_end = (block + NB).min(end);
            for rb in blocks.clone() {
                let rows = (self.c_out - rb * MR).min(MR);
                let weights = &self.packed[rb * k..][..k];
                let bias = &self.bias[rb * MR..][..MR];
                let mut t = block;
                while t < block_end {
                    let cols = (block_end - t).min(NR);
                    let input = &x.data[first + t..];
                    // SAFETY: rows rb·MR.. of `out` and the epilogue's rows
                    // hold samples t..t+cols (the caller's contract); a partial
                    // tile works in `scratch`, whose rows are NR apart.
                    unsafe {
                        let dst = out.at(rb * MR, t);
                        let full = rows == MR && cols == NR;
                        let (work, stride) = if full { (dst, out.stride) } else { (scratch.as_mut_ptr(), NR) };
                        if epilogue.zero {
                            for r in 0..rows {
                                std::slice::from_raw_parts_mut(work.add(r * stride), cols).fill(0.0);
                            }
                        } else if !full {
                            scratch.fill(0.0);
                            for r in 0..rows {
                                std::ptr::copy_nonoverlapping(dst.add(r * out.stride), work.add(r * NR), cols);
                            }
                        }
                        if let Some(residual) = &epilogue.residual {
                            for r in 0..rows {
                                let from = std::slice::from_raw_parts(residual.at(rb * MR + r, t), cols);
                                let to = std::slice::from_raw_parts_mut(work.add(r * stride), cols);
                                if epilogue.add {
                                    to.iter_mut().zip(from).for_each(|(o, r)| *o += r);
                                } else {
                                    to.copy_from_slice(from);
                                }
                            }
                        }
                        tile(weights, bias, input, x.stride, self.c_in, self.kernel, self.dilation, work, stride);
                        if !full {
                            for r in 0..rows {
                                std::ptr::copy_nonoverlapping(work.add(r * NR), dst.add(r * out.stride), cols);
                            }
                        }
                        if let Some((leaky, slope)) = &epilogue.leaky {
                            for r in 0..rows {
                                let from = std::slice::from_raw_parts(work.add(r * stride), cols);
                                let to = std::slice::from_raw_parts_mut(leaky.at(rb * MR + r, t), cols);
                                to.iter_mut().zip(from).for_each(|(o, &v)| *o = v.max(v * slope));
                            }
                        }
                    }
                    t += NR;
                }
            }
            block = block_end;
        }
    }
}

/// What [`Conv1d::forward_fused`] starts each output from.
#[derive(Clone, Copy, Debug)]
pub enum Residual<'a> {
    /// `out = bias + conv(x)`, whatever `out` held.
    Overwrite,
    /// `out += bias + conv(x)`.
    InPlace,
    /// `out = residual + bias + conv(x)`.
    From(&'a Signal),
    /// `out += residual + bias + conv(x)`.
    Add(&'a Signal),
}

/// Rows of a signal's buffer, shared between the threads of one call.
struct Rows {
    ptr: *mut f32,
    stride: usize,
    pad: usize,
}

impl Rows {
    /// # Safety
    /// Row `row` and sample `t` are inside the buffer.
    unsafe fn at(&self, row: usize, t: usize) -> *mut f32 {
        // SAFETY: the caller's.
        unsafe { self.ptr.add(row * self.stride + self.pad + t) }
    }
}

// SAFETY: `Rows` is only written through by `Conv1d::columns`, whose callers
// give each thread a disjoint column range.
unsafe impl Send for Rows {}
unsafe impl Sync for Rows {}

struct Epilogue {
    /// Start from zero rather than the output's values.
    zero: bool,
    residual: Option<Rows>,
    add: bool,
    leaky: Option<(Rows, f32)>,
}

/// A transposed convolution of stride `s` and kernel `2s`, cropped by `s/2`
/// each side (HiFi-GAN's upsampling: out length = `s` · in length). Output
/// sample `p·s + r` (before the crop) is tap `r` on input `p` plus tap
/// `r + s` on input `p − 1`, so the `s` phases are one kernel-2 convolution
/// with `s · C_out` outputs, interleaved afterwards.
#[derive(Clone, Debug)]
pub struct ConvTranspose1d {
    phases: Conv1d,
    stride: usize,
}

impl ConvTranspose1d {
    /// From PyTorch's layout: `weight` `[C_in][C_out][2·stride]`, `bias` `[C_out]`.
    pub fn new(weight: &[f32], bias: &[f32], c_in: usize, c_out: usize, stride: usize) -> Self {
        let kernel = 2 * stride;
        assert!(stride.is_multiple_of(2), "the crop of stride / 2 needs an even stride");
        assert_eq!(weight.len(), c_in * c_out * kernel, "weight is not [{c_in}][{c_out}][{kernel}]");
        assert_eq!(bias.len(), c_out, "bias is not [{c_out}]");
        let phase_bias: Vec<f32> = (0..stride).flat_map(|_| bias.iter().copied()).collect();
        // Row r·C_out + co; tap 0 reads input p − 1, tap 1 input p.
        let phases = Conv1d::from_fn(stride * c_out, c_in, 2, 1, Some(&phase_bias), |row, ci, j| {
            let (r, co) = (row / c_out, row % c_out);
            weight[(ci * c_out + co) * kernel + if j == 0 { r + stride } else { r }]
        });
        Self { phases, stride }
    }

    /// `out = bias + convT(x)`; `x` needs one sample of padding.
    pub fn forward_into(&self, x: &Signal, out: &mut Signal) {
        let s = self.stride;
        let c_out = self.phases.c_out / s;
        assert!(x.pad >= 1, "input needs one sample of padding");
        assert_eq!((out.channels, out.len), (c_out, s * x.len), "output shape");
        let mut phases = Signal::for_overwrite(s * c_out, x.len + 1, 0);
        self.phases.run(x, x.pad - 1, &mut phases, Epilogue { zero: true, residual: None, add: false, leaky: None });
        let crop = s / 2;
        let phases = &phases;
        let (pad, len) = (out.pad, out.len);
        out.data.par_chunks_mut(out.stride).enumerate().for_each(|(co, row)| {
            let row = &mut row[pad..][..len];
            let source: Vec<&[f32]> = (0..s).map(|r| phases.row(r * c_out + co)).collect();
            // Output t = p·s + r − crop: the first s − crop from p = 0, then
            // whole groups of s from p = 1, 2, …
            let (head, rest) = row.split_at_mut((s - crop).min(len));
            for (v, source) in head.iter_mut().zip(&source[crop..]) {
                *v = source[0];
            }
            for (p, group) in rest.chunks_mut(s).enumerate() {
                for (v, source) in group.iter_mut().zip(&source) {
                    *v = source[p + 1];
                }
            }
        });
    }
}

/// One MR × NR tile: `out[r][0..NR] += bias[r] + Σ_{j, ci} w · x[ci][j·dilation ..][..NR]`.
///
/// # Safety
/// `out` holds MR rows of NR floats `out_stride` apart; `x` holds `c_in`
/// rows `x_stride` apart with `NR + (kernel − 1)·dilation` floats each
/// (checked by `Conv1d::run` through the slice's length).
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn tile(
    w: &[f32],
    bias: &[f32],
    x: &[f32],
    x_stride: usize,
    c_in: usize,
    kernel: usize,
    dilation: usize,
    out: *mut f32,
    out_stride: usize,
) {
    use std::arch::x86_64::*;
    debug_assert!(w.len() >= kernel * c_in * MR && bias.len() >= MR);
    debug_assert!(x.len() >= (c_in - 1) * x_stride + (kernel - 1) * dilation + NR);
    // SAFETY: the lengths above bound every load; `out` is the caller's.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 3]; MR];
        for (r, acc) in acc.iter_mut().enumerate() {
            let b = _mm256_set1_ps(bias[r]);
            for (v, a) in acc.iter_mut().enumerate() {
                *a = _mm256_add_ps(_mm256_loadu_ps(out.add(r * out_stride + 8 * v)), b);
            }
        }
        let mut wp = w.as_ptr();
        for j in 0..kernel {
            let mut row = x.as_ptr().add(j * dilation);
            for _ in 0..c_in {
                let b0 = _mm256_loadu_ps(row);
                let b1 = _mm256_loadu_ps(row.add(8));
                let b2 = _mm256_loadu_ps(row.add(16));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let a = _mm256_broadcast_ss(&*wp.add(r));
                    acc[0] = _mm256_fmadd_ps(a, b0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(a, b1, acc[1]);
                    acc[2] = _mm256_fmadd_ps(a, b2, acc[2]);
                }
                wp = wp.add(MR);
                row = row.add(x_stride);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (v, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.add(r * out_stride + 8 * v), *a);
            }
        }
    }
}

/// Portable version of the tile above, for targets without AVX2 and FMA.
///
/// # Safety
/// As for the AVX2 version.
#[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn tile(
    w: &[f32],
    bias: &[f32],
    x: &[f32],
    x_stride: usize,
    c_in: usize,
    kernel: usize,
    dilation: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let mut acc = [[0.0f32; NR]; MR];
    for (r, acc) in acc.iter_mut().enumerate() {
        for (n, a) in acc.iter_mut().enumerate() {
            // SAFETY: `out` holds MR rows of NR floats (the caller's contract).
            *a = unsafe { *out.add(r * out_stride + n) } + bias[r];
        }
    }
    let mut wi = 0;
    for j in 0..kernel {
        for ci in 0..c_in {
            let row = &x[ci * x_stride + j * dilation..][..NR];
            for (r, acc) in acc.iter_mut().enumerate() {
                let a = w[wi + r];
                for (acc, &b) in acc.iter_mut().zip(row) {
                    *acc = a.mul_add(b, *acc);
                }
            }
            wi += MR;
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (n, &a) in acc.iter().enumerate() {
            // SAFETY: as above.
            unsafe { *out.add(r * out_stride + n) = a };
        }
    }
}
