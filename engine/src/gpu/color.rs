//! RGBA → I420 on the GPU (`shaders/rgba_to_i420.wgsl`), the last step of
//! the renderer before the H.264 encoder.

use wgpu::util::DeviceExt;

use super::Gpu;
use crate::device::DeviceError;
use tete_kernels::cpu::{check_i420_frame, i420_len};

const SHADER: &str = include_str!("../../../shaders/rgba_to_i420.wgsl");

/// The compiled RGBA → I420 pipelines.
#[derive(Debug)]
pub struct RgbaToI420 {
    layout: wgpu::BindGroupLayout,
    luma: wgpu::ComputePipeline,
    chroma: wgpu::ComputePipeline,
}

impl RgbaToI420 {
    pub fn new(gpu: &Gpu) -> Self {
        use super::Binding::{Read, ReadWrite, Uniform};
        let (layout, [luma, chroma]) = super::compute_pipelines(
            gpu,
            "rgba_to_i420",
            SHADER,
            &[Uniform, Read, ReadWrite],
            ["luma_main", "chroma_main"],
        );
        Self { layout, luma, chroma }
    }

    /// Converts one frame and reads the result back; same contract as
    /// `tete_kernels::cpu::rgba_to_i420`.
    pub fn convert(&self, gpu: &Gpu, rgba: &[u32], width: u32, height: u32) -> Result<Vec<u8>, DeviceError> {
        check_i420_frame(width, height).map_err(DeviceError::Kernel)?;
        let pixels = width as usize * height as usize;
        if rgba.len() != pixels {
            return Err(DeviceError::Kernel(tete_kernels::KernelError::BadBufferLength {
                what: "RGBA input",
                width,
                height,
                expected: pixels,
                actual: rgba.len(),
            }));
        }
        let device = &gpu.device;
        let out_bytes = i420_len(width, height) as u64;
        let input = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("rgba"),
            contents: bytemuck::cast_slice(rgba),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let output = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("i420"),
            size: out_bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("i420 readback"),
            size: out_bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder =
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("rgba_to_i420") });
        self.encode(gpu, &mut encoder, width, height, (&input, 0), (&output, 0));
        encoder.copy_buffer_to_buffer(&output, 0, &readback, 0, out_bytes);
        gpu.queue.submit([encoder.finish()]);
        super::read_back(gpu, &readback)
    }

    /// Records the conversion of the `width`×`height` RGBA frame at byte
    /// `input.1` of `input.0` into the I420 frame at byte `output.1` of
    /// `output.0` (both offsets multiples of 256). The caller has checked
    /// the frame size.
    pub(crate) fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        width: u32,
        height: u32,
        input: (&wgpu::Buffer, u64),
        output: (&wgpu::Buffer, u64),
    ) {
        let params = gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::cast_slice(&[width, height]),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let in_bytes = width as u64 * height as u64 * 4;
        let out_bytes = i420_len(width, height) as u64;
        let bind = super::bind_resources(
            gpu,
            "rgba_to_i420",
            &self.layout,
            vec![
                params.as_entire_binding(),
                super::range(input.0, input.1, in_bytes),
                super::range(output.0, output.1, out_bytes),
            ],
        );
        let mut pass = encoder
            .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("rgba_to_i420"), timestamp_writes: None });
        pass.set_bind_group(0, &bind, &[]);
        pass.set_pipeline(&self.luma);
        pass.dispatch_workgroups((width / 4).div_ceil(8), height.div_ceil(8), 1);
        pass.set_pipeline(&self.chroma);
        pass.dispatch_workgroups((width / 8).div_ceil(8), (height / 2).div_ceil(8), 1);
    }
}
