//! NVML, the NVIDIA Management Library (`libnvidia-ml.so.1`), loaded at run time.
//!
//! Only what the inventory needs: a GPU's total memory, as `nvidia-smi` shows it. The library
//! comes with the NVIDIA driver; on a host without it, [`memory_total`] answers `Ok(None)` and
//! nothing else changes. Linking it at build time would make vm-cli fail to start there.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::OnceLock;

use vm_device_host::{HostError, PciAddress};

/// The library's name as the NVIDIA driver installs it (the unversioned `.so` comes only
/// with development packages).
const LIBRARY: &str = "libnvidia-ml.so.1";

/// `NVML_SUCCESS`.
const SUCCESS: c_int = 0;

/// `nvmlMemory_t`.
#[repr(C)]
#[derive(Default)]
struct Memory {
    total: u64,
    free: u64,
    used: u64,
}

type Device = *mut c_void;
type InitFn = unsafe extern "C" fn() -> c_int;
type ShutdownFn = unsafe extern "C" fn() -> c_int;
type ByBusIdFn = unsafe extern "C" fn(*const c_char, *mut Device) -> c_int;
type MemoryFn = unsafe extern "C" fn(Device, *mut Memory) -> c_int;
type ErrorStringFn = unsafe extern "C" fn(c_int) -> *const c_char;

/// The loaded library, kept for the life of the process (unloading NVML is not safe while
/// its threads may run).
fn library() -> Option<&'static libloading::Library> {
    static LIB: OnceLock<Option<libloading::Library>> = OnceLock::new();
    LIB.get_or_init(|| {
        // SAFETY: loading NVML runs its initialisers, which only set up its own state.
        unsafe { libloading::Library::new(LIBRARY) }.ok()
    })
    .as_ref()
}

fn symbol<T: Copy>(lib: &libloading::Library, name: &'static str) -> Result<T, HostError> {
    // SAFETY: each name is looked up with the C signature NVML's header gives it.
    unsafe { lib.get::<T>(name.as_bytes()) }
        .map(|s| *s)
        .map_err(|e| HostError::Nvml {
            call: name,
            detail: format!("{LIBRARY} has no such symbol: {e}"),
        })
}

fn check(lib: &libloading::Library, call: &'static str, rc: c_int) -> Result<(), HostError> {
    if rc == SUCCESS {
        return Ok(());
    }
    let text = symbol::<ErrorStringFn>(lib, "nvmlErrorString")
        .ok()
        // SAFETY: nvmlErrorString returns a static NUL-terminated string (or NULL).
        .map(|f| unsafe { f(rc) })
        .filter(|p| !p.is_null())
        // SAFETY: non-null, static, NUL-terminated (above).
        .map(|p| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        .unwrap_or_else(|| "unknown error".into());
    Err(HostError::Nvml {
        call,
        detail: format!("{text} (return code {rc})"),
    })
}

/// Total memory of the GPU at `addr` (`nvmlDeviceGetMemoryInfo`), or `None` when NVML is not
/// installed. Initialises NVML for the query and shuts it down again, so the device nodes
/// NVML opens are closed when this returns.
pub fn memory_total(addr: &PciAddress) -> Result<Option<u64>, HostError> {
    let Some(lib) = library() else {
        return Ok(None);
    };
    let init = symbol::<InitFn>(lib, "nvmlInit_v2")?;
    let shutdown = symbol::<ShutdownFn>(lib, "nvmlShutdown")?;
    let by_bus_id = symbol::<ByBusIdFn>(lib, "nvmlDeviceGetHandleByPciBusId_v2")?;
    let memory = symbol::<MemoryFn>(lib, "nvmlDeviceGetMemoryInfo")?;
    // SAFETY: no arguments; NVML counts init/shutdown pairs.
    check(lib, "nvmlInit_v2", unsafe { init() })?;
    let result = (|| {
        let bus_id = CString::new(addr.to_string()).expect("a PCI address has no NUL");
        let mut dev: Device = std::ptr::null_mut();
        // SAFETY: a NUL-terminated bus id ("0000:01:00.0" is one of NVML's accepted forms)
        // and a pointer to a handle NVML fills.
        check(lib, "nvmlDeviceGetHandleByPciBusId_v2", unsafe {
            by_bus_id(bus_id.as_ptr(), &mut dev)
        })?;
        let mut mem = Memory::default();
        // SAFETY: a handle NVML gave, and a pointer to an `nvmlMemory_t`.
        check(lib, "nvmlDeviceGetMemoryInfo", unsafe {
            memory(dev, &mut mem)
        })?;
        Ok(Some(mem.total))
    })();
    // SAFETY: pairs the successful nvmlInit_v2 above.
    let _ = unsafe { shutdown() };
    result
}
