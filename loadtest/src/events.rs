//! A realistic mix of operation-log events, as an office PC produces them:
//! mostly process starts, file operations and web access.

use mamori_proto::agent::v1::{
    DeviceEvent, Event, FileEvent, LogonEvent, NetworkEvent, PrintEvent, ProcessEvent, WebEvent,
    device_event, event::Kind, file_event, logon_event, network_event, process_event,
};
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

/// A pool of pre-generated events: each simulated event is a clone of one
/// with a new id and time, so the load generator spends its CPU on the
/// protocol, not on formatting strings (real agents run elsewhere).
pub struct Pool(Vec<Event>);

impl Pool {
    pub fn new(rng: &mut impl Rng, size: usize) -> Self {
        Self((0..size).map(|_| event(rng, 0)).collect())
    }

    pub fn take(&self, rng: &mut impl Rng, now_us: i64) -> Event {
        let mut e = self.0[rng.random_range(0..self.0.len())].clone();
        e.id = uuid::Uuid::now_v7().as_bytes().to_vec();
        e.occurred_at_us = now_us;
        e
    }
}
