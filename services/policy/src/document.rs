//! The policy document: what an administrator writes (JSON through the
//! gateway), validated before it is stored. Every section is optional; an
//! absent section is inherited from the less specific policy (group, then
//! tenant).

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Upper bounds on list sizes and string lengths.
pub const MAX_BANNED_APPS: usize = 1000;
pub const MAX_EXCEPTIONS: usize = 1000;
pub const MAX_FOLDERS: usize = 200;
pub const MAX_HOSTS: usize = 2000;
pub const MAX_HOLIDAYS: usize = 400;
pub const MAX_SHIFTS_PER_DAY: usize = 4;
pub const MAX_ROUTES: usize = 50;
pub const MAX_RECIPIENTS: usize = 20;
const MAX_TEXT: usize = 500;

/// The alarm categories (as stored in `alarms.category`).
pub const CATEGORIES: [&str; 9] = [
    "environment_change",
    "new_app",
    "banned_app",
    "after_hours",
    "confidential_folder",
    "mass_print",
    "banned_web",
    "device_control",
    "unauthorized_pc",
];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banned_apps: Option<Vec<BannedApp>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_control: Option<DeviceControl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_hours: Option<BusinessHours>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidential_folders: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mass_print: Option<MassPrint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<WebLists>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<Notifications>,
}

/// One banned application: exactly one of `name`, `path`, `sha256`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BannedApp {
    /// The executable's file name, case-insensitive, `.exe` optional
    /// (`winny` matches `winny`, `Winny.exe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A glob on the full path (`/opt/p2p/**`, `C:\\Tools\\*.exe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// SHA-256 of the executable, 64 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub action: AppAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AppAction {
    Log,
    Kill,
    Block,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DeviceClass {
    UsbStorage,
    CdDvd,
    Floppy,
    Smartphone,
    Bluetooth,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Allow,
    ReadOnly,
    Deny,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceControl {
    /// Per class; a class not named is allowed.
    #[serde(default)]
    pub classes: BTreeMap<DeviceClass, Access>,
    /// Devices allowed whatever their class's rule: for good, or until a
    /// set time (a temporary allowance).
    #[serde(default)]
    pub exceptions: Vec<DeviceException>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceException {
    /// 4 hex digits.
    pub vendor_id: String,
    /// 4 hex digits.
    pub product_id: String,
    /// Absent: any serial of this vendor and product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    pub fn index(self) -> u32 {
        self as u32
    }

    pub fn from_chrono(d: chrono::Weekday) -> Self {
        Weekday::ALL[d.num_days_from_monday() as usize]
    }
}

/// Working time: shifts per weekday in a time zone, and holidays (no work
/// all day). Operations outside are after-hours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BusinessHours {
    /// An IANA zone such as `Asia/Tokyo`.
    pub time_zone: String,
    /// Shifts per weekday, `HH:MM`; a shift whose end is before its start
    /// runs past midnight (`22:00`–`06:00`). A day not named has no shift.
    #[serde(default)]
    pub shifts: BTreeMap<Weekday, Vec<Shift>>,
    #[serde(default)]
    pub holidays: Vec<NaiveDate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Shift {
    #[serde(with = "hhmm")]
    #[schema(value_type = String, example = "09:00", pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")]
    pub start: NaiveTime,
    #[serde(with = "hhmm")]
    #[schema(value_type = String, example = "18:00", pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")]
    pub end: NaiveTime,
}

mod hhmm {
    use chrono::NaiveTime;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(t: &NaiveTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.format("%H:%M").to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveTime, D::Error> {
        let text = String::deserialize(d)?;
        if text == "24:00" {
            return Ok(NaiveTime::from_hms_opt(23, 59, 59).expect("valid"));
        }
        NaiveTime::parse_from_str(&text, "%H:%M")
            .map_err(|_| D::Error::custom(format!("{text:?} is not a time of day as HH:MM")))
    }
}

/// Mass printing: more than `pages` pages by one user on one device within
/// `window_minutes` raises an alarm (at the threshold).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MassPrint {
    pub pages: u32,
    pub window_minutes: u32,
}

/// Host patterns: `example.com` (and its subdomains) or `*.example.com`.
/// `block` hosts are refused by the browsers (their managed policies) and
/// alarmed; `alarm` hosts only alarmed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebLists {
    #[serde(default)]
    pub block: Vec<String>,
    #[serde(default)]
    pub alarm: Vec<String>,
    /// Record visits' full URLs (path and query); by default only the host,
    /// for the employees' privacy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full_url: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Notifications {
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// Which alarm categories go to which recipients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Alarm categories, or `["*"]` for all.
    pub categories: Vec<String>,
    #[serde(default)]
    pub email: Vec<String>,
    /// Ids of the tenant's webhooks.
    #[serde(default)]
    pub webhooks: Vec<Uuid>,
    #[serde(default)]
    pub mode: Delivery,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    #[default]
    Immediate,
    /// Collected and sent once an hour.
    Digest,
}

impl Route {
    pub fn covers(&self, category: &str) -> bool {
        self.categories.iter().any(|c| c == "*" || c == category)
    }
}

/// A refused document: the field (`banned_apps[2].path`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

impl PolicyDocument {
    /// Parses and validates a document; the error names the first bad
    /// field.
    pub fn parse(value: serde_json::Value) -> Result<Self, FieldError> {
        let doc: PolicyDocument = serde_json::from_value(value).map_err(|e| {
            // serde names the unknown field or the bad variant in its text.
            err("document", e.to_string())
        })?;
        doc.validate()?;
        Ok(doc)
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(apps) = &self.banned_apps {
            validate_banned_apps(apps)?;
        }
        if let Some(dc) = &self.device_control {
            validate_device_control(dc)?;
        }
        if let Some(bh) = &self.business_hours {
            validate_business_hours(bh)?;
        }
        if let Some(folders) = &self.confidential_folders {
            bounded_list("confidential_folders", folders.len(), MAX_FOLDERS)?;
            for (i, f) in folders.iter().enumerate() {
                let field = format!("confidential_folders[{i}]");
                text(&field, f)?;
                mamori_pathglob::check(f)
                    .map_err(|e| err(&field, format!("{f:?} is not a valid glob: {e}")))?;
            }
        }
        self.validate_glob_total()?;
        if let Some(mp) = &self.mass_print {
            if !(1..=100_000).contains(&mp.pages) {
                return Err(err("mass_print.pages", "must be between 1 and 100000"));
            }
            if !(1..=7 * 24 * 60).contains(&mp.window_minutes) {
                return Err(err(
                    "mass_print.window_minutes",
                    "must be between 1 and 10080 (a week)",
                ));
            }
        }
        if let Some(web) = &self.web {
            for (name, list) in [("web.block", &web.block), ("web.alarm", &web.alarm)] {
                bounded_list(name, list.len(), MAX_HOSTS)?;
                for (i, h) in list.iter().enumerate() {
                    host_pattern(&format!("{name}[{i}]"), h)?;
                }
            }
        }
        if let Some(n) = &self.notifications {
            validate_routes(&n.routes)?;
        }
        Ok(())
    }
}

impl PolicyDocument {
    /// Bounds the path globs the rules match every file event and process
    /// start against (see `mamori_pathglob::MAX_TOTAL_BYTES`).
    fn validate_glob_total(&self) -> Result<(), FieldError> {
        let folders: usize = self
            .confidential_folders
            .iter()
            .flatten()
            .map(String::len)
            .sum();
        let paths: usize = self
            .banned_apps
            .iter()
            .flatten()
            .filter_map(|b| b.path.as_ref())
            .map(String::len)
            .sum();
        let max = mamori_pathglob::MAX_TOTAL_BYTES;
        if folders + paths <= max {
            return Ok(());
        }
        let field = if paths > folders {
            "banned_apps"
        } else {
            "confidential_folders"
        };
        Err(err(
            field,
            format!(
                "the path globs of confidential_folders and banned_apps total {} bytes; at most {max}",
                folders + paths
            ),
        ))
    }
}

fn bounded_list(field: &str, len: usize, max: usize) -> Result<(), FieldError> {
    if len > max {
        return Err(err(field, format!("has {len} entries; at most {max}")));
    }
    Ok(())
}

fn text(field: &str, s: &str) -> Result<(), FieldError> {
    if s.trim().is_empty() {
        return Err(err(field, "must not be empty"));
    }
    if s.len() > MAX_TEXT {
        return Err(err(field, format!("is longer than {MAX_TEXT} bytes")));
    }
    if s.chars().any(char::is_control) {
        return Err(err(field, "contains control characters"));
    }
    Ok(())
}

fn validate_banned_apps(apps: &[BannedApp]) -> Result<(), FieldError> {
    bounded_list("banned_apps", apps.len(), MAX_BANNED_APPS)?;
    for (i, app) in apps.iter().enumerate() {
        let field = |f: &str| format!("banned_apps[{i}].{f}");
        let given = [&app.name, &app.path, &app.sha256]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if given != 1 {
            return Err(err(
                format!("banned_apps[{i}]"),
                "give exactly one of name, path, sha256",
            ));
        }
        if let Some(name) = &app.name {
            text(&field("name"), name)?;
            if name.contains('/') || name.contains('\\') {
                return Err(err(
                    field("name"),
                    "is a file name; use path for a full path",
                ));
            }
        }
        if let Some(path) = &app.path {
            text(&field("path"), path)?;
            mamori_pathglob::check(path)
                .map_err(|e| err(field("path"), format!("{path:?} is not a valid glob: {e}")))?;
        }
        if let Some(h) = &app.sha256
            && (h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(err(field("sha256"), "must be 64 hexadecimal digits"));
        }
        if let Some(label) = &app.label {
            text(&field("label"), label)?;
        }
    }
    Ok(())
}

fn hex4(field: &str, s: &str) -> Result<(), FieldError> {
    if s.len() != 4 || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(err(field, format!("{s:?} is not 4 hexadecimal digits")));
    }
    Ok(())
}

fn validate_device_control(dc: &DeviceControl) -> Result<(), FieldError> {
    bounded_list(
        "device_control.exceptions",
        dc.exceptions.len(),
        MAX_EXCEPTIONS,
    )?;
    for (i, e) in dc.exceptions.iter().enumerate() {
        let field = |f: &str| format!("device_control.exceptions[{i}].{f}");
        hex4(&field("vendor_id"), &e.vendor_id)?;
        hex4(&field("product_id"), &e.product_id)?;
        if let Some(serial) = &e.serial {
            text(&field("serial"), serial)?;
            if serial.len() > 128 {
                return Err(err(field("serial"), "is longer than 128 bytes"));
            }
        }
        if let Some(note) = &e.note {
            text(&field("note"), note)?;
        }
    }
    Ok(())
}

fn validate_business_hours(bh: &BusinessHours) -> Result<(), FieldError> {
    bh.time_zone.parse::<chrono_tz::Tz>().map_err(|_| {
        err(
            "business_hours.time_zone",
            format!("{:?} is not an IANA time zone", bh.time_zone),
        )
    })?;
    bounded_list("business_hours.holidays", bh.holidays.len(), MAX_HOLIDAYS)?;
    // Minutes of the week each shift covers; a shift past midnight spills
    // into the next day (Sunday's into Monday's).
    const WEEK: u32 = 7 * 1440;
    let mut covered: Vec<(u32, u32, String)> = Vec::new();
    for (day, shifts) in &bh.shifts {
        let day_name = serde_json::to_value(day).expect("serialisable");
        let day_name = day_name.as_str().unwrap_or_default().to_owned();
        bounded_list(
            &format!("business_hours.shifts.{day_name}"),
            shifts.len(),
            MAX_SHIFTS_PER_DAY,
        )?;
        for (i, s) in shifts.iter().enumerate() {
            let field = format!("business_hours.shifts.{day_name}[{i}]");
            if s.start == s.end {
                return Err(err(field, "start and end are the same time"));
            }
            let start = day.index() * 1440 + minutes(s.start);
            let mut len = minutes(s.end) as i64 - minutes(s.start) as i64;
            if len < 0 {
                len += 1440;
            }
            let end = start + len as u32;
            for (a, b, other) in &covered {
                // Compare on the week circle.
                let overlaps = |(s1, e1): (u32, u32), (s2, e2): (u32, u32)| s1 < e2 && s2 < e1;
                let x = (start, end);
                let y = (*a, *b);
                if overlaps(x, y)
                    || overlaps((x.0 + WEEK, x.1 + WEEK), y)
                    || overlaps(x, (y.0 + WEEK, y.1 + WEEK))
                {
                    return Err(err(field, format!("overlaps {other}")));
                }
            }
            covered.push((start, end, field));
        }
    }
    Ok(())
}

fn minutes(t: NaiveTime) -> u32 {
    use chrono::Timelike;
    t.hour() * 60 + t.minute()
}

fn host_pattern(field: &str, h: &str) -> Result<(), FieldError> {
    text(field, h)?;
    let bare = h.strip_prefix("*.").unwrap_or(h);
    let ok = bare.len() <= 253
        && !bare.is_empty()
        && bare.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if !ok {
        return Err(err(
            field,
            format!("{h:?} is not a host name or *.domain pattern"),
        ));
    }
    Ok(())
}

fn validate_routes(routes: &[Route]) -> Result<(), FieldError> {
    bounded_list("notifications.routes", routes.len(), MAX_ROUTES)?;
    for (i, r) in routes.iter().enumerate() {
        let field = |f: &str| format!("notifications.routes[{i}].{f}");
        if r.categories.is_empty() {
            return Err(err(
                field("categories"),
                "name at least one category or \"*\"",
            ));
        }
        for (j, c) in r.categories.iter().enumerate() {
            if c != "*" && !CATEGORIES.contains(&c.as_str()) {
                return Err(err(
                    format!("notifications.routes[{i}].categories[{j}]"),
                    format!(
                        "unknown alarm category {c:?} (known: {})",
                        CATEGORIES.join(", ")
                    ),
                ));
            }
        }
        bounded_list(&field("email"), r.email.len(), MAX_RECIPIENTS)?;
        bounded_list(&field("webhooks"), r.webhooks.len(), MAX_RECIPIENTS)?;
        for (j, e) in r.email.iter().enumerate() {
            let ok = e.len() <= 254
                && e.split_once('@').is_some_and(|(l, d)| {
                    !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
                })
                && !e
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>');
            if !ok {
                return Err(err(
                    format!("notifications.routes[{i}].email[{j}]"),
                    format!("{e:?} is not an e-mail address"),
                ));
            }
        }
        if r.email.is_empty() && r.webhooks.is_empty() {
            return Err(err(
                format!("notifications.routes[{i}]"),
                "name at least one e-mail address or webhook",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(v: serde_json::Value) -> FieldError {
        PolicyDocument::parse(v).expect_err("should be refused")
    }

    #[test]
    fn a_full_document_parses_and_round_trips() {
        let v = json!({
            "banned_apps": [{"name": "winny", "action": "kill"},
                            {"path": "/opt/p2p/**", "action": "log", "label": "P2P"},
                            {"sha256": "ab".repeat(32), "action": "block"}],
            "device_control": {"classes": {"usb_storage": "deny", "cd_dvd": "read_only"},
                               "exceptions": [{"vendor_id": "0781", "product_id": "5581", "serial": "S1",
                                               "until": "2026-12-01T00:00:00Z"}]},
            "business_hours": {"time_zone": "Asia/Tokyo",
                               "shifts": {"mon": [{"start": "09:00", "end": "18:00"}],
                                          "sun": [{"start": "22:00", "end": "06:00"}]},
                               "holidays": ["2027-01-01"]},
            "confidential_folders": ["/srv/secret/**"],
            "mass_print": {"pages": 100, "window_minutes": 60},
            "web": {"block": ["*.example.net"], "alarm": ["example.org"]},
            "notifications": {"routes": [{"categories": ["*"], "email": ["a@example.com"]}]}
        });
        let doc = PolicyDocument::parse(v.clone()).unwrap();
        let back = serde_json::to_value(&doc).unwrap();
        assert_eq!(PolicyDocument::parse(back).unwrap(), doc);
    }

    #[test]
    fn bad_input_names_the_field() {
        let e = refused(json!({"device_control": {"classes": {"usb_stick": "deny"}}}));
        assert!(e.message.contains("usb_stick"), "{e}");
        let e = refused(json!({"banned_apps": [{"path": "/opt/[x", "action": "kill"}]}));
        assert_eq!(e.field, "banned_apps[0].path");
        let e = refused(json!({"banned_apps": [{"name": "a", "path": "/b", "action": "kill"}]}));
        assert_eq!(e.field, "banned_apps[0]");
        let e = refused(
            json!({"business_hours": {"time_zone": "Asia/Tokyo", "shifts": {
            "mon": [{"start": "09:00", "end": "13:00"}, {"start": "12:00", "end": "18:00"}]}}}),
        );
        assert_eq!(e.field, "business_hours.shifts.mon[1]");
        assert!(
            e.message.contains("overlaps business_hours.shifts.mon[0]"),
            "{e}"
        );
        // A night shift on Sunday runs into Monday's early shift.
        let e = refused(json!({"business_hours": {"time_zone": "UTC", "shifts": {
            "mon": [{"start": "05:00", "end": "08:00"}],
            "sun": [{"start": "22:00", "end": "06:00"}]}}}));
        assert_eq!(e.field, "business_hours.shifts.sun[0]");
        let e = refused(json!({"business_hours": {"time_zone": "Mars/Olympus"}}));
        assert_eq!(e.field, "business_hours.time_zone");
        let apps: Vec<_> = (0..=MAX_BANNED_APPS)
            .map(|i| json!({"name": format!("a{i}"), "action": "kill"}))
            .collect();
        let e = refused(json!({ "banned_apps": apps }));
        assert_eq!(e.field, "banned_apps");
        let e = refused(
            json!({"notifications": {"routes": [{"categories": ["fire"], "email": ["a@b.c"]}]}}),
        );
        assert_eq!(e.field, "notifications.routes[0].categories[0]");
        let e = refused(json!({"surprise": 1}));
        assert!(e.message.contains("surprise"), "{e}");
        let e = refused(json!({"web": {"block": ["exa mple.com"]}}));
        assert_eq!(e.field, "web.block[0]");
    }

    /// The review's hostile policy: 200 folders of `*` + 450 × `a` + `b`
    /// (90,400 bytes of globs) was accepted, and every file event cost the
    /// shared alerting consumer seconds.
    #[test]
    fn the_glob_text_of_a_document_is_bounded() {
        let hostile = format!("*{}b", "a".repeat(450));
        let e = refused(json!({ "confidential_folders": vec![hostile.clone(); 200] }));
        assert_eq!(e.field, "confidential_folders");
        assert!(e.message.contains("90400 bytes"), "{e}");
        // Both sections count: folders within the bound and banned paths
        // that take the total over it.
        let n = mamori_pathglob::MAX_TOTAL_BYTES / 2 / hostile.len();
        let apps: Vec<_> = (0..n + 2)
            .map(|_| json!({"path": hostile, "action": "log"}))
            .collect();
        let e = refused(
            json!({ "confidential_folders": vec![hostile.clone(); n], "banned_apps": apps }),
        );
        assert_eq!(e.field, "banned_apps");
        // What an administrator writes fits many times over.
        let folders: Vec<String> = (0..MAX_FOLDERS)
            .map(|i| format!("/srv/share/dept{i}/**"))
            .collect();
        PolicyDocument::parse(json!({ "confidential_folders": folders })).unwrap();
    }
}
