//! The framing of one spooled event inside a segment file.
//!
//! `len: u32 LE | crc32(payload): u32 LE | payload` where the payload is the
//! protobuf encoding of an `Event`. The CRC tells a record written in full
//! from one torn by a crash or power loss; a zero length is refused because a
//! crashed filesystem can leave zero-filled blocks at the end of a file and
//! the CRC of nothing is zero.

use std::io::{self, Read};

/// Bytes in front of every payload.
pub(crate) const HEADER_LEN: usize = 8;

/// The largest payload the spool accepts. Far above any real event (paths and
/// command lines are truncated at 4 KiB) and well under the 1 MiB batch
/// budget, so one event always fits in a batch.
pub(crate) const MAX_PAYLOAD: usize = 256 * 1024;

/// Appends the framed `payload` to `out`.
pub(crate) fn encode(payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(!payload.is_empty() && payload.len() <= MAX_PAYLOAD);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// What reading the next record found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// A whole, intact record; the payload is in the caller's buffer.
    Record,
    /// A clean end of file.
    End,
    /// A torn or corrupt record: the file is unusable from here on.
    Bad,
}

/// Reads one record into `payload` (replacing its content).
pub(crate) fn read(r: &mut impl Read, payload: &mut Vec<u8>) -> io::Result<Next> {
    let mut header = [0u8; HEADER_LEN];
    match read_full(r, &mut header)? {
        0 => return Ok(Next::End),
        HEADER_LEN => {}
        _ => return Ok(Next::Bad),
    }
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if len == 0 || len > MAX_PAYLOAD {
        return Ok(Next::Bad);
    }
    payload.clear();
    payload.resize(len, 0);
    if read_full(r, payload)? != len || crc32fast::hash(payload) != crc {
        return Ok(Next::Bad);
    }
    Ok(Next::Record)
}

/// Like `read_exact`, but says how much it got instead of failing at EOF.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode(payload, &mut v);
        v
    }

    #[test]
    fn round_trips_and_ends_cleanly() {
        let mut bytes = framed(b"hello");
        bytes.extend(framed(b"world"));
        let mut r = &bytes[..];
        let mut p = Vec::new();
        assert_eq!(read(&mut r, &mut p).unwrap(), Next::Record);
        assert_eq!(p, b"hello");
        assert_eq!(read(&mut r, &mut p).unwrap(), Next::Record);
        assert_eq!(p, b"world");
        assert_eq!(read(&mut r, &mut p).unwrap(), Next::End);
    }

    #[test]
    fn torn_flipped_and_zeroed_records_are_bad() {
        let whole = framed(b"some event bytes");
        let mut p = Vec::new();
        for cut in [3, HEADER_LEN, whole.len() - 1] {
            assert_eq!(
                read(&mut &whole[..cut], &mut p).unwrap(),
                Next::Bad,
                "cut at {cut}"
            );
        }
        let mut flipped = whole.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(read(&mut &flipped[..], &mut p).unwrap(), Next::Bad);
        assert_eq!(read(&mut &[0u8; 64][..], &mut p).unwrap(), Next::Bad);
    }
}
