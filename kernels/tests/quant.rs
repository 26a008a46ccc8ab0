//! The quantized matrix products against their f64 reference, for both
//! block formats, over the LLM's shapes and the tiling's edge cases (1 to 9
//! token rows: a four-token tile, its remainder, a single row; odd block
//! counts; row counts that split unevenly between threads), plus what
//! quantization itself costs against unquantized f32 math.

use tete_kernels::quant::{BLOCK, Isa, QActs, QKind, QMatrix, f16, nibble_of};
use tete_kernels::testdata::uniform as noise;

/// The kernels sum integer block products exactly and scale them in f32;
/// the reference sums in f64. Relative to the sum of |products| that is
/// f32 rounding over a few hundred terms.
const TOL: f32 = 1e-5;

/// The instruction sets this processor runs; the products are checked on each.
fn isas() -> Vec<Isa> {
    let isas: Vec<Isa> = Isa::all().iter().copied().filter(|i| i.available()).collect();
    let missing: Vec<Isa> = Isa::all().iter().copied().filter(|i| !i.available()).collect();
    if !missing.is_empty() {
        eprintln!("not checked, this processor lacks them: {missing:?}");
    }
    isas
}

fn check(w: &QMatrix, x: &[f32], m: usize, what: &str) {
    for isa in isas() {
        check_on(isa, w, x, m, &format!("{what} on {isa:?}"));
    }
}

fn check_on(isa: Isa, w: &QMatrix, x: &[f32], m: usize, what: &str) {
    let mut acts = QActs::new();
    acts.quantize(x, m, w.cols());
    let mut ours = vec![0.0; m * w.rows()];
    let mut reference = vec![0.0; m * w.rows()];
    w.matmul_on(isa, &acts, &mut ours);
    w.matmul_reference(&acts, &mut reference);
    // Scale: Σ |w|·|a| per output bounds the rounding of any order of summation.
    let mut row = vec![0.0; w.cols()];
    for r in 0..w.rows() {
        w.dequantize_row(r, &mut row);
        for t in 0..m {
            let a = acts.dequantize_row(t);
            let scale: f32 = row.iter().zip(&a).map(|(w, a)| (w * a).abs()).sum();
            let (o, e) = (ours[t * w.rows() + r], reference[t * w.rows() + r]);
            assert!(
                (o - e).abs() <= TOL * scale.max(1.0),
                "{what}: token {t} row {r}: kernel {o} vs reference {e} (scale {scale})"
            );
        }
    }
}

#[test]
fn q4_1_products_match_the_reference() {
    for (rows, cols, m) in [(576, 576, 1), (192, 576, 4), (100, 1536, 9), (37, 96, 3), (1, 32, 5), (65, 64, 2)] {
        let w = QMatrix::quantize_q4_1(rows, cols, &noise(rows * cols, 7)).unwrap();
        assert_eq!(w.kind(), QKind::Q4_1);
        check(&w, &noise(m * cols, 11), m, &format!("Q4_1 {rows}x{cols}, {m} tokens"));
    }
}

#[test]
fn q8_0_products_match_the_reference() {
    for (rows, cols, m) in [(576, 576, 1), (300, 896, 4), (70, 160, 7), (1, 32, 1), (33, 4864, 2)] {
        let w = QMatrix::quantize_q8_0(rows, cols, &noise(rows * cols, 3)).unwrap();
        check(&w, &noise(m * cols, 5), m, &format!("Q8_0 {rows}x{cols}, {m} tokens"));
    }
}

#[test]
fn extreme_codes_do_not_overflow() {
    // Every Q8_0 code at −128 or 127 and every activation at ±127: the
    // 16-bit pair sums are at their largest. 18 blocks: two whole groups
    // (a Q4_1 group sums its eight steps in 16 bits) and two blocks after.
    let rows = 8;
    let cols = 18 * 32;
    let blocks = rows * cols / 32;
    let alternating: Vec<f32> = (0..cols).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
    for (x, what) in [(vec![1.0; cols], "all +127"), (vec![-1.0; cols], "all −127"), (alternating, "alternating")] {
        for pattern in [0, 3] {
            let codes: Vec<i8> =
                (0..rows * cols).map(|i| if pattern > 0 && i % pattern == 0 { -128 } else { 127 }).collect();
            let w = QMatrix::q8_0(rows, cols, vec![f16::from_f32(0.5); blocks], codes).unwrap();
            check(&w, &x, 1, &format!("Q8_0 extremes (pattern {pattern}), activations {what}"));
        }
        let (d, m) = (vec![f16::ONE; blocks], vec![f16::from_f32(-3.0); blocks]);
        let w = QMatrix::q4_1(rows, cols, d, m, vec![0xFF; rows * cols / 2]).unwrap();
        check(&w, &x, 1, &format!("Q4_1 extremes, activations {what}"));
    }
}

#[test]
fn matrices_read_back_what_the_file_layout_gave() {
    // Plain GGUF Q4_1 / Q8_0 codes in, the same values out, whatever the
    // grouping inside: 2 groups and 3 blocks after, and a row of one block.
    for cols in [19 * BLOCK, BLOCK] {
        let rows = 3;
        let blocks = rows * cols / BLOCK;
        let d: Vec<f16> = (0..blocks).map(|b| f16::from_f32(0.01 * (b + 1) as f32)).collect();
        let m: Vec<f16> = (0..blocks).map(|b| f16::from_f32(-(b as f32))).collect();
        let packed: Vec<u8> = (0..rows * cols / 2).map(|i| (i * 7 + i / 5) as u8).collect();
        let w = QMatrix::q4_1(rows, cols, d.clone(), m.clone(), packed.clone()).unwrap();
        let signed: Vec<i8> = (0..rows * cols).map(|i| (i * 13 + i / 3) as u8 as i8).collect();
        let w8 = QMatrix::q8_0(rows, cols, d.clone(), signed.clone()).unwrap();
        let (mut row, mut row8) = (vec![0.0; cols], vec![0.0; cols]);
        for r in 0..rows {
            w.dequantize_row(r, &mut row);
            w8.dequantize_row(r, &mut row8);
            for c in 0..cols {
                let b = (r * cols + c) / BLOCK;
                let j = c % BLOCK;
                let byte = packed[b * BLOCK / 2 + j % (BLOCK / 2)];
                let code = if j < BLOCK / 2 { byte & 0x0F } else { byte >> 4 };
                let (d, m) = (d[b].to_f32(), m[b].to_f32());
                assert_eq!(row[c], d * f32::from(code) + m, "Q4_1 {cols} columns, row {r} column {c}");
                assert_eq!(row8[c], d * f32::from(signed[r * cols + c]), "Q8_0 {cols} columns, row {r} column {c}");
            }
        }
    }
    // Every element of a row has its own nibble.
    let blocks = 19;
    let mut seen = std::collections::HashSet::new();
    for b in 0..blocks {
        for j in 0..BLOCK {
            let (byte, high) = nibble_of(blocks, b, j);
            assert!(byte < blocks * BLOCK / 2 && seen.insert((byte, high)), "block {b} element {j}");
        }
    }
}

#[test]
fn quantized_products_stay_near_f32_math() {
    // What 4- and 8-bit weights and 8-bit activations cost against plain
    // f32. For values uniform in [−1, 1) a rounding step `q` adds an error
    // of variance q²/12 per value; over 576 products of E[x²] = 1/3 the
    // output's error has σ² = 576 · (q_w² + q_a²)/12 · 1/3 (Q8_0 steps ≈
    // 1/127, Q4_1 steps ≈ 2/15). The RMS error must stay within 1.5 σ.
    let (rows, cols) = (256, 576);
    let values = noise(rows * cols, 1);
    let x = noise(cols, 2);
    let exact: Vec<f32> = values.chunks_exact(cols).map(|w| w.iter().zip(&x).map(|(w, x)| w * x).sum()).collect();
    let mut acts = QActs::new();
    acts.quantize(&x, 1, cols);
    let q8: f32 = 1.0 / 127.0;
    for (w, step) in [
        (QMatrix::quantize_q8_0(rows, cols, &values).unwrap(), q8),
        (QMatrix::quantize_q4_1(rows, cols, &values).unwrap(), 2.0 / 15.0),
    ] {
        let mut out = vec![0.0; rows];
        w.matmul(&acts, &mut out);
        let rms = (out.iter().zip(&exact).map(|(a, b)| (a - b).powi(2)).sum::<f32>() / rows as f32).sqrt();
        let sigma = (cols as f32 * (step * step + q8 * q8) / 12.0 / 3.0).sqrt();
        assert!(rms < 1.5 * sigma, "{:?}: RMS error {rms} against f32, expected about {sigma}", w.kind());
    }
}

#[test]
fn stacking_and_requantizing_keep_the_values() {
    let a = QMatrix::quantize_q4_1(3, 64, &noise(192, 1)).unwrap();
    let b = QMatrix::quantize_q4_1(2, 64, &noise(128, 2)).unwrap();
    let stacked = QMatrix::concat_rows(&[a.clone(), b.clone()]).unwrap();
    assert_eq!((stacked.rows(), stacked.kind()), (5, QKind::Q4_1));
    let (mut x, mut y) = (vec![0.0; 64], vec![0.0; 64]);
    stacked.dequantize_row(3, &mut x);
    b.dequantize_row(0, &mut y);
    assert_eq!(x, y, "row 3 of the stack is row 0 of the second part");

    // Mixed formats stack as Q8_0, within half a Q8_0 step of the Q4_1 values.
    let c = QMatrix::quantize_q8_0(1, 64, &noise(64, 3)).unwrap();
    let mixed = QMatrix::concat_rows(&[a.clone(), c]).unwrap();
    assert_eq!(mixed.kind(), QKind::Q8_0);
    a.dequantize_row(1, &mut x);
    mixed.dequantize_row(1, &mut y);
    let step = x.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
    for (i, (p, q)) in x.iter().zip(&y).enumerate() {
        assert!((p - q).abs() <= 0.5 * step + 1e-6, "element {i}: Q4_1 {p} vs requantized {q}");
    }
}

#[test]
fn bad_shapes_are_refused() {
    assert!(QMatrix::quantize_q8_0(2, 30, &[0.0; 60]).is_err(), "columns not a multiple of 32");
    assert!(QMatrix::quantize_q8_0(2, 32, &[0.0; 63]).is_err(), "too few values");
    assert!(QMatrix::q4_1(1, 32, vec![f16::ONE], vec![], vec![0; 16]).is_err(), "minimums missing");
    assert!(QMatrix::q8_0(1, 32, vec![f16::ONE], vec![0; 31]).is_err(), "codes missing");
    let a = QMatrix::quantize_q8_0(1, 32, &[0.0; 32]).unwrap();
    let b = QMatrix::quantize_q8_0(1, 64, &[0.0; 64]).unwrap();
    assert!(QMatrix::concat_rows(&[a, b]).is_err(), "different column counts");
    assert!(QMatrix::concat_rows(&[]).is_err());
}

#[test]
fn activations_round_to_the_nearest_code() {
    // Random rows, a zero block, a block of exact half steps (ties go to
    // the even code) and one whose largest value is negative.
    let cols = 4 * BLOCK;
    let mut x = noise(3 * cols, 21);
    x[..BLOCK].fill(0.0);
    for (i, v) in x[BLOCK..2 * BLOCK].iter_mut().enumerate() {
        *v = if i == 0 { 127.0 } else { (i as f32 - 16.0) + 0.5 };
    }
    x[2 * BLOCK] = -5.0;
    let mut acts = QActs::new();
    acts.quantize(&x, 3, cols);
    for t in 0..3 {
        let got = acts.dequantize_row(t);
        for (b, block) in x[t * cols..(t + 1) * cols].chunks_exact(BLOCK).enumerate() {
            let d = block.iter().fold(0.0f32, |a, &v| a.max(v.abs())) / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            for (j, &v) in block.iter().enumerate() {
                let want = d * (v * inv).round_ties_even().clamp(-127.0, 127.0);
                assert_eq!(got[b * BLOCK + j], want, "row {t} block {b} element {j}: {v}");
            }
        }
    }
}
