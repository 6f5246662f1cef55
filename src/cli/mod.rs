//! The `vm-cli` command line: clap definitions, exit codes, and the glue to the library.
//! Everything it prints comes from [`crate::report`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use vm_device_host::PciAddress;

use crate::gpu_manager::{GpuMode, ManagerError, UnifiedGpuManager};
use crate::plan::ExitKind;
use crate::report::{self, PlanRequest};

mod launch;
mod mdev_cmd;

// The exit codes, each the number of its [`ExitKind`] (the one mapping, README's table).
/// Exit status: success.
pub(crate) const EXIT_OK: i32 = ExitKind::Ok.code();
/// Exit status: the host could not be read, or another failure.
pub(crate) const EXIT_FAILURE: i32 = ExitKind::Failed.code();
/// Exit status: bad flags or arguments.
pub(crate) const EXIT_USAGE: i32 = ExitKind::Usage.code();
/// Exit status: no GPU mode available, or the requested mode is unavailable.
pub(crate) const EXIT_UNAVAILABLE: i32 = ExitKind::Unavailable.code();
/// Exit status: a host change failed and could not be undone fully (see the message;
/// `vm-cli gpu restore` finishes the undo).
pub(crate) const EXIT_LEFT_CHANGES: i32 = ExitKind::LeftChanges.code();

const EXIT_CODES: &str = "Exit codes:
  0  success; --kernel without --dry-run: the guest powered off (or SIGINT/SIGTERM stopped
     the VM) and every host change was given back
  1  the host could not be read, or another failure (the message says which file or step);
     --kernel: no suitable QEMU, QEMU exited with an error, or the GPU backend died
  2  usage error (unknown flag, bad PCI address, bad mode, bad --mdev-uuid)
  3  no GPU mode is available, or the mode asked for with --gpu-mode is unavailable;
     gpu prepare: refused (boot display, shared group, device in use) or the group is busy;
     mdev commands: unknown type or parent, no instance left, vendor module not loaded
  4  a host change failed and was undone: the host is as it was
  5  a host change failed and could not be undone fully: the message says what is left;
     run `vm-cli gpu restore` once the cause is fixed

Environment:
  VM_HOST_ROOT    same as --host-root: run against a recorded host tree (the simulator)
  VM_STATE_DIR    same as --state-dir: journals and locks (default /run/vm-device)
  VM_CONFIG_ROOT  same as --config-root (where --persist writes etc/mdevctl.d)
  VM_DEVICE_STEP_DELAY_MS  for crash tests: pause this long after each host change of
                  prepare / mdev-create (so a kill lands between two journaled steps)
  WGPU_BACKEND    vulkan, gl, …: which graphics API the wgpu rung may use
  XDG_RUNTIME_DIR where a VM's sockets go (vm-device/vm-PID/{gpu,qmp}.sock; else the temp dir)";

/// `vm-cli`.
#[derive(Debug, Parser)]
#[command(
    name = "vm-cli",
    version,
    about = "Give a virtual machine the best GPU this host can offer: passthrough, mediated, or wgpu",
    after_help = EXIT_CODES
)]
pub(crate) struct Cli {
    /// Run against a recorded host tree (fixture) instead of this machine.
    #[arg(long, env = "VM_HOST_ROOT", global = true, value_name = "DIR")]
    pub host_root: Option<PathBuf>,
    /// Print JSON (schema 1) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Where journals and group locks live (default /run/vm-device; with --host-root, the
    /// simulated host's own: DIR/state of --sim-state, or a scratch directory).
    #[arg(long, env = "VM_STATE_DIR", global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// With --host-root: keep the simulated host's changes (and its journals, in DIR/state)
    /// in DIR, so the next vm-cli with the same DIR sees them.
    #[arg(long, env = "VM_SIM_STATE", global = true, value_name = "DIR")]
    pub sim_state: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

/// Starting a VM (`--kernel`).
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Guest kernel image.
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// GPU mode: auto picks the best available; passthrough, mdev or wgpu force that mode.
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = parse_mode_arg)]
    pub gpu_mode: ModeArg,
    /// Prefer a mode, falling back down the ladder (passthrough > mdev > wgpu) when unavailable.
    #[arg(long, value_name = "MODE", conflicts_with = "gpu_mode")]
    pub prefer_mode: Option<GpuMode>,
    /// With --prefer-mode: fail instead of falling back.
    #[arg(long, requires = "prefer_mode")]
    pub no_fallback: bool,
    /// Use only this GPU (passthrough target, or parent of the mdev / virtual function).
    #[arg(long, value_name = "DDDD:BB:DD.F")]
    pub gpu_device: Option<PciAddress>,
    /// mdev type id (i915-GVTg_V5_4, nvidia-222) or name (GRID T4-1Q).
    #[arg(long, value_name = "TYPE")]
    pub mdev_type: Option<String>,
    /// Allow passing through the host's boot display (the host loses its console).
    #[arg(long)]
    pub allow_boot_vga: bool,
    /// Print the plan and change nothing. Global: it may stand before or after a
    /// subcommand (`vm-cli --dry-run gpu prepare ADDR` is a dry run too); a command that
    /// has no dry run (`gpu release`, `gpu restore`, `host record`) refuses it.
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// Initial ramdisk for the guest.
    #[arg(long, value_name = "FILE", requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// Guest kernel command line.
    #[arg(long, value_name = "CMDLINE", requires = "kernel")]
    pub append: Option<String>,
    /// Guest RAM: 2G, 512M, 4096 (MiB).
    #[arg(long, value_name = "SIZE", default_value = "2G", value_parser = parse_size)]
    pub memory: u64,
    /// Virtual CPUs.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub cpus: u32,
    /// The QEMU to run (default: the newest qemu-system-x86_64 on PATH).
    #[arg(long, value_name = "PATH")]
    pub qemu: Option<PathBuf>,
    /// Print the QEMU command line and the host changes it needs, and change nothing.
    #[arg(long, conflicts_with = "dry_run")]
    pub print_cmdline: bool,
    /// Passthrough: `x-vga=on` on the GPU (legacy VGA ranges go to the guest's GPU).
    #[arg(long)]
    pub x_vga: bool,
    /// Guest RAM from hugepages of this size (2M or 1G); refused before any host change
    /// when too few are free (on the node memory is bound to).
    #[arg(long, value_name = "2M|1G", value_parser = parse_page_size)]
    pub hugepages: Option<crate::launch::PageSize>,
    /// With --hugepages: reserve the missing pages (journaled nr_hugepages write, given back
    /// when the VM ends).
    #[arg(long, requires = "hugepages")]
    pub reserve_hugepages: bool,
    /// NUMA placement: auto (the GPU's node when the host has several), a node number, or off.
    #[arg(long, value_name = "auto|N|off", default_value = "auto", value_parser = parse_numa)]
    pub numa: crate::launch::NumaChoice,
    /// Pin the vCPU threads to these host CPUs (0-3,8): one each when the list has as many
    /// CPUs as --cpus, else every vCPU on all of them.
    #[arg(long, value_name = "LIST", value_parser = parse_cpu_pin)]
    pub cpu_pin: Option<CpuList>,
}

/// `--cpu-pin`'s value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<u32>);

fn parse_cpu_pin(s: &str) -> Result<CpuList, String> {
    crate::launch::tuning::parse_cpu_list(s).map(CpuList)
}

fn parse_page_size(s: &str) -> Result<crate::launch::PageSize, String> {
    s.parse()
}

fn parse_numa(s: &str) -> Result<crate::launch::NumaChoice, String> {
    s.parse()
}

impl RunArgs {
    /// The tuning flags as the library's options.
    pub fn tuning(&self) -> crate::launch::TuningOptions {
        crate::launch::TuningOptions {
            hugepages: self.hugepages,
            reserve_hugepages: self.reserve_hugepages,
            numa: self.numa,
            cpu_pin: self.cpu_pin.as_ref().map(|c| c.0.clone()),
            adapter_device: self.gpu_device,
        }
    }
}

/// `--gpu-mode` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ModeArg {
    /// Best available.
    Auto,
    /// Exactly this mode.
    Mode(GpuMode),
}

fn parse_mode_arg(s: &str) -> Result<ModeArg, String> {
    if s.eq_ignore_ascii_case("auto") {
        Ok(ModeArg::Auto)
    } else {
        s.parse().map(ModeArg::Mode)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// GPUs of this host.
    Gpu {
        #[command(subcommand)]
        command: GpuCommand,
    },
    /// The host as a whole.
    Host {
        #[command(subcommand)]
        command: HostCommand,
    },
}

#[derive(Debug, Subcommand)]
enum HostCommand {
    /// Record this host (sysfs, /proc, /dev/vfio, wgpu adapters) as a fixture tree in DIR,
    /// for a bug report or a new test host (format: docs/fixture-format.md).
    Record {
        /// Output directory (must be empty or absent).
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum GpuCommand {
    /// List GPUs and what each mode (passthrough, mdev, wgpu) can offer, with reasons.
    List,
    /// List mediated-device types (mdev and NVIDIA vendor-VFIO) with instances left.
    MdevTypes {
        /// Only this parent (PCI address, or an mdev_bus name such as mbochs).
        #[arg(long, value_name = "PARENT")]
        gpu_device: Option<String>,
    },
    /// List mediated devices: the active ones and those defined in mdevctl's config
    /// (/etc/mdevctl.d), like `mdevctl list` and `mdevctl list --defined` together.
    MdevList,
    /// Create a mediated device (or an NVIDIA vendor-VFIO vGPU on a free VF).
    MdevCreate(MdevCreateArgs),
    /// Remove a mediated device by UUID (or clear a VF's vendor-VFIO vGPU by VF address).
    MdevRemove {
        /// The mdev's UUID, or the VF's PCI address.
        #[arg(value_name = "UUID")]
        uuid: String,
    },
    /// Set the number of SR-IOV virtual functions of a GPU.
    Sriov {
        /// The physical function.
        #[arg(long, value_name = "DDDD:BB:DD.F")]
        gpu_device: PciAddress,
        /// Virtual functions wanted (0 disables them).
        #[arg(long, value_name = "N")]
        num_vfs: u32,
    },
    /// Check everything each mode needs (IOMMU, kernel parameters, modules, groups, reset,
    /// drivers, device nodes, memlock, mdev types, wgpu adapters): ok / warn / fail with the
    /// fix. Exit 0 when the mode asked for (any, by default) is ready, 3 otherwise.
    Doctor(DoctorArgs),
    /// Move a GPU's IOMMU group to vfio-pci (with its companions), journaled and reversible.
    Prepare {
        /// The GPU.
        #[arg(value_name = "DDDD:BB:DD.F")]
        addr: PciAddress,
        /// Allow passing through the host's boot display (the host loses its console).
        #[arg(long)]
        allow_boot_vga: bool,
    },
    /// Give a prepared GPU's group back to its original drivers.
    Release {
        /// The GPU (or any member of its group).
        #[arg(value_name = "DDDD:BB:DD.F")]
        addr: PciAddress,
    },
    /// Undo what processes that died (crash, kill -9) left prepared.
    Restore {
        #[command(flatten)]
        dirs: ChangeDirs,
    },
    /// Serve one VM's virtio-gpu as a vhost-user-gpu backend rendered with wgpu (QEMU's
    /// `-device vhost-user-gpu-pci`); runs until QEMU disconnects. `vm-cli --kernel …
    /// --gpu-mode wgpu` starts it by itself.
    ServeWgpu {
        /// The unix socket to listen on (QEMU's `-chardev socket,path=`).
        #[arg(long, value_name = "PATH")]
        socket: PathBuf,
        /// Display width offered to the guest.
        #[arg(long, default_value_t = 1280, value_parser = clap::value_parser!(u32).range(1..=16384))]
        width: u32,
        /// Display height offered to the guest.
        #[arg(long, default_value_t = 800, value_parser = clap::value_parser!(u32).range(1..=16384))]
        height: u32,
        /// Offer a 2D device only: no `VIRTIO_GPU_F_VIRGL`, no WebGPU capset, no guest
        /// contexts on the adapter (by default the guest can run WebGPU through
        /// `webgpu-guest`).
        #[arg(long)]
        no_webgpu: bool,
    },
}

/// `vm-cli gpu mdev-create`.
#[derive(Debug, Args)]
pub(crate) struct MdevCreateArgs {
    /// Type id (i915-GVTg_V5_4, nvidia-228, mbochs-small) or name (GRID T4-8Q).
    #[arg(long, value_name = "TYPE")]
    pub mdev_type: String,
    /// Parent: PCI address or mdev_bus name; by default a parent with a free instance,
    /// least loaded first.
    #[arg(long, value_name = "PARENT")]
    pub gpu_device: Option<String>,
    /// Prefer parents on this NUMA node.
    #[arg(long, value_name = "NODE")]
    pub numa_node: Option<u32>,
    /// Use this UUID (8-4-4-4-12 hex) instead of a random one.
    #[arg(long, value_name = "UUID", conflicts_with = "vm_name")]
    pub mdev_uuid: Option<String>,
    /// Derive the UUID from the VM's name, so a restarted VM gets the same device back.
    #[arg(long, value_name = "NAME")]
    pub vm_name: Option<String>,
    /// With --vm-name: which of the VM's devices this is.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "vm_name")]
    pub index: u32,
    /// Keep the device across reboots: write an mdevctl definition.
    #[arg(long)]
    pub persist: bool,
    /// With --persist: start it automatically when the parent appears (mdevctl `auto`).
    #[arg(long, requires = "persist")]
    pub auto: bool,
    #[command(flatten)]
    dirs: ChangeDirs,
}

/// Where host changes keep configuration and journals.
#[derive(Debug, Args)]
pub(crate) struct ChangeDirs {
    /// Root for host configuration written by --persist (`etc/mdevctl.d` under it); `/` of
    /// the host by default. With --host-root it is a directory of the simulated host (its
    /// tree), so a simulation never writes this machine's /etc.
    #[arg(long, env = "VM_CONFIG_ROOT", value_name = "DIR")]
    pub config_root: Option<PathBuf>,
}

/// `gpu doctor` flags.
#[derive(Debug, Args)]
struct DoctorArgs {
    /// The mode that must be ready: auto (any), passthrough, mdev or wgpu.
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = parse_mode_arg)]
    gpu_mode: ModeArg,
    /// Check only this GPU.
    #[arg(long, value_name = "DDDD:BB:DD.F")]
    gpu_device: Option<PciAddress>,
    /// Guest memory that VFIO will pin: 2G, 512M, 4096 (MiB).
    #[arg(long, value_name = "SIZE", default_value = "2G", value_parser = parse_size)]
    memory: u64,
}

/// Parses the process arguments, runs, and returns the exit code.
pub fn main() -> i32 {
    use clap::{CommandFactory, FromArgMatches};
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|c| (c, m)));
    let (cli, matches) = match parsed {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    if let Err(msg) = misplaced_flags(&matches) {
        eprintln!("vm-cli: {msg}");
        return EXIT_USAGE;
    }
    let code = run(cli);
    // What was printed did not arrive (`>/dev/full`): the command did not do its job.
    if code == EXIT_OK && STDOUT_FAILED.load(std::sync::atomic::Ordering::SeqCst) {
        return EXIT_FAILURE;
    }
    code
}

/// Set when writing to standard output failed (other than a closed pipe).
static STDOUT_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Reports a failed write to standard output once, and remembers it for the exit code. A
/// closed pipe (`vm-cli gpu list | head`) is the reader's choice: quiet, and no failure.
fn stdout_failed(e: &std::io::Error) {
    if e.kind() != std::io::ErrorKind::BrokenPipe
        && !STDOUT_FAILED.swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        eprintln!("vm-cli: writing to standard output: {e}");
    }
}

/// Flags of a VM start (`--kernel`, `--gpu-mode`, `--allow-boot-vga`, …) given together with
/// a subcommand: clap accepts them before it (`vm-cli --allow-boot-vga gpu prepare ADDR`),
/// where they would silently do nothing. Refused, naming the flag. `--dry-run` is global
/// and works in every position, so it is not one of them.
fn misplaced_flags(m: &clap::ArgMatches) -> Result<(), String> {
    use clap::parser::ValueSource;
    let Some((sub, _)) = m.subcommand() else {
        return Ok(());
    };
    let launch = RunArgs::augment_args(clap::Command::new("run"));
    for arg in launch.get_arguments().filter(|a| !a.is_global_set()) {
        let id = arg.get_id().as_str();
        if m.value_source(id) == Some(ValueSource::CommandLine) {
            let flag = arg.get_long().unwrap_or(id);
            return Err(format!(
                "--{flag} belongs to starting a VM (`vm-cli --kernel FILE …`) and does nothing \
                 for `vm-cli {sub} …`, so nothing was done; give the subcommand's own flags \
                 after it (see `vm-cli {sub} --help`)"
            ));
        }
    }
    Ok(())
}

/// Refuses `--dry-run` for a command that has no dry run (it would change the host).
fn no_dry_run(dry_run: bool, command: &str) -> Result<(), i32> {
    if dry_run {
        eprintln!(
            "vm-cli: {command} has no dry run; it would change the host, so nothing was done (drop --dry-run to run it)"
        );
        return Err(EXIT_USAGE);
    }
    Ok(())
}

/// Runs a parsed command line.
pub(crate) fn run(cli: Cli) -> i32 {
    let host = match crate::host::open(cli.host_root.as_deref(), cli.sim_state.as_deref()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("vm-cli: {e}");
            return EXIT_FAILURE;
        }
    };
    let simulated = cli.host_root.is_some();
    let dry_run = cli.run.dry_run;
    let state = StateDirChoice::resolve(cli.state_dir.clone(), simulated, cli.sim_state.as_deref());
    let state_dir = state.dir.clone();
    let mut mgr = UnifiedGpuManager::with_host(host.clone());
    match cli.command {
        Some(Command::Gpu {
            command: GpuCommand::List,
        }) => gpu_list(&mut mgr, cli.json, &state_dir),
        Some(Command::Gpu {
            command: GpuCommand::Doctor(args),
        }) => gpu_doctor(&mut mgr, &args, cli.json),
        Some(Command::Gpu {
            command:
                GpuCommand::Prepare {
                    addr,
                    allow_boot_vga,
                },
        }) => gpu_prepare(
            host.as_ref(),
            &addr,
            dry_run,
            allow_boot_vga,
            &state_dir,
            cli.json,
        ),
        Some(Command::Gpu {
            command: GpuCommand::Release { addr },
        }) => match no_dry_run(dry_run, "gpu release") {
            Err(code) => code,
            Ok(()) => gpu_release(host.as_ref(), &addr, &state_dir, cli.json),
        },
        Some(Command::Gpu {
            command: GpuCommand::Restore { dirs },
        }) => match no_dry_run(dry_run, "gpu restore") {
            Err(code) => code,
            Ok(()) => {
                let scope = crate::plan::ReplayScope {
                    // `/` of the host restore runs on: a simulated host's own tree.
                    config_root: Some(dirs.config_root.unwrap_or_else(|| PathBuf::from("/"))),
                };
                gpu_restore(host.as_ref(), &state_dir, &scope, cli.json)
            }
        },
        Some(Command::Gpu {
            command:
                GpuCommand::ServeWgpu {
                    socket,
                    width,
                    height,
                    no_webgpu,
                },
        }) => match no_dry_run(dry_run, "gpu serve-wgpu") {
            Err(code) => code,
            Ok(()) => serve_wgpu(&socket, width, height, !no_webgpu),
        },
        Some(Command::Gpu {
            command: GpuCommand::MdevTypes { gpu_device },
        }) => mdev_cmd::mdev_types(host.as_ref(), gpu_device.as_deref(), cli.json),
        Some(Command::Gpu {
            command: GpuCommand::MdevList,
        }) => mdev_cmd::mdev_list(host.as_ref(), cli.json),
        Some(Command::Gpu {
            command: GpuCommand::MdevCreate(args),
        }) => mdev_cmd::mdev_create(
            host.as_ref(),
            &args,
            cli.json,
            (simulated, dry_run),
            &state_dir,
        ),
        Some(Command::Gpu {
            command: GpuCommand::MdevRemove { uuid },
        }) => mdev_cmd::mdev_remove(host.as_ref(), &uuid, dry_run, cli.json, &state_dir),
        Some(Command::Gpu {
            command:
                GpuCommand::Sriov {
                    gpu_device,
                    num_vfs,
                },
        }) => mdev_cmd::sriov(
            host.as_ref(),
            &gpu_device,
            num_vfs,
            (cli.json, dry_run),
            &state_dir,
        ),
        Some(Command::Host {
            command: HostCommand::Record { .. },
        }) if dry_run => no_dry_run(dry_run, "host record")
            .err()
            .unwrap_or(EXIT_USAGE),
        Some(Command::Host {
            command: HostCommand::Record { dir },
        }) => match crate::recorder::record_host(mgr.host().as_ref(), &dir) {
            Ok(summary) => {
                if cli.json {
                    let mut doc = serde_json::json!({
                        "schema": report::SCHEMA,
                        "command": "host record",
                    });
                    if let (Some(o), Ok(serde_json::Value::Object(s))) =
                        (doc.as_object_mut(), serde_json::to_value(&summary))
                    {
                        o.extend(s);
                    }
                    write_json(&doc);
                } else {
                    write_text(&format!("{summary}\n"));
                }
                for s in &summary.skipped {
                    eprintln!("vm-cli: warning: left out of the recording: {s}");
                }
                EXIT_OK
            }
            Err(e) => {
                if cli.json {
                    write_json(&serde_json::json!({
                        "schema": report::SCHEMA,
                        "command": "host record",
                        "error": format!("{}: {e}", dir.display()),
                    }));
                }
                eprintln!("vm-cli: host record {}: {e}", dir.display());
                EXIT_FAILURE
            }
        },
        None => match &cli.run.kernel {
            Some(_) => plan(&mut mgr, &cli.run, cli.json, &state_dir, simulated),
            None => {
                eprintln!("vm-cli: nothing to do: give --kernel FILE to start a VM, or a command such as `vm-cli gpu list` (see --help)");
                EXIT_USAGE
            }
        },
    }
}

fn fail(e: &ManagerError) -> i32 {
    eprintln!("vm-cli: {e}");
    e.exit_kind().code()
}

fn gpu_list(mgr: &mut UnifiedGpuManager, json: bool, state_dir: &std::path::Path) -> i32 {
    let holders = crate::rungs::passthrough::holders(mgr.host().as_ref(), state_dir);
    if let Err(e) = mgr.scan_backends() {
        return fail(&e);
    }
    let backends = match mgr.backends() {
        Ok(b) => b,
        Err(e) => return fail(&e),
    };
    let auto = mgr.auto_select().ok().cloned();
    let inv = mgr.inventory().expect("scanned above");
    if json {
        let mut doc = report::list_json(inv, &backends, auto.as_ref());
        if let Some(o) = doc.as_object_mut() {
            o.insert(
                "passthrough_holders".into(),
                report::passthrough::holders_json(&holders),
            );
        }
        write_json(&doc);
    } else {
        write_text(&report::list_text(inv, &backends, auto.as_ref()));
        write_text(&report::passthrough::holders_text(&holders));
    }
    for w in &inv.warnings {
        eprintln!("vm-cli: warning: {}: {}", w.path.display(), w.message);
    }
    if auto.is_some() {
        EXIT_OK
    } else {
        EXIT_UNAVAILABLE
    }
}

fn plan(
    mgr: &mut UnifiedGpuManager,
    run: &RunArgs,
    json: bool,
    state_dir: &std::path::Path,
    simulated: bool,
) -> i32 {
    if let Err(msg) = flags_for_mode(run) {
        eprintln!("vm-cli: {msg}");
        return EXIT_USAGE;
    }
    mgr.set_device(run.gpu_device);
    mgr.set_mdev_type(run.mdev_type.clone());
    mgr.set_allow_boot_vga(run.allow_boot_vga);
    if let Err(e) = mgr.scan_backends() {
        return fail(&e);
    }
    let forced = match run.gpu_mode {
        ModeArg::Auto => None,
        ModeArg::Mode(m) => Some(m),
    };
    let result = match (forced, run.prefer_mode) {
        (Some(m), _) => mgr.select_by_mode(m).map(|_| ()),
        (None, Some(p)) => {
            mgr.set_preferred_mode(p);
            mgr.set_auto_fallback(!run.no_fallback);
            mgr.auto_select().map(|_| ())
        }
        (None, None) => mgr.auto_select().map(|_| ()),
    };
    let pref = match forced {
        Some(m) => crate::ladder::Preference {
            preferred: Some(m),
            auto_fallback: false,
        },
        None => mgr.preference(),
    };
    let req = PlanRequest {
        kernel: run.kernel.as_ref().map(|k| k.display().to_string()),
        gpu_mode: forced,
        gpu_device: run.gpu_device,
        mdev_type: run.mdev_type.clone(),
    };
    let mut doc = mgr.decision().map(|d| {
        if json {
            report::plan_json(&req, &pref, d)
        } else {
            write_text(&report::plan_text(&req, d));
            serde_json::Value::Null
        }
    });
    let print_doc = |doc: &Option<serde_json::Value>| {
        if let Some(v) = doc.as_ref().filter(|_| json) {
            write_json(v);
        }
    };
    if let Err(e) = result {
        print_doc(&doc);
        return fail(&e);
    }
    if run.dry_run {
        let code = launch::dry_run_tuning(mgr, run, json, &mut doc);
        print_doc(&doc);
        return code;
    }
    let Some(candidate) = mgr.get_selected_backend().cloned() else {
        print_doc(&doc);
        eprintln!("vm-cli: no GPU was selected");
        return EXIT_UNAVAILABLE;
    };
    let Some(inv) = mgr.inventory() else {
        return fail(&ManagerError::NotScanned);
    };
    let code = launch::launch(
        mgr.host(),
        inv,
        &candidate,
        run,
        (state_dir, simulated),
        json,
        &mut doc,
    );
    print_doc(&doc);
    code
}

/// Flags that belong to another mode than the one forced with `--gpu-mode`.
fn flags_for_mode(run: &RunArgs) -> Result<(), String> {
    let ModeArg::Mode(mode) = run.gpu_mode else {
        return Ok(());
    };
    if run.mdev_type.is_some() && mode != GpuMode::Mdev {
        return Err(format!(
            "--mdev-type applies to --gpu-mode mdev, not --gpu-mode {mode}; drop one of them"
        ));
    }
    if run.x_vga && mode != GpuMode::Passthrough {
        return Err(format!(
            "--x-vga applies to --gpu-mode passthrough, not --gpu-mode {mode}; drop one of them"
        ));
    }
    Ok(())
}

fn serve_wgpu(socket: &std::path::Path, width: u32, height: u32, webgpu: bool) -> i32 {
    use crate::rungs::wgpu::vhost_user::VhostUserGpu;
    use crate::rungs::wgpu::virtio_gpu::VirtioGpuConfig;
    use crate::rungs::wgpu::WgpuBackend;
    let mut backend = WgpuBackend::new();
    if let Err(e) = backend.init() {
        eprintln!("vm-cli: gpu serve-wgpu: {e}");
        return EXIT_UNAVAILABLE;
    }
    let device = match backend.create_device(VirtioGpuConfig {
        scanouts: vec![(width, height)],
        webgpu: webgpu.then(webgpu_host::Budget::default),
        ..VirtioGpuConfig::default()
    }) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("vm-cli: gpu serve-wgpu: {e}");
            return EXIT_USAGE;
        }
    };
    if let Some(info) = backend.adapter_info() {
        eprintln!(
            "vm-cli: gpu serve-wgpu: {} ({:?}), {width}x{height}, WebGPU for the guest {}, listening on {}",
            info.name,
            info.backend,
            if webgpu { "on" } else { "off" },
            socket.display()
        );
    }
    let gpu = VhostUserGpu::new(device);
    let result = gpu.serve(socket);
    let _ = std::fs::remove_file(socket);
    eprintln!("vm-cli: gpu serve-wgpu: {}", gpu.with_device(|d| d.stats()));
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("vm-cli: gpu serve-wgpu: {e}");
            EXIT_FAILURE
        }
    }
}

/// `2G`, `512M`, `1024K`, `4096` (MiB, as QEMU's `-m`) in bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => {
                    return Err(format!(
                        "`{s}`: unknown size suffix `{c}` (use K, M, G or T)"
                    ))
                }
            };
            (&t[..i], shift)
        }
        _ => (t, 20),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size such as 2G, 512M or 4096 (MiB)"))?;
    n.checked_shl(shift)
        .filter(|v| v >> shift == n && *v > 0)
        .ok_or_else(|| format!("`{s}`: size must be above zero and below 16 EiB"))
}

fn gpu_doctor(mgr: &mut UnifiedGpuManager, args: &DoctorArgs, json: bool) -> i32 {
    mgr.set_device(args.gpu_device);
    if let Err(e) = mgr.scan_backends() {
        return fail(&e);
    }
    let candidates = match mgr.backends() {
        Ok(b) => b,
        Err(e) => return fail(&e),
    };
    let opts = crate::doctor::Options {
        mode: match args.gpu_mode {
            ModeArg::Auto => None,
            ModeArg::Mode(m) => Some(m),
        },
        device: args.gpu_device,
        memory_bytes: args.memory,
        wgpu_backend: std::env::var("WGPU_BACKEND").ok(),
    };
    let inv = mgr.inventory().expect("scanned above");
    let r = crate::doctor::run(mgr.host().as_ref(), inv, &candidates, &opts);
    if json {
        write_json(&report::doctor_json(&r, &opts));
    } else {
        write_text(&report::doctor_text(&r, &opts));
    }
    for w in &inv.warnings {
        eprintln!("vm-cli: warning: {}: {}", w.path.display(), w.message);
    }
    if r.ready {
        EXIT_OK
    } else {
        EXIT_UNAVAILABLE
    }
}

/// Where this run keeps journals and locks — the one rule for every command that changes
/// the host (prepare, release, restore, mdev and sriov changes, launches): `--state-dir`
/// when given; else on a real host the default (`/run/vm-device`); else, for a simulated
/// host, with the simulated host's own state: `DIR/state` of `--sim-state DIR`, or a scratch
/// directory removed when vm-cli exits (its changes die with it too). A simulation never
/// writes the real state directory unless told to, and its journals name their tree, so a
/// real `restore` refuses them anyway.
struct StateDirChoice {
    dir: PathBuf,
    scratch: bool,
}

impl StateDirChoice {
    fn resolve(
        explicit: Option<PathBuf>,
        simulated: bool,
        sim_state: Option<&std::path::Path>,
    ) -> Self {
        let (dir, scratch) = match (explicit, simulated, sim_state) {
            (Some(d), _, _) => (d, false),
            (None, false, _) => (crate::plan::default_state_dir(), false),
            (None, true, Some(s)) => (s.join("state"), false),
            (None, true, None) => (
                std::env::temp_dir().join(format!("vm-device-sim-{}", uuid::Uuid::new_v4())),
                true,
            ),
        };
        StateDirChoice { dir, scratch }
    }
}

impl Drop for StateDirChoice {
    fn drop(&mut self) {
        if self.scratch {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Writes a JSON document (pretty, as people read it too) straight to standard output.
pub(crate) fn write_json(v: &serde_json::Value) {
    use std::io::Write;
    let out = std::io::stdout();
    let mut w = std::io::BufWriter::with_capacity(1 << 16, out.lock());
    // A closed pipe (`| head`) is not an error worth a panic.
    let r = serde_json::to_writer_pretty(&mut w, v)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(w))
        .and_then(|()| w.flush());
    if let Err(e) = r {
        stdout_failed(&e);
    }
}

/// Writes text to standard output. A closed pipe (`vm-cli gpu list | head`) ends the output
/// quietly, where `print!` would panic; another write error is reported on standard error
/// and makes the exit code 1.
pub(crate) fn write_text(s: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        stdout_failed(&e);
    }
}

fn passthrough_fail(
    command: &str,
    e: &crate::rungs::passthrough::PassthroughError,
    json: bool,
) -> i32 {
    if json {
        write_json(&report::passthrough::error_json(command, e));
    }
    eprintln!("vm-cli: {e}");
    e.exit_kind().code()
}

fn gpu_prepare(
    host: &dyn crate::host::HostOps,
    addr: &PciAddress,
    dry_run: bool,
    allow_boot_vga: bool,
    state_dir: &std::path::Path,
    json: bool,
) -> i32 {
    use crate::rungs::passthrough::{plan_prepare, prepare, PrepareOptions};
    if dry_run {
        return match plan_prepare(host, addr, allow_boot_vga) {
            Ok(p) => {
                if json {
                    write_json(&report::passthrough::plan_json(&p, true, None));
                } else {
                    write_text(&report::passthrough::plan_text(&p));
                }
                EXIT_OK
            }
            Err(e) => passthrough_fail("gpu prepare", &e, json),
        };
    }
    let opts = PrepareOptions {
        allow_boot_vga,
        state_dir: state_dir.to_path_buf(),
    };
    let prepared = match prepare(host, addr, &opts) {
        Ok(p) => p,
        Err(e) => return passthrough_fail("gpu prepare", &e, json),
    };
    let plan = prepared.plan().clone();
    // The devices stay on vfio-pci after vm-cli exits, until `gpu release`.
    match prepared.detach() {
        Ok(journal) => {
            if json {
                write_json(&report::passthrough::plan_json(
                    &plan,
                    false,
                    Some(&journal),
                ));
            } else {
                write_text(&report::passthrough::plan_text(&plan));
                write_text(&format!(
                    "prepared: IOMMU group {} is on vfio-pci (journal {}); give it back with `vm-cli gpu release {addr}`\n",
                    plan.group,
                    journal.display()
                ));
            }
            EXIT_OK
        }
        Err(e) => passthrough_fail("gpu prepare", &e, json),
    }
}

fn gpu_release(
    host: &dyn crate::host::HostOps,
    addr: &PciAddress,
    state_dir: &std::path::Path,
    json: bool,
) -> i32 {
    match crate::rungs::passthrough::release(host, addr, state_dir) {
        Ok(r) => {
            if json {
                write_json(&report::passthrough::undo_json("gpu release", &r));
            } else {
                write_text(&format!(
                    "released: {} step(s) undone{}; every device is back on its driver\n",
                    r.undone.len(),
                    report::passthrough::skipped_text(&r)
                ));
            }
            EXIT_OK
        }
        Err(e) => passthrough_fail("gpu release", &e, json),
    }
}

fn gpu_restore(
    host: &dyn crate::host::HostOps,
    state_dir: &std::path::Path,
    scope: &crate::plan::ReplayScope,
    json: bool,
) -> i32 {
    let report = crate::rungs::passthrough::restore_in(host, state_dir, scope);
    if json {
        write_json(&report::passthrough::restore_json(&report));
    } else {
        write_text(&report::passthrough::restore_text(&report));
    }
    if report.left_changes() {
        EXIT_LEFT_CHANGES
    } else if !report.complete() {
        // A journal refused or unreadable, or a state directory that is not one: nothing
        // was changed for it.
        EXIT_FAILURE
    } else {
        EXIT_OK
    }
}
