//! Hostile guests straight into the executor: random, truncated, oversized and wrong-id
//! command streams never panic the host, the budget holds, and contexts stay isolated.

use proptest::prelude::*;
use std::sync::OnceLock;
use webgpu_host::{Budget, Context, Host};
use webgpu_wire::{decode_reply, encode_request, Command, ErrorKind, Reply};

fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| Host::from_env().expect("a wgpu adapter (install mesa-vulkan-drivers)"))
}

fn call(ctx: &mut Context, cmds: &[Command]) -> (Reply, Vec<(u64, webgpu_wire::GpuError)>) {
    decode_reply(&ctx.handle(&encode_request(cmds))).expect("the executor's reply decodes")
}

fn device(ctx: &mut Context, dev: u64, queue: u64) {
    let (r, _) = call(
        ctx,
        &[Command::RequestDevice {
            device: dev,
            queue,
            label: None,
            limits: wgpu::Limits::downlevel_defaults(),
            features: [0, 0],
        }],
    );
    assert!(matches!(r, Reply::Device(_)), "{r:?}");
}

fn buffer(device: u64, id: u64, size: u64) -> Command {
    Command::CreateBuffer {
        device,
        id,
        label: None,
        size,
        usage: (wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST).bits(),
        mapped_at_creation: false,
    }
}

#[test]
fn two_contexts_never_see_each_others_objects() {
    let mut a = host().context(Budget::default());
    let mut b = host().context(Budget::default());
    device(&mut a, 1, 2);
    device(&mut b, 1, 2);
    call(&mut a, &[buffer(1, 10, 256)]);
    // Context b names a's buffer id: it does not exist there.
    let (r, _) = call(
        &mut b,
        &[
            Command::PushErrorScope {
                device: 1,
                filter: ErrorKind::Validation,
            },
            Command::WriteBuffer {
                queue: 2,
                buffer: 10,
                offset: 0,
                data: vec![1; 4],
            },
            Command::PopErrorScope { device: 1 },
        ],
    );
    match r {
        Reply::Scope(Some(e)) => assert!(e.message.contains("id 10 names no live object"), "{e:?}"),
        other => panic!("expected a validation error, got {other:?}"),
    }
    // a's buffer is untouched and mappable in a.
    let (r, _) = call(
        &mut a,
        &[Command::MapBuffer {
            buffer: 10,
            mode: webgpu_wire::MapMode::Read,
            offset: 0,
            size: 256,
        }],
    );
    assert_eq!(r, Reply::Mapped(vec![0; 256]));
}

#[test]
fn reusing_an_id_is_a_validation_error_not_a_replacement() {
    let mut a = host().context(Budget::default());
    device(&mut a, 1, 2);
    let (r, _) = call(
        &mut a,
        &[
            buffer(1, 10, 64),
            Command::PushErrorScope {
                device: 1,
                filter: ErrorKind::Validation,
            },
            buffer(1, 10, 128),
            Command::PopErrorScope { device: 1 },
        ],
    );
    assert!(
        matches!(r, Reply::Scope(Some(ref e)) if e.message.contains("already in use")),
        "{r:?}"
    );
    assert_eq!(a.bytes_in_use(), 64);
}

#[test]
fn object_budget_gives_out_of_memory() {
    let mut a = host().context(Budget {
        max_objects: 5,
        ..Budget::default()
    });
    device(&mut a, 1, 2);
    let mut cmds = vec![Command::PushErrorScope {
        device: 1,
        filter: ErrorKind::OutOfMemory,
    }];
    cmds.extend((10..20).map(|id| buffer(1, id, 4)));
    cmds.push(Command::PopErrorScope { device: 1 });
    let (r, _) = call(&mut a, &cmds);
    assert!(
        matches!(r, Reply::Scope(Some(ref e)) if e.kind == ErrorKind::OutOfMemory),
        "{r:?}"
    );
    assert_eq!(a.object_count(), 5);
}

#[test]
fn garbage_and_oversized_requests_are_refused() {
    let mut a = host().context(Budget::default());
    let (r, _) = decode_reply(&a.handle(b"not a message")).unwrap();
    assert!(matches!(r, Reply::Refused(_)), "{r:?}");
    let mut msg = encode_request(&[Command::RequestAdapter]);
    msg[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let (r, _) = decode_reply(&a.handle(&msg)).unwrap();
    assert!(matches!(r, Reply::Refused(_)), "{r:?}");
}

#[test]
fn a_texture_over_the_device_limits_is_refused_by_wgpu_and_costs_nothing() {
    let mut a = host().context(Budget::default());
    device(&mut a, 1, 2);
    let limits = wgpu::Limits::downlevel_defaults();
    let desc = |width, layers| webgpu_wire::gfx::TextureDesc {
        size: wgpu::Extent3d {
            width,
            height: 4,
            depth_or_array_layers: layers,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba32Float,
        usage: wgpu::TextureUsages::TEXTURE_BINDING.bits(),
        view_formats: vec![],
    };
    for d in [
        desc(limits.max_texture_dimension_2d + 1, 1),
        desc(4, limits.max_texture_array_layers + 1),
        desc(u32::MAX, u32::MAX),
    ] {
        let (r, _) = call(
            &mut a,
            &[
                Command::PushErrorScope {
                    device: 1,
                    filter: ErrorKind::Validation,
                },
                Command::CreateTexture {
                    device: 1,
                    id: 10,
                    label: None,
                    desc: d,
                },
                Command::PopErrorScope { device: 1 },
                Command::Release { id: 10 },
            ],
        );
        assert!(matches!(r, Reply::Ok), "{r:?}");
        assert_eq!(a.bytes_in_use(), 0);
    }
    // The scope saw wgpu's own error (checked before it allocates anything).
    let (r, _) = call(
        &mut a,
        &[
            Command::PushErrorScope {
                device: 1,
                filter: ErrorKind::Validation,
            },
            Command::CreateTexture {
                device: 1,
                id: 11,
                label: None,
                desc: desc(u32::MAX, 1),
            },
            Command::PopErrorScope { device: 1 },
        ],
    );
    assert!(
        matches!(r, Reply::Scope(Some(ref e)) if e.message.contains("Dimension")),
        "{r:?}"
    );
    assert_eq!(a.bytes_in_use(), 0);
}

fn arb_command() -> impl Strategy<Value = Command> {
    let id = 0u64..24;
    prop_oneof![
        Just(Command::RequestAdapter),
        (id.clone(), id.clone()).prop_map(|(device, queue)| Command::RequestDevice {
            device,
            queue,
            label: None,
            limits: wgpu::Limits::downlevel_defaults(),
            features: [0, 0],
        }),
        (
            id.clone(),
            id.clone(),
            0u64..(1 << 22),
            any::<u32>(),
            any::<bool>()
        )
            .prop_map(|(device, id, size, usage, mapped_at_creation)| {
                Command::CreateBuffer {
                    device,
                    id,
                    label: None,
                    size,
                    usage: usage & 0x3ff,
                    mapped_at_creation,
                }
            }),
        (
            id.clone(),
            id.clone(),
            0u64..512,
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(queue, buffer, offset, data)| Command::WriteBuffer {
                queue,
                buffer,
                offset,
                data
            }),
        (id.clone(), any::<bool>(), 0u64..512, 0u64..512).prop_map(|(buffer, w, offset, size)| {
            Command::MapBuffer {
                buffer,
                mode: if w {
                    webgpu_wire::MapMode::Write
                } else {
                    webgpu_wire::MapMode::Read
                },
                offset,
                size,
            }
        }),
        (
            id.clone(),
            proptest::collection::vec(
                (0u64..512, proptest::collection::vec(any::<u8>(), 0..16)),
                0..3
            )
        )
            .prop_map(|(buffer, writes)| Command::UnmapBuffer { buffer, writes }),
        (id.clone(), id.clone(), "[ -~]{0,40}").prop_map(|(device, id, wgsl)| {
            Command::CreateShaderModule {
                device,
                id,
                label: None,
                wgsl,
            }
        }),
        (id.clone(), id.clone(), id.clone()).prop_map(|(device, id, module)| {
            Command::CreateComputePipeline {
                device,
                id,
                label: None,
                layout: None,
                module,
                entry_point: None,
                constants: vec![],
                zero_initialize_workgroup_memory: true,
            }
        }),
        (id.clone(), 0u32..8, id.clone()).prop_map(|(pipeline, index, id)| {
            Command::GetBindGroupLayout {
                pipeline,
                index,
                id,
            }
        }),
        (
            id.clone(),
            id.clone(),
            proptest::collection::vec(arb_encoder(), 0..8)
        )
            .prop_map(|(device, id, commands)| Command::FinishEncoder {
                device,
                id,
                label: None,
                commands
            }),
        (id.clone(), proptest::collection::vec(id.clone(), 0..3)).prop_map(
            |(queue, command_buffers)| Command::Submit {
                queue,
                command_buffers
            }
        ),
        (id.clone(), 0u8..3).prop_map(|(device, f)| Command::PushErrorScope {
            device,
            filter: [
                ErrorKind::Validation,
                ErrorKind::OutOfMemory,
                ErrorKind::Internal
            ][f as usize]
        }),
        id.clone()
            .prop_map(|device| Command::PopErrorScope { device }),
        (id.clone(), any::<bool>()).prop_map(|(device, wait)| Command::Poll { device, wait }),
        id.clone()
            .prop_map(|buffer| Command::DestroyBuffer { buffer }),
        id.clone()
            .prop_map(|device| Command::DestroyDevice { device }),
        id.clone().prop_map(|id| Command::Release { id }),
        render_command(),
    ]
}

fn format() -> impl Strategy<Value = wgpu::TextureFormat> {
    prop::sample::select(webgpu_wire::gfx::TEXTURE_FORMATS)
}

fn extent() -> impl Strategy<Value = wgpu::Extent3d> {
    (
        prop_oneof![0u32..70, Just(1 << 20), any::<u32>()],
        prop_oneof![0u32..70, Just(16384), any::<u32>()],
        prop_oneof![0u32..4, Just(2048), any::<u32>()],
    )
        .prop_map(|(width, height, depth_or_array_layers)| wgpu::Extent3d {
            width,
            height,
            depth_or_array_layers,
        })
}

fn texture_copy() -> impl Strategy<Value = webgpu_wire::gfx::TextureCopy> {
    (0u64..24, 0u32..3, 0u32..80, 0u32..80).prop_map(|(texture, mip_level, x, y)| {
        webgpu_wire::gfx::TextureCopy {
            texture,
            mip_level,
            origin: wgpu::Origin3d { x, y, z: 0 },
            aspect: wgpu::TextureAspect::All,
        }
    })
}

fn layout() -> impl Strategy<Value = webgpu_wire::gfx::TexelLayout> {
    (
        0u64..512,
        proptest::option::of(prop_oneof![0u32..1024, Just(256), any::<u32>()]),
        proptest::option::of(0u32..80),
    )
        .prop_map(
            |(offset, bytes_per_row, rows_per_image)| webgpu_wire::gfx::TexelLayout {
                offset,
                bytes_per_row,
                rows_per_image,
            },
        )
}

/// Textures, views, samplers, texture writes and render pipelines with hostile values: huge
/// and zero sizes, every format, unknown usage bits, NaN floats, wrong ids.
fn render_command() -> impl Strategy<Value = Command> {
    let id = 0u64..24;
    prop_oneof![
        (
            id.clone(),
            id.clone(),
            extent(),
            0u32..16,
            prop::sample::select(vec![0u32, 1, 4, 7]),
            format(),
            any::<u32>(),
            0u8..3
        )
            .prop_map(|(device, id, size, mips, samples, format, usage, dim)| {
                Command::CreateTexture {
                    device,
                    id,
                    label: None,
                    desc: webgpu_wire::gfx::TextureDesc {
                        size,
                        mip_level_count: mips,
                        sample_count: samples,
                        dimension: [
                            wgpu::TextureDimension::D1,
                            wgpu::TextureDimension::D2,
                            wgpu::TextureDimension::D3,
                        ][dim as usize],
                        format,
                        usage: usage & 0x7ff,
                        view_formats: vec![],
                    },
                }
            }),
        id.clone()
            .prop_map(|texture| Command::DestroyTexture { texture }),
        (
            id.clone(),
            id.clone(),
            proptest::option::of(format()),
            0u32..4,
            proptest::option::of(0u32..4)
        )
            .prop_map(|(texture, id, format, base_mip_level, mip_level_count)| {
                Command::CreateTextureView {
                    texture,
                    id,
                    label: None,
                    desc: webgpu_wire::gfx::TextureViewDesc {
                        format,
                        base_mip_level,
                        mip_level_count,
                        ..Default::default()
                    },
                }
            }),
        (
            id.clone(),
            id.clone(),
            prop_oneof![Just(f32::NAN), -1.0f32..40.0],
            any::<u16>()
        )
            .prop_map(
                |(device, id, lod, anisotropy_clamp)| Command::CreateSampler {
                    device,
                    id,
                    label: None,
                    desc: wgpu::wgt::SamplerDescriptor {
                        label: (),
                        lod_max_clamp: lod,
                        anisotropy_clamp,
                        ..Default::default()
                    },
                }
            ),
        (
            id.clone(),
            texture_copy(),
            proptest::collection::vec(any::<u8>(), 0..300),
            layout(),
            extent()
        )
            .prop_map(|(queue, dst, data, layout, size)| Command::WriteTexture {
                queue,
                dst,
                data,
                layout,
                size,
            }),
        (id.clone(), id.clone(), id, format(), any::<bool>()).prop_map(
            |(device, id, module, format, depth)| Command::CreateRenderPipeline {
                device,
                id,
                label: None,
                desc: Box::new(webgpu_wire::gfx::RenderPipelineDesc {
                    layout: None,
                    vertex: webgpu_wire::gfx::Stage {
                        module,
                        entry_point: None,
                        constants: vec![],
                        zero_initialize_workgroup_memory: true,
                    },
                    buffers: vec![None],
                    primitive: Default::default(),
                    depth_stencil: depth.then(|| wgpu::DepthStencilState {
                        format,
                        depth_write_enabled: Some(true),
                        depth_compare: Some(wgpu::CompareFunction::Less),
                        stencil: Default::default(),
                        bias: wgpu::DepthBiasState {
                            constant: 0,
                            slope_scale: f32::NAN,
                            clamp: 0.0,
                        },
                    }),
                    multisample: Default::default(),
                    fragment: Some((
                        webgpu_wire::gfx::Stage {
                            module,
                            entry_point: None,
                            constants: vec![],
                            zero_initialize_workgroup_memory: true,
                        },
                        vec![Some(format.into())],
                    )),
                }),
            }
        ),
    ]
}

fn arb_encoder() -> impl Strategy<Value = webgpu_wire::EncoderCommand> {
    use webgpu_wire::EncoderCommand as E;
    let id = 0u64..24;
    prop_oneof![
        (
            id.clone(),
            0u64..64,
            id.clone(),
            0u64..64,
            proptest::option::of(0u64..128)
        )
            .prop_map(
                |(src, src_offset, dst, dst_offset, size)| E::CopyBufferToBuffer {
                    src,
                    src_offset,
                    dst,
                    dst_offset,
                    size
                }
            ),
        (id.clone(), 0u64..64, proptest::option::of(0u64..64)).prop_map(
            |(buffer, offset, size)| E::ClearBuffer {
                buffer,
                offset,
                size
            }
        ),
        Just(E::BeginComputePass { label: None }),
        Just(E::EndComputePass),
        id.clone()
            .prop_map(|pipeline| E::SetComputePipeline { pipeline }),
        (0u32..4, proptest::option::of(id.clone())).prop_map(|(index, group)| E::SetBindGroup {
            index,
            group,
            offsets: vec![]
        }),
        (0u32..4, 0u32..4, 0u32..4).prop_map(|(x, y, z)| E::Dispatch { x, y, z }),
        (id.clone(), 0u64..64).prop_map(|(buffer, offset)| E::DispatchIndirect { buffer, offset }),
        Just(E::PopDebugGroup),
        (id.clone(), layout(), texture_copy(), extent()).prop_map(|(src, layout, dst, size)| {
            E::CopyBufferToTexture {
                src,
                layout,
                dst,
                size,
            }
        }),
        (texture_copy(), id.clone(), layout(), extent()).prop_map(|(src, dst, layout, size)| {
            E::CopyTextureToBuffer {
                src,
                dst,
                layout,
                size,
            }
        }),
        (texture_copy(), texture_copy(), extent())
            .prop_map(|(src, dst, size)| E::CopyTextureToTexture { src, dst, size }),
        (
            proptest::collection::vec(proptest::option::of(id.clone()), 0..3),
            proptest::option::of(id.clone())
        )
            .prop_map(|(colors, depth)| {
                E::BeginRenderPass(Box::new(webgpu_wire::gfx::RenderPassDesc {
                    label: None,
                    color_attachments: colors
                        .into_iter()
                        .map(|v| {
                            v.map(|view| webgpu_wire::gfx::ColorAttachment {
                                view,
                                depth_slice: None,
                                resolve_target: None,
                                load: webgpu_wire::gfx::Load::Clear(wgpu::Color::RED),
                                store: true,
                            })
                        })
                        .collect(),
                    depth_stencil: depth.map(|view| webgpu_wire::gfx::DepthAttachment {
                        view,
                        depth_ops: Some(webgpu_wire::gfx::Ops {
                            load: webgpu_wire::gfx::Load::Clear(f32::NAN),
                            store: true,
                        }),
                        stencil_ops: None,
                    }),
                }))
            }),
        Just(E::EndRenderPass),
        id.clone()
            .prop_map(|pipeline| E::SetRenderPipeline { pipeline }),
        (
            0u32..40,
            proptest::option::of(id.clone()),
            0u64..128,
            proptest::option::of(0u64..128)
        )
            .prop_map(|(slot, buffer, offset, size)| E::SetVertexBuffer {
                slot,
                buffer,
                offset,
                size
            }),
        (id.clone(), 0u64..128, proptest::option::of(0u64..128)).prop_map(
            |(buffer, offset, size)| E::SetIndexBuffer {
                buffer,
                format: wgpu::IndexFormat::Uint32,
                offset,
                size
            }
        ),
        prop::array::uniform6(prop_oneof![
            Just(f32::NAN),
            Just(f32::INFINITY),
            -10.0f32..100.0
        ])
        .prop_map(E::SetViewport),
        prop::array::uniform4(any::<u32>()).prop_map(E::SetScissorRect),
        (any::<u32>(), any::<u32>(), 0u32..3, 0u32..3).prop_map(|(a, b, c, d)| E::Draw {
            vertices: (a % 100, b % 100),
            instances: (c, d)
        }),
        (0u32..100, 0u32..100, any::<i32>()).prop_map(|(a, b, base_vertex)| E::DrawIndexed {
            indices: (a, b),
            base_vertex,
            instances: (0, 1)
        }),
        (id, 0u64..64).prop_map(|(buffer, offset)| E::DrawIndirect { buffer, offset }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_command_streams_never_panic_and_the_budget_holds(
        batches in proptest::collection::vec(proptest::collection::vec(arb_command(), 1..12), 1..6),
        cut in any::<prop::sample::Index>(),
        noise in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let budget = Budget { max_objects: 12, max_bytes: 1 << 20, ..Budget::default() };
        let mut ctx = host().context(budget);
        for (i, cmds) in batches.iter().enumerate() {
            let mut msg = encode_request(cmds);
            match i % 3 {
                1 => msg.truncate(cut.index(msg.len())),
                2 => msg.extend_from_slice(&noise),
                _ => {}
            }
            let reply = ctx.handle(&msg);
            prop_assert!(decode_reply(&reply).is_ok());
            prop_assert!(ctx.object_count() <= budget.max_objects);
            prop_assert!(ctx.bytes_in_use() <= budget.max_bytes);
        }
    }

    #[test]
    fn a_context_whose_textures_exceed_its_budget_gets_oom_and_the_budget_holds(
        sizes in proptest::collection::vec((1u32..2048, 1u32..2048, 1u32..4), 1..8),
    ) {
        let budget = Budget { max_bytes: 8 << 20, ..Budget::default() };
        let mut ctx = host().context(budget);
        device(&mut ctx, 1, 2);
        for (i, (w, h, mips)) in sizes.iter().enumerate() {
            let desc = webgpu_wire::gfx::TextureDesc {
                size: wgpu::Extent3d { width: *w, height: *h, depth_or_array_layers: 1 },
                mip_level_count: *mips,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: wgpu::TextureFormat::Rgba8Unorm,
                usage: wgpu::TextureUsages::TEXTURE_BINDING.bits(),
                view_formats: vec![],
            };
            let need = webgpu_wire::gfx::texture_bytes(&desc).unwrap();
            let before = ctx.bytes_in_use();
            let (r, _) = call(&mut ctx, &[
                Command::PushErrorScope { device: 1, filter: ErrorKind::OutOfMemory },
                Command::CreateTexture { device: 1, id: 100 + i as u64, label: None, desc },
                Command::PopErrorScope { device: 1 },
            ]);
            if before + need > budget.max_bytes {
                prop_assert!(matches!(r, Reply::Scope(Some(ref e)) if e.message.contains("budget")), "{r:?}");
                prop_assert_eq!(ctx.bytes_in_use(), before);
            } else {
                prop_assert_eq!(r, Reply::Scope(None));
                prop_assert_eq!(ctx.bytes_in_use(), before + need);
            }
        }
    }

    #[test]
    fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut msg = webgpu_wire::frame(webgpu_wire::MessageKind::Request, &bytes);
        let _ = webgpu_wire::decode_request(&msg);
        msg.truncate(bytes.len() / 2);
        let _ = webgpu_wire::decode_request(&msg);
    }
}
