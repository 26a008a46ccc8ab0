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
        let device = &gpu.device;
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("rgba_to_i420"),
            source: wgpu::ShaderSource::Wgsl(SHADER.into()),
        });
        let entry = |binding, ty| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty,
            count: None,
        };
        let storage = |read_only| wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("rgba_to_i420"),
            entries: &[
                entry(
                    0,
                    wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                ),
                entry(1, storage(true)),
                entry(2, storage(false)),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("rgba_to_i420"),
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
        Self { luma: pipeline("luma_main"), chroma: pipeline("chroma_main"), layout }
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
        let params = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::cast_slice(&[width, height]),
            usage: wgpu::BufferUsages::UNIFORM,
        });
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
        let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("rgba_to_i420"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: params.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: input.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 2, resource: output.as_entire_binding() },
            ],
        });
        let mut encoder =
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("rgba_to_i420") });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("rgba_to_i420"),
                timestamp_writes: None,
            });
            pass.set_bind_group(0, &bind, &[]);
            pass.set_pipeline(&self.luma);
            pass.dispatch_workgroups((width / 4).div_ceil(8), height.div_ceil(8), 1);
            pass.set_pipeline(&self.chroma);
            pass.dispatch_workgroups((width / 8).div_ceil(8), (height / 2).div_ceil(8), 1);
        }
        encoder.copy_buffer_to_buffer(&output, 0, &readback, 0, out_bytes);
        gpu.queue.submit([encoder.finish()]);
        super::read_back(gpu, &readback)
    }
}
