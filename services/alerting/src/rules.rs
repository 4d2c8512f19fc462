//! The alarm rules: one per category, each a pure function of an event and
//! the device's effective policy. A rule gives a [`Hit`]; whether a hit
//! becomes a new alarm, counts into an open one, or (for windowed rules)
//! waits for its threshold is the store's business.

use chrono::{DateTime, Datelike, Timelike, Utc};
use mamori_policy::Effective;
use mamori_policy::document::{AppAction, BannedApp, BusinessHours, Weekday};
use mamori_proto::agent::v1::{
    Event, banned_app::Action as BanAction, device_event, environment_change_event, event::Kind,
    file_event, process_event, software_event,
};
use mamori_proto::app_name;
use std::time::Duration;

/// A rule matched an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The alarm category (as stored in `alarms.category`).
    pub category: &'static str,
    /// What makes two hits the same incident besides device and user (the
    /// app, the folder rule, the host).
    pub detail: String,
    pub summary: String,
    /// Counted against `threshold` (pages printed); 1 otherwise.
    pub amount: i32,
    /// Windowed rules: an alarm only once the amounts within the window
    /// reach the limit.
    pub threshold: Option<(i64, Duration)>,
}

impl Hit {
    fn new(category: &'static str, detail: impl Into<String>, summary: String) -> Self {
        Hit {
            category,
            detail: detail.into(),
            summary,
            amount: 1,
            threshold: None,
        }
    }
}

/// Every hit of `event`, which happened at `at` (server time), under
/// `policy`.
pub fn evaluate(event: &Event, at: DateTime<Utc>, effective: &Effective) -> Vec<Hit> {
    let policy = &effective.document;
    let globs = &effective.globs;
    let mut hits = Vec::new();
    let Some(kind) = &event.kind else {
        return hits;
    };
    match kind {
        Kind::Process(p) => match p.action() {
            process_event::Action::Blocked => hits.push(Hit::new(
                "banned_app",
                p.exe_path.to_lowercase(),
                format!("Banned app stopped: {} ({})", p.exe_path, p.blocked_reason),
            )),
            process_event::Action::Start => {
                if let Some(rule) = banned_rule(effective, &p.exe_path, &p.exe_sha256) {
                    hits.push(Hit::new(
                        "banned_app",
                        p.exe_path.to_lowercase(),
                        format!(
                            "Banned app launched: {} (rule {})",
                            p.exe_path,
                            rule_label(rule)
                        ),
                    ));
                }
            }
            _ => {}
        },
        Kind::File(f) if !globs.folders.is_empty() => {
            let hit = globs
                .folder_of(&f.path)
                .or_else(|| globs.folder_of(&f.target_path));
            if let Some(g) = hit {
                let action = file_event::Action::try_from(f.action)
                    .map(|a| a.as_str_name().trim_start_matches("ACTION_").to_lowercase())
                    .unwrap_or_default();
                let target = if f.target_path.is_empty() {
                    String::new()
                } else {
                    format!(" → {}", f.target_path)
                };
                hits.push(Hit::new(
                    "confidential_folder",
                    g,
                    format!("Confidential folder {g}: {action} {}{target}", f.path),
                ));
            }
        }
        Kind::Print(p) => {
            if let Some(mp) = &policy.mass_print {
                let pages = i64::from(p.pages) * i64::from(p.copies.max(1));
                hits.push(Hit {
                    category: "mass_print",
                    detail: String::new(),
                    summary: format!(
                        "Mass printing: at least {} pages within {} minutes (last: {:?} on {})",
                        mp.pages, mp.window_minutes, p.document, p.printer
                    ),
                    amount: pages.min(i64::from(i32::MAX)) as i32,
                    threshold: Some((
                        i64::from(mp.pages),
                        Duration::from_secs(u64::from(mp.window_minutes) * 60),
                    )),
                });
            }
        }
        Kind::Web(w) => {
            if let Some(web) = &policy.web {
                let host = w.url_host.to_ascii_lowercase();
                let listed =
                    |list: &Vec<String>| list.iter().find(|p| host_matches(p, &host)).cloned();
                if let Some(p) = listed(&web.block).or_else(|| listed(&web.alarm)) {
                    hits.push(Hit::new(
                        "banned_web",
                        p.clone(),
                        format!(
                            "Web access to {} (listed as {p}) with {}",
                            w.url_host, w.browser
                        ),
                    ));
                }
            }
        }
        Kind::Device(d) if d.action() == device_event::Action::Blocked => {
            hits.push(Hit::new(
                "device_control",
                format!("{}:{}:{}", d.vendor_id, d.product_id, d.serial),
                format!(
                    "Device refused: {} ({}, {}:{} serial {})",
                    d.description,
                    d.device_class()
                        .as_str_name()
                        .trim_start_matches("DEVICE_CLASS_")
                        .to_lowercase(),
                    d.vendor_id,
                    d.product_id,
                    d.serial
                ),
            ));
        }
        Kind::EnvironmentChange(c) => {
            let field = environment_change_event::Field::try_from(c.field)
                .map(|f| f.as_str_name().trim_start_matches("FIELD_").to_lowercase())
                .unwrap_or_default();
            hits.push(Hit::new(
                "environment_change",
                format!("{field}:{}", c.new_value),
                format!(
                    "PC environment changed: {field} {} → {}",
                    c.old_value, c.new_value
                ),
            ));
        }
        Kind::LanSighting(l) if !l.known => {
            hits.push(Hit::new(
                "unauthorized_pc",
                l.mac_addr.to_ascii_lowercase(),
                format!(
                    "Unknown device on the network: {} {} {}",
                    l.ip_addr, l.mac_addr, l.hostname
                ),
            ));
        }
        _ => {}
    }
    if let Some(bh) = &policy.business_hours
        && is_operation(kind)
        && !within_hours(bh, at)
    {
        let what = mamori_proto::kind_of(event)
            .map(|k| k.as_str())
            .unwrap_or("operation");
        hits.push(Hit::new(
            "after_hours",
            "",
            format!(
                "Operation outside business hours: {what} {}",
                mamori_proto::subject(event)
            ),
        ));
    }
    hits
}

/// The identity of an app for "new app launched": its hash when the agent
/// could hash it, else its path.
pub fn app_key(p: &mamori_proto::agent::v1::ProcessEvent) -> String {
    if p.exe_sha256.len() == 32 {
        format!("sha256:{}", hex::encode(&p.exe_sha256))
    } else {
        format!("path:{}", p.exe_path.to_lowercase())
    }
}

/// "New app": a process start whose app (see [`app_key`]) is not in
/// `known`, or a package the agent saw being installed (not one of the
/// PC's first inventory). Whether it is new in the tenant is then the
/// store's question (and the learning period's).
pub fn new_app(event: &Event, known: impl Fn(&[u8], &str) -> bool) -> Option<Hit> {
    let p = match &event.kind {
        Some(Kind::Process(p)) => p,
        Some(Kind::Software(s))
            if s.action() == software_event::Action::Installed
                && !s.inventory
                && !s.name.is_empty() =>
        {
            let version = if s.version.is_empty() {
                String::new()
            } else {
                format!(" {}", s.version)
            };
            return Some(Hit::new(
                "new_app",
                format!("package:{}", s.name.to_lowercase()),
                format!("New app installed: {}{version}", s.name),
            ));
        }
        _ => return None,
    };
    if p.action() != process_event::Action::Start || p.exe_path.is_empty() {
        return None;
    }
    if known(&p.exe_sha256, &p.exe_path) {
        return None;
    }
    Some(Hit::new(
        "new_app",
        app_key(p),
        format!("New app launched: {}", p.exe_path),
    ))
}

/// Whether an event whose body is the `Event` field `field` (one of
/// `mamori_proto::wire::EVENT_BODIES`) can hit any rule under `effective`,
/// by [`evaluate`] or [`new_app`] (with the apps `known`). `body` is the
/// body's encoding when the event has a single body field (see
/// `mamori_proto::wire::body`). Events that cannot hit are not decoded:
/// most of the alerting service's time went into decoding events no rule
/// looks at, and most of those were starts of apps the tenant knows. Must
/// agree with those two (tested for every kind and policy section).
pub fn may_hit(
    field: u32,
    body: Option<&[u8]>,
    effective: &Effective,
    known: impl Fn(&[u8], &str) -> bool,
) -> bool {
    use mamori_proto::schema::field::{
        DEVICE, ENVIRONMENT_CHANGE, FILE, LAN_SIGHTING, LOGON, PRINT, PROCESS, SOFTWARE, WEB,
    };
    let policy = &effective.document;
    match field {
        // Process starts of banned and new apps, and stops by policy; with
        // business hours every start is an operation that may hit.
        PROCESS if policy.business_hours.is_none() => {
            body.is_none_or(|b| process_may_hit(b, effective, known))
        }
        // Refused devices, environment changes, LAN sightings and
        // installed packages hit without any setting.
        PROCESS | DEVICE | ENVIRONMENT_CHANGE | LAN_SIGHTING | SOFTWARE => true,
        // Operations (`is_operation`) with business hours.
        LOGON | FILE | PRINT | WEB if policy.business_hours.is_some() => true,
        FILE => !effective.globs.folders.is_empty(),
        PRINT => policy.mass_print.is_some(),
        WEB => policy.web.is_some(),
        _ => false,
    }
}

/// [`may_hit`] for an encoded `ProcessEvent`, read field by field as the
/// decoder would (the last value of a field wins); true when it cannot be
/// read, so that the decoder decides.
fn process_may_hit(
    body: &[u8],
    effective: &Effective,
    known: impl Fn(&[u8], &str) -> bool,
) -> bool {
    use mamori_proto::schema::body::process::{ACTION, EXE_PATH, EXE_SHA256};
    use mamori_proto::wire::next_field;
    let (mut action, mut exe_path, mut sha256) = (0u64, &b""[..], &b""[..]);
    let mut buf = body;
    while !buf.is_empty() {
        let Ok(f) = next_field(&mut buf) else {
            return true;
        };
        match (f.tag, f.is_varint(), f.is_bytes()) {
            (ACTION, true, _) => action = f.varint,
            (EXE_PATH, _, true) => exe_path = f.bytes,
            (EXE_SHA256, _, true) => sha256 = f.bytes,
            _ => {}
        }
    }
    let Ok(exe_path) = std::str::from_utf8(exe_path) else {
        return true;
    };
    // As prost reads an `int32` enum: truncated, unknown values unspecified.
    match process_event::Action::try_from(action as i32).unwrap_or_default() {
        process_event::Action::Blocked => true,
        process_event::Action::Start => {
            banned_rule(effective, exe_path, sha256).is_some()
                || (!exe_path.is_empty() && !known(sha256, exe_path))
        }
        process_event::Action::Stop | process_event::Action::Unspecified => false,
    }
}

/// Operations a person does (not background reports like inventory).
fn is_operation(kind: &Kind) -> bool {
    match kind {
        Kind::Logon(_) | Kind::File(_) | Kind::Print(_) | Kind::Web(_) => true,
        Kind::Process(p) => p.action() == process_event::Action::Start,
        Kind::Device(d) => d.action() == device_event::Action::Connect,
        _ => false,
    }
}

fn rule_label(b: &BannedApp) -> String {
    b.label
        .clone()
        .or_else(|| b.name.clone())
        .or_else(|| b.path.clone())
        .or_else(|| b.sha256.clone())
        .unwrap_or_default()
}

/// The banned-app rule of `effective` that applies to the app: of those
/// that name it, the one the agent enforces (`mamori_proto::strongest_ban`).
fn banned_rule<'a>(
    effective: &'a Effective,
    exe_path: &str,
    sha256: &[u8],
) -> Option<&'a BannedApp> {
    let apps = effective
        .document
        .banned_apps
        .as_deref()
        .unwrap_or_default();
    if apps.is_empty() {
        return None;
    }
    // Every path glob at once, in one pass over the compiled set.
    let by_path = effective.globs.banned_by_path(exe_path);
    let matching = apps
        .iter()
        .enumerate()
        .filter(|(i, b)| app_matches(b, by_path.contains(i), exe_path, sha256))
        .map(|(_, b)| {
            let action = match b.action {
                AppAction::Log => BanAction::Log,
                AppAction::Kill => BanAction::Kill,
                AppAction::Block => BanAction::Block,
            };
            (b, action)
        });
    mamori_proto::strongest_ban(matching)
}

/// `path_matched`: the rule's path glob matches (see `Globs::banned_by_path`).
fn app_matches(b: &BannedApp, path_matched: bool, exe_path: &str, sha256: &[u8]) -> bool {
    if let Some(name) = &b.name {
        return !exe_path.is_empty() && app_name(name) == app_name(exe_path);
    }
    if b.path.is_some() {
        return path_matched;
    }
    if let Some(h) = &b.sha256 {
        return !sha256.is_empty() && hex::encode(sha256).eq_ignore_ascii_case(h);
    }
    false
}

/// `example.com` matches it and its subdomains; `*.example.com` only the
/// subdomains.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let host = host.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(domain) => host.ends_with(&format!(".{domain}")),
        None => host == pattern || host.ends_with(&format!(".{pattern}")),
    }
}

/// True when `at` falls in a shift. A shift belongs to the day it starts
/// (a night shift runs into the next morning); on a holiday no shift starts.
/// The end minute is outside: hours 09:00–18:00 end at 17:59:59.
pub fn within_hours(bh: &BusinessHours, at: DateTime<Utc>) -> bool {
    let Ok(tz) = bh.time_zone.parse::<chrono_tz::Tz>() else {
        return true;
    };
    let local = at.with_timezone(&tz);
    let today = local.date_naive();
    let minute = local.hour() * 60 + local.minute();
    let day_of = |d: chrono::NaiveDate| Weekday::from_chrono(d.weekday());
    let works = |d: chrono::NaiveDate| !bh.holidays.contains(&d);
    let mins = |t: chrono::NaiveTime| t.hour() * 60 + t.minute();
    if works(today) {
        for s in bh.shifts.get(&day_of(today)).into_iter().flatten() {
            let (start, end) = (mins(s.start), mins(s.end));
            let inside = if end > start {
                (start..end).contains(&minute)
            } else {
                minute >= start
            };
            if inside {
                return true;
            }
        }
    }
    if let Some(yesterday) = today.pred_opt()
        && works(yesterday)
    {
        for s in bh.shifts.get(&day_of(yesterday)).into_iter().flatten() {
            let (start, end) = (mins(s.start), mins(s.end));
            if end < start && minute < end {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use mamori_proto::agent::v1::{PrintEvent, ProcessEvent, WebEvent};
    use serde_json::json;

    fn doc(v: serde_json::Value) -> mamori_policy::PolicyDocument {
        mamori_policy::PolicyDocument::parse(v).unwrap()
    }

    /// `v` as a tenant's only policy.
    fn effective(v: serde_json::Value) -> Effective {
        mamori_policy::effective::merge(
            1,
            &[mamori_policy::effective::Layer {
                scope: mamori_policy::Scope::Tenant,
                policy_id: uuid::Uuid::nil(),
                version: 1,
                document: doc(v),
            }],
        )
    }

    fn event(kind: Kind) -> Event {
        Event {
            kind: Some(kind),
            ..Default::default()
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn business_hours_end_on_the_minute_and_holidays_have_none() {
        let bh = doc(json!({"business_hours": {"time_zone": "Asia/Tokyo",
            "shifts": {"wed": [{"start": "09:00", "end": "18:00"}],
                       "fri": [{"start": "22:00", "end": "06:00"}]},
            "holidays": ["2026-12-02"]}}))
        .business_hours
        .unwrap();
        // Wednesday 25 Nov 2026, Tokyo = UTC+9.
        assert!(within_hours(&bh, utc("2026-11-25T08:59:59Z"))); // 17:59:59
        assert!(!within_hours(&bh, utc("2026-11-25T09:00:00Z"))); // 18:00
        assert!(within_hours(&bh, utc("2026-11-25T00:00:00Z"))); // 09:00
        assert!(!within_hours(&bh, utc("2026-11-24T23:59:00Z"))); // 08:59
        // The next Wednesday is a holiday.
        assert!(!within_hours(&bh, utc("2026-12-02T03:00:00Z")));
        // Friday's night shift runs into Saturday morning.
        assert!(within_hours(&bh, utc("2026-11-27T20:00:00Z"))); // Sat 05:00
        assert!(!within_hours(&bh, utc("2026-11-27T21:00:00Z"))); // Sat 06:00
    }

    /// Events of every kind and action, each string set.
    fn every_event() -> Vec<Event> {
        use mamori_proto::agent::v1::*;
        let mut out = Vec::new();
        for action in 0..=8 {
            out.push(Kind::Logon(LogonEvent {
                action,
                terminal: "tty1".into(),
                ..Default::default()
            }));
            out.push(Kind::Process(ProcessEvent {
                action,
                exe_path: "/usr/bin/winny".into(),
                exe_sha256: vec![1; 32],
                blocked_reason: "banned".into(),
                ..Default::default()
            }));
            // An app no rule names, one that could not be hashed, and a
            // start without a path.
            for (exe_path, exe_sha256) in [
                ("/usr/bin/vim", vec![2; 32]),
                ("/opt/p2p/share", vec![]),
                ("", vec![3; 32]),
            ] {
                out.push(Kind::Process(ProcessEvent {
                    action,
                    exe_path: exe_path.into(),
                    exe_sha256,
                    ..Default::default()
                }));
            }
            out.push(Kind::File(FileEvent {
                action,
                path: "/srv/hr/pay.xlsx".into(),
                target_path: "/media/usb/pay.xlsx".into(),
                ..Default::default()
            }));
            out.push(Kind::Device(DeviceEvent {
                action,
                device_class: 1,
                description: "stick".into(),
                ..Default::default()
            }));
            for inventory in [false, true] {
                out.push(Kind::Software(SoftwareEvent {
                    action,
                    name: "app".into(),
                    inventory,
                    ..Default::default()
                }));
            }
            out.push(Kind::Network(NetworkEvent {
                direction: action,
                remote_addr: "192.0.2.1".into(),
                ..Default::default()
            }));
            out.push(Kind::EnvironmentChange(EnvironmentChangeEvent {
                field: action,
                new_value: "x".into(),
                ..Default::default()
            }));
        }
        out.push(Kind::Print(PrintEvent {
            pages: 500,
            copies: 1,
            ..Default::default()
        }));
        out.push(Kind::Web(WebEvent {
            url_host: "www.example.org".into(),
            ..Default::default()
        }));
        out.push(Kind::Inventory(InventoryEvent {
            hostname: "pc".into(),
            ..Default::default()
        }));
        out.push(Kind::SecurityStatus(SecurityStatusEvent::default()));
        for known in [false, true] {
            out.push(Kind::LanSighting(LanSightingEvent {
                mac_addr: "00:11:22:33:44:55".into(),
                known,
                ..Default::default()
            }));
        }
        out.into_iter().map(event).collect()
    }

    #[test]
    fn events_no_rule_can_hit_are_the_ones_may_hit_skips() {
        use prost::Message;
        let closed = json!({"time_zone": "UTC", "shifts": {}});
        let policies = [
            json!({}),
            json!({"business_hours": closed}),
            json!({"confidential_folders": ["/srv/hr/**"]}),
            json!({"mass_print": {"pages": 10, "window_minutes": 60}}),
            json!({"web": {"alarm": ["example.org"]}}),
            json!({"banned_apps": [{"name": "winny", "action": "log"}]}),
            json!({"business_hours": closed, "confidential_folders": ["/srv/hr/**"],
                   "mass_print": {"pages": 10, "window_minutes": 60},
                   "web": {"alarm": ["example.org"]},
                   "banned_apps": [{"name": "winny", "action": "log"}]}),
        ];
        let at = utc("2026-11-25T03:00:00Z");
        let (mut skipped, mut starts_skipped) = (0, 0);
        // No app known; every app known; only the app hashed [2; 32].
        let knowns: [fn(&[u8], &str) -> bool; 3] =
            [|_, _| false, |_, _| true, |sha, _| sha == [2; 32]];
        for p in &policies {
            let eff = effective(p.clone());
            for known in knowns {
                for e in every_event() {
                    let encoded = e.encode_to_vec();
                    let b = mamori_proto::wire::body(&encoded).unwrap().unwrap();
                    let hits = !evaluate(&e, at, &eff).is_empty() || new_app(&e, known).is_some();
                    if !may_hit(b.field, b.encoding, &eff, known) {
                        skipped += 1;
                        assert!(!hits, "{e:?} hits under {p} but would be skipped");
                        if matches!(&e.kind, Some(Kind::Process(p)) if p.action() == process_event::Action::Start)
                        {
                            starts_skipped += 1;
                        }
                    }
                }
            }
        }
        // The test is not vacuous: with no policy, most kinds are skipped,
        // and so are starts of known apps no rule bans.
        assert!(skipped > 150, "{skipped}");
        assert!(starts_skipped >= 8, "{starts_skipped}");
    }

    #[test]
    fn process_events_decode_only_when_a_rule_may_hit() {
        use mamori_proto::agent::v1::ProcessEvent;
        use prost::Message;
        let eff = effective(json!({"banned_apps": [
            {"name": "winny", "action": "log"},
            {"path": "/opt/p2p/**", "action": "log"},
            {"sha256": "0303030303030303030303030303030303030303030303030303030303030303", "action": "log"}]}));
        let known = |_: &[u8], path: &str| path != "/usr/bin/new";
        let may = |p: ProcessEvent| may_hit(11, Some(&p.encode_to_vec()), &eff, known);
        let start = |path: &str, sha: Vec<u8>| ProcessEvent {
            action: process_event::Action::Start as i32,
            exe_path: path.into(),
            exe_sha256: sha,
            ..Default::default()
        };
        // Banned by name, by path and by hash; a new app.
        assert!(may(start("C:\\Tools\\Winny.exe", vec![])));
        assert!(may(start("/opt/p2p/share", vec![])));
        assert!(may(start("/usr/bin/x", vec![3; 32])));
        assert!(may(start("/usr/bin/new", vec![4; 32])));
        // A known app no rule names; a stop; an unknown action.
        assert!(!may(start("/usr/bin/vim", vec![4; 32])));
        let mut stop = start("/usr/bin/new", vec![]);
        stop.action = process_event::Action::Stop as i32;
        assert!(!may(stop.clone()));
        stop.action = 99;
        assert!(!may(stop));
        // Blocked always hits.
        let mut blocked = start("/usr/bin/vim", vec![]);
        blocked.action = process_event::Action::Blocked as i32;
        assert!(may(blocked));
        // Unreadable bodies are left to the decoder, and so are events whose
        // body is split over several fields.
        assert!(may_hit(11, Some(&[0x22, 0x05, b'a']), &eff, known));
        assert!(may_hit(11, Some(&[0x22, 0x01, 0xff]), &eff, known));
        assert!(may_hit(11, None, &eff, known));
        // With business hours every start is an operation that may hit.
        let hours = effective(json!({"business_hours": {"time_zone": "UTC", "shifts": {}}}));
        let vim = start("/usr/bin/vim", vec![4; 32]).encode_to_vec();
        assert!(may_hit(11, Some(&vim), &hours, known));
    }

    #[test]
    fn of_several_banned_app_rules_the_alarm_names_the_one_the_agent_enforces() {
        // A log rule by name first, a kill rule by path after it: the agent
        // kills (the strongest); the alarm of a start it reports must name
        // the same rule, not merely the first listed.
        let p = effective(json!({
            "banned_apps": [
                {"name": "winny", "action": "log", "label": "watch winny"},
                {"path": "/opt/p2p/**", "action": "kill", "label": "no p2p"},
                {"path": "/opt/**", "action": "kill", "label": "all of opt"}
            ]
        }));
        let start = event(Kind::Process(ProcessEvent {
            action: process_event::Action::Start as i32,
            exe_path: "/opt/p2p/winny".into(),
            ..Default::default()
        }));
        let hits = evaluate(&start, utc("2026-11-25T00:00:00Z"), &p);
        assert_eq!(hits.len(), 1);
        assert!(
            hits[0].summary.contains("no p2p"),
            "the strongest, and of two kills the first: {}",
            hits[0].summary
        );
    }

    #[test]
    fn a_package_seen_installed_is_a_new_app_and_the_inventory_is_not() {
        use mamori_proto::agent::v1::SoftwareEvent;
        let package = |action: software_event::Action, inventory: bool| {
            event(Kind::Software(SoftwareEvent {
                action: action as i32,
                name: "AnyDesk".into(),
                version: "6.3.0".into(),
                publisher: "philandro".into(),
                inventory,
            }))
        };
        let hit = new_app(
            &package(software_event::Action::Installed, false),
            |_, _| false,
        )
        .expect("an installation is a new app");
        assert_eq!(hit.category, "new_app");
        assert_eq!(hit.detail, "package:anydesk");
        assert_eq!(hit.summary, "New app installed: AnyDesk 6.3.0");
        for (action, inventory) in [
            (software_event::Action::Installed, true),
            (software_event::Action::Updated, false),
            (software_event::Action::Removed, false),
        ] {
            assert_eq!(
                new_app(&package(action, inventory), |_, _| false),
                None,
                "{action:?} {inventory}"
            );
        }
    }

    #[test]
    fn rules_match_their_events() {
        let p = effective(json!({
            "banned_apps": [{"name": "winny", "action": "log"}, {"path": "/opt/p2p/**", "action": "log"}],
            "confidential_folders": ["/srv/hr/**"],
            "web": {"block": ["*.example.net"], "alarm": ["example.org"]},
            "mass_print": {"pages": 10, "window_minutes": 60}
        }));
        let at = utc("2026-11-25T00:00:00Z");
        let start = event(Kind::Process(ProcessEvent {
            action: process_event::Action::Start as i32,
            exe_path: "/usr/bin/Winny.exe".into(),
            ..Default::default()
        }));
        let hits = evaluate(&start, at, &p);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].category, "banned_app");
        let web = |host: &str| {
            event(Kind::Web(WebEvent {
                url_host: host.into(),
                ..Default::default()
            }))
        };
        assert_eq!(
            evaluate(&web("a.example.net"), at, &p)[0].category,
            "banned_web"
        );
        assert!(evaluate(&web("example.net"), at, &p).is_empty());
        assert_eq!(evaluate(&web("www.example.org"), at, &p).len(), 1);
        assert!(evaluate(&web("notexample.org"), at, &p).is_empty());
        let print = event(Kind::Print(PrintEvent {
            pages: 3,
            copies: 2,
            ..Default::default()
        }));
        let hit = &evaluate(&print, at, &p)[0];
        assert_eq!(hit.amount, 6);
        assert_eq!(hit.threshold.unwrap().0, 10);
        // No business hours: nothing is after hours.
        assert!(evaluate(&start, at, &effective(json!({}))).is_empty());
        // Path globs, compiled once with the effective policy.
        let share = event(Kind::Process(ProcessEvent {
            action: process_event::Action::Start as i32,
            exe_path: "/opt/p2p/bin/share".into(),
            ..Default::default()
        }));
        assert_eq!(evaluate(&share, at, &p)[0].category, "banned_app");
        let copy = |path: &str| {
            event(Kind::File(mamori_proto::agent::v1::FileEvent {
                action: file_event::Action::Copy as i32,
                path: path.into(),
                ..Default::default()
            }))
        };
        assert_eq!(
            evaluate(&copy("/srv/hr/pay.xlsx"), at, &p)[0].category,
            "confidential_folder"
        );
        assert!(evaluate(&copy("/srv/www/index.html"), at, &p).is_empty());
    }
}
