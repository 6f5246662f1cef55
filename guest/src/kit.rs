//! Small helpers for guest programs (and the tests and benches that compare them with
//! native wgpu): a buffer filled at creation, one compute dispatch, a read-back. They use
//! only the ordinary `wgpu` API, so they work on any device, remote or native.

use std::sync::mpsc;

/// A buffer of `usage` holding `data` (mapped at creation, so no queue write is needed).
/// `data.len()` must be a multiple of 4, as wgpu requires of buffers mapped at creation.
pub fn init_buffer(device: &wgpu::Device, usage: wgpu::BufferUsages, data: &[u8]) -> wgpu::Buffer {
    let b = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: data.len() as u64,
        usage,
        mapped_at_creation: true,
    });
    // A failed mapping is reported through the device's error handler, as wgpu does.
    if let Ok(mut view) = b.get_mapped_range_mut(..) {
        view.copy_from_slice(data);
    }
    b.unmap();
    b
}

/// An empty buffer of `size` bytes and `usage`.
pub fn buffer(device: &wgpu::Device, size: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size,
        usage,
        mapped_at_creation: false,
    })
}

/// A compute pipeline of the WGSL `source`'s entry point `main`, its layout derived.
pub fn compute_pipeline(device: &wgpu::Device, source: &str) -> wgpu::ComputePipeline {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: None,
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    })
}

/// A bind group of `pipeline`'s group 0 with `buffers` whole at bindings 0, 1, 2...
pub fn bind_buffers(
    device: &wgpu::Device,
    pipeline: &wgpu::ComputePipeline,
    buffers: &[&wgpu::Buffer],
) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry> = buffers
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource: b.as_entire_binding(),
        })
        .collect();
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &entries,
    })
}

/// Records one dispatch of `[x, y, z]` workgroups of `pipeline` with `bind_group`.
pub fn dispatch(
    encoder: &mut wgpu::CommandEncoder,
    pipeline: &wgpu::ComputePipeline,
    bind_group: &wgpu::BindGroup,
    [x, y, z]: [u32; 3],
) {
    let mut pass = encoder.begin_compute_pass(&Default::default());
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, bind_group, &[]);
    pass.dispatch_workgroups(x, y, z);
}

/// Encodes the WGSL `source`'s `main` over `buffers` (bindings 0, 1, 2...) in
/// `[x, y, z]` workgroups: pipeline, bind group and dispatch in one call.
pub fn encode_compute(
    device: &wgpu::Device,
    encoder: &mut wgpu::CommandEncoder,
    source: &str,
    buffers: &[&wgpu::Buffer],
    workgroups: [u32; 3],
) {
    let pipeline = compute_pipeline(device, source);
    let bind_group = bind_buffers(device, &pipeline, buffers);
    dispatch(encoder, &pipeline, &bind_group, workgroups);
}

/// Maps the `MAP_READ` buffer `staging` (its work already submitted), waits, and returns
/// its bytes; the buffer is unmapped again.
pub fn map_read(device: &wgpu::Device, staging: &wgpu::Buffer) -> Result<Vec<u8>, String> {
    let (tx, rx) = mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| format!("poll: {e}"))?;
    rx.recv()
        .map_err(|e| format!("map callback: {e}"))?
        .map_err(|e| format!("map_async: {e}"))?;
    let out = staging
        .get_mapped_range(..)
        .map_err(|e| format!("mapped range: {e}"))?
        .to_vec();
    staging.unmap();
    Ok(out)
}

/// Copies `src` (a `COPY_SRC` buffer) to a staging buffer and returns its bytes.
pub fn read_buffer(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    src: &wgpu::Buffer,
) -> Result<Vec<u8>, String> {
    let staging = buffer(
        device,
        src.size(),
        wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
    );
    let mut enc = device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(src, 0, &staging, 0, src.size());
    queue.submit([enc.finish()]);
    map_read(device, &staging)
}

/// `words` as little-endian bytes.
pub fn u32_bytes(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Little-endian bytes as words (a trailing partial word is dropped).
pub fn bytes_u32(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
