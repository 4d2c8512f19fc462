//! Log lines nobody can forge. Text logs carry values agents and users
//! chose (paths, hostnames, mail bodies); written as they are, a newline in
//! one starts what looks like a log line of its own. The text log's writer
//! gets each event in one write (that is how `tracing_subscriber`'s fmt
//! layer writes), and escapes every control character in it but the final
//! newline: `\n`, `\r`, other C0 bytes and DEL become `\n`, `\r`, `\xNN`.
//! (JSON logs are escaped by JSON itself.)

use std::io::{self, Write};
use tracing_subscriber::fmt::MakeWriter;

/// Wraps a [`MakeWriter`] so each event is one line.
#[derive(Debug, Clone)]
pub struct OneLine<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for OneLine<M> {
    type Writer = Escaping<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Escaping(self.0.make_writer())
    }
}

/// A writer that escapes control characters (see the module doc).
#[derive(Debug)]
pub struct Escaping<W>(W);

fn is_control(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

impl<W: Write> Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let (body, end): (&[u8], &[u8]) = match buf.split_last() {
            Some((b'\n', body)) => (body, b"\n"),
            _ => (buf, b""),
        };
        if !body.iter().copied().any(is_control) {
            return self.0.write_all(buf);
        }
        let mut out = Vec::with_capacity(buf.len() + 16);
        for &b in body {
            match b {
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b if is_control(b) => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
                b => out.push(b),
            }
        }
        out.extend_from_slice(end);
        self.0.write_all(&out)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_value_with_a_newline_cannot_start_a_line_of_its_own() {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(OneLine(move || sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let body =
                "Banned app: /tmp/x\n2026-12-05T00:00:00Z  INFO mamori: admin logged in\r\x1b[2J";
            tracing::info!(to = "a@example.com", body = %body, "mail");
            tracing::info!("next");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("/tmp/x\\n2026-12-05"), "{text}");
        assert!(lines[0].contains("\\r\\x1b[2J"), "{text}");
        assert!(lines[1].ends_with("next"), "{text}");
    }
}
