use mamori_proto::agent::v1::{BannedApp, PolicyUpdate, banned_app::Action};

use super::*;

fn ban(name: &str, path_glob: &str, action: Action) -> BannedApp {
    BannedApp {
        name: name.into(),
        path_glob: path_glob.into(),
        action: action as i32,
        ..Default::default()
    }
}

#[test]
fn only_block_rules_by_name_become_launch_blocks() {
    let policy = Compiled::compile(PolicyUpdate {
        revision: 3,
        banned_apps: vec![
            ban("Winny.exe", "", Action::Block),
            ban("share", "", Action::Block),
            ban("torrent", "", Action::Kill),
            ban("", r"C:\P2P\**", Action::Block),
            // Never through IFEO: the agent itself and Windows's own.
            ban("mamori-agent", "", Action::Block),
            ban("winlogon.exe", "", Action::Block),
        ],
        ..Default::default()
    })
    .unwrap();
    let images: Vec<String> = blocked_images(&policy, "mamori-agent")
        .into_iter()
        .collect();
    assert_eq!(images, ["share.exe", "winny.exe"]);
    // A renamed agent never blocks itself either.
    let images: Vec<String> = blocked_images(&policy, "share").into_iter().collect();
    assert_eq!(images, ["winny.exe"]);
}

#[test]
fn the_trampoline_names_the_refused_program() {
    let agent = r#""C:\Program Files\Mamori\mamori-agent.exe" blocked"#;
    assert_eq!(
        debugger_command(Path::new(r"C:\Program Files\Mamori\mamori-agent.exe")),
        agent
    );
    // Windows appends the program's own command line to the debugger's.
    assert_eq!(
        trampoline_target(&format!(r#"{agent} "C:\P2P\Winny.exe" -x"#)).as_deref(),
        Some(r"C:\P2P\Winny.exe")
    );
    assert_eq!(
        trampoline_target(&format!("{agent} winny.exe")).as_deref(),
        Some("winny.exe")
    );
    assert_eq!(trampoline_target(agent), None);
    assert_eq!(
        trampoline_target(r#""C:\Program Files\Mamori\mamori-agent.exe" run --collectors all"#),
        None
    );
    assert_eq!(trampoline_target(r"C:\tools\other.exe blocked x.exe"), None);
    assert_eq!(trampoline_target(""), None);
}

#[test]
fn only_an_agent_below_program_files_becomes_a_debugger() {
    let pf = Path::new(r"C:\Program Files");
    assert!(may_be_debugger(
        Path::new(r"C:\Program Files\Mamori\mamori-agent.exe"),
        pf
    ));
    assert!(may_be_debugger(
        Path::new(r"c:\program files\Mamori\mamori-agent.exe"),
        Path::new(r"C:\Program Files\")
    ));
    assert!(!may_be_debugger(
        Path::new(r"C:\Users\bob\Downloads\mamori-agent.exe"),
        pf
    ));
    assert!(!may_be_debugger(
        Path::new(r"C:\Program Files (x86)\x\mamori-agent.exe"),
        pf
    ));
}

fn debugger(key: &str, image: &str) -> Option<String> {
    win::reg_string(HKEY_LOCAL_MACHINE, &format!(r"{key}\{image}"), "Debugger")
}

/// In a test key (Wine's registry), not the real Image File Execution
/// Options.
#[test]
fn the_guard_writes_its_blocks_and_lifts_only_its_own() {
    let key = format!(r"SOFTWARE\MamoriTest\{}", uuid::Uuid::new_v4());
    let exe = Path::new(r"C:\Program Files\Mamori\mamori-agent.exe");
    let guard = LaunchGuard::new(&key, exe, Path::new(r"C:\ProgramData\Mamori"));
    // Someone else's debugger (a developer's), and another agent's block.
    win::reg_set_string(
        HKEY_LOCAL_MACHINE,
        &format!(r"{key}\devenv.exe"),
        "Debugger",
        "vsjitdebugger.exe",
    )
    .unwrap();
    let other = LaunchGuard::new(&key, exe, Path::new(r"D:\other-state"));
    assert!(other.apply(&["lime.exe".to_owned()].into()).is_empty());

    let wanted: BTreeSet<String> = ["winny.exe".to_owned(), "devenv.exe".to_owned()].into();
    let failed = guard.apply(&wanted);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].starts_with("devenv.exe"), "{failed:?}");
    assert_eq!(debugger(&key, "winny.exe"), Some(debugger_command(exe)));
    assert_eq!(
        debugger(&key, "devenv.exe").as_deref(),
        Some("vsjitdebugger.exe")
    );

    // A rule removed: its block is lifted; the others stay.
    guard.apply(&BTreeSet::new());
    assert_eq!(debugger(&key, "winny.exe"), None);
    assert_eq!(
        debugger(&key, "devenv.exe").as_deref(),
        Some("vsjitdebugger.exe")
    );
    assert_eq!(debugger(&key, "lime.exe"), Some(debugger_command(exe)));
}
