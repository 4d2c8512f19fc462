//! The file collector against the real kernel source (fanotify; the tests
//! run as root, as CI does): a tmpfs stands in for a home and another,
//! with a fake sysfs naming it a USB stick, for the medium.

use std::process::Command;

use mamori_proto::agent::v1::{Event, PolicyUpdate};

use super::*;
use crate::sink::testing::{sink_in, spooled};

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=256m"),
        )
        .expect("mounting a tmpfs (the tests run as root)");
        Tmpfs(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A fake sysfs with one USB stick whose block device `loopz` is
/// "mounted" (by the fake mount table) at `stick`.
fn fake_stick(dir: &Path, stick: &Path) -> (PathBuf, PathBuf) {
    let sysfs = dir.join("sys");
    let dev = sysfs.join("devices/usb1/1-9");
    let iface = dev.join("1-9:1.0");
    std::fs::create_dir_all(iface.join("host7/block/loopz")).unwrap();
    std::fs::create_dir_all(sysfs.join("bus/usb/devices")).unwrap();
    std::fs::create_dir_all(sysfs.join("block")).unwrap();
    for (f, v) in [
        ("idVendor", "0781"),
        ("idProduct", "5567"),
        ("serial", "STICK-42"),
        ("product", "Cruzer"),
        ("manufacturer", "SanDisk"),
        ("bDeviceClass", "00"),
    ] {
        std::fs::write(dev.join(f), format!("{v}\n")).unwrap();
    }
    std::fs::write(iface.join("bInterfaceClass"), "08\n").unwrap();
    std::fs::write(iface.join("bInterfaceSubClass"), "06\n").unwrap();
    std::os::unix::fs::symlink(&dev, sysfs.join("bus/usb/devices/1-9")).unwrap();
    std::os::unix::fs::symlink(&iface, sysfs.join("bus/usb/devices/1-9:1.0")).unwrap();
    std::os::unix::fs::symlink(iface.join("host7/block/loopz"), sysfs.join("block/loopz")).unwrap();
    let mounts = dir.join("mounts");
    std::fs::write(
        &mounts,
        format!("/dev/loopz {} vfat rw 0 0\n", stick.display()),
    )
    .unwrap();
    (sysfs, mounts)
}

struct Running {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Running {
    fn start(config: FileCollector, sink: EventSink) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let source = config
            .os
            .open_source()
            .expect("fanotify (the tests run as root)");
        let thread = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || Tracker::new(config, source, sink).run(&stop)
        });
        // The marks are placed before the thread reads; give it a moment.
        std::thread::sleep(Duration::from_millis(300));
        Running {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap().unwrap();
    }
}

fn files(events: &[Event]) -> Vec<&FileEvent> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::File(f)) => Some(f),
            _ => None,
        })
        .collect()
}

fn run(cmd: &mut Command) {
    let status = cmd.status().unwrap();
    assert!(status.success(), "{cmd:?}");
}

#[test]
fn copies_renames_moves_and_media_become_events_with_hashes_and_programs() {
    let home = Tmpfs::new();
    let stick = Tmpfs::new();
    let tmp = tempfile::tempdir().unwrap();
    let (sysfs, mounts) = fake_stick(tmp.path(), stick.path());
    let hr = home.path().join("hr");
    let desktop = home.path().join("Desktop");
    std::fs::create_dir_all(&hr).unwrap();
    std::fs::create_dir_all(&desktop).unwrap();
    let source = hr.join("mynumber.xlsx");
    std::fs::write(&source, "マイナンバー一覧\n".repeat(5000)).unwrap();
    let expected: [u8; 32] = Sha256::digest(std::fs::read(&source).unwrap()).into();

    let policy = Arc::new(
        PolicyState::in_memory(PolicyUpdate {
            revision: 1,
            confidential_folders: vec![format!("{}/**", hr.display())],
            ..Default::default()
        })
        .unwrap(),
    );
    let (sink, spool) = sink_in(tmp.path());
    let config = FileCollector::new(
        vec![home.path().to_owned()],
        policy,
        crate::platform::linux::file_os(&sysfs, &mounts),
    );
    let running = Running::start(config, sink);

    let copy = desktop.join("mynumber.xlsx");
    let renamed = desktop.join("list.xlsx");
    let on_stick = stick.path().join("list.xlsx");
    run(Command::new("cat")
        .arg(&source)
        .stdout(std::process::Stdio::null()));
    run(Command::new("cp").arg(&source).arg(&copy));
    run(Command::new("mv").arg(&copy).arg(&renamed));
    run(Command::new("cp").arg(&renamed).arg(&on_stick));
    // (By another process: the agent's own operations are not reported.)
    let sh = |script: &str| {
        run(Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(&desktop))
    };
    sh("echo hello > notes.txt && rm notes.txt");
    sh("echo one > draft.txt");
    std::thread::sleep(Duration::from_millis(100));
    sh("echo two >> draft.txt");
    std::thread::sleep(Duration::from_millis(500));
    // The stick can be ejected while it is watched: the collector keeps
    // nothing open on it (a moment's hash aside).
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while let Err(e) = nix::mount::umount(stick.path()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the stick does not unmount: {e}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    running.stop();

    let events = spooled(&spool);
    let files = files(&events);
    let show = || format!("{files:#?}");
    let find = |action: Action, path: &Path| {
        files
            .iter()
            .find(|f| f.action == action as i32 && Path::new(&f.path) == path)
            .copied()
            .unwrap_or_else(|| panic!("no {action:?} of {}: {}", path.display(), show()))
    };

    let read = find(Action::Read, &source);
    assert!(read.process_exe_path.ends_with("/cat"), "{read:?}");

    let copied = find(Action::Copy, &source);
    assert_eq!(Path::new(&copied.target_path), copy);
    assert_eq!(copied.sha256, expected);
    assert_eq!(copied.hash_method, HashMethod::Full as i32);
    assert!(copied.process_exe_path.ends_with("/cp"), "{copied:?}");
    assert!(copied.pid > 0);
    assert_eq!(copied.size_bytes, std::fs::metadata(&source).unwrap().len());
    assert!(!copied.removable_media);

    let moved = find(Action::Rename, &copy);
    assert_eq!(Path::new(&moved.target_path), renamed);
    assert!(moved.process_exe_path.ends_with("/mv"), "{moved:?}");

    let to_stick = find(Action::Copy, &renamed);
    assert_eq!(Path::new(&to_stick.target_path), on_stick);
    assert_eq!(to_stick.sha256, expected);
    assert!(to_stick.removable_media);
    assert_eq!(
        (
            to_stick.medium_vendor_id.as_str(),
            to_stick.medium_product_id.as_str(),
            to_stick.medium_serial.as_str()
        ),
        ("0781", "5567", "STICK-42")
    );

    let notes = desktop.join("notes.txt");
    find(Action::Create, &notes);
    find(Action::Delete, &notes);
    let draft = desktop.join("draft.txt");
    find(Action::Create, &draft);
    find(Action::Modify, &draft);
    // Nothing outside the watched directories, nothing of the agent's own.
    assert!(
        files
            .iter()
            .all(|f| f.path.starts_with(&*home.path().to_string_lossy())
                || f.path.starts_with(&*stick.path().to_string_lossy())),
        "{}",
        show()
    );
}

/// A build writing thousands of files is not queued without bound: one
/// process's operations over its rate are counted into summary events,
/// and every operation is accounted for — reported or counted.
#[test]
fn a_flood_is_summarised_and_every_operation_counted() {
    let home = Tmpfs::new();
    let tmp = tempfile::tempdir().unwrap();
    let policy = Arc::new(PolicyState::in_memory(PolicyUpdate::default()).unwrap());
    let (sink, spool) = sink_in(tmp.path());
    let config = FileCollector::new(
        vec![home.path().to_owned()],
        policy,
        crate::platform::linux::file_os(
            &tmp.path().join("no-sysfs"),
            &tmp.path().join("no-mounts"),
        ),
    );
    let running = Running::start(config, sink);
    const FILES: u32 = 5000;
    run(Command::new("sh")
        .arg("-c")
        .arg(format!(
            "i=0; while [ $i -lt {FILES} ]; do : > f$i; i=$((i+1)); done"
        ))
        .current_dir(home.path()));
    std::thread::sleep(Duration::from_millis(500));
    running.stop();

    let events = spooled(&spool);
    let creates: Vec<&FileEvent> = files(&events)
        .into_iter()
        .filter(|f| f.action == Action::Create as i32)
        .collect();
    let one_by_one = creates.iter().filter(|f| f.summarized == 0).count() as u32;
    let summarized: u32 = creates.iter().map(|f| f.summarized).sum();
    assert_eq!(
        one_by_one + summarized,
        FILES,
        "every file reported or counted"
    );
    assert!(summarized > 0, "the flood was over the rate");
    assert!(
        one_by_one < FILES / 2,
        "{one_by_one} reported one by one: the rate did not hold"
    );
    let summary = creates.iter().find(|f| f.summarized > 0).unwrap();
    assert!(
        summary.path.starts_with(&*home.path().to_string_lossy()),
        "{summary:?}"
    );
}

/// A watched directory on a busy file system (here the one the tests' temp
/// directories are on): the whole file system is marked, and what happens
/// outside the directory is not reported.
#[test]
fn operations_outside_the_watched_directories_are_not_reported() {
    let base = tempfile::tempdir().unwrap();
    let watched = base.path().join("watched");
    let elsewhere = base.path().join("elsewhere");
    std::fs::create_dir_all(&watched).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let policy = Arc::new(PolicyState::in_memory(PolicyUpdate::default()).unwrap());
    let (sink, spool) = sink_in(tmp.path());
    let config = FileCollector::new(
        vec![watched.clone()],
        policy,
        crate::platform::linux::file_os(
            &tmp.path().join("no-sysfs"),
            &tmp.path().join("no-mounts"),
        ),
    );
    let running = Running::start(config, sink);
    let sh =
        |dir: &Path, script: &str| run(Command::new("sh").arg("-c").arg(script).current_dir(dir));
    sh(
        &elsewhere,
        "for i in 1 2 3 4 5; do echo x > out$i.txt; done; mv out1.txt moved.txt; rm out2.txt",
    );
    sh(&watched, "echo x > in.txt");
    std::thread::sleep(Duration::from_millis(500));
    running.stop();
    let events = spooled(&spool);
    let files = files(&events);
    assert!(
        files.iter().any(|f| f.path.ends_with("/watched/in.txt")),
        "{files:#?}"
    );
    assert!(
        files
            .iter()
            .all(|f| f.path.starts_with(&*watched.to_string_lossy())),
        "{files:#?}"
    );
}
