//! The stochastic duration predictor, run in reverse from noise: dilated
//! depth-separable convolutions and rational-quadratic spline flows.

use super::*;

/// Dilated depth-separable convolutions (the duration predictor's network).
struct DdsConv {
    separable: Vec<Conv1d>,
    norms1: Vec<ChannelNorm>,
    pointwise: Vec<Conv1d>,
    norms2: Vec<ChannelNorm>,
}

impl DdsConv {
    pub(super) fn load(w: &mut Weights, prefix: &str) -> Result<Self, VitsError> {
        let mut dds = Self { separable: vec![], norms1: vec![], pointwise: vec![], norms2: vec![] };
        for i in 0..3 {
            let dilation = 3usize.pow(i as u32);
            dds.separable.push(w.conv(&format!("{prefix}.convs_sep.{i}"), [HIDDEN, 1, 3], dilation, HIDDEN)?);
            dds.norms1.push(w.norm(&format!("{prefix}.norms_1.{i}"))?);
            dds.pointwise.push(w.conv(&format!("{prefix}.convs_1x1.{i}"), [HIDDEN, HIDDEN, 1], 1, 1)?);
            dds.norms2.push(w.norm(&format!("{prefix}.norms_2.{i}"))?);
        }
        Ok(dds)
    }

    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for i in 0..self.separable.len() {
            let y = self.norms1[i].forward(&self.separable[i].forward(&x)?)?.gelu_erf()?;
            let y = self.norms2[i].forward(&self.pointwise[i].forward(&y)?)?.gelu_erf()?;
            x = (x + y)?;
        }
        Ok(x)
    }
}

/// A coupling flow whose second channel goes through a monotonic
/// rational-quadratic spline conditioned on the first.
struct ConvFlow {
    pre: Conv1d,
    convs: DdsConv,
    proj: Conv1d,
}

impl ConvFlow {
    pub(super) fn load(w: &mut Weights, prefix: &str) -> Result<Self, VitsError> {
        Ok(Self {
            pre: w.conv(&format!("{prefix}.pre"), [HIDDEN, 1, 1], 1, 1)?,
            convs: DdsConv::load(w, &format!("{prefix}.convs"))?,
            proj: w.conv(&format!("{prefix}.proj"), [SPLINE_PARAMS, HIDDEN, 1], 1, 1)?,
        })
    }

    /// Inverts the flow in place; `z` is `[channel 0, channel 1]`.
    pub(super) fn reverse(&self, z: &mut [Vec<f32>; 2], cond: &Tensor) -> candle_core::Result<()> {
        let t = z[0].len();
        let x0 = Tensor::from_slice(&z[0], (1, 1, t), cond.device())?;
        let h = (self.pre.forward(&x0)? + cond)?;
        let params = self.proj.forward(&self.convs.forward(&h)?)?.i(0)?.t()?.to_vec2::<f32>()?; // (T, 29)
        for (value, p) in z[1].iter_mut().zip(&params) {
            *value = spline_inverse(*value, p);
        }
        Ok(())
    }
}

/// The inverse of the unconstrained rational-quadratic spline with linear
/// tails (Durkan et al. 2019, as in VITS), for one value and its 29 raw
/// parameters (10 widths, 10 heights, 9 interior derivatives).
fn spline_inverse(y: f32, params: &[f32]) -> f32 {
    if !(-TAIL_BOUND..=TAIL_BOUND).contains(&y) {
        return y;
    }
    let scale = 1.0 / (HIDDEN as f32).sqrt();
    let knots = |raw: &[f32]| -> [f32; SPLINE_BINS + 1] {
        let max = raw.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v * scale));
        let exp: Vec<f32> = raw.iter().map(|&v| (v * scale - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        let mut knots = [0.0; SPLINE_BINS + 1];
        let mut cumulative = 0.0f32;
        for (k, e) in exp.iter().enumerate() {
            cumulative += MIN_BIN + (1.0 - MIN_BIN * SPLINE_BINS as f32) * (e / sum);
            knots[k + 1] = 2.0 * TAIL_BOUND * cumulative - TAIL_BOUND;
        }
        knots[0] = -TAIL_BOUND;
        knots[SPLINE_BINS] = TAIL_BOUND;
        knots
    };
    let xs = knots(&params[..SPLINE_BINS]);
    let ys = knots(&params[SPLINE_BINS..2 * SPLINE_BINS]);
    // The boundary derivatives are fixed so the spline meets the linear tails
    // with slope one: softplus(ln(e^(1 − min) − 1)) + min.
    let boundary = softplus(((1.0 - MIN_DERIVATIVE).exp() - 1.0).ln()) + MIN_DERIVATIVE;
    let derivative = |k: usize| {
        if k == 0 || k == SPLINE_BINS { boundary } else { softplus(params[2 * SPLINE_BINS + k - 1]) + MIN_DERIVATIVE }
    };

    // The last knot is nudged up so y = TAIL_BOUND falls in the last bin.
    let bin = (0..=SPLINE_BINS)
        .filter(|&k| y >= if k == SPLINE_BINS { ys[k] + 1e-6 } else { ys[k] })
        .count()
        .clamp(1, SPLINE_BINS)
        - 1;
    let (x0, width) = (xs[bin], xs[bin + 1] - xs[bin]);
    let (y0, height) = (ys[bin], ys[bin + 1] - ys[bin]);
    let (d0, d1) = (derivative(bin), derivative(bin + 1));
    let delta = height / width;
    let dy = y - y0;
    let a = dy * (d0 + d1 - 2.0 * delta) + height * (delta - d0);
    let b = height * d0 - dy * (d0 + d1 - 2.0 * delta);
    let c = -delta * dy;
    let discriminant = (b * b - 4.0 * a * c).max(0.0);
    let root = (2.0 * c) / (-b - discriminant.sqrt());
    root * width + x0
}

fn softplus(x: f32) -> f32 {
    // torch's softplus switches to the identity above 20.
    if x > 20.0 { x } else { x.exp().ln_1p() }
}

/// The stochastic duration predictor, run from noise to log-durations.
pub(super) struct DurationPredictor {
    pre: Conv1d,
    convs: DdsConv,
    proj: Conv1d,
    /// Flows 7, 5 and 3; flow 1 is skipped in reverse, as in VITS.
    flows: Vec<ConvFlow>,
    affine_mean: [f32; 2],
    /// exp(−logs) of the elementwise affine flow, folded by the export.
    affine_scale: [f32; 2],
}

impl DurationPredictor {
    pub(super) fn load(w: &mut Weights) -> Result<Self, VitsError> {
        let pair = |t: Tensor| -> Result<[f32; 2], VitsError> {
            let v = t.flatten_all()?.to_vec1::<f32>()?;
            Ok([v[0], v[1]])
        };
        Ok(Self {
            pre: w.conv("dp.pre", [HIDDEN, HIDDEN, 1], 1, 1)?,
            convs: DdsConv::load(w, "dp.convs")?,
            proj: w.conv("dp.proj", [HIDDEN, HIDDEN, 1], 1, 1)?,
            flows: [7, 5, 3].iter().map(|i| ConvFlow::load(w, &format!("dp.flows.{i}"))).collect::<Result<_, _>>()?,
            affine_mean: pair(w.take("dp.flows.0.m", &[2, 1])?)?,
            affine_scale: pair(w.take("/dp/flows.0/Exp_output_0", &[2, 1])?)?,
        })
    }

    /// Log-durations (in frames) per input position, from `noise` `[2][T]`.
    pub(super) fn reverse(&self, hidden: &Tensor, mut z: [Vec<f32>; 2]) -> candle_core::Result<Vec<f32>> {
        let cond = self.proj.forward(&self.convs.forward(&self.pre.forward(hidden)?)?)?;
        for flow in &self.flows {
            z.swap(0, 1);
            flow.reverse(&mut z, &cond)?;
        }
        z.swap(0, 1);
        for (channel, values) in z.iter_mut().enumerate() {
            for v in values {
                *v = (*v - self.affine_mean[channel]) * self.affine_scale[channel];
            }
        }
        let [log_durations, _] = z;
        Ok(log_durations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spline_is_identity_outside_the_tails_and_monotonic_inside() {
        let params: Vec<f32> = (0..SPLINE_PARAMS).map(|i| ((i * 7 % 11) as f32 - 5.0) * 3.0).collect();
        assert_eq!(spline_inverse(6.0, &params), 6.0);
        assert_eq!(spline_inverse(-7.5, &params), -7.5);
        let mut last = f32::NEG_INFINITY;
        for k in 0..=200 {
            let y = -TAIL_BOUND + k as f32 * (2.0 * TAIL_BOUND / 200.0);
            let x = spline_inverse(y, &params);
            assert!(x.is_finite() && x >= last - 1e-5, "not monotonic at y = {y}: {x} after {last}");
            assert!((-TAIL_BOUND - 1e-4..=TAIL_BOUND + 1e-4).contains(&x));
            last = x;
        }
        // Knots map onto knots: the ends stay put.
        assert!((spline_inverse(-TAIL_BOUND, &params) + TAIL_BOUND).abs() < 1e-4);
        assert!((spline_inverse(TAIL_BOUND, &params) - TAIL_BOUND).abs() < 1e-3);
    }

    #[test]
    fn zero_parameters_give_the_identity() {
        // Equal bins and unit derivatives: the spline is the straight line.
        let mut params = vec![0.0f32; SPLINE_PARAMS];
        let unit = ((1.0 - MIN_DERIVATIVE).exp() - 1.0).ln();
        params[2 * SPLINE_BINS..].fill(unit);
        for y in [-4.9f32, -1.0, 0.0, 0.37, 2.5, 4.99] {
            assert!((spline_inverse(y, &params) - y).abs() < 1e-4, "{y}");
        }
    }
}
