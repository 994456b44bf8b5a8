//! The kernel programs' own log records (aya-log), forwarded to the agent's
//! log when `[ebpf] kernel_log` is above "off". The programs write records
//! into a ring buffer; a task wakes when it is readable and passes each
//! record to tracing under the target `vantage::ebpf::kernel`.

use std::os::fd::{AsFd, AsRawFd, RawFd};

use aya::Ebpf;
use tokio::io::unix::AsyncFd;

/// Forwards aya-log's `log` records to tracing.
struct ToTracing;

impl log::Log for ToTracing {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let text = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: "vantage::ebpf::kernel", "{text}"),
            log::Level::Warn => tracing::warn!(target: "vantage::ebpf::kernel", "{text}"),
            log::Level::Info => tracing::info!(target: "vantage::ebpf::kernel", "{text}"),
            log::Level::Debug => tracing::debug!(target: "vantage::ebpf::kernel", "{text}"),
            log::Level::Trace => tracing::trace!(target: "vantage::ebpf::kernel", "{text}"),
        }
    }

    fn flush(&self) {}
}

/// The logger as a file descriptor tokio can wait on.
struct Reader(aya_log::EbpfLogger<ToTracing>);

impl AsRawFd for Reader {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Takes the programs' log ring buffer from `ebpf` and forwards its records
/// until the agent exits. Needs a tokio runtime; failures are logged once.
pub(super) fn start(ebpf: &mut Ebpf) {
    let logger = match aya_log::EbpfLogger::init_with_logger(ebpf, ToTracing) {
        Ok(logger) => logger,
        Err(e) => {
            tracing::warn!(error = %e, "ebpf.kernel_log: cannot read the programs' log records");
            return;
        }
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("ebpf.kernel_log: no runtime to forward the programs' log records");
        return;
    };
    runtime.spawn(async move {
        // SAFETY: the ring buffer's fd belongs to the logger, which the
        // AsyncFd owns for its whole life and never replaces.
        let registered = unsafe { AsyncFd::register_with_interest(Reader(logger), tokio::io::Interest::READABLE) };
        let mut fd = match registered {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(error = %e, "ebpf.kernel_log: cannot poll the log ring buffer");
                return;
            }
        };
        loop {
            let Ok(mut ready) = fd.readable_mut().await else { return };
            ready.get_inner_mut().0.flush();
            ready.clear_ready();
        }
    });
    tracing::info!("ebpf.kernel_log: forwarding the kernel programs' log records");
}
