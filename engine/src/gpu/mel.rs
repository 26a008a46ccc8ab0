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
        let device = &gpu.device;
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("log_mel"),
            source: wgpu::ShaderSource::Wgsl(SHADER.into()),
        });
        let buffer = |binding, ty| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer { ty, has_dynamic_offset: false, min_binding_size: None },
            count: None,
        };
        let storage = |read_only| wgpu::BufferBindingType::Storage { read_only };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("log_mel"),
            entries: &[
                buffer(0, wgpu::BufferBindingType::Uniform),
                buffer(1, storage(true)),
                buffer(2, storage(true)),
                buffer(3, storage(false)),
                buffer(4, storage(false)),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("log_mel"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = |entry_point| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry_point),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(entry_point),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let tables = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("log_mel tables"),
            contents: bytemuck::cast_slice(&tete_kernels::log_mel_tables()),
            usage: wgpu::BufferUsages::STORAGE,
        });
        Self { mel: pipeline("mel_main"), max: pipeline("max_main"), finish: pipeline("finish_main"), layout, tables }
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
        let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("log_mel"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: params.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: input.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 2, resource: self.tables.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 3, resource: output.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 4, resource: peak.as_entire_binding() },
            ],
        });
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
