//! Running one decoded command through the host's wgpu.
//!
//! Every id is looked up in this context's table only; every value that the `wgpu` front end
//! would `panic!` on (empty or out-of-range slices, unknown flag bits) is checked here first
//! and becomes a validation error. Everything else is wgpu-core's and naga's to validate.

use std::borrow::Cow;
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use webgpu_wire::{
    AdapterDesc, BindingResource, BindingType, BufferBindingKind, Command, CompilationMessage,
    EncoderCommand, Id, MapMode, Reply,
};

use crate::context::{
    from_wgpu, oom, validation, BufferState, CmdResult, Context, DeviceState, Entry, Object,
};

pub(crate) fn label(l: &Option<String>) -> Option<&str> {
    l.as_deref()
}

impl Context {
    /// Checks that `id` may name a new object costing `bytes`.
    pub(crate) fn reserve(&self, id: Id, bytes: u64) -> Result<(), webgpu_wire::GpuError> {
        if id == 0 || self.objects.contains_key(&id) {
            return Err(validation(format!(
                "object id {id} is zero or already in use in this context"
            )));
        }
        if self.objects.len() >= self.budget.max_objects {
            return Err(oom(format!(
                "this context already holds {} objects, its budget's limit",
                self.budget.max_objects
            )));
        }
        if bytes > self.budget.max_bytes.saturating_sub(self.bytes) {
            return Err(oom(format!(
                "{bytes} more bytes would take this context over its budget of {} bytes \
                 ({} in use)",
                self.budget.max_bytes, self.bytes
            )));
        }
        Ok(())
    }

    pub(crate) fn insert(&mut self, device: Id, id: Id, bytes: u64, obj: Object) {
        self.bytes += bytes;
        self.objects.insert(id, Entry { device, bytes, obj });
    }

    pub(crate) fn device(&self, id: Id) -> Result<&DeviceState, webgpu_wire::GpuError> {
        get!(self, id, Device).map(|d| &**d)
    }

    pub(crate) fn device_mut(&mut self, id: Id) -> Result<&mut DeviceState, webgpu_wire::GpuError> {
        match self.objects.get_mut(&id) {
            Some(Entry {
                obj: Object::Device(d),
                ..
            }) => Ok(d),
            _ => Err(validation(format!(
                "id {id} names no device of this context"
            ))),
        }
    }

    /// The device a queue belongs to.
    pub(crate) fn queue_device(&self, queue: Id) -> Result<Id, webgpu_wire::GpuError> {
        get!(self, queue, Queue)?;
        Ok(self.objects[&queue].device)
    }

    pub(crate) fn buffer(&self, id: Id) -> Result<&wgpu::Buffer, webgpu_wire::GpuError> {
        get!(self, id, Buffer).map(|b| &b.buffer)
    }

    pub(crate) fn run(&mut self, cmd: Command) -> CmdResult {
        match cmd {
            Command::RequestAdapter => {
                let info = self.adapter.get_info();
                Ok(Reply::Adapter(Box::new(AdapterDesc {
                    name: info.name,
                    vendor: info.vendor,
                    device: info.device,
                    device_type: match info.device_type {
                        wgpu::DeviceType::Other => 0,
                        wgpu::DeviceType::IntegratedGpu => 1,
                        wgpu::DeviceType::DiscreteGpu => 2,
                        wgpu::DeviceType::VirtualGpu => 3,
                        wgpu::DeviceType::Cpu => 4,
                    },
                    driver: info.driver,
                    driver_info: info.driver_info,
                    limits: self.adapter.limits(),
                })))
            }
            Command::RequestDevice {
                device,
                queue,
                label: l,
                limits,
                features,
            } => self.request_device(device, queue, l, limits, features),
            Command::DestroyDevice { device } => {
                self.device(device)?.device.destroy();
                Ok(Reply::Ok)
            }
            Command::PushErrorScope { device, filter } => {
                let max = self.budget.max_error_scopes;
                let d = self.device_mut(device)?;
                if d.scopes.len() >= max {
                    return Err(oom(format!(
                        "more than {max} error scopes pushed on device {device}"
                    )));
                }
                d.scopes.push((filter, None));
                Ok(Reply::Ok)
            }
            Command::PopErrorScope { device } => {
                let d = self.device_mut(device)?;
                match d.scopes.pop() {
                    Some((_, e)) => Ok(Reply::Scope(e)),
                    None => Err(validation("pop_error_scope with no error scope pushed")),
                }
            }
            Command::Poll { device, wait } => {
                let d = self.device(device)?;
                let ty = if wait {
                    wgpu::PollType::wait_indefinitely()
                } else {
                    wgpu::PollType::Poll
                };
                d.device
                    .poll(ty)
                    .map_err(|e| validation(format!("device.poll failed: {e}")))?;
                let completed = d.completed.load(Ordering::Acquire);
                Ok(Reply::Polled {
                    completed,
                    queue_empty: completed >= d.submitted,
                })
            }
            Command::CreateBuffer {
                device,
                id,
                label: l,
                size,
                usage,
                mapped_at_creation,
            } => {
                let usage = wgpu::BufferUsages::from_bits(usage)
                    .ok_or_else(|| validation(format!("unknown buffer usage bits {usage:#x}")))?;
                let d = self.device(device)?;
                // Over the device's limit wgpu refuses without allocating: let it say so, in
                // its words; within the limit the budget decides first.
                let charge = if size > d.device.limits().max_buffer_size {
                    0
                } else {
                    size
                };
                self.reserve(id, charge)?;
                let d = self.device(device)?;
                let buffer = d.device.create_buffer(&wgpu::BufferDescriptor {
                    label: label(&l),
                    size,
                    usage,
                    mapped_at_creation,
                });
                let mapped = mapped_at_creation.then_some((0, size, true));
                self.insert(
                    device,
                    id,
                    charge,
                    Object::Buffer(BufferState {
                        buffer,
                        size,
                        mapped,
                    }),
                );
                Ok(Reply::Ok)
            }
            Command::DestroyBuffer { buffer } => {
                self.buffer(buffer)?.destroy();
                if let Some(e) = self.objects.get_mut(&buffer) {
                    self.bytes -= e.bytes;
                    e.bytes = 0;
                }
                Ok(Reply::Ok)
            }
            Command::WriteBuffer {
                queue,
                buffer,
                offset,
                data,
            } => {
                let dev = self.queue_device(queue)?;
                let b = self.buffer(buffer)?;
                self.device(dev)?.queue.write_buffer(b, offset, &data);
                Ok(Reply::Ok)
            }
            Command::MapBuffer {
                buffer,
                mode,
                offset,
                size,
            } => self.map(buffer, mode, offset, size),
            Command::UnmapBuffer { buffer, writes } => self.unmap(buffer, writes),
            Command::CreateShaderModule {
                device,
                id,
                label: l,
                wgsl,
            } => {
                self.reserve(id, 0)?;
                let m = self.device(device)?.device.create_shader_module(
                    wgpu::ShaderModuleDescriptor {
                        label: label(&l),
                        source: wgpu::ShaderSource::Wgsl(Cow::Owned(wgsl)),
                    },
                );
                self.insert(device, id, 0, Object::ShaderModule(m));
                Ok(Reply::Ok)
            }
            Command::GetCompilationInfo { module } => {
                let m = get!(self, module, ShaderModule)?;
                let info = pollster::block_on(m.get_compilation_info());
                Ok(Reply::CompilationInfo(
                    info.messages
                        .into_iter()
                        .map(|m| CompilationMessage {
                            message: m.message,
                            kind: match m.message_type {
                                wgpu::CompilationMessageType::Error => 0,
                                wgpu::CompilationMessageType::Warning => 1,
                                wgpu::CompilationMessageType::Info => 2,
                            },
                            location: m
                                .location
                                .map(|l| (l.line_number, l.line_position, l.offset, l.length)),
                        })
                        .collect(),
                ))
            }
            Command::CreateBindGroupLayout {
                device,
                id,
                label: l,
                entries,
            } => {
                self.reserve(id, 0)?;
                let mut out = Vec::with_capacity(entries.len());
                for e in &entries {
                    let visibility =
                        wgpu::ShaderStages::from_bits(e.visibility).ok_or_else(|| {
                            validation(format!("unknown shader stage bits {:#x}", e.visibility))
                        })?;
                    let ty = match &e.ty {
                        BindingType::Buffer {
                            kind,
                            has_dynamic_offset,
                            min_binding_size,
                        } => wgpu::BindingType::Buffer {
                            ty: match kind {
                                BufferBindingKind::Uniform => wgpu::BufferBindingType::Uniform,
                                BufferBindingKind::Storage { read_only } => {
                                    wgpu::BufferBindingType::Storage {
                                        read_only: *read_only,
                                    }
                                }
                            },
                            has_dynamic_offset: *has_dynamic_offset,
                            min_binding_size: nonzero64(*min_binding_size, "min_binding_size")?,
                        },
                        BindingType::Sampler(t) => wgpu::BindingType::Sampler(*t),
                        BindingType::Texture {
                            sample_type,
                            view_dimension,
                            multisampled,
                        } => wgpu::BindingType::Texture {
                            sample_type: *sample_type,
                            view_dimension: *view_dimension,
                            multisampled: *multisampled,
                        },
                        BindingType::StorageTexture {
                            access,
                            format,
                            view_dimension,
                        } => wgpu::BindingType::StorageTexture {
                            access: *access,
                            format: *format,
                            view_dimension: *view_dimension,
                        },
                    };
                    let count = match e.count {
                        None => None,
                        Some(c) => Some(
                            NonZeroU32::new(c)
                                .ok_or_else(|| validation("bind group layout entry count 0"))?,
                        ),
                    };
                    out.push(wgpu::BindGroupLayoutEntry {
                        binding: e.binding,
                        visibility,
                        ty,
                        count,
                    });
                }
                let bgl = self.device(device)?.device.create_bind_group_layout(
                    &wgpu::BindGroupLayoutDescriptor {
                        label: label(&l),
                        entries: &out,
                    },
                );
                self.insert(device, id, 0, Object::BindGroupLayout(bgl));
                Ok(Reply::Ok)
            }
            Command::CreateBindGroup {
                device,
                id,
                label: l,
                layout,
                entries,
            } => {
                self.reserve(id, 0)?;
                let layout = get!(self, layout, BindGroupLayout)?;
                let mut wentries = Vec::with_capacity(entries.len());
                for e in &entries {
                    let resource = match &e.resource {
                        BindingResource::Buffer {
                            buffer,
                            offset,
                            size,
                        } => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: self.buffer(*buffer)?,
                            offset: *offset,
                            size: nonzero64(*size, "binding size")?,
                        }),
                        BindingResource::Sampler(s) => {
                            wgpu::BindingResource::Sampler(get!(self, *s, Sampler)?)
                        }
                        BindingResource::TextureView(v) => {
                            wgpu::BindingResource::TextureView(get!(self, *v, TextureView)?)
                        }
                    };
                    wentries.push(wgpu::BindGroupEntry {
                        binding: e.binding,
                        resource,
                    });
                }
                let bg =
                    self.device(device)?
                        .device
                        .create_bind_group(&wgpu::BindGroupDescriptor {
                            label: label(&l),
                            layout,
                            entries: &wentries,
                        });
                self.insert(device, id, 0, Object::BindGroup(bg));
                Ok(Reply::Ok)
            }
            Command::CreatePipelineLayout {
                device,
                id,
                label: l,
                bind_group_layouts,
                immediate_size,
            } => {
                self.reserve(id, 0)?;
                let mut bgls = Vec::with_capacity(bind_group_layouts.len());
                for b in &bind_group_layouts {
                    bgls.push(match b {
                        None => None,
                        Some(b) => Some(get!(self, *b, BindGroupLayout)?),
                    });
                }
                let pl = self.device(device)?.device.create_pipeline_layout(
                    &wgpu::PipelineLayoutDescriptor {
                        label: label(&l),
                        bind_group_layouts: &bgls,
                        immediate_size,
                    },
                );
                self.insert(device, id, 0, Object::PipelineLayout(pl));
                Ok(Reply::Ok)
            }
            Command::CreateComputePipeline {
                device,
                id,
                label: l,
                layout,
                module,
                entry_point,
                constants,
                zero_initialize_workgroup_memory,
            } => {
                self.reserve(id, 0)?;
                let layout = match layout {
                    None => None,
                    Some(p) => Some(get!(self, p, PipelineLayout)?),
                };
                let module = get!(self, module, ShaderModule)?;
                let constants: Vec<(&str, f64)> =
                    constants.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                let p = self.device(device)?.device.create_compute_pipeline(
                    &wgpu::ComputePipelineDescriptor {
                        label: label(&l),
                        layout,
                        module,
                        entry_point: entry_point.as_deref(),
                        compilation_options: wgpu::PipelineCompilationOptions {
                            constants: &constants,
                            zero_initialize_workgroup_memory,
                        },
                        cache: None,
                    },
                );
                self.insert(device, id, 0, Object::ComputePipeline(p));
                Ok(Reply::Ok)
            }
            Command::GetBindGroupLayout {
                pipeline,
                index,
                id,
            } => {
                self.reserve(id, 0)?;
                let dev = self.objects.get(&pipeline).map(|e| e.device).unwrap_or(0);
                let bgl = match self.objects.get(&pipeline) {
                    Some(Entry {
                        obj: Object::RenderPipeline(p),
                        ..
                    }) => p.get_bind_group_layout(index),
                    _ => get!(self, pipeline, ComputePipeline)?.get_bind_group_layout(index),
                };
                self.insert(dev, id, 0, Object::BindGroupLayout(bgl));
                Ok(Reply::Ok)
            }
            Command::FinishEncoder {
                device,
                id,
                label: l,
                commands,
            } => {
                self.reserve(id, 0)?;
                let mut enc = self
                    .device(device)?
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: label(&l) });
                self.record(&mut enc, &commands)?;
                let cb = enc.finish();
                self.insert(device, id, 0, Object::CommandBuffer(cb));
                Ok(Reply::Ok)
            }
            Command::Submit {
                queue,
                command_buffers,
            } => self.submit(queue, command_buffers),
            Command::CreateTexture {
                device,
                id,
                label: l,
                desc,
            } => self.create_texture(device, id, l, desc),
            Command::DestroyTexture { texture } => {
                get!(self, texture, Texture)?.destroy();
                if let Some(e) = self.objects.get_mut(&texture) {
                    self.bytes -= e.bytes;
                    e.bytes = 0;
                }
                Ok(Reply::Ok)
            }
            Command::CreateTextureView {
                texture,
                id,
                label: l,
                desc,
            } => self.create_view(texture, id, l, desc),
            Command::CreateSampler {
                device,
                id,
                label: l,
                desc,
            } => self.create_sampler(device, id, l, desc),
            Command::WriteTexture {
                queue,
                dst,
                data,
                layout,
                size,
            } => {
                let dev = self.queue_device(queue)?;
                let dst = self.texture_copy(&dst)?;
                self.device(dev)?
                    .queue
                    .write_texture(dst, &data, layout.into(), size);
                Ok(Reply::Ok)
            }
            Command::CreateRenderPipeline {
                device,
                id,
                label: l,
                desc,
            } => self.create_render_pipeline(device, id, l, *desc),
            Command::Release { id } => match self.objects.remove(&id) {
                Some(e) => {
                    self.bytes -= e.bytes;
                    Ok(Reply::Ok)
                }
                None => Err(validation(format!(
                    "release of id {id}, which names nothing"
                ))),
            },
        }
    }

    fn request_device(
        &mut self,
        device: Id,
        queue: Id,
        l: Option<String>,
        limits: wgpu::Limits,
        features: [u64; 2],
    ) -> CmdResult {
        self.reserve(device, 0)?;
        if queue == device {
            return Err(validation("device and queue ids must differ"));
        }
        self.reserve(queue, 0)?;
        if self.objects.len() + 2 > self.budget.max_objects {
            return Err(oom(
                "no room in this context's budget for a device and its queue",
            ));
        }
        if features != [0, 0] {
            return Err(validation(
                "requested features are not offered: this protocol version offers none",
            ));
        }
        let adapter_limits = self.adapter.limits();
        if !limits.check_limits(&adapter_limits) {
            return Err(validation(
                "requested limits are better than the host adapter's limits",
            ));
        }
        let (dev, q) = pollster::block_on(self.adapter.request_device(&wgpu::DeviceDescriptor {
            label: label(&l),
            required_features: wgpu::Features::empty(),
            required_limits: limits,
            ..Default::default()
        }))
        .map_err(|e| validation(format!("request_device failed on the host: {e}")))?;
        let sink = Arc::clone(&self.sink);
        dev.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut s) = sink.lock() {
                // One command reports a handful of errors; the cap only guards a runaway.
                if s.len() < 1024 {
                    s.push((device, from_wgpu(&e)));
                }
            }
        }));
        let granted = dev.limits();
        self.insert(
            device,
            device,
            0,
            Object::Device(Box::new(DeviceState {
                device: dev,
                queue: q,
                scopes: Vec::new(),
                submitted: 0,
                completed: Arc::new(AtomicU64::new(0)),
            })),
        );
        self.insert(device, queue, 0, Object::Queue(()));
        Ok(Reply::Device(Box::new(granted)))
    }

    fn map(&mut self, buffer: Id, mode: MapMode, offset: u64, size: u64) -> CmdResult {
        let dev = self.objects.get(&buffer).map(|e| e.device).unwrap_or(0);
        let state = get!(self, buffer, Buffer)?;
        let end = offset
            .checked_add(size)
            .filter(|e| *e <= state.size && size > 0)
            .ok_or_else(|| {
                validation(format!(
                    "map range {offset}+{size} is empty or outside the buffer of {} bytes",
                    state.size
                ))
            })?;
        // The reply carries the range: it must fit in one message.
        if size > (webgpu_wire::MAX_MESSAGE - 4096) as u64 {
            return Err(validation(format!(
                "map range of {size} bytes is over the protocol's limit of {} bytes per \
                 mapping; map the buffer in parts",
                webgpu_wire::MAX_MESSAGE - 4096
            )));
        }
        let b = state.buffer.clone();
        let device = self.device(dev)?.device.clone();
        let result: Arc<Mutex<Option<Result<(), wgpu::BufferAsyncError>>>> = Arc::default();
        let r2 = Arc::clone(&result);
        let wmode = match mode {
            MapMode::Read => wgpu::MapMode::Read,
            MapMode::Write => wgpu::MapMode::Write,
        };
        b.slice(offset..end).map_async(wmode, move |r| {
            if let Ok(mut s) = r2.lock() {
                *s = Some(r);
            }
        });
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| validation(format!("device.poll failed while mapping: {e}")))?;
        // Like native wgpu, a mapping that fails in its callback (the buffer is already
        // mapped, or destroyed) tells only the callback; whatever wgpu-core reported as an
        // error already went to the scopes through the device's handler.
        let outcome = result.lock().ok().and_then(|mut s| s.take());
        match outcome {
            Some(Ok(())) => {}
            Some(Err(e)) => return Ok(Reply::Failed(format!("buffer mapping failed: {e}"))),
            None => return Ok(Reply::Failed("buffer mapping did not complete".into())),
        }
        // The guest's view starts from the buffer's current contents in both modes: bytes
        // the guest does not write keep their value.
        let data = match b.slice(offset..end).get_mapped_range() {
            Ok(v) => v.to_vec(),
            Err(e) => return Err(validation(format!("mapped range unavailable: {e}"))),
        };
        if let Some(Entry {
            obj: Object::Buffer(s),
            ..
        }) = self.objects.get_mut(&buffer)
        {
            s.mapped = Some((offset, end, mode == MapMode::Write));
        }
        Ok(Reply::Mapped(data))
    }

    fn unmap(&mut self, buffer: Id, writes: Vec<(u64, Vec<u8>)>) -> CmdResult {
        let state = get!(self, buffer, Buffer)?;
        let b = state.buffer.clone();
        let mapped = state.mapped;
        let mut result = Ok(Reply::Ok);
        if !writes.is_empty() {
            match mapped {
                Some((start, end, true)) if end > start => {
                    let in_range = writes.iter().all(|(o, d)| {
                        *o >= start && o.checked_add(d.len() as u64).is_some_and(|e| e <= end)
                    });
                    if !in_range {
                        result = Err(validation("written range outside the mapped range"));
                    } else {
                        match b.slice(start..end).get_mapped_range_mut() {
                            Ok(mut view) => {
                                for (o, d) in &writes {
                                    let at = (o - start) as usize;
                                    view.slice(at..at + d.len()).copy_from_slice(d);
                                }
                            }
                            Err(e) => {
                                result = Err(validation(format!("mapped range unavailable: {e}")))
                            }
                        }
                    }
                }
                _ => result = Err(validation("writes to a buffer not mapped for writing")),
            }
        }
        b.unmap();
        if let Some(Entry {
            obj: Object::Buffer(s),
            ..
        }) = self.objects.get_mut(&buffer)
        {
            s.mapped = None;
        }
        result
    }

    fn submit(&mut self, queue: Id, ids: Vec<Id>) -> CmdResult {
        let dev = self.queue_device(queue)?;
        let max = self.budget.max_in_flight;
        {
            let d = self.device(dev)?;
            if d.submitted - d.completed.load(Ordering::Acquire) >= max {
                let _ = d.device.poll(wgpu::PollType::Poll);
            }
            if d.submitted - d.completed.load(Ordering::Acquire) >= max {
                return Err(oom(format!(
                    "{max} submissions are already in flight on this device (the context's \
                     budget); poll the device before submitting more"
                )));
            }
        }
        let mut cbs = Vec::with_capacity(ids.len());
        let mut err = None;
        for id in ids {
            match self.objects.get(&id) {
                Some(Entry {
                    obj: Object::CommandBuffer(_),
                    ..
                }) => {
                    if let Some(Entry {
                        obj: Object::CommandBuffer(cb),
                        ..
                    }) = self.objects.remove(&id)
                    {
                        cbs.push(cb);
                    }
                }
                _ => {
                    err.get_or_insert_with(|| {
                        validation(format!(
                            "submit: id {id} is not an unsubmitted command buffer"
                        ))
                    });
                }
            }
        }
        if let Some(e) = err {
            return Err(e);
        }
        let d = self.device_mut(dev)?;
        d.queue.submit(cbs);
        d.submitted += 1;
        let completed = Arc::clone(&d.completed);
        d.queue.on_submitted_work_done(move || {
            completed.fetch_add(1, Ordering::AcqRel);
        });
        Ok(Reply::Ok)
    }

    fn record(
        &self,
        enc: &mut wgpu::CommandEncoder,
        cmds: &[EncoderCommand],
    ) -> Result<(), webgpu_wire::GpuError> {
        let mut i = 0;
        while i < cmds.len() {
            match &cmds[i] {
                EncoderCommand::BeginComputePass { label: l } => {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: label(l),
                        timestamp_writes: None,
                    });
                    i += 1;
                    loop {
                        match cmds.get(i) {
                            None => return Err(validation("compute pass never ended")),
                            Some(EncoderCommand::EndComputePass) => break,
                            Some(c) => self.pass_command(&mut pass, c)?,
                        }
                        i += 1;
                    }
                }
                EncoderCommand::CopyBufferToBuffer {
                    src,
                    src_offset,
                    dst,
                    dst_offset,
                    size,
                } => enc.copy_buffer_to_buffer(
                    self.buffer(*src)?,
                    *src_offset,
                    self.buffer(*dst)?,
                    *dst_offset,
                    *size,
                ),
                EncoderCommand::ClearBuffer {
                    buffer,
                    offset,
                    size,
                } => enc.clear_buffer(self.buffer(*buffer)?, *offset, *size),
                EncoderCommand::PushDebugGroup(s) => enc.push_debug_group(s),
                EncoderCommand::PopDebugGroup => enc.pop_debug_group(),
                EncoderCommand::InsertDebugMarker(s) => enc.insert_debug_marker(s),
                EncoderCommand::BeginRenderPass(desc) => {
                    i += 1;
                    let end = cmds[i..]
                        .iter()
                        .position(|c| matches!(c, EncoderCommand::EndRenderPass))
                        .ok_or_else(|| validation("render pass never ended"))?;
                    self.record_render_pass(enc, desc, &cmds[i..i + end])?;
                    i += end;
                }
                EncoderCommand::CopyBufferToTexture {
                    src,
                    layout,
                    dst,
                    size,
                } => enc.copy_buffer_to_texture(
                    wgpu::TexelCopyBufferInfo {
                        buffer: self.buffer(*src)?,
                        layout: (*layout).into(),
                    },
                    self.texture_copy(dst)?,
                    *size,
                ),
                EncoderCommand::CopyTextureToBuffer {
                    src,
                    dst,
                    layout,
                    size,
                } => enc.copy_texture_to_buffer(
                    self.texture_copy(src)?,
                    wgpu::TexelCopyBufferInfo {
                        buffer: self.buffer(*dst)?,
                        layout: (*layout).into(),
                    },
                    *size,
                ),
                EncoderCommand::CopyTextureToTexture { src, dst, size } => enc
                    .copy_texture_to_texture(
                        self.texture_copy(src)?,
                        self.texture_copy(dst)?,
                        *size,
                    ),
                other => return Err(validation(format!("{other:?} is only valid inside a pass"))),
            }
            i += 1;
        }
        Ok(())
    }

    fn pass_command(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        c: &EncoderCommand,
    ) -> Result<(), webgpu_wire::GpuError> {
        match c {
            EncoderCommand::SetComputePipeline { pipeline } => {
                pass.set_pipeline(get!(self, *pipeline, ComputePipeline)?)
            }
            EncoderCommand::SetBindGroup {
                index,
                group,
                offsets,
            } => {
                let g = match group {
                    None => None,
                    Some(g) => Some(get!(self, *g, BindGroup)?),
                };
                pass.set_bind_group(*index, g, offsets);
            }
            EncoderCommand::Dispatch { x, y, z } => pass.dispatch_workgroups(*x, *y, *z),
            EncoderCommand::DispatchIndirect { buffer, offset } => {
                pass.dispatch_workgroups_indirect(self.buffer(*buffer)?, *offset)
            }
            EncoderCommand::PushDebugGroup(s) => pass.push_debug_group(s),
            EncoderCommand::PopDebugGroup => pass.pop_debug_group(),
            EncoderCommand::InsertDebugMarker(s) => pass.insert_debug_marker(s),
            other => {
                return Err(validation(format!(
                    "{other:?} is not valid inside a compute pass"
                )))
            }
        }
        Ok(())
    }
}

fn nonzero64(v: Option<u64>, what: &str) -> Result<Option<NonZeroU64>, webgpu_wire::GpuError> {
    match v {
        None => Ok(None),
        Some(v) => NonZeroU64::new(v)
            .map(Some)
            .ok_or_else(|| validation(format!("{what} of 0"))),
    }
}
