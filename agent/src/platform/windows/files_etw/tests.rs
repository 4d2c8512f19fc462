use super::*;
use crate::platform::windows::etw::testing::Record;

const VOL: &str = r"\Device\HarddiskVolume3";
const FO: u64 = 0xffff_a00c_1234_5670;

fn create(size: usize, fo: u64, options: u32, name: &str) -> Vec<u8> {
    Record::default()
        .ptr(0xffff_0001, size) // Irp
        .ptr(fo, size)
        .u32(4242) // IssuingThreadId
        .u32(options)
        .u32(0x80) // CreateAttributes
        .u32(7) // ShareAccess
        .utf16(name)
        .0
}

fn path_event(fo: u64, path: &str) -> Vec<u8> {
    Record::default()
        .u64(0xffff_0001) // Irp
        .u64(fo)
        .u64(0xffff_0002) // FileKey
        .u64(0) // ExtraInformation
        .u32(4242)
        .u32(10) // InfoClass
        .utf16(path)
        .0
}

#[test]
fn kernel_file_events_are_read_from_their_templates() {
    let name = format!(r"{VOL}\Users\alice\report.docx");
    assert_eq!(
        parse(12, 1, 8, &create(8, FO, 0x0100_0060, &name)),
        Some(FileIo::Create {
            file_object: FO,
            options: 0x0100_0060,
            name: name.clone(),
            new: false,
        })
    );
    // A 32-bit header's pointers are 4 bytes.
    assert_eq!(
        parse(30, 1, 4, &create(4, 0x1234, 0, &name)),
        Some(FileIo::Create {
            file_object: 0x1234,
            options: 0,
            name: name.clone(),
            new: true,
        })
    );
    let write = Record::default()
        .u64(4096) // ByteOffset
        .u64(1) // Irp
        .u64(FO)
        .u64(2) // FileKey
        .u32(4242)
        .u32(512) // IOSize
        .u32(0)
        .u32(0)
        .0;
    assert_eq!(
        parse(16, 1, 8, &write),
        Some(FileIo::Write { file_object: FO })
    );
    let cleanup = Record::default().u64(1).u64(FO).u64(2).u32(4242).0;
    assert_eq!(
        parse(13, 1, 8, &cleanup),
        Some(FileIo::Closed { file_object: FO })
    );
    assert_eq!(
        parse(14, 1, 8, &cleanup),
        Some(FileIo::Closed { file_object: FO })
    );
    assert_eq!(
        parse(26, 1, 8, &path_event(FO, &name)),
        Some(FileIo::Delete {
            file_object: FO,
            path: name.clone()
        })
    );
    assert_eq!(
        parse(27, 1, 8, &path_event(FO, &name)),
        Some(FileIo::Rename {
            file_object: FO,
            path: name.clone()
        })
    );
    // Version 0, other events and short records are not read.
    assert_eq!(parse(12, 0, 8, &create(8, FO, 0, &name)), None);
    assert_eq!(parse(15, 1, 8, &write), None);
    assert_eq!(parse(16, 1, 8, &write[..20]), None);
    assert_eq!(parse(13, 1, 8, &cleanup[..10]), None);
}

fn tracker() -> Tracker {
    let mut t = Tracker::new(vec![(VOL.to_owned(), "C:".to_owned())]);
    t.set_scope(&[PathBuf::from(r"C:\Users"), PathBuf::from(r"E:\")]);
    t
}

fn ops(out: &[FsOp]) -> Vec<(Op, String, Option<String>, u32)> {
    out.iter()
        .map(|o| {
            (
                o.op,
                o.path.to_string_lossy().into_owned(),
                o.target.as_ref().map(|t| t.to_string_lossy().into_owned()),
                o.pid,
            )
        })
        .collect()
}

#[test]
fn a_copy_is_an_open_then_a_new_file_written_by_the_same_process() {
    let mut t = tracker();
    let mut out = Vec::new();
    let src = format!(r"{VOL}\Users\alice\plan.xlsx");
    let dst = format!(r"{VOL}\Users\alice\Desktop\plan (2).xlsx");
    t.push(
        900,
        FileIo::Create {
            file_object: 1,
            options: 0,
            name: src,
            new: false,
        },
        &mut out,
    );
    t.push(
        900,
        FileIo::Create {
            file_object: 2,
            options: 0,
            name: dst,
            new: true,
        },
        &mut out,
    );
    t.push(900, FileIo::Write { file_object: 2 }, &mut out);
    t.push(900, FileIo::Closed { file_object: 1 }, &mut out);
    t.push(900, FileIo::Closed { file_object: 2 }, &mut out);
    // A second close of the same open says nothing more.
    t.push(900, FileIo::Closed { file_object: 2 }, &mut out);
    assert_eq!(
        ops(&out),
        [
            (Op::Open, r"C:\Users\alice\plan.xlsx".into(), None, 900),
            (
                Op::Create,
                r"C:\Users\alice\Desktop\plan (2).xlsx".into(),
                None,
                900
            ),
            (
                Op::CloseWrite,
                r"C:\Users\alice\Desktop\plan (2).xlsx".into(),
                None,
                900
            ),
        ]
    );
}

#[test]
fn renames_deletes_and_what_is_out_of_scope() {
    let mut t = tracker();
    let mut out = Vec::new();
    let old = format!(r"{VOL}\Users\alice\draft.txt");
    t.push(
        7,
        FileIo::Create {
            file_object: 5,
            options: 0,
            name: old.clone(),
            new: false,
        },
        &mut out,
    );
    // The open's own path: the new name is not known, nothing reported.
    t.push(
        7,
        FileIo::Rename {
            file_object: 5,
            path: old,
        },
        &mut out,
    );
    t.push(
        7,
        FileIo::Rename {
            file_object: 5,
            path: format!(r"{VOL}\Users\alice\final.txt"),
        },
        &mut out,
    );
    t.push(
        7,
        FileIo::Delete {
            file_object: 5,
            path: format!(r"{VOL}\Users\alice\final.txt"),
        },
        &mut out,
    );
    // Outside the watched folders, and directories: nothing.
    t.push(
        7,
        FileIo::Create {
            file_object: 6,
            options: 0,
            name: format!(r"{VOL}\Windows\win.ini"),
            new: false,
        },
        &mut out,
    );
    t.push(
        7,
        FileIo::Create {
            file_object: 7,
            options: 0x1,
            name: format!(r"{VOL}\Users\alice\New folder"),
            new: true,
        },
        &mut out,
    );
    // `C:\Users` is not `C:\UsersX`.
    t.push(
        7,
        FileIo::Create {
            file_object: 8,
            options: 0,
            name: format!(r"{VOL}\UsersX\a.txt"),
            new: true,
        },
        &mut out,
    );
    t.push(7, FileIo::Write { file_object: 6 }, &mut out);
    t.push(7, FileIo::Closed { file_object: 6 }, &mut out);
    assert_eq!(
        ops(&out),
        [
            (Op::Open, r"C:\Users\alice\draft.txt".into(), None, 7),
            (
                Op::Rename,
                r"C:\Users\alice\draft.txt".into(),
                Some(r"C:\Users\alice\final.txt".into()),
                7
            ),
            (Op::Delete, r"C:\Users\alice\final.txt".into(), None, 7),
        ]
    );
}

#[test]
fn the_opens_followed_are_bounded() {
    let mut t = tracker();
    let mut out = Vec::new();
    for fo in 0..(MAX_OPEN as u64 + 10) {
        t.push(
            1,
            FileIo::Create {
                file_object: fo,
                options: 0,
                name: format!(r"{VOL}\Users\f{fo}"),
                new: false,
            },
            &mut out,
        );
    }
    assert_eq!(t.open.len(), MAX_OPEN);
}
