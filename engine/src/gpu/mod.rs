//! The wgpu side of the device layer: one adapter, device and queue, and the
//! compute pipelines that run the WGSL shaders in `shaders/`.

mod color;
mod face;
mod mel;

pub use color::RgbaToI420;
pub use face::{FaceRenderer, GpuPortrait};
pub use mel::LogMel;

use crate::device::DeviceError;

/// Which kinds of wgpu adapter are acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterKind {
    /// A hardware GPU (discrete, integrated or virtual); software rasterisers are refused.
    Hardware,
    /// Any adapter, a software one (Mesa's lavapipe) included.
    Any,
}

/// A wgpu adapter with its device and queue.
#[derive(Debug)]
pub struct Gpu {
    pub info: wgpu::AdapterInfo,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
}

impl Gpu {
    /// Opens the best adapter of the acceptable kind: hardware before
    /// software, discrete before integrated, Vulkan before GL.
    pub fn open(kind: AdapterKind) -> Result<Self, DeviceError> {
        pollster::block_on(Self::open_async(kind))
    }

    async fn open_async(kind: AdapterKind) -> Result<Self, DeviceError> {
        // Vulkan, Metal and DX12 unless WGPU_BACKEND says otherwise: the GL
        // backend adds nothing on the machines this runs on but noise about
        // missing display servers.
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY);
        desc.backends = backends;
        let instance = wgpu::Instance::new(desc);
        let adapters = instance.enumerate_adapters(backends).await;
        let seen: Vec<String> = adapters.iter().map(|a| describe(&a.get_info())).collect();
        let adapter = adapters
            .into_iter()
            .filter(|a| kind == AdapterKind::Any || a.get_info().device_type != wgpu::DeviceType::Cpu)
            .min_by_key(|a| rank(&a.get_info()))
            .ok_or_else(|| DeviceError::NoAdapter {
                kind,
                seen: if seen.is_empty() { "none".into() } else { seen.join("; ") },
            })?;
        let info = adapter.get_info();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("tete"),
                required_limits: wgpu::Limits::downlevel_defaults().using_resolution(adapter.limits()),
                ..Default::default()
            })
            .await
            .map_err(|e| DeviceError::Wgpu(format!("{}: {e}", describe(&info))))?;
        Ok(Self { info, device, queue })
    }

    /// A one-line description of the adapter: name, type, backend, driver.
    pub fn describe(&self) -> String {
        describe(&self.info)
    }

    /// Whether the adapter is a software rasteriser (lavapipe/llvmpipe).
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Blocks until all submitted work has finished.
    pub fn wait_idle(&self) -> Result<(), DeviceError> {
        self.device.poll(wgpu::PollType::wait_indefinitely()).map(|_| ()).map_err(|e| DeviceError::Wgpu(e.to_string()))
    }
}

/// How a compute shader's binding is used.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Binding {
    Uniform,
    Read,
    ReadWrite,
}

/// Compiles a WGSL compute shader whose bindings are all buffers in group
/// 0 (in order), and one pipeline per entry point.
pub(crate) fn compute_pipelines<const N: usize>(
    gpu: &Gpu,
    label: &str,
    source: &str,
    bindings: &[Binding],
    entry_points: [&str; N],
) -> (wgpu::BindGroupLayout, [wgpu::ComputePipeline; N]) {
    let device = &gpu.device;
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match b {
                    Binding::Uniform => wgpu::BufferBindingType::Uniform,
                    Binding::Read => wgpu::BufferBindingType::Storage { read_only: true },
                    Binding::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    let layout =
        device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(label), entries: &entries });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(label),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let pipelines = entry_points.map(|entry_point| {
        device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry_point),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(entry_point),
            compilation_options: Default::default(),
            cache: None,
        })
    });
    (layout, pipelines)
}

/// Binds buffers to a layout made by [`compute_pipelines`], in binding order.
pub(crate) fn bind(
    gpu: &Gpu,
    label: &str,
    layout: &wgpu::BindGroupLayout,
    buffers: &[&wgpu::Buffer],
) -> wgpu::BindGroup {
    let whole: Vec<wgpu::BindingResource> = buffers.iter().map(|b| b.as_entire_binding()).collect();
    bind_resources(gpu, label, layout, whole)
}

/// Binds buffer ranges (or any resources) to a layout, in binding order.
pub(crate) fn bind_resources(
    gpu: &Gpu,
    label: &str,
    layout: &wgpu::BindGroupLayout,
    resources: Vec<wgpu::BindingResource>,
) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry> = resources
        .into_iter()
        .enumerate()
        .map(|(i, resource)| wgpu::BindGroupEntry { binding: i as u32, resource })
        .collect();
    gpu.device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(label), layout, entries: &entries })
}

/// A range of a buffer as a binding (`len` bytes from `offset`).
pub(crate) fn range(buffer: &wgpu::Buffer, offset: u64, len: u64) -> wgpu::BindingResource<'_> {
    wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer, offset, size: wgpu::BufferSize::new(len) })
}

/// Maps a finished readback buffer (after the work that fills it was
/// submitted), waits for the device, and copies the contents out.
pub(crate) fn read_back<T: bytemuck::Pod>(gpu: &Gpu, buffer: &wgpu::Buffer) -> Result<Vec<T>, DeviceError> {
    let slice = buffer.slice(..);
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    gpu.wait_idle()?;
    rx.recv()
        .map_err(|_| DeviceError::Wgpu("readback callback was dropped".into()))?
        .map_err(|e| DeviceError::Wgpu(format!("readback failed: {e}")))?;
    let data = bytemuck::cast_slice(
        &slice.get_mapped_range().map_err(|e| DeviceError::Wgpu(format!("readback mapping: {e}")))?,
    )
    .to_vec();
    buffer.unmap();
    Ok(data)
}

fn rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let device = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    (device, backend)
}

fn describe(info: &wgpu::AdapterInfo) -> String {
    let driver = [info.driver.as_str(), info.driver_info.as_str()]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "{} ({:?}, {:?}{})",
        info.name,
        info.device_type,
        info.backend,
        if driver.is_empty() { String::new() } else { format!(", {driver}") }
    )
}
