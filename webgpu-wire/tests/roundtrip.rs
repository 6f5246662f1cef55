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
