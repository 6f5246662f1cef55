//! `vm-device-agent`: the node agent's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vm_device_agent::{agent, config::Config, setup};

/// vm-device's GPU node agent for Kubernetes/KubeVirt.
#[derive(Debug, Parser)]
#[command(name = "vm-device-agent", version)]
struct Cli {
    /// Run against a recorded host tree (the simulator) instead of this machine.
    #[arg(long, env = "VM_HOST_ROOT", global = true, value_name = "DIR")]
    host_root: Option<PathBuf>,
    /// With --host-root: keep the simulated host's changes in DIR (as vm-cli does).
    #[arg(long, env = "VM_SIM_STATE", global = true, value_name = "DIR")]
    sim_state: Option<PathBuf>,
    /// Journals and locks (default: DIR/state of --sim-state, else VM_STATE_DIR or
    /// /run/vm-device).
    #[arg(long, env = "VM_STATE_DIR", global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the configuration, serve kubelet's device-plugin API until SIGTERM/SIGINT,
    /// then give everything back.
    Run {
        /// The configuration (JSON; see the README).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// DRA: the Node's name (the pool of the ResourceSlices).
        #[arg(long, env = "NODE_NAME", value_name = "NAME")]
        node_name: Option<String>,
        /// DRA: the API server's kubeconfig (default: KUBECONFIG, ~/.kube/config, then the
        /// pod's service account).
        #[arg(long, value_name = "FILE")]
        kubeconfig: Option<PathBuf>,
        /// DRA without an API server: read claims' allocations from FILE (see the README).
        #[arg(long, value_name = "FILE", requires = "dra_slices_file")]
        dra_claims_file: Option<PathBuf>,
        /// DRA without an API server: write the ResourceSlices into FILE.
        #[arg(long, value_name = "FILE", requires = "dra_claims_file")]
        dra_slices_file: Option<PathBuf>,
    },
    /// Print what this node offers for another tool (changes nothing).
    Export {
        #[command(subcommand)]
        what: Export,
    },
}

#[derive(Debug, Subcommand)]
enum Export {
    /// KubeVirt's `permittedHostDevices` (spec.configuration) for what the agent with
    /// this configuration offers, every entry with externalResourceProvider: true.
    Kubevirt {
        /// The agent's configuration (JSON).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Print JSON instead of YAML.
        #[arg(long)]
        json: bool,
    },
    /// A libvirt `<hostdev>` for a GPU or VF (PCI address) or `<hostdev type='mdev'>` for
    /// an active mdev (UUID).
    Libvirt {
        /// PCI address (DDDD:BB:DD.F) or mdev UUID.
        #[arg(long, value_name = "ADDR|UUID")]
        gpu_device: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let host = match vm_device::host::open(cli.host_root.as_deref(), cli.sim_state.as_deref()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("vm-device-agent: {e}");
            return ExitCode::from(1);
        }
    };
    let run = matches!(cli.command, Command::Run { .. });
    if run && cli.host_root.is_some() && cli.state_dir.is_none() && cli.sim_state.is_none() {
        eprintln!("vm-device-agent: a simulated host needs --sim-state or --state-dir (the journals must outlive the agent)");
        return ExitCode::from(2);
    }
    let state_dir = setup::state_dir(cli.state_dir, cli.sim_state.as_deref());
    match cli.command {
        Command::Export { what } => export(host.as_ref(), what),
        Command::Run {
            config,
            node_name,
            kubeconfig,
            dra_claims_file,
            dra_slices_file,
        } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("vm-device-agent: {e}");
                    return ExitCode::from(2);
                }
            };
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("vm-device-agent: starting the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            let result = rt.block_on(async move {
                // Signals are caught from here on, so a SIGTERM while the configuration is
                // being applied still leads to the clean stop (everything given back).
                use tokio::signal::unix::{signal, SignalKind};
                let (mut term, mut int) = match (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) {
                    (Ok(t), Ok(i)) => (t, i),
                    (Err(e), _) | (_, Err(e)) => {
                        return Err(agent::AgentError::Internal(format!(
                            "catching SIGTERM/SIGINT: {e}"
                        )))
                    }
                };
                let stop = async move {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                };
                let link = match &cfg.dra {
                    None => None,
                    Some(_) => Some(
                        dra_link(node_name, kubeconfig, dra_claims_file, dra_slices_file).await?,
                    ),
                };
                agent::run_with(host, cfg, state_dir, link, stop).await
            });
            match result {
                Ok(r) if r.left.is_empty() => ExitCode::SUCCESS,
                Ok(_) => ExitCode::from(5),
                Err(agent::AgentError::Internal(e)) if e.starts_with(DRA_CONFIG) => {
                    eprintln!("vm-device-agent: {e}");
                    ExitCode::from(2)
                }
                Err(e @ agent::AgentError::Setup(_)) => {
                    eprintln!("vm-device-agent: {e}");
                    ExitCode::from(4)
                }
                Err(e) => {
                    eprintln!("vm-device-agent: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// The start of an error in the DRA driver's own settings (exit 2).
const DRA_CONFIG: &str = "DRA driver settings:";

/// Where the DRA driver reads claims and publishes: local files when given, else the API
/// server.
async fn dra_link(
    node: Option<String>,
    kubeconfig: Option<PathBuf>,
    claims: Option<PathBuf>,
    slices: Option<PathBuf>,
) -> Result<agent::DraLink, agent::AgentError> {
    use std::sync::Arc;
    use vm_device_agent::dra::{kube::KubeDra, local};
    let bad = |e: String| agent::AgentError::Internal(format!("{DRA_CONFIG} {e}"));
    if let (Some(claims), Some(slices)) = (claims, slices) {
        let node = node
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad("--dra-claims-file needs --node-name (or NODE_NAME)".into()))?;
        if !vm_device_agent::dra::slices::is_dns_subdomain(&node) {
            return Err(bad(format!("node name {node:?} is not a DNS subdomain")));
        }
        return Ok(agent::DraLink {
            node: node.clone(),
            claims: Arc::new(local::FileClaims { path: claims }),
            publisher: Arc::new(local::FilePublisher::new(slices, node)),
        });
    }
    let api = KubeDra::connect(kubeconfig.as_deref(), node)
        .await
        .map_err(|e| {
            bad(format!(
                "{e} (without a cluster, give --dra-claims-file and --dra-slices-file)"
            ))
        })?;
    let api = Arc::new(api);
    Ok(agent::DraLink {
        node: api.node().to_string(),
        claims: api.clone(),
        publisher: api,
    })
}

fn export(host: &dyn vm_passthrough::HostOps, what: Export) -> ExitCode {
    use vm_device::inventory::HostInventory;
    use vm_device_agent::export;
    let out = match what {
        Export::Kubevirt { config, json } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("vm-device-agent: {e}");
                    return ExitCode::from(2);
                }
            };
            let inv = HostInventory::scan(host);
            export::kubevirt(&inv, &cfg, &setup::available_gpus(host)).map(|v| {
                if json {
                    format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
                } else {
                    export::to_yaml(&v)
                }
            })
        }
        Export::Libvirt { gpu_device } => export::libvirt(&HostInventory::scan(host), &gpu_device),
    };
    match out {
        Ok(text) => {
            use std::io::Write;
            match std::io::stdout().write_all(text.as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vm-device-agent: writing to standard output: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Err(e) => {
            eprintln!("vm-device-agent: {e}");
            ExitCode::from(3)
        }
    }
}
