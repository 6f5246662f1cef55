//! The presentation hook: a guest texture, named by its guest id, lands in a scanout's bytes
//! with the scanout's stride and channel order.

use webgpu_host::{Budget, Context, Host, PresentError, ScanoutFormat};
use webgpu_wire::gfx::{TexelLayout, TextureCopy, TextureDesc};
use webgpu_wire::{decode_reply, encode_request, Command, Reply};

fn call(ctx: &mut Context, cmds: &[Command]) -> Reply {
    let (r, unc) = decode_reply(&ctx.handle(&encode_request(cmds))).unwrap();
    assert!(unc.is_empty(), "{unc:?}");
    r
}

/// A context with device 1 (queue 2) and a `w`x`h` texture 10 of `format` whose texel (x, y)
/// is [x, y, x ^ y, 255 - x].
fn context_with_texture(format: wgpu::TextureFormat, usage: wgpu::TextureUsages) -> Context {
    let host = Host::from_env().expect("a wgpu adapter");
    let mut ctx = host.context(Budget::default());
    let r = call(
        &mut ctx,
        &[Command::RequestDevice {
            device: 1,
            queue: 2,
            label: None,
            limits: wgpu::Limits::downlevel_defaults(),
            features: [0, 0],
        }],
    );
    assert!(matches!(r, Reply::Device(_)), "{r:?}");
    let (w, h) = (40u32, 7u32);
    let data: Vec<u8> = (0..h)
        .flat_map(|y| (0..w).flat_map(move |x| [x as u8, y as u8, (x ^ y) as u8, 255 - x as u8]))
        .collect();
    let size = wgpu::Extent3d {
        width: w,
        height: h,
        depth_or_array_layers: 1,
    };
    call(
        &mut ctx,
        &[
            Command::CreateTexture {
                device: 1,
                id: 10,
                label: None,
                desc: TextureDesc {
                    size,
                    mip_level_count: 1,
                    sample_count: 1,
                    dimension: wgpu::TextureDimension::D2,
                    format,
                    usage: (usage | wgpu::TextureUsages::COPY_DST).bits(),
                    view_formats: vec![],
                },
            },
            Command::WriteTexture {
                queue: 2,
                dst: TextureCopy {
                    texture: 10,
                    mip_level: 0,
                    origin: wgpu::Origin3d::ZERO,
                    aspect: wgpu::TextureAspect::All,
                },
                data,
                layout: TexelLayout {
                    offset: 0,
                    bytes_per_row: Some(w * 4),
                    rows_per_image: None,
                },
                size,
            },
        ],
    );
    ctx
}

#[test]
fn present_copies_a_guest_texture_into_scanout_bytes_with_stride_and_channel_order() {
    let mut ctx = context_with_texture(
        wgpu::TextureFormat::Rgba8Unorm,
        wgpu::TextureUsages::COPY_SRC,
    );
    let (w, h, stride) = (33u32, 5u32, 33 * 4 + 20);
    for (format, order) in [
        (ScanoutFormat::Rgba8, [0, 1, 2, 3]),
        (ScanoutFormat::Bgra8, [2, 1, 0, 3]),
    ] {
        let mut dst = vec![0xeeu8; stride * h as usize];
        ctx.present(10, &mut dst, w, h, stride, format).unwrap();
        for y in 0..h as usize {
            for x in 0..w as usize {
                let texel = [x as u8, y as u8, (x ^ y) as u8, 255 - x as u8];
                let want: Vec<u8> = order.iter().map(|i| texel[*i]).collect();
                assert_eq!(
                    &dst[y * stride + x * 4..][..4],
                    &want[..],
                    "{format:?} ({x},{y})"
                );
            }
            // The padding at the end of each row is the caller's: untouched.
            assert!(dst[y * stride + w as usize * 4..(y + 1) * stride]
                .iter()
                .all(|b| *b == 0xee));
        }
    }
}

#[test]
fn a_bgra_texture_presents_to_a_bgra_scanout_unchanged() {
    let mut ctx = context_with_texture(
        wgpu::TextureFormat::Bgra8Unorm,
        wgpu::TextureUsages::COPY_SRC,
    );
    let mut dst = vec![0u8; 40 * 4 * 7];
    ctx.present(10, &mut dst, 40, 7, 160, ScanoutFormat::Bgra8)
        .unwrap();
    assert_eq!(&dst[160 * 3 + 4 * 5..][..4], &[5, 3, 6, 250]);
}

#[test]
fn presenting_what_cannot_be_presented_is_a_clear_error() {
    let mut ctx = context_with_texture(
        wgpu::TextureFormat::Rgba8Unorm,
        wgpu::TextureUsages::COPY_SRC,
    );
    let mut dst = vec![0u8; 40 * 4 * 7];
    assert_eq!(
        ctx.present(99, &mut dst, 40, 7, 160, ScanoutFormat::Rgba8),
        Err(PresentError::NoTexture(99))
    );
    // The device (id 1) is not a texture either.
    assert_eq!(
        ctx.present(1, &mut dst, 40, 7, 160, ScanoutFormat::Rgba8),
        Err(PresentError::NoTexture(1))
    );
    assert!(matches!(
        ctx.present(10, &mut dst, 41, 7, 164, ScanoutFormat::Rgba8),
        Err(PresentError::Size { .. })
    ));
    assert!(matches!(
        ctx.present(10, &mut dst[..100], 40, 7, 160, ScanoutFormat::Rgba8),
        Err(PresentError::Size { .. })
    ));
    assert!(matches!(
        ctx.present(10, &mut dst, 40, 7, 100, ScanoutFormat::Rgba8),
        Err(PresentError::Size { .. })
    ));
    // A texture without COPY_SRC: wgpu's own validation error, no panic.
    let mut ctx = context_with_texture(
        wgpu::TextureFormat::Rgba8Unorm,
        wgpu::TextureUsages::empty(),
    );
    assert!(
        matches!(
            ctx.present(10, &mut dst, 40, 7, 160, ScanoutFormat::Rgba8),
            Err(PresentError::Gpu(ref m)) if m.contains("COPY_SRC")
        ),
        "{:?}",
        ctx.present(10, &mut dst, 40, 7, 160, ScanoutFormat::Rgba8)
    );
    let mut ctx =
        context_with_texture(wgpu::TextureFormat::R32Float, wgpu::TextureUsages::COPY_SRC);
    assert_eq!(
        ctx.present(10, &mut dst, 4, 4, 16, ScanoutFormat::Rgba8),
        Err(PresentError::Format(wgpu::TextureFormat::R32Float))
    );
}
