//! The residual coupling flow (mean-only couplings over WaveNet stacks),
//! run in reverse from the prior to the latent.

use super::*;

/// WaveNet-style gated residual stack (no conditioning).
struct WaveNet {
    input: Vec<Conv1d>,
    res_skip: Vec<Conv1d>,
    /// On the CPU, per layer: the residual half of `res_skip` (none in the
    /// last layer) and its skip half, apart, so each accumulates straight
    /// into its sum.
    direct: Option<Vec<(Option<kernels::Conv1d>, kernels::Conv1d)>>,
}

impl WaveNet {
    fn new(input: Vec<Conv1d>, res_skip: Vec<Conv1d>, weights: &[(Vec<f32>, Vec<f32>)]) -> Self {
        let direct = input.iter().all(|c| c.direct.is_some()).then(|| {
            let last = weights.len() - 1;
            let half = |w: &[f32], b: &[f32], part: usize| {
                kernels::Conv1d::new(
                    &w[part * LATENT * LATENT..][..LATENT * LATENT],
                    Some(&b[part * LATENT..][..LATENT]),
                    LATENT,
                    LATENT,
                    1,
                    1,
                )
            };
            weights
                .iter()
                .enumerate()
                .map(|(i, (w, b))| if i < last { (Some(half(w, b, 0)), half(w, b, 1)) } else { (None, half(w, b, 0)) })
                .collect()
        });
        Self { input, res_skip, direct }
    }

    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        let mut out: Option<Tensor> = None;
        let last = self.input.len() - 1;
        for (i, (input, res_skip)) in self.input.iter().zip(&self.res_skip).enumerate() {
            let h = input.forward(&x)?;
            let acts = (h.narrow(1, 0, LATENT)?.tanh()? * candle_nn::ops::sigmoid(&h.narrow(1, LATENT, LATENT)?)?)?;
            let rs = res_skip.forward(&acts)?;
            let skip = if i < last {
                x = (x + rs.narrow(1, 0, LATENT)?)?;
                rs.narrow(1, LATENT, LATENT)?
            } else {
                rs
            };
            out = Some(match out {
                Some(o) => (o + skip)?,
                None => skip,
            });
        }
        out.ok_or_else(|| candle_core::Error::Msg("empty WaveNet".into()))
    }

    /// The same on the CPU; `x` padded for the kernel-5 convolutions.
    fn forward_direct(&self, mut x: Signal, direct: &[(Option<kernels::Conv1d>, kernels::Conv1d)]) -> Signal {
        let len = x.len();
        let mut out = Signal::zeros(LATENT, len, 0);
        let mut acts = Signal::zeros(LATENT, len, 0);
        for (input, (res, skip)) in self.input.iter().zip(direct) {
            let Some(input) = &input.direct else { unreachable!("checked in WaveNet::new") };
            let mut h = Signal::zeros(2 * LATENT, len, 0);
            input.forward_into(&x, &mut h);
            acts.for_each_row(|c, a| tete_kernels::gate::tanh_sigmoid(h.row(c), h.row(LATENT + c), a));
            if let Some(res) = res {
                res.forward_into(&acts, &mut x);
            }
            skip.forward_into(&acts, &mut out);
        }
        out
    }
}

/// Mean-only affine coupling layer.
struct Coupling {
    pre: Conv1d,
    net: WaveNet,
    post: Conv1d,
}

pub(super) struct Flow {
    /// Coupling layers 0, 2, 4, 6, each followed by a channel flip.
    couplings: Vec<Coupling>,
    flip: Tensor,
}

impl Flow {
    pub(super) fn load(w: &mut Weights, device: &Device) -> Result<Self, VitsError> {
        let mut couplings = Vec::new();
        for (n, ids) in FLOW_CONV_IDS.iter().enumerate() {
            let p = format!("flow.flows.{}", 2 * n);
            let mut input = Vec::new();
            let mut res_skip = Vec::new();
            let mut res_skip_weights = Vec::new();
            for (layer, &(in_id, rs_id)) in ids.iter().enumerate() {
                let weight = w.take(&format!("onnx::Conv_{in_id}"), &[2 * LATENT, LATENT, WN_KERNEL])?;
                input.push(w.conv_with(weight, Some(&format!("{p}.enc.in_layers.{layer}.bias")), 1, 1)?);
                let out = if layer + 1 < WN_LAYERS { 2 * LATENT } else { LATENT };
                let weight = w.take(&format!("onnx::Conv_{rs_id}"), &[out, LATENT, 1])?;
                let bias_name = format!("{p}.enc.res_skip_layers.{layer}.bias");
                let bias = w.tensors.get(&bias_name).map(|b| b.to_dtype(DType::F32)?.to_vec1::<f32>()).transpose()?;
                res_skip_weights.push((weight.flatten_all()?.to_vec1::<f32>()?, bias.unwrap_or_default()));
                res_skip.push(w.conv_with(weight, Some(&bias_name), 1, 1)?);
            }
            couplings.push(Coupling {
                pre: w.conv(&format!("{p}.pre"), [LATENT, HALF, 1], 1, 1)?,
                net: WaveNet::new(input, res_skip, &res_skip_weights),
                post: w.conv(&format!("{p}.post"), [HALF, LATENT, 1], 1, 1)?,
            });
        }
        let flip = Tensor::from_vec((0..LATENT as u32).rev().collect::<Vec<_>>(), LATENT, device)?;
        Ok(Self { couplings, flip })
    }

    pub(super) fn reverse(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        if z.device().is_cpu()
            && let Some(z) = self.reverse_direct(z)?
        {
            return Ok(z);
        }
        let mut z = z.clone();
        for c in self.couplings.iter().rev() {
            z = z.index_select(&self.flip, 1)?;
            let x0 = z.narrow(1, 0, HALF)?;
            let mean = c.post.forward(&c.net.forward(&c.pre.forward(&x0)?)?)?;
            z = Tensor::cat(&[&x0, &(z.narrow(1, HALF, HALF)? - mean)?], 1)?;
        }
        Ok(z)
    }

    /// The same on the CPU with the kernels crate, if every layer has its
    /// direct form.
    fn reverse_direct(&self, z: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (_, channels, len) = z.dims3()?;
        let mut rows: Vec<Vec<f32>> = z.squeeze(0)?.to_vec2::<f32>()?;
        for c in self.couplings.iter().rev() {
            let (Some(pre), Some(post), Some(direct)) = (&c.pre.direct, &c.post.direct, &c.net.direct) else {
                return Ok(None);
            };
            rows.reverse();
            let x0 = Signal::from_rows(&rows[..HALF].concat(), HALF, len, 0);
            let mut h = Signal::zeros(LATENT, len, WN_KERNEL / 2);
            pre.forward_into(&x0, &mut h);
            let h = c.net.forward_direct(h, direct);
            let mut mean = Signal::zeros(HALF, len, 0);
            post.forward_into(&h, &mut mean);
            for (c, row) in rows[HALF..].iter_mut().enumerate() {
                row.iter_mut().zip(mean.row(c)).for_each(|(z, m)| *z -= m);
            }
        }
        Ok(Some(Tensor::from_vec(rows.concat(), (1, channels, len), z.device())?))
    }
}
