use super::*;
use crate::platform::windows::etw::testing::Record;

/// 2024-01-01T00:00:00Z as a FILETIME, and in µs since 1970.
const FT: u64 = 133_485_408_000_000_000;
const US: i64 = 1_704_067_200_000_000;

const IMAGE: &str = r"\Device\HarddiskVolume3\Windows\System32\notepad.exe";

fn start(created_us: i64) -> EtwProcess {
    EtwProcess::Start {
        pid: 4242,
        ppid: 880,
        session_id: 1,
        created_us,
        image: IMAGE.into(),
    }
}

#[test]
fn process_start_is_read_in_every_version() {
    // ProcessID, CreateTime, ParentProcessID, SessionID.
    let head = || Record::default().u32(4242).u64(FT).u32(880).u32(1);
    let v0 = head().utf16(IMAGE);
    assert_eq!(parse(1, 0, &v0.0), Some(start(US)));

    let v1 = head().u32(0).utf16(IMAGE); // Flags
    assert_eq!(parse(1, 1, &v1.0), Some(start(US)));

    let v2 = head()
        .u32(0)
        .utf16(IMAGE)
        .u32(0xabcd) // ImageChecksum
        .u32(0x5f00_0000) // TimeDateStamp
        .utf16("") // PackageFullName
        .utf16(""); // PackageRelativeAppId
    assert_eq!(parse(1, 2, &v2.0), Some(start(US)));

    let v3 = Record::default()
        .u32(4242)
        .u64(77) // ProcessSequenceNumber
        .u64(FT)
        .u32(880)
        .u64(76) // ParentProcessSequenceNumber
        .u32(1)
        .u32(0) // Flags
        .u32(3) // ProcessTokenElevationType
        .u32(0) // ProcessTokenIsElevated
        .label()
        .utf16(IMAGE)
        .u32(0)
        .u32(0)
        .utf16("Microsoft.WindowsNotepad_11.0_x64__8wekyb3d8bbwe")
        .utf16("App");
    assert_eq!(parse(1, 3, &v3.0), Some(start(US)));
}

#[test]
fn process_stop_is_read_in_every_version() {
    let tail = |r: Record| {
        r.u32(0) // TokenElevationType
            .u32(12) // HandleCount
            .u64(1 << 20) // CommitCharge
            .u64(1 << 21) // CommitPeak
            .u64(99) // CPUCycleCount
            .u32(1)
            .u32(2)
            .u32(3)
            .u32(4)
            .u32(0) // HardFaultCount
            .ansi("notepad.exe")
    };
    let stop = EtwProcess::Stop {
        pid: 4242,
        exited_us: US + 5_000_000,
        exit_code: -1073741510, // 0xC000013A, closed with Ctrl+C
    };
    let v1 = tail(
        Record::default()
            .u32(4242)
            .u64(FT)
            .u64(FT + 50_000_000)
            .u32(0xC000_013A),
    );
    assert_eq!(parse(2, 0, &v1.0), Some(stop.clone()));
    assert_eq!(parse(2, 1, &v1.0), Some(stop.clone()));
    let v2 = tail(
        Record::default()
            .u32(4242)
            .u64(77)
            .u64(FT)
            .u64(FT + 50_000_000)
            .u32(0xC000_013A),
    );
    assert_eq!(parse(2, 2, &v2.0), Some(stop));
}

#[test]
fn short_and_foreign_records_are_refused_not_misread() {
    let v0 = Record::default()
        .u32(4242)
        .u64(FT)
        .u32(880)
        .u32(1)
        .utf16(IMAGE);
    for cut in [0, 3, 8, 15] {
        assert_eq!(parse(1, 0, &v0.0[..cut]), None, "cut at {cut}");
    }
    // A v3 record missing its label's sub-authority.
    let v3 = Record::default()
        .u32(1)
        .u64(0)
        .u64(FT)
        .u32(2)
        .u64(0)
        .u32(1)
        .u32(0)
        .u32(0)
        .u32(0);
    let mut short = v3.0.clone();
    short.extend_from_slice(&[1, 1, 0, 0, 0, 0, 0, 16, 0]);
    assert_eq!(parse(1, 3, &short), None);
    // Thread and image-load events are not process events.
    assert_eq!(parse(3, 0, &v0.0), None);
    assert_eq!(parse(5, 0, &v0.0), None);
    // An image name without its NUL (a truncated record) is kept.
    let mut open = Record::default().u32(9).u64(FT).u32(1).u32(0).0;
    open.extend("C:".encode_utf16().flat_map(u16::to_le_bytes));
    assert!(matches!(parse(1, 0, &open), Some(EtwProcess::Start { image, .. }) if image == "C:"));
}

#[test]
fn nt_paths_become_drive_paths() {
    let devices = vec![
        (r"\Device\HarddiskVolume3".to_owned(), "C:".to_owned()),
        (r"\Device\HarddiskVolume30".to_owned(), "E:".to_owned()),
    ];
    assert_eq!(
        nt_to_dos(IMAGE, &devices),
        r"C:\Windows\System32\notepad.exe"
    );
    // Volume 30 is not volume 3.
    assert_eq!(
        nt_to_dos(r"\device\harddiskvolume30\x.exe", &devices),
        r"E:\x.exe"
    );
    assert_eq!(
        nt_to_dos(r"\Device\Mup\server\share\x.exe", &devices),
        r"\Device\Mup\server\share\x.exe"
    );
}

#[test]
fn the_drive_table_names_the_system_drive() {
    // Wine maps drives too: C: is a device of its own.
    let devices = dos_devices();
    assert!(devices.iter().any(|(_, d)| d == "C:"), "{devices:?}");
}
