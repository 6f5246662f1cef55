//! Every message kind survives encode/decode unchanged, and the header is enforced.

use webgpu_wire::*;

fn sample_commands() -> Vec<Command> {
    vec![
        Command::RequestAdapter,
        Command::RequestDevice {
            device: 1,
            queue: 2,
            label: Some("d".into()),
            limits: wgpu_types::Limits::downlevel_defaults(),
            features: [0, 0],
        },
        Command::CreateBuffer {
            device: 1,
            id: 3,
            label: None,
            size: 64,
            usage: 0x88,
            mapped_at_creation: true,
        },
        Command::WriteBuffer {
            queue: 2,
            buffer: 3,
            offset: 8,
            data: vec![1, 2, 3],
        },
        Command::MapBuffer {
            buffer: 3,
            mode: MapMode::Write,
            offset: 0,
            size: 64,
        },
        Command::UnmapBuffer {
            buffer: 3,
            writes: vec![(0, vec![9; 4])],
        },
        Command::CreateShaderModule {
            device: 1,
            id: 4,
            label: None,
            wgsl: "fn main() {}".into(),
        },
        Command::CreateBindGroupLayout {
            device: 1,
            id: 5,
            label: None,
            entries: vec![BindGroupLayoutEntry {
                binding: 0,
                visibility: 4,
                ty: BindingType::Buffer {
                    kind: BufferBindingKind::Storage { read_only: true },
                    has_dynamic_offset: false,
                    min_binding_size: Some(4),
                },
                count: None,
            }],
        },
        Command::CreateBindGroup {
            device: 1,
            id: 6,
            label: None,
            layout: 5,
            entries: vec![BindGroupEntry {
                binding: 0,
                resource: BindingResource::Buffer {
                    buffer: 3,
                    offset: 0,
                    size: None,
                },
            }],
        },
        Command::CreatePipelineLayout {
            device: 1,
            id: 7,
            label: None,
            bind_group_layouts: vec![Some(5), None],
            immediate_size: 0,
        },
        Command::CreateComputePipeline {
            device: 1,
            id: 8,
            label: None,
            layout: Some(7),
            module: 4,
            entry_point: Some("main".into()),
            constants: vec![("k".into(), 1.5)],
            zero_initialize_workgroup_memory: true,
        },
        Command::GetBindGroupLayout {
            pipeline: 8,
            index: 0,
            id: 9,
        },
        Command::FinishEncoder {
            device: 1,
            id: 10,
            label: None,
            commands: vec![
                EncoderCommand::BeginComputePass { label: None },
                EncoderCommand::SetComputePipeline { pipeline: 8 },
                EncoderCommand::SetBindGroup {
                    index: 0,
                    group: Some(6),
                    offsets: vec![256],
                },
                EncoderCommand::Dispatch { x: 1, y: 2, z: 3 },
                EncoderCommand::EndComputePass,
                EncoderCommand::CopyBufferToBuffer {
                    src: 3,
                    src_offset: 0,
                    dst: 3,
                    dst_offset: 32,
                    size: Some(16),
                },
            ],
        },
        Command::Submit {
            queue: 2,
            command_buffers: vec![10],
        },
        Command::PushErrorScope {
            device: 1,
            filter: ErrorKind::OutOfMemory,
        },
        Command::PopErrorScope { device: 1 },
        Command::Poll {
            device: 1,
            wait: true,
        },
        Command::Release { id: 9 },
        Command::CreateTexture {
            device: 1,
            id: 11,
            label: Some("t".into()),
            desc: gfx::TextureDesc {
                size: wgpu_types::Extent3d {
                    width: 64,
                    height: 32,
                    depth_or_array_layers: 2,
                },
                mip_level_count: 3,
                sample_count: 1,
                dimension: wgpu_types::TextureDimension::D2,
                format: wgpu_types::TextureFormat::Bgra8UnormSrgb,
                usage: 0x1f,
                view_formats: vec![wgpu_types::TextureFormat::Bgra8Unorm],
            },
        },
        Command::CreateTextureView {
            texture: 11,
            id: 12,
            label: None,
            desc: gfx::TextureViewDesc {
                format: Some(wgpu_types::TextureFormat::Bgra8Unorm),
                dimension: Some(wgpu_types::TextureViewDimension::D2Array),
                usage: Some(0x10),
                aspect: wgpu_types::TextureAspect::All,
                base_mip_level: 1,
                mip_level_count: Some(2),
                base_array_layer: 1,
                array_layer_count: None,
            },
        },
        Command::CreateSampler {
            device: 1,
            id: 13,
            label: None,
            desc: wgpu_types::SamplerDescriptor {
                label: (),
                address_mode_u: wgpu_types::AddressMode::MirrorRepeat,
                mag_filter: wgpu_types::FilterMode::Linear,
                compare: Some(wgpu_types::CompareFunction::GreaterEqual),
                border_color: Some(wgpu_types::SamplerBorderColor::OpaqueWhite),
                lod_max_clamp: 7.5,
                anisotropy_clamp: 4,
                ..Default::default()
            },
        },
        Command::WriteTexture {
            queue: 2,
            dst: gfx::TextureCopy {
                texture: 11,
                mip_level: 1,
                origin: wgpu_types::Origin3d { x: 1, y: 2, z: 1 },
                aspect: wgpu_types::TextureAspect::All,
            },
            data: vec![7; 32],
            layout: gfx::TexelLayout {
                offset: 4,
                bytes_per_row: Some(256),
                rows_per_image: None,
            },
            size: wgpu_types::Extent3d {
                width: 2,
                height: 2,
                depth_or_array_layers: 1,
            },
        },
        Command::CreateRenderPipeline {
            device: 1,
            id: 14,
            label: None,
            desc: Box::new(gfx::RenderPipelineDesc {
                layout: Some(7),
                vertex: gfx::Stage {
                    module: 4,
                    entry_point: Some("vs".into()),
                    constants: vec![("k".into(), 2.0)],
                    zero_initialize_workgroup_memory: false,
                },
                buffers: vec![
                    None,
                    Some(gfx::VertexBufferLayout {
                        array_stride: 20,
                        step_mode: wgpu_types::VertexStepMode::Instance,
                        attributes: vec![wgpu_types::VertexAttribute {
                            format: wgpu_types::VertexFormat::Unorm10_10_10_2,
                            offset: 4,
                            shader_location: 3,
                        }],
                    }),
                ],
                primitive: wgpu_types::PrimitiveState {
                    topology: wgpu_types::PrimitiveTopology::TriangleStrip,
                    strip_index_format: Some(wgpu_types::IndexFormat::Uint16),
                    front_face: wgpu_types::FrontFace::Cw,
                    cull_mode: Some(wgpu_types::Face::Back),
                    ..Default::default()
                },
                depth_stencil: Some(wgpu_types::DepthStencilState {
                    format: wgpu_types::TextureFormat::Depth24PlusStencil8,
                    depth_write_enabled: Some(true),
                    depth_compare: Some(wgpu_types::CompareFunction::LessEqual),
                    stencil: wgpu_types::StencilState {
                        front: wgpu_types::StencilFaceState {
                            compare: wgpu_types::CompareFunction::Equal,
                            fail_op: wgpu_types::StencilOperation::Invert,
                            depth_fail_op: wgpu_types::StencilOperation::Zero,
                            pass_op: wgpu_types::StencilOperation::IncrementWrap,
                        },
                        back: wgpu_types::StencilFaceState::IGNORE,
                        read_mask: 0xf0,
                        write_mask: 0x0f,
                    },
                    bias: wgpu_types::DepthBiasState {
                        constant: -3,
                        slope_scale: 1.5,
                        clamp: 0.25,
                    },
                }),
                multisample: wgpu_types::MultisampleState {
                    count: 4,
                    mask: 0xff,
                    alpha_to_coverage_enabled: true,
                },
                fragment: Some((
                    gfx::Stage {
                        module: 4,
                        entry_point: None,
                        constants: vec![],
                        zero_initialize_workgroup_memory: true,
                    },
                    vec![
                        Some(wgpu_types::ColorTargetState {
                            format: wgpu_types::TextureFormat::Rgba16Float,
                            blend: Some(wgpu_types::BlendState::ALPHA_BLENDING),
                            write_mask: wgpu_types::ColorWrites::RED,
                        }),
                        None,
                    ],
                )),
            }),
        },
        Command::FinishEncoder {
            device: 1,
            id: 15,
            label: None,
            commands: vec![
                EncoderCommand::CopyBufferToTexture {
                    src: 3,
                    layout: gfx::TexelLayout::default(),
                    dst: gfx::TextureCopy {
                        texture: 11,
                        mip_level: 0,
                        origin: wgpu_types::Origin3d::ZERO,
                        aspect: wgpu_types::TextureAspect::All,
                    },
                    size: wgpu_types::Extent3d::default(),
                },
                EncoderCommand::BeginRenderPass(Box::new(gfx::RenderPassDesc {
                    label: Some("p".into()),
                    color_attachments: vec![
                        Some(gfx::ColorAttachment {
                            view: 12,
                            depth_slice: None,
                            resolve_target: Some(12),
                            load: gfx::Load::Clear(wgpu_types::Color::GREEN),
                            store: false,
                        }),
                        None,
                    ],
                    depth_stencil: Some(gfx::DepthAttachment {
                        view: 12,
                        depth_ops: Some(gfx::Ops {
                            load: gfx::Load::Clear(0.5),
                            store: true,
                        }),
                        stencil_ops: Some(gfx::Ops {
                            load: gfx::Load::Load,
                            store: true,
                        }),
                    }),
                })),
                EncoderCommand::SetRenderPipeline { pipeline: 14 },
                EncoderCommand::SetVertexBuffer {
                    slot: 1,
                    buffer: Some(3),
                    offset: 8,
                    size: None,
                },
                EncoderCommand::SetIndexBuffer {
                    buffer: 3,
                    format: wgpu_types::IndexFormat::Uint32,
                    offset: 0,
                    size: Some(12),
                },
                EncoderCommand::SetViewport([0.0, 1.0, 2.0, 3.0, 0.0, 1.0]),
                EncoderCommand::SetScissorRect([1, 2, 3, 4]),
                EncoderCommand::SetBlendConstant([0.5; 4]),
                EncoderCommand::SetStencilReference(7),
                EncoderCommand::Draw {
                    vertices: (0, 3),
                    instances: (1, 2),
                },
                EncoderCommand::DrawIndexed {
                    indices: (0, 6),
                    base_vertex: -2,
                    instances: (0, 1),
                },
                EncoderCommand::DrawIndirect {
                    buffer: 3,
                    offset: 16,
                },
                EncoderCommand::EndRenderPass,
            ],
        },
        Command::DestroyTexture { texture: 11 },
    ]
}

#[test]
fn every_command_round_trips() {
    let cmds = sample_commands();
    assert_eq!(decode_request(&encode_request(&cmds)).unwrap(), cmds);
}

#[test]
fn replies_round_trip_with_uncaptured_errors() {
    let unc = vec![(
        1,
        GpuError {
            kind: ErrorKind::Validation,
            message: "bad".into(),
        },
    )];
    for r in [
        Reply::Ok,
        Reply::Mapped(vec![1, 2, 3]),
        Reply::Scope(Some(unc[0].1.clone())),
        Reply::Polled {
            completed: 3,
            queue_empty: true,
        },
        Reply::Failed("no".into()),
        Reply::Lost("closed".into()),
    ] {
        assert_eq!(
            decode_reply(&encode_reply(&r, &unc)).unwrap(),
            (r, unc.clone())
        );
    }
}

#[test]
fn wrong_version_and_trailing_bytes_are_rejected() {
    let mut msg = encode_request(&[Command::RequestAdapter]);
    msg[4] = 99;
    assert_eq!(decode_request(&msg), Err(WireError::Version { got: 99 }));
    let mut msg = encode_request(&[Command::RequestAdapter]);
    msg.push(0);
    assert!(decode_request(&msg).is_err());
}

#[test]
fn a_byte_string_longer_than_the_message_is_refused_before_allocating() {
    // A WriteBuffer claiming 4 GiB of data in a message of a few dozen bytes.
    let mut w = Writer::new();
    w.u32(1);
    w.u16(9);
    w.u64(2);
    w.u64(3);
    w.u64(0);
    w.u32(u32::MAX);
    let msg = frame(MessageKind::Request, &w.into_bytes());
    assert!(matches!(
        decode_request(&msg),
        Err(WireError::Truncated { .. })
    ));
}
