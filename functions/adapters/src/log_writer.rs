//! Where log lines go: every writer of fluxrelay's processes (the Lambda functions, `serve`)
//! passes each formatted line through core's `redact_webhook_paths` first, in every format
//! (JSON, text) and at every level. Libraries log what they send (kube-client's `HTTP`
//! span carries the proxied URL at debug), and a generic Receiver's `/hook/<id>` path is
//! its only secret.

use std::borrow::Cow;
use std::io;

use fluxrelay_core::matching::select::redact_webhook_paths;
use tracing_subscriber::fmt::MakeWriter;

/// Wraps a `MakeWriter` (stderr, stdout, a test buffer) so that its lines are redacted.
#[derive(Debug, Clone, Default)]
pub struct Redacting<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(self.0.make_writer())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        RedactingWriter(self.0.make_writer_for(meta))
    }
}

/// `tracing-subscriber` formats a whole event, then writes it with one `write_all`: each
/// `write` here is a whole line, so no path is split between two writes.
pub struct RedactingWriter<W>(W);

impl<W: io::Write> io::Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        match redact_webhook_paths(&text) {
            Cow::Borrowed(_) => self.0.write_all(buf)?,
            Cow::Owned(redacted) => self.0.write_all(redacted.as_bytes())?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    /// A span like kube-client's, at debug, in both formats: the path never gets out.
    #[test]
    fn a_span_url_with_a_webhook_path_is_redacted_in_text_and_json() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let path = "/hook/0123456789abcdef0123456789abcdef";
        let (text, json) = (Buffer::default(), Buffer::default());
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(Redacting(text.clone())))
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_span_list(true)
                    .with_writer(Redacting(json.clone())),
            );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::debug_span!(
                "HTTP",
                http.url = %format!("https://10.0.0.1:6443/api/v1/namespaces/flux-system/services/http:webhook-receiver:80/proxy{path}")
            );
            let _entered = span.enter();
            tracing::debug!(url = %format!("http://receiver{path}"), "requesting");
        });
        for (format, buffer) in [("text", text), ("json", json)] {
            let written = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
            assert!(written.contains("requesting"), "{format}: {written}");
            assert!(written.contains("/hook/<redacted>"), "{format}: {written}");
            assert!(!written.contains("0123456789abcdef"), "{format}: {written}");
        }
    }
}
