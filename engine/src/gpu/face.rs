//! The talking-head renderer on wgpu: `shaders/face_warp.wgsl`, then
//! RGBA → I420 (`shaders/rgba_to_i420.wgsl`), for any number of frames —
//! one per session — in one submission.

use wgpu::util::DeviceExt;

use super::{Gpu, RgbaToI420};
use crate::device::DeviceError;
use crate::face::Replica;
use tete_kernels::cpu::i420_len;
use tete_kernels::warp::{self, RECORD_WORDS};

const SHADER: &str = include_str!("../../../shaders/face_warp.wgsl");

/// Storage-buffer offsets must be multiples of this on every adapter.
const ALIGN: u64 = 256;

fn aligned(bytes: u64) -> u64 {
    bytes.div_ceil(ALIGN) * ALIGN
}

/// A replica's portrait resident on the device.
#[derive(Debug)]
pub struct GpuPortrait {
    buffer: wgpu::Buffer,
    size: u32,
}

impl GpuPortrait {
    pub fn size(&self) -> u32 {
        self.size
    }
}

/// The compiled warp and colour-conversion pipelines.
#[derive(Debug)]
pub struct FaceRenderer {
    layout: wgpu::BindGroupLayout,
    warp: wgpu::ComputePipeline,
    i420: RgbaToI420,
}

/// What a batch renders into.
enum Output {
    Rgba,
    I420,
}

impl FaceRenderer {
    pub fn new(gpu: &Gpu) -> Self {
        use super::Binding::{Read, ReadWrite};
        let (layout, [warp]) =
            super::compute_pipelines(gpu, "face_warp", SHADER, &[Read, Read, ReadWrite], ["warp_main"]);
        Self { layout, warp, i420: RgbaToI420::new(gpu) }
    }

    /// Uploads a replica's portrait once; frames then only send records.
    pub fn upload(&self, gpu: &Gpu, replica: &Replica) -> GpuPortrait {
        let buffer = gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("portrait"),
            contents: bytemuck::cast_slice(&replica.portrait),
            usage: wgpu::BufferUsages::STORAGE,
        });
        GpuPortrait { buffer, size: replica.size }
    }

    /// Renders one frame per (portrait, record) and returns them as I420,
    /// ready for the encoder, all in one submission.
    pub fn render(&self, gpu: &Gpu, frames: &[(&GpuPortrait, &[u32])]) -> Result<Vec<Vec<u8>>, DeviceError> {
        self.run(gpu, frames, Output::I420)
    }

    /// Renders the frames and returns them as RGBA (R in the low byte),
    /// for comparison with the CPU reference.
    pub fn render_rgba(&self, gpu: &Gpu, frames: &[(&GpuPortrait, &[u32])]) -> Result<Vec<Vec<u32>>, DeviceError> {
        let bytes = self.run(gpu, frames, Output::Rgba)?;
        Ok(bytes.iter().map(|b| bytemuck::cast_slice(b).to_vec()).collect())
    }

    fn run(&self, gpu: &Gpu, frames: &[(&GpuPortrait, &[u32])], output: Output) -> Result<Vec<Vec<u8>>, DeviceError> {
        if frames.is_empty() {
            return Ok(Vec::new());
        }
        let device = &gpu.device;
        let record_stride = aligned((RECORD_WORDS * 4) as u64);
        let mut records = vec![0u32; (record_stride as usize / 4) * frames.len()];
        let (mut rgba_at, mut i420_at, mut rgba_total, mut i420_total) = (vec![], vec![], 0u64, 0u64);
        for (k, (portrait, record)) in frames.iter().enumerate() {
            let pixels = portrait.size as usize * portrait.size as usize;
            warp::check(record, pixels, pixels).map_err(DeviceError::Kernel)?;
            if record[warp::H_WIDTH] != portrait.size {
                return Err(DeviceError::Kernel(tete_kernels::KernelError::BadRecord(format!(
                    "record for a {}-pixel frame, portrait of {}",
                    record[warp::H_WIDTH],
                    portrait.size
                ))));
            }
            let at = k * record_stride as usize / 4;
            records[at..at + RECORD_WORDS].copy_from_slice(record);
            rgba_at.push(rgba_total);
            rgba_total += aligned(pixels as u64 * 4);
            i420_at.push(i420_total);
            i420_total += aligned(i420_len(portrait.size, portrait.size) as u64);
        }
        let records = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("frame records"),
            contents: bytemuck::cast_slice(&records),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let storage = |label, size| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        };
        let rgba = storage("rgba frames", rgba_total);
        let i420 = match output {
            Output::I420 => Some(storage("i420 frames", i420_total)),
            Output::Rgba => None,
        };
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("face") });
        for (k, (portrait, _)) in frames.iter().enumerate() {
            let size = portrait.size;
            let bind = super::bind_resources(
                gpu,
                "face_warp",
                &self.layout,
                vec![
                    super::range(&records, k as u64 * record_stride, (RECORD_WORDS * 4) as u64),
                    portrait.buffer.as_entire_binding(),
                    super::range(&rgba, rgba_at[k], size as u64 * size as u64 * 4),
                ],
            );
            let mut pass = encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("face_warp"), timestamp_writes: None });
            pass.set_bind_group(0, &bind, &[]);
            pass.set_pipeline(&self.warp);
            pass.dispatch_workgroups(size.div_ceil(8), size.div_ceil(8), 1);
        }
        if let Some(i420) = &i420 {
            for (k, (portrait, _)) in frames.iter().enumerate() {
                let size = portrait.size;
                self.i420.encode(gpu, &mut encoder, size, size, (&rgba, rgba_at[k]), (i420, i420_at[k]));
            }
        }
        let (source, total, offsets) = match &i420 {
            Some(b) => (b, i420_total, &i420_at),
            None => (&rgba, rgba_total, &rgba_at),
        };
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("frames readback"),
            size: total,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        encoder.copy_buffer_to_buffer(source, 0, &readback, 0, total);
        gpu.queue.submit([encoder.finish()]);
        let bytes: Vec<u8> = super::read_back(gpu, &readback)?;
        Ok(frames
            .iter()
            .zip(offsets)
            .map(|((portrait, _), &at)| {
                let s = portrait.size;
                let len = match output {
                    Output::I420 => i420_len(s, s),
                    Output::Rgba => s as usize * s as usize * 4,
                };
                bytes[at as usize..at as usize + len].to_vec()
            })
            .collect())
    }
}
