//! Random command streams and random descriptor chains against the virtio-gpu device on the
//! null renderer (no wgpu adapter: these tests check the protocol, never pixels; the GPU
//! paths are covered by the bring-up and gather tests). The device must never panic,
//! every response must be well-formed, the memory budget must hold, and every OK must be
//! justified by a reference model (so no transfer was accepted that would read outside its
//! backing or outside guest memory).

use std::collections::HashMap;

use proptest::prelude::*;
use virtio_queue::{Queue, QueueT};
use vm_device::gpu_virt::virtio_gpu::protocol::{ctrl, Response, HDR_SIZE};
use vm_device::gpu_virt::virtio_gpu::{
    Command, CtrlHeader, CursorPos, ErrorCode, GpuGather, MemEntry, NullRenderer, QueueKind, Rect,
    VirtioGpuConfig, VirtioGpuDevice,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const BUDGET: u64 = 256 << 10;
/// Guest RAM: two 1 MiB regions with a 1 MiB hole between them.
const REGIONS: [(u64, u64); 2] = [(0, 1 << 20), (2 << 20, 1 << 20)];

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(
        &REGIONS
            .iter()
            .map(|&(a, l)| (GuestAddress(a), l as usize))
            .collect::<Vec<_>>(),
    )
    .unwrap()
}

fn device() -> VirtioGpuDevice<NullRenderer> {
    VirtioGpuDevice::with_renderer(
        NullRenderer::new(),
        VirtioGpuConfig {
            scanouts: vec![(64, 48), (32, 32)],
            max_hostmem: BUDGET,
            edid_serial: 3,
            // Only the wgpu renderer gathers on the GPU; the null renderer ignores it.
            gpu_gather: GpuGather::Always,
            webgpu: None,
        },
    )
    .unwrap()
}

fn in_guest(addr: u64, len: u64) -> bool {
    REGIONS
        .iter()
        .any(|&(a, l)| addr >= a && addr.checked_add(len).is_some_and(|e| e <= a + l))
}

fn small() -> impl Strategy<Value = u32> {
    prop_oneof![
        12 => 0u32..66,
        1 => Just(u32::MAX),
        1 => Just(1u32 << 16),
        1 => any::<u32>(),
    ]
}

fn rect() -> impl Strategy<Value = Rect> {
    (small(), small(), small(), small()).prop_map(|(x, y, w, h)| Rect::new(x, y, w, h))
}

fn id() -> impl Strategy<Value = u32> {
    prop_oneof![16 => 1u32..5, 1 => Just(0u32), 1 => any::<u32>()]
}

/// A plausible backing: 1 to 8 whole 4 KiB pages of guest RAM, in any order.
fn good_backing() -> impl Strategy<Value = Vec<MemEntry>> {
    prop::collection::vec((0usize..2, 0u64..256), 1..9).prop_map(|pages| {
        pages
            .into_iter()
            .map(|(r, p)| MemEntry {
                addr: REGIONS[r].0 + p * 4096,
                length: 4096,
            })
            .collect()
    })
}

fn entry() -> impl Strategy<Value = MemEntry> {
    let addr = prop_oneof![
        6 => (0u64..(1 << 20)).prop_map(|a| a & !0xfff),
        3 => (2u64 << 20..3 << 20).prop_map(|a| a & !0xfff),
        1 => (1u64 << 20) - 2048..(1u64 << 20) + 4096,
        1 => any::<u64>(),
        1 => Just(u64::MAX - 100),
    ];
    let length = prop_oneof![6 => Just(4096u32), 3 => 0u32..20000, 1 => any::<u32>()];
    (addr, length).prop_map(|(addr, length)| MemEntry { addr, length })
}

fn command() -> impl Strategy<Value = Command> {
    let format = prop_oneof![
        4 => prop::sample::select(vec![1u32, 2, 3, 4, 67, 68, 121, 134]),
        1 => any::<u32>(),
    ];
    let pos = || {
        (0u32..3, small(), small()).prop_map(|(scanout_id, x, y)| CursorPos { scanout_id, x, y })
    };
    prop_oneof![
        1 => Just(Command::GetDisplayInfo),
        1 => (0u32..4).prop_map(|scanout| Command::GetEdid { scanout }),
        4 => (id(), format, small(), small()).prop_map(|(resource_id, format, width, height)| {
            Command::ResourceCreate2d { resource_id, format, width, height }
        }),
        1 => id().prop_map(|resource_id| Command::ResourceUnref { resource_id }),
        2 => (rect(), 0u32..3, id()).prop_map(|(rect, scanout_id, resource_id)| {
            Command::SetScanout { rect, scanout_id, resource_id }
        }),
        2 => (rect(), id()).prop_map(|(rect, resource_id)| Command::ResourceFlush { rect, resource_id }),
        6 => (rect(), prop_oneof![8 => 0u64..4096, 1 => 0u64..40000, 1 => any::<u64>()], id()).prop_map(
            |(rect, offset, resource_id)| Command::TransferToHost2d { rect, offset, resource_id }
        ),
        3 => (id(), prop_oneof![3 => good_backing(), 1 => prop::collection::vec(entry(), 0..12)]).prop_map(|(resource_id, entries)| {
            Command::ResourceAttachBacking { resource_id, entries }
        }),
        1 => id().prop_map(|resource_id| Command::ResourceDetachBacking { resource_id }),
        1 => (pos(), id(), 0u32..70, 0u32..70).prop_map(|(pos, resource_id, hot_x, hot_y)| {
            Command::UpdateCursor { pos, resource_id, hot_x, hot_y }
        }),
        1 => pos().prop_map(|pos| Command::MoveCursor { pos }),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    /// A well-encoded command, maybe fenced, maybe sent to the wrong queue.
    Cmd(Command, bool, bool),
    /// Garbage bytes.
    Raw(Vec<u8>, bool),
    /// A valid request cut short.
    Truncated(Command, usize),
}

/// One step, or a well-formed setup (create + attach a fitting shuffled backing) so that
/// streams reach transfers, scanouts and cursors often.
fn step() -> impl Strategy<Value = Vec<Step>> {
    let setup = (
        1u32..5,
        1u32..65,
        1u32..65,
        prop::sample::select(vec![1u32, 2, 3, 4, 67, 68, 121, 134]),
        good_backing(),
        any::<u64>(),
    )
        .prop_map(|(id, w, h, format, extra, seed)| {
            let pages = (w as u64 * h as u64 * 4).div_ceil(4096);
            let mut entries: Vec<MemEntry> = (0..pages)
                .map(|p| MemEntry {
                    addr: REGIONS[(seed as usize + p as usize) % 2].0
                        + ((seed >> 8) % 200 + p) * 4096,
                    length: 4096,
                })
                .collect();
            entries.extend(extra.into_iter().take((seed % 3) as usize));
            let (x, y) = ((seed >> 16) as u32 % w, (seed >> 24) as u32 % h);
            let sub = Rect::new(
                x,
                y,
                (seed >> 32) as u32 % (w - x) + 1,
                (seed >> 40) as u32 % (h - y) + 1,
            );
            let offset = (y as u64 * w as u64 + x as u64) * 4;
            let mut v = vec![
                Step::Cmd(
                    Command::ResourceCreate2d {
                        resource_id: id,
                        format,
                        width: w,
                        height: h,
                    },
                    false,
                    false,
                ),
                Step::Cmd(
                    Command::ResourceAttachBacking {
                        resource_id: id,
                        entries,
                    },
                    false,
                    false,
                ),
                Step::Cmd(
                    Command::TransferToHost2d {
                        rect: sub,
                        offset,
                        resource_id: id,
                    },
                    seed & 1 == 1,
                    false,
                ),
            ];
            if seed & 2 == 2 {
                v.push(Step::Cmd(
                    Command::SetScanout {
                        rect: Rect::new(0, 0, w, h),
                        scanout_id: (seed >> 2) as u32 % 2,
                        resource_id: id,
                    },
                    false,
                    false,
                ));
                v.push(Step::Cmd(
                    Command::ResourceFlush {
                        rect: sub,
                        resource_id: id,
                    },
                    seed & 4 == 4,
                    false,
                ));
            }
            v
        });
    prop_oneof![
        10 => (command(), any::<bool>(), prop::bool::weighted(0.05))
            .prop_map(|(c, f, w)| vec![Step::Cmd(c, f, w)]),
        3 => setup,
        1 => (prop::collection::vec(any::<u8>(), 0..80), any::<bool>())
            .prop_map(|(b, q)| vec![Step::Raw(b, q)]),
        1 => (command(), 0usize..60).prop_map(|(c, n)| vec![Step::Truncated(c, n)]),
    ]
}

/// The reference model: what the guest has set up, as far as OK responses say.
#[derive(Default)]
struct Model {
    resources: HashMap<u32, (u32, u32, Option<u64>)>,
}

fn check_response(resp: &[u8], req: Option<&CtrlHeader>) -> Result<u32, TestCaseError> {
    prop_assert!(resp.len() >= HDR_SIZE, "short response {:?}", resp);
    let h = CtrlHeader::decode(resp).unwrap();
    let ok = matches!(
        h.type_,
        ctrl::RESP_OK_NODATA | ctrl::RESP_OK_DISPLAY_INFO | ctrl::RESP_OK_EDID
    );
    prop_assert!(
        ok || ErrorCode::from_wire(h.type_).is_some(),
        "unknown response type {:#x}",
        h.type_
    );
    let want_len = if ok {
        Response::size_for(match h.type_ {
            ctrl::RESP_OK_DISPLAY_INFO => ctrl::GET_DISPLAY_INFO,
            ctrl::RESP_OK_EDID => ctrl::GET_EDID,
            _ => 0,
        })
    } else {
        HDR_SIZE
    };
    prop_assert_eq!(resp.len(), want_len, "response length for {:#x}", h.type_);
    if let Some(r) = req.filter(|r| r.is_fenced()) {
        prop_assert_eq!((h.flags & 1, h.fence_id), (1, r.fence_id));
    } else {
        prop_assert_eq!(h.flags, 0);
    }
    Ok(h.type_)
}

fn run_steps(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mem = memory();
    let mut dev = device();
    let mut model = Model::default();
    for (n, s) in steps.into_iter().enumerate() {
        let (req, queue, cmd) = match &s {
            Step::Cmd(c, fenced, wrong) => {
                let hdr = CtrlHeader {
                    flags: *fenced as u32,
                    fence_id: n as u64 + 1,
                    ..Default::default()
                };
                let cursor = matches!(c, Command::UpdateCursor { .. } | Command::MoveCursor { .. });
                let q = if cursor != *wrong {
                    QueueKind::Cursor
                } else {
                    QueueKind::Control
                };
                (c.encode(hdr), q, (!*wrong).then_some(c))
            }
            Step::Raw(b, q) => (
                b.clone(),
                if *q {
                    QueueKind::Cursor
                } else {
                    QueueKind::Control
                },
                None,
            ),
            Step::Truncated(c, cut) => {
                let mut b = c.encode(CtrlHeader::default());
                // Strictly shorter than the command, so it can never execute.
                b.truncate((*cut).min(b.len() - 1));
                (b, QueueKind::Control, None)
            }
        };
        let resp = dev.process_request(queue, &req, &mem);
        let t = check_response(&resp, CtrlHeader::decode(&req).as_ref())?;
        prop_assert!(dev.hostmem_used() <= BUDGET, "budget exceeded");
        if let Step::Cmd(_, _, true) = &s {
            prop_assert_eq!(t, ctrl::RESP_ERR_UNSPEC, "command on the wrong queue");
        }
        let Some(cmd) = cmd else { continue };
        if t != ctrl::RESP_OK_NODATA {
            continue;
        }
        // An OK must be justified by the model.
        match cmd {
            Command::ResourceCreate2d {
                resource_id,
                width,
                height,
                ..
            } => {
                prop_assert!(*resource_id != 0);
                prop_assert!(model
                    .resources
                    .insert(*resource_id, (*width, *height, None))
                    .is_none());
            }
            Command::ResourceUnref { resource_id } => {
                prop_assert!(model.resources.remove(resource_id).is_some());
            }
            Command::ResourceAttachBacking {
                resource_id,
                entries,
            } => {
                let r = model.resources.get_mut(resource_id);
                prop_assert!(r.as_ref().is_some_and(|r| r.2.is_none()));
                prop_assert!(!entries.is_empty());
                let mut total = 0u64;
                for e in entries {
                    prop_assert!(
                        e.length > 0 && in_guest(e.addr, e.length as u64),
                        "accepted entry outside guest memory: {:?}",
                        e
                    );
                    total += e.length as u64;
                }
                r.unwrap().2 = Some(total);
            }
            Command::ResourceDetachBacking { resource_id } => {
                let r = model.resources.get_mut(resource_id);
                prop_assert!(r.as_ref().is_some_and(|r| r.2.is_some()));
                r.unwrap().2 = None;
            }
            Command::TransferToHost2d {
                rect,
                offset,
                resource_id,
            } => {
                let &(w, h, backing) = model.resources.get(resource_id).unwrap();
                prop_assert!(rect.fits_in(w, h));
                let backing = backing.expect("transfer accepted without backing");
                if !rect.is_empty() {
                    let end = (rect.height as u128 - 1) * w as u128 * 4
                        + rect.width as u128 * 4
                        + *offset as u128;
                    prop_assert!(end <= backing as u128, "transfer reads past the backing");
                }
            }
            Command::SetScanout {
                rect,
                scanout_id,
                resource_id,
            } if *resource_id != 0 => {
                prop_assert!(*scanout_id < 2);
                let &(w, h, _) = model.resources.get(resource_id).unwrap();
                prop_assert!(!rect.is_empty() && rect.fits_in(w, h));
            }
            Command::ResourceFlush { rect, resource_id } => {
                let &(w, h, _) = model.resources.get(resource_id).unwrap();
                prop_assert!(rect.fits_in(w, h));
            }
            _ => {}
        }
        prop_assert_eq!(dev.resource_count(), model.resources.len());
        prop_assert_eq!(dev.stats().resources_alive, model.resources.len() as u64);
    }
    // Still usable: a screenshot of an enabled scanout works, of a disabled one errors cleanly.
    for sid in 0..2 {
        match dev.scanout_state(sid) {
            Some((_, r)) => {
                let img = dev
                    .screenshot(sid)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!((img.width, img.height), (r.width, r.height));
            }
            None => prop_assert!(dev.screenshot(sid).is_err()),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_command_streams(steps in prop::collection::vec(step(), 1..60)) {
        run_steps(steps.into_iter().flatten().collect())?;
    }

    /// Random descriptor tables: wild addresses, lengths, flags and next links (loops
    /// included). The front end must complete or drop chains without panicking and never
    /// report more bytes used than the chain's writable space.
    #[test]
    fn random_descriptor_chains(
        descs in prop::collection::vec((any::<u64>(), 0u32..5000, 0u16..8, 0u16..16, 0u8..4), 1..16),
        heads in prop::collection::vec(0u16..16, 1..8),
        payload in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mem = memory();
        let mut dev = device();
        let (dt, avail, used) = (0x1000u64, 0x2000u64, 0x3000u64);
        // A plausible request at 0x8000 for descriptors that point at it.
        let mut req = Command::GetDisplayInfo.encode(CtrlHeader::default());
        req.extend_from_slice(&payload);
        mem.write_slice(&req, GuestAddress(0x8000)).unwrap();
        for (i, (addr, len, flags, next, kind)) in descs.iter().enumerate() {
            let addr = match kind {
                0 => *addr,
                1 => 0x8000,
                2 => 0x9000 + (addr % 0x1000),
                _ => (1 << 20) - 8,
            };
            let a = dt + 16 * i as u64;
            mem.write_obj(addr, GuestAddress(a)).unwrap();
            mem.write_obj(*len, GuestAddress(a + 8)).unwrap();
            mem.write_obj(*flags & 0x7, GuestAddress(a + 12)).unwrap();
            mem.write_obj(*next, GuestAddress(a + 14)).unwrap();
        }
        for (i, h) in heads.iter().enumerate() {
            mem.write_obj(*h, GuestAddress(avail + 4 + 2 * i as u64)).unwrap();
        }
        mem.write_obj(heads.len() as u16, GuestAddress(avail + 2)).unwrap();
        let mut q = Queue::new(16).unwrap();
        q.set_size(16);
        q.set_desc_table_address(Some(dt as u32), Some(0));
        q.set_avail_ring_address(Some(avail as u32), Some(0));
        q.set_used_ring_address(Some(used as u32), Some(0));
        q.set_ready(true);
        // Every ring address is valid guest memory, so the front end itself must not fail.
        let run = dev.process_queue(QueueKind::Control, &mut q, &mem);
        prop_assert!(run.is_ok(), "{:?}", run);
        if let Ok(run) = run {
            prop_assert!(run.chains <= heads.len());
            for i in 0..run.chains {
                let len: u32 = mem.read_obj(GuestAddress(used + 4 + 8 * i as u64 + 4)).unwrap();
                prop_assert!(len as usize <= 16 * 5000);
            }
        }
        prop_assert!(dev.hostmem_used() <= BUDGET);
    }
}
