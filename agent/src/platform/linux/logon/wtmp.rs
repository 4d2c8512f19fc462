//! The Linux `struct utmp` record as found in /var/log/wtmp (glibc, 64-bit
//! and 32-bit alike: 384 bytes, the time as two 32-bit fields).

/// Size of one record.
pub const RECORD_SIZE: usize = 384;

/// `ut_type` of a user's login.
pub const USER_PROCESS: i16 = 7;
/// `ut_type` of a session's end (the user field is often empty).
pub const DEAD_PROCESS: i16 = 8;
/// `ut_type` written at boot: every session before it has ended.
pub const BOOT_TIME: i16 = 2;
/// `ut_type` of a run-level change; user `shutdown` at shutdown.
pub const RUN_LVL: i16 = 1;

const LINE: (usize, usize) = (8, 32);
const ID: (usize, usize) = (40, 4);
const USER: (usize, usize) = (44, 32);
const HOST: (usize, usize) = (76, 256);
const TV_SEC: usize = 340;
const TV_USEC: usize = 344;

/// One decoded record (the fields the agent uses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UtmpRecord {
    pub ut_type: i16,
    pub pid: i32,
    /// Terminal: `pts/0`, `tty1`, `:0`.
    pub line: String,
    pub id: String,
    pub user: String,
    pub host: String,
    pub tv_sec: i32,
    pub tv_usec: i32,
}

impl UtmpRecord {
    pub fn parse(buf: &[u8; RECORD_SIZE]) -> Self {
        UtmpRecord {
            ut_type: i16::from_ne_bytes([buf[0], buf[1]]),
            pid: i32_at(buf, 4),
            line: text(buf, LINE),
            id: text(buf, ID),
            user: text(buf, USER),
            host: text(buf, HOST),
            tv_sec: i32_at(buf, TV_SEC),
            tv_usec: i32_at(buf, TV_USEC),
        }
    }

    /// The record as wtmp holds it (over-long strings are cut; tests and
    /// tools use this to write wtmp files).
    pub fn encode(&self) -> [u8; RECORD_SIZE] {
        let mut buf = [0u8; RECORD_SIZE];
        buf[0..2].copy_from_slice(&self.ut_type.to_ne_bytes());
        buf[4..8].copy_from_slice(&self.pid.to_ne_bytes());
        for (value, (at, len)) in [
            (&self.line, LINE),
            (&self.id, ID),
            (&self.user, USER),
            (&self.host, HOST),
        ] {
            let bytes = value.as_bytes();
            let n = bytes.len().min(len);
            buf[at..at + n].copy_from_slice(&bytes[..n]);
        }
        buf[TV_SEC..TV_SEC + 4].copy_from_slice(&self.tv_sec.to_ne_bytes());
        buf[TV_USEC..TV_USEC + 4].copy_from_slice(&self.tv_usec.to_ne_bytes());
        buf
    }

    /// When it happened, microseconds since the Unix epoch.
    pub fn time_us(&self) -> i64 {
        // The seconds are an unsigned quantity squeezed into 32 bits.
        i64::from(self.tv_sec as u32) * 1_000_000 + i64::from(self.tv_usec)
    }
}

fn i32_at(buf: &[u8], at: usize) -> i32 {
    i32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

/// A NUL-padded fixed-size field as text.
fn text(buf: &[u8], (at, len): (usize, usize)) -> String {
    let field = &buf[at..at + len];
    let end = field.iter().position(|&b| b == 0).unwrap_or(len);
    String::from_utf8_lossy(&field[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_at_their_offsets() {
        let mut buf = [0u8; RECORD_SIZE];
        buf[0..2].copy_from_slice(&7i16.to_ne_bytes());
        buf[4..8].copy_from_slice(&4242i32.to_ne_bytes());
        buf[8..13].copy_from_slice(b"pts/3");
        buf[40..44].copy_from_slice(b"ts/3");
        buf[44..49].copy_from_slice(b"alice");
        buf[76..84].copy_from_slice(b"10.0.0.9");
        buf[340..344].copy_from_slice(&1_700_000_000i32.to_ne_bytes());
        buf[344..348].copy_from_slice(&250_000i32.to_ne_bytes());
        let rec = UtmpRecord::parse(&buf);
        assert_eq!(
            rec,
            UtmpRecord {
                ut_type: USER_PROCESS,
                pid: 4242,
                line: "pts/3".into(),
                id: "ts/3".into(),
                user: "alice".into(),
                host: "10.0.0.9".into(),
                tv_sec: 1_700_000_000,
                tv_usec: 250_000,
            }
        );
        assert_eq!(rec.time_us(), 1_700_000_000_250_000);
        assert_eq!(rec.encode(), buf);
    }

    #[test]
    fn full_width_fields_without_nul() {
        let rec = UtmpRecord {
            user: "u".repeat(40),
            ..Default::default()
        };
        assert_eq!(UtmpRecord::parse(&rec.encode()).user, "u".repeat(32));
    }
}
