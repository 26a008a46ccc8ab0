//! Whisper log-mel features on the GPU (`shaders/log_mel.wgsl`): the ASR
//! and turn-detection front end. Normalisation and reflect padding stay on
//! the CPU (linear and cheap); the DFT, mel projection and log run here.

use wgpu::util::DeviceExt;

use super::Gpu;
use crate::device::DeviceError;
use tete_kernels::mel::{N_FFT, N_MELS, frames, normalize, reflect_pad};

const SHADER: &str = include_str!("../../../shaders/log_mel.wgsl");
/// Largest dispatch dimension wgpu guarantees.
const MAX_GROUPS: u32 = 65_535;

/// The compiled log-mel pipelines and their constant tables.
#[derive(Debug)]
pub struct LogMel {
    layout: wgpu::BindGroupLayout,
    mel: wgpu::ComputePipeline,
    max: wgpu::ComputePipeline,
    finish: wgpu::ComputePipeline,
    tables: wgpu::Buffer,
}

impl LogMel {
    pub fn new(gpu: &Gpu) -> Self {
        use super::Binding::{Read, ReadWrite, Uniform};
        let (layout, [mel, max, finish]) = super::compute_pipelines(
            gpu,
            "log_mel",
            SHADER,
            &[Uniform, Read, Read, ReadWrite, ReadWrite],
            ["mel_main", "max_main", "finish_main"],
        );
        let device = &gpu.device;
        let tables = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("log_mel tables"),
            contents: bytemuck::cast_slice(&tete_kernels::log_mel_tables()),
            usage: wgpu::BufferUsages::STORAGE,
        });
        Self { layout, mel, max, finish, tables }
    }

    /// Log-mel features of 16 kHz audio; same layout and contract as
    /// `tete_kernels::mel::log_mel` (empty for 200 samples or fewer).
    pub fn compute(&self, gpu: &Gpu, audio: &[f32], normalize_first: bool) -> Result<Vec<f32>, DeviceError> {
        if audio.len() <= N_FFT / 2 {
            return Ok(Vec::new());
        }
        let audio = if normalize_first { normalize(audio) } else { audio.to_vec() };
        let padded = reflect_pad(&audio);
        let n_frames = frames(audio.len()) as u32;
        let total = N_MELS as u64 * u64::from(n_frames);
        if u64::from(n_frames) > u64::from(MAX_GROUPS) * u64::from(MAX_GROUPS)
            || total.div_ceil(256) > u64::from(MAX_GROUPS) * 256
        {
            return Err(DeviceError::Wgpu(format!("{} samples is too long for one log-mel dispatch", audio.len())));
        }
        let device = &gpu.device;
        let params = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("log_mel params"),
            contents: bytemuck::cast_slice(&[n_frames, padded.len() as u32]),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let input = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("log_mel audio"),
            contents: bytemuck::cast_slice(&padded),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let out_bytes = total * 4;
        let output = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("log_mel out"),
            size: out_bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let peak = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("log_mel peak"),
            size: 4,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("log_mel readback"),
            size: out_bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let bind = super::bind(gpu, "log_mel", &self.layout, &[&params, &input, &self.tables, &output, &peak]);
        let split = |n: u64| ((n.min(u64::from(MAX_GROUPS))) as u32, n.div_ceil(u64::from(MAX_GROUPS)) as u32);
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("log_mel") });
        {
            let mut pass = encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("log_mel"), timestamp_writes: None });
            pass.set_bind_group(0, &bind, &[]);
            pass.set_pipeline(&self.mel);
            let (x, y) = split(u64::from(n_frames));
            pass.dispatch_workgroups(x, y, 1);
            pass.set_pipeline(&self.max);
            pass.dispatch_workgroups(1, 1, 1);
            pass.set_pipeline(&self.finish);
            let (x, y) = split(total.div_ceil(256));
            pass.dispatch_workgroups(x, y, 1);
        }
        encoder.copy_buffer_to_buffer(&output, 0, &readback, 0, out_bytes);
        gpu.queue.submit([encoder.finish()]);
        super::read_back(gpu, &readback)
    }
}
