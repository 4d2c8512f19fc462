//! Hand-written helpers over the generated event types: the stable numeric
//! kind stored in PostgreSQL and the searchable "subject" of an event.

use crate::agent::v1::Event;

/// The fine-grained kind of an event as stored in `events.kind` (a smallint).
/// The numbers are part of the schema: never renumber, only add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i16)]
pub enum EventKind {
    Logon = 1,
    Logoff = 2,
    Lock = 3,
    Unlock = 4,
    Boot = 5,
    Shutdown = 6,
    Suspend = 7,
    Resume = 8,
    ProcessStart = 10,
    ProcessStop = 11,
    ProcessBlocked = 12,
    FileCreate = 20,
    FileModify = 21,
    FileCopy = 22,
    FileMove = 23,
    FileRename = 24,
    FileDelete = 25,
    FileRead = 26,
    DeviceConnect = 30,
    DeviceDisconnect = 31,
    DeviceBlocked = 32,
    Print = 40,
    WebAccess = 50,
    NetworkConnect = 60,
    SoftwareInstalled = 70,
    SoftwareRemoved = 71,
    SoftwareUpdated = 72,
    Inventory = 80,
    EnvironmentChange = 81,
    SecurityStatus = 82,
    LanSighting = 90,
    CollectorWarning = 100,
    AgentStarted = 110,
    AgentStopping = 111,
    UninstallRefused = 112,
    UninstallAllowed = 113,
}

impl EventKind {
    pub const ALL: [EventKind; 36] = [
        Self::Logon,
        Self::Logoff,
        Self::Lock,
        Self::Unlock,
        Self::Boot,
        Self::Shutdown,
        Self::Suspend,
        Self::Resume,
        Self::ProcessStart,
        Self::ProcessStop,
        Self::ProcessBlocked,
        Self::FileCreate,
        Self::FileModify,
        Self::FileCopy,
        Self::FileMove,
        Self::FileRename,
        Self::FileDelete,
        Self::FileRead,
        Self::DeviceConnect,
        Self::DeviceDisconnect,
        Self::DeviceBlocked,
        Self::Print,
        Self::WebAccess,
        Self::NetworkConnect,
        Self::SoftwareInstalled,
        Self::SoftwareRemoved,
        Self::SoftwareUpdated,
        Self::Inventory,
        Self::EnvironmentChange,
        Self::SecurityStatus,
        Self::LanSighting,
        Self::CollectorWarning,
        Self::AgentStarted,
        Self::AgentStopping,
        Self::UninstallRefused,
        Self::UninstallAllowed,
    ];

    pub fn code(self) -> i16 {
        self as i16
    }

    pub fn from_code(code: i16) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The name used in APIs and logs (`process_start`, `file_copy`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logon => "logon",
            Self::Logoff => "logoff",
            Self::Lock => "lock",
            Self::Unlock => "unlock",
            Self::Boot => "boot",
            Self::Shutdown => "shutdown",
            Self::Suspend => "suspend",
            Self::Resume => "resume",
            Self::ProcessStart => "process_start",
            Self::ProcessStop => "process_stop",
            Self::ProcessBlocked => "process_blocked",
            Self::FileCreate => "file_create",
            Self::FileModify => "file_modify",
            Self::FileCopy => "file_copy",
            Self::FileMove => "file_move",
            Self::FileRename => "file_rename",
            Self::FileDelete => "file_delete",
            Self::FileRead => "file_read",
            Self::DeviceConnect => "device_connect",
            Self::DeviceDisconnect => "device_disconnect",
            Self::DeviceBlocked => "device_blocked",
            Self::Print => "print",
            Self::WebAccess => "web_access",
            Self::NetworkConnect => "network_connect",
            Self::SoftwareInstalled => "software_installed",
            Self::SoftwareRemoved => "software_removed",
            Self::SoftwareUpdated => "software_updated",
            Self::Inventory => "inventory",
            Self::EnvironmentChange => "environment_change",
            Self::SecurityStatus => "security_status",
            Self::LanSighting => "lan_sighting",
            Self::CollectorWarning => "collector_warning",
            Self::AgentStarted => "agent_started",
            Self::AgentStopping => "agent_stopping",
            Self::UninstallRefused => "uninstall_refused",
            Self::UninstallAllowed => "uninstall_allowed",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// The kind of an event, or `None` when the body or its action is missing
/// (such an event is malformed and refused by ingest).
pub fn kind_of(event: &Event) -> Option<EventKind> {
    let (field, action, _) = crate::schema::parts(event.kind.as_ref()?);
    crate::schema::kind(field, u64::try_from(action).ok()?)
}

/// An executable's file name as banned-app rules match it: lower-case,
/// without a trailing `.exe`, from a Unix or Windows path
/// (`C:\\P2P\\Winny.exe` → `winny`).
pub fn app_name(path: &str) -> String {
    let file = path.rsplit(['/', '\\']).next().unwrap_or(path);
    let lower = file.to_lowercase();
    lower
        .strip_suffix(".exe")
        .map(str::to_owned)
        .unwrap_or(lower)
}

/// Of the banned-app rules that name a program (`(rule, action)` in the
/// order the policy lists them), the one that applies: the strongest action
/// (block, then kill, then log), and of equally strong rules the first
/// listed. The agent enforces and the alerting service alarms with this
/// same choice, so an alarm names the rule that was enforced.
pub fn strongest_ban<T>(
    matching: impl IntoIterator<Item = (T, crate::agent::v1::banned_app::Action)>,
) -> Option<T> {
    use crate::agent::v1::banned_app::Action;
    let strength = |a: Action| match a {
        Action::Block => 3,
        Action::Kill => 2,
        Action::Log | Action::Unspecified => 1,
    };
    let mut best: Option<(T, u8)> = None;
    for (rule, action) in matching {
        let s = strength(action);
        if best.as_ref().is_none_or(|(_, b)| s > *b) {
            best = Some((rule, s));
        }
    }
    best.map(|(rule, _)| rule)
}

/// The text an operator searches for: the executable, path, URL or device
/// that the event is about (the body's `(subject)` field). Stored in
/// `events.subject`.
pub fn subject(event: &Event) -> &str {
    event
        .kind
        .as_ref()
        .map_or("", |k| crate::schema::parts(k).2)
}

#[cfg(test)]
mod ban_tests {
    use super::strongest_ban;
    use crate::agent::v1::banned_app::Action;

    #[test]
    fn the_strongest_action_wins_and_ties_go_to_the_first_listed() {
        assert_eq!(
            strongest_ban([
                ("log", Action::Log),
                ("kill", Action::Kill),
                ("log2", Action::Log)
            ]),
            Some("kill")
        );
        assert_eq!(
            strongest_ban([("kill-a", Action::Kill), ("kill-b", Action::Kill)]),
            Some("kill-a")
        );
        assert_eq!(
            strongest_ban([
                ("log", Action::Log),
                ("block", Action::Block),
                ("kill", Action::Kill)
            ]),
            Some("block")
        );
        assert_eq!(strongest_ban::<&str>([]), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::v1::{ProcessEvent, event::Kind};

    #[test]
    fn kind_codes_and_names_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::from_code(k.code()), Some(k));
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
    }

    #[test]
    fn missing_action_is_no_kind() {
        let e = Event {
            kind: Some(Kind::Process(ProcessEvent::default())),
            ..Default::default()
        };
        assert_eq!(kind_of(&e), None);
    }
}
