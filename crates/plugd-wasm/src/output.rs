//! A guest's stdout and stderr: never the host's own (where a guest could forge the host's log
//! lines or block a worker on a full pipe), but lines of the plugin's log stream, under its rate
//! and caps ([`plugd_core::PluginLog`]).

use std::pin::Pin;
use std::task::{Context, Poll};

use plugd_core::{OutputLines, OutputStream, PluginLog};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// One of a guest's output streams, as WASI sees it.
pub(crate) struct GuestOutput {
    log: PluginLog,
    stream: OutputStream,
}

impl GuestOutput {
    pub(crate) fn new(log: &PluginLog, stream: OutputStream) -> Self {
        GuestOutput {
            log: log.clone(),
            stream,
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(Lines(self.log.output(self.stream)))
    }
}

/// Takes every write at once: lines over the rate are dropped, never waited for.
struct Lines(OutputLines);

impl AsyncWrite for Lines {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
