//! The programs' log (aya-log): rare kernel-side conditions (a full thread
//! table, a failed task_struct read, a switch-in without its switch-out)
//! that the programs report as records in the `AYA_LOGS` ring, never on
//! the per-event fast path. They are counted for the report
//! (`kernel_warnings`) and, under `--verbose`, printed on stderr.

use std::{
    os::fd::{AsFd as _, BorrowedFd},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use aya::Ebpf;
use aya_log::EbpfLogger;

/// Counts the records and forwards them to stderr when asked.
struct Forward {
    to_stderr: bool,
    count: Arc<AtomicU64>,
}

impl log::Log for Forward {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if self.to_stderr {
            eprintln!(
                "affin-trace: kernel {}: {}",
                record.level(),
                explain(&record.args().to_string())
            );
        }
    }

    fn flush(&self) {}
}

/// A record's text with what it means: the programs keep theirs short
/// (each field of a record costs instructions in every program using it).
fn explain(msg: &str) -> String {
    let tid = |prefix: &str| msg.strip_prefix(prefix).map(str::to_owned);
    if let Some(t) = tid("threads full: tid ") {
        format!(
            "the thread table is full at tid {t}: threads past it are counted as dropped events; raise --max-threads"
        )
    } else if msg == "task read failed" {
        "reading a task_struct failed: that task's events are counted as dropped".into()
    } else if let Some(t) = tid("no switch-out: tid ") {
        format!("tid {t} left its CPU unseen: its last slice is not counted")
    } else {
        msg.into()
    }
}

/// The reader of the programs' log ring.
pub struct KernelLog {
    reader: EbpfLogger<Forward>,
    count: Arc<AtomicU64>,
}

impl KernelLog {
    /// Takes the log ring out of `ebpf`; `None` if the object has none (a
    /// build without log calls) or it cannot be mapped: the trace goes on
    /// without the count.
    pub fn init(ebpf: &mut Ebpf, to_stderr: bool) -> Option<KernelLog> {
        let count = Arc::new(AtomicU64::new(0));
        let forward = Forward {
            to_stderr,
            count: Arc::clone(&count),
        };
        match EbpfLogger::init_with_logger(ebpf, forward) {
            Ok(reader) => Some(KernelLog { reader, count }),
            Err(e) => {
                if to_stderr {
                    eprintln!("affin-trace: {e}; continuing without the kernel log");
                }
                None
            }
        }
    }

    /// Readable while records wait.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.reader.as_fd()
    }

    /// Reads every waiting record.
    pub fn drain(&mut self) {
        self.reader.flush();
    }

    /// Records read so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kernel_message_is_explained_and_others_pass_through() {
        assert_eq!(
            explain("threads full: tid 4242"),
            "the thread table is full at tid 4242: threads past it are counted as dropped events; raise --max-threads"
        );
        assert!(explain("task read failed").starts_with("reading a task_struct failed"));
        assert_eq!(
            explain("no switch-out: tid 7"),
            "tid 7 left its CPU unseen: its last slice is not counted"
        );
        assert_eq!(explain("something new"), "something new");
    }
}
