//! A realistic mix of operation-log events, as an office PC produces them:
//! mostly process starts, file operations and web access.

use mamori_proto::agent::v1::{
    DeviceEvent, Event, FileEvent, LogonEvent, NetworkEvent, PrintEvent, ProcessEvent, WebEvent,
    device_event, event::Kind, file_event, logon_event, network_event, process_event,
};
use prost::Message;
use rand::Rng;
use rand::seq::IndexedRandom;

const EXES: &[&str] = &[
    "C:\\Program Files\\Microsoft Office\\root\\Office16\\EXCEL.EXE",
    "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
    "C:\\Windows\\System32\\notepad.exe",
    "/usr/bin/firefox",
    "/usr/lib/libreoffice/program/soffice.bin",
    "C:\\Windows\\explorer.exe",
];
const PATHS: &[&str] = &[
    "C:\\Users\\tanaka\\Documents\\見積書_2026.xlsx",
    "C:\\Users\\tanaka\\Desktop\\顧客名簿.csv",
    "\\\\fileserver\\share\\経理\\請求書.pdf",
    "/home/sato/projects/report.docx",
];
const HOSTS: &[&str] = &[
    "www.example.co.jp",
    "mail.google.com",
    "portal.office.com",
    "github.com",
];
const USERS: &[&str] = &["tanaka", "sato", "suzuki", "takahashi"];

/// One freshly generated event (random kind and content).
pub fn event(rng: &mut impl Rng, now_us: i64) -> Event {
    let roll = rng.random_range(0..100);
    let kind = match roll {
        0..40 => {
            let exe = EXES.choose(rng).unwrap();
            Kind::Process(ProcessEvent {
                action: process_event::Action::Start as i32,
                pid: rng.random_range(100..60000),
                parent_pid: rng.random_range(1..1000),
                exe_path: exe.to_string(),
                command_line: format!("{exe} --profile-directory=Default /n"),
                // One binary, one hash, as on real PCs.
                exe_sha256: stable_hash(exe),
                parent_exe_path: "C:\\Windows\\explorer.exe".into(),
                window_title: "無題 - メモ帳".into(),
                uid: 1000,
                exit_code: 0,
                ..Default::default()
            })
        }
        40..65 => Kind::File(FileEvent {
            action: *[
                file_event::Action::Create,
                file_event::Action::Copy,
                file_event::Action::Rename,
            ]
            .choose(rng)
            .unwrap() as i32,
            // A few shared documents and many one-off files, so that
            // free-text search has rare and common terms to find.
            path: if rng.random_bool(0.5) {
                PATHS.choose(rng).unwrap().to_string()
            } else {
                format!(
                    "C:\\Users\\{}\\Documents\\案件_{:06}.docx",
                    USERS.choose(rng).unwrap(),
                    rng.random_range(0..1_000_000)
                )
            },
            target_path: if rng.random_bool(0.3) {
                "E:\\backup\\copy.xlsx".into()
            } else {
                String::new()
            },
            removable_media: rng.random_bool(0.05),
            size_bytes: rng.random_range(1_000..5_000_000),
            process_exe_path: EXES[5].into(),
            pid: rng.random_range(1_000..60_000),
            sha256: rng.random::<[u8; 32]>().to_vec(),
            hash_method: file_event::HashMethod::Full as i32,
            ..Default::default()
        }),
        65..80 => Kind::Web(WebEvent {
            url_host: HOSTS.choose(rng).unwrap().to_string(),
            url: format!(
                "https://{}/path/{}",
                HOSTS.choose(rng).unwrap(),
                rng.random::<u32>()
            ),
            title: "ダッシュボード".into(),
            browser: "chrome".into(),
            summarized: 0,
        }),
        80..92 => Kind::Network(NetworkEvent {
            direction: network_event::Direction::Outbound as i32,
            protocol: "tcp".into(),
            local_addr: "192.0.2.10".into(),
            local_port: rng.random_range(40000..60000),
            remote_addr: "198.51.100.7".into(),
            remote_port: 443,
            process_exe_path: EXES[1].into(),
        }),
        92..95 => Kind::Logon(LogonEvent {
            action: logon_event::Action::Logon as i32,
            terminal: "console".into(),
            remote_host: String::new(),
            session_pid: 1,
        }),
        95..97 => Kind::Device(DeviceEvent {
            action: device_event::Action::Connect as i32,
            device_class: 1,
            vendor_id: "0781".into(),
            product_id: "5581".into(),
            serial: "4C530001231120115142".into(),
            description: "SanDisk Ultra".into(),
            mount_point: "E:\\".into(),
        }),
        _ => Kind::Print(PrintEvent {
            printer: "FX-ApeosPort".into(),
            document: "月次報告.pdf".into(),
            pages: rng.random_range(1..40),
            copies: 1,
            process_exe_path: EXES[0].into(),
        }),
    };
    Event {
        id: uuid::Uuid::now_v7().as_bytes().to_vec(),
        occurred_at_us: now_us,
        clock_offset_ms: 0,
        os_user: USERS.choose(rng).unwrap().to_string(),
        kind: Some(kind),
    }
}

/// 32 bytes that stand for the SHA-256 of the binary at `path` (FNV-1a,
/// four seeds): the same for every event of that path.
fn stable_hash(path: &str) -> Vec<u8> {
    (0u64..4)
        .flat_map(|seed| {
            let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
            for b in path.bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            h.to_le_bytes()
        })
        .collect()
}

/// A start of `winny`, which `--alarm-every` tenants ban.
pub fn banned_start() -> Kind {
    Kind::Process(ProcessEvent {
        action: process_event::Action::Start as i32,
        pid: 4242,
        exe_path: "C:\\Users\\Public\\P2P\\winny.exe".into(),
        ..Default::default()
    })
}

/// A pool of pre-generated events, kept encoded: each simulated event is
/// one of them with a new id and time written in front, so the load
/// generator spends its CPU on the protocol, not on building and encoding
/// messages (real agents run elsewhere). The bytes are what encoding the
/// `Event` would give (tested).
pub struct Pool {
    /// Each event's encoding without its id and time (fields 1 and 2 come
    /// first in an encoding; these start at field 4, the clock offset
    /// being 0).
    rest: Vec<Vec<u8>>,
    /// The same with the body replaced by [`banned_start`].
    banned: Vec<Vec<u8>>,
    /// Orders the ids of events in one millisecond, as `Uuid::now_v7`'s
    /// counter does (agents' ids are in order, and compress as such).
    counter: u64,
}

impl Pool {
    pub fn new(rng: &mut impl Rng, size: usize) -> Self {
        let events: Vec<Event> = (0..size).map(|_| event(rng, 0)).collect();
        let rest = |e: &Event| {
            Event {
                id: Vec::new(),
                occurred_at_us: 0,
                ..e.clone()
            }
            .encode_to_vec()
        };
        Self {
            counter: rng.random(),
            rest: events.iter().map(rest).collect(),
            banned: events
                .iter()
                .map(|e| {
                    rest(&Event {
                        kind: Some(banned_start()),
                        ..e.clone()
                    })
                })
                .collect(),
        }
    }

    /// Appends one event, time `now_us`, as `EventBatch.events` (field 2)
    /// to `out`; `banned` makes it a start of `winny`.
    pub fn put(&mut self, rng: &mut impl Rng, now_us: i64, banned: bool, out: &mut Vec<u8>) {
        use prost::encoding::{encode_key, encode_varint, int64};
        let id = self.event_id(rng, now_us);
        let pick = rng.random_range(0..self.rest.len());
        let rest = if banned {
            &self.banned[pick]
        } else {
            &self.rest[pick]
        };
        let len = 2 + id.len() + int64::encoded_len(2, &now_us) + rest.len();
        encode_key(2, prost::encoding::WireType::LengthDelimited, out);
        encode_varint(len as u64, out);
        let before = out.len();
        prost::encoding::bytes::encode(1, &id, out);
        int64::encode(2, &now_us, out);
        out.extend_from_slice(rest);
        debug_assert_eq!(out.len() - before, len);
    }

    /// A UUIDv7 of time `now_us`: 48 bits of the counter, then random bits
    /// from `rng`. `Uuid::now_v7` would ask the kernel for its random bits,
    /// a getrandom call per event: 2 % of the machine's CPU at the peak
    /// rate.
    fn event_id(&mut self, rng: &mut impl Rng, now_us: i64) -> Vec<u8> {
        self.counter = self.counter.wrapping_add(1);
        let mut bits = [0u8; 10];
        bits[..6].copy_from_slice(&self.counter.to_be_bytes()[2..]);
        rng.fill(&mut bits[6..]);
        let ms = u64::try_from(now_us / 1000).unwrap_or(0);
        uuid::Builder::from_unix_timestamp_millis(ms, &bits)
            .into_uuid()
            .as_bytes()
            .to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mamori_proto::agent::v1::EventBatch;
    use rand::SeedableRng;

    #[test]
    fn pooled_events_are_the_encoding_of_the_event() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut pool = Pool::new(&mut rng, 16);
        let mut out = Vec::new();
        prost::encoding::uint64::encode(1, &5, &mut out);
        for i in 0..50 {
            pool.put(&mut rng, 1_800_000_000_000_000 + i, i % 7 == 0, &mut out);
        }
        let batch = EventBatch::decode(&out[..]).unwrap();
        assert_eq!(batch.sequence, 5);
        assert_eq!(batch.events.len(), 50);
        let mut ids = std::collections::HashSet::new();
        for (i, e) in batch.events.iter().enumerate() {
            assert!(ids.insert(e.id.clone()), "ids are unique");
            assert_eq!(e.occurred_at_us, 1_800_000_000_000_000 + i as i64);
            assert_eq!(uuid::Uuid::from_slice(&e.id).unwrap().get_version_num(), 7);
            assert!(mamori_proto::kind_of(e).is_some());
            assert_eq!(i % 7 == 0, e.kind == Some(banned_start()), "{e:?}");
        }
        // Re-encoding gives the same bytes: nothing but the canonical form.
        assert_eq!(batch.encode_to_vec(), out);
    }
}
