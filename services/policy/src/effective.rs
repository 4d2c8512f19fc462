//! The effective policy of a device: its tenant's, group chain's and own
//! documents merged section by section, the most specific winning, with
//! where each section came from; and the part the agent enforces, compiled
//! to the wire message.

use crate::document::{Access, AppAction, DeviceClass, PolicyDocument};
use mamori_pathglob::{Case, PathGlobs};
use mamori_proto::agent::v1::{
    self as wire, banned_app::Action as WireAction, device_class_rule::Access as WireAccess,
};
use serde::Serialize;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Where a policy is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "scope", content = "target_id", rename_all = "snake_case")]
pub enum Scope {
    Tenant,
    Group(Uuid),
    Device(Uuid),
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Tenant => "tenant",
            Scope::Group(_) => "group",
            Scope::Device(_) => "device",
        }
    }

    pub fn target(self) -> Option<Uuid> {
        match self {
            Scope::Tenant => None,
            Scope::Group(id) | Scope::Device(id) => Some(id),
        }
    }

    pub fn from_parts(scope: &str, target: Option<Uuid>) -> Option<Scope> {
        match (scope, target) {
            ("tenant", None) => Some(Scope::Tenant),
            ("group", Some(id)) => Some(Scope::Group(id)),
            ("device", Some(id)) => Some(Scope::Device(id)),
            _ => None,
        }
    }
}

/// One stored policy that applies to a device.
#[derive(Debug, Clone)]
pub struct Layer {
    pub scope: Scope,
    pub policy_id: Uuid,
    pub version: i32,
    pub document: PolicyDocument,
}

/// Which policy a section of the effective policy came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    #[serde(flatten)]
    pub scope: Scope,
    pub policy_id: Uuid,
    pub version: i32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Effective {
    /// The tenant's policy revision this was computed at.
    pub revision: i64,
    pub document: PolicyDocument,
    /// Section name (`banned_apps`) → the policy that set it.
    pub origins: BTreeMap<&'static str, Origin>,
    /// The document's globs, compiled once for the rules that match every
    /// event against them.
    #[serde(skip)]
    pub globs: Globs,
    /// SHA-256 of the tenant's agent uninstall code (not a policy section:
    /// issued through its own endpoint, never shown).
    #[serde(skip)]
    pub uninstall_code_hash: Option<Vec<u8>>,
}

/// Compiled globs of a document. Validation made sure they compile and fit
/// `mamori_pathglob::MAX_TOTAL_BYTES`; a document stored before a rule
/// tightened may not, and then each section keeps the patterns that
/// compile, up to the bound (the rest are logged and left out), rather than
/// failing every event or costing without bound.
#[derive(Debug, Clone, Default)]
pub struct Globs {
    /// The `confidential_folders` compiled, as written, in order.
    pub folder_texts: Vec<String>,
    /// The same, compiled: a match's index is into `folder_texts`.
    pub folders: PathGlobs,
    /// The `banned_apps` entries whose path glob was compiled, by index.
    pub banned_path_rules: Vec<usize>,
    /// Their globs, compiled: a match's index is into `banned_path_rules`.
    pub banned_paths: PathGlobs,
}

/// The patterns of `(tag, pattern)` that compile, within the size bound,
/// with their tags.
fn usable<T>(
    section: &str,
    patterns: impl IntoIterator<Item = (T, String)>,
) -> (Vec<T>, PathGlobs) {
    let mut total = 0;
    let mut kept = Vec::new();
    let mut texts = Vec::new();
    for (tag, pattern) in patterns {
        if let Err(e) = mamori_pathglob::check(&pattern) {
            tracing::warn!(section, pattern, error = %e, "a stored policy glob does not compile; it is left out");
            continue;
        }
        total += pattern.len();
        if total > mamori_pathglob::MAX_TOTAL_BYTES {
            tracing::warn!(
                section,
                "a stored policy holds more glob text than allowed; the rest is left out"
            );
            break;
        }
        kept.push(tag);
        texts.push(pattern);
    }
    let globs = PathGlobs::new(texts.iter().map(String::as_str), Case::Sensitive)
        .expect("each pattern was checked");
    (kept, globs)
}

impl Globs {
    pub fn of(document: &PolicyDocument) -> Self {
        let folders = document.confidential_folders.iter().flatten();
        let (folder_texts, folders) = usable(
            "confidential_folders",
            folders.map(|f| (f.clone(), f.clone())),
        );
        let paths = document
            .banned_apps
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, b)| Some((i, b.path.clone()?)));
        let (banned_path_rules, banned_paths) = usable("banned_apps", paths);
        Globs {
            folder_texts,
            folders,
            banned_path_rules,
            banned_paths,
        }
    }

    /// The confidential-folder glob (as written) that `path` is in.
    pub fn folder_of(&self, path: &str) -> Option<&str> {
        if path.is_empty() {
            return None;
        }
        self.folders
            .first_match(path)
            .map(|i| self.folder_texts[i].as_str())
    }

    /// The indices of the `banned_apps` entries whose path glob matches
    /// `exe_path`, ascending.
    pub fn banned_by_path(&self, exe_path: &str) -> Vec<usize> {
        if exe_path.is_empty() {
            return Vec::new();
        }
        self.banned_paths
            .matches(exe_path)
            .into_iter()
            .map(|k| self.banned_path_rules[k])
            .collect()
    }
}

/// Merges `layers`, least specific first.
pub fn merge(revision: i64, layers: &[Layer]) -> Effective {
    let mut document = PolicyDocument::default();
    let mut origins = BTreeMap::new();
    for layer in layers {
        let origin = Origin {
            scope: layer.scope,
            policy_id: layer.policy_id,
            version: layer.version,
        };
        macro_rules! take {
            ($($field:ident),*) => {$(
                if let Some(v) = &layer.document.$field {
                    document.$field = Some(v.clone());
                    origins.insert(stringify!($field), origin.clone());
                }
            )*};
        }
        take!(
            banned_apps,
            device_control,
            business_hours,
            confidential_folders,
            mass_print,
            web,
            notifications
        );
    }
    Effective {
        revision,
        uninstall_code_hash: None,
        globs: Globs::of(&document),
        document,
        origins,
    }
}

impl Effective {
    /// What the agent enforces, as sent down the `Connect` stream.
    pub fn to_update(&self) -> wire::PolicyUpdate {
        let doc = &self.document;
        let banned_apps = doc
            .banned_apps
            .iter()
            .flatten()
            .map(|a| wire::BannedApp {
                name: a.name.clone().unwrap_or_default(),
                path_glob: a.path.clone().unwrap_or_default(),
                sha256: a
                    .sha256
                    .as_deref()
                    .and_then(|h| hex::decode(h).ok())
                    .unwrap_or_default(),
                action: match a.action {
                    AppAction::Log => WireAction::Log,
                    AppAction::Kill => WireAction::Kill,
                    AppAction::Block => WireAction::Block,
                } as i32,
                label: a
                    .label
                    .clone()
                    .or_else(|| a.name.clone())
                    .or_else(|| a.path.clone())
                    .or_else(|| a.sha256.clone())
                    .unwrap_or_default(),
            })
            .collect();
        let (device_classes, device_exceptions) = match &doc.device_control {
            None => (Vec::new(), Vec::new()),
            Some(dc) => (
                dc.classes
                    .iter()
                    .map(|(class, access)| wire::DeviceClassRule {
                        device_class: wire_class(*class) as i32,
                        access: match access {
                            Access::Allow => WireAccess::Allow,
                            Access::ReadOnly => WireAccess::ReadOnly,
                            Access::Deny => WireAccess::Deny,
                        } as i32,
                    })
                    .collect(),
                dc.exceptions
                    .iter()
                    .map(|e| wire::DeviceException {
                        vendor_id: e.vendor_id.to_ascii_lowercase(),
                        product_id: e.product_id.to_ascii_lowercase(),
                        serial: e.serial.clone().unwrap_or_default(),
                        until_us: e.until.map(|t| t.timestamp_micros()).unwrap_or(0),
                    })
                    .collect(),
            ),
        };
        wire::PolicyUpdate {
            revision: self.revision.max(0) as u64,
            banned_apps,
            device_classes,
            device_exceptions,
            confidential_folders: self.globs.folder_texts.clone(),
            web_block: doc
                .web
                .as_ref()
                .map(|w| w.block.clone())
                .unwrap_or_default(),
            web_full_url: doc.web.as_ref().is_some_and(|w| w.full_url),
            uninstall_code_sha256: self.uninstall_code_hash.clone().unwrap_or_default(),
        }
    }
}

pub fn wire_class(c: DeviceClass) -> wire::DeviceClass {
    match c {
        DeviceClass::UsbStorage => wire::DeviceClass::UsbStorage,
        DeviceClass::CdDvd => wire::DeviceClass::CdDvd,
        DeviceClass::Floppy => wire::DeviceClass::Floppy,
        DeviceClass::Smartphone => wire::DeviceClass::Smartphone,
        DeviceClass::Bluetooth => wire::DeviceClass::Bluetooth,
        DeviceClass::Other => wire::DeviceClass::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn layer(scope: Scope, v: serde_json::Value) -> Layer {
        Layer {
            scope,
            policy_id: Uuid::new_v4(),
            version: 1,
            document: PolicyDocument::parse(v).unwrap(),
        }
    }

    /// A document stored before the bounds (no validation): bad globs are
    /// left out one by one, and the text beyond the bound.
    #[test]
    fn a_stored_document_past_todays_rules_keeps_what_it_can() {
        let hostile = format!("*{}b", "a".repeat(450));
        let mut folders = vec!["/srv/hr/**".to_owned(), "/opt/[bad".to_owned()];
        folders.extend(std::iter::repeat_n(hostile, 200));
        let doc = PolicyDocument {
            confidential_folders: Some(folders),
            ..Default::default()
        };
        let globs = Globs::of(&doc);
        assert_eq!(globs.folder_of("/srv/hr/pay.xlsx"), Some("/srv/hr/**"));
        assert!(!globs.folder_texts.iter().any(|f| f == "/opt/[bad"));
        let kept: usize = globs.folder_texts.iter().map(String::len).sum();
        assert!(kept <= mamori_pathglob::MAX_TOTAL_BYTES, "{kept}");
        assert!(globs.folder_texts.len() > 10, "what fits is kept");
    }

    #[test]
    fn the_most_specific_section_wins_and_names_its_origin() {
        let group = Uuid::new_v4();
        let device = Uuid::new_v4();
        let layers = [
            layer(
                Scope::Tenant,
                json!({"banned_apps": [{"name": "winny", "action": "kill"}],
                       "mass_print": {"pages": 100, "window_minutes": 60}}),
            ),
            layer(
                Scope::Group(group),
                json!({"mass_print": {"pages": 10, "window_minutes": 60}}),
            ),
            layer(
                Scope::Device(device),
                json!({"device_control": {"classes": {"usb_storage": "deny"}},
                       "confidential_folders": ["/srv/hr/**"]}),
            ),
        ];
        let eff = merge(7, &layers);
        assert_eq!(eff.document.mass_print.unwrap().pages, 10);
        assert_eq!(eff.origins["mass_print"].scope, Scope::Group(group));
        assert_eq!(eff.origins["banned_apps"].scope, Scope::Tenant);
        assert_eq!(eff.origins["device_control"].scope, Scope::Device(device));
        assert!(!eff.origins.contains_key("web"));
        let update = eff.to_update();
        assert_eq!(update.revision, 7);
        assert_eq!(update.banned_apps[0].name, "winny");
        assert_eq!(update.banned_apps[0].action(), WireAction::Kill);
        assert_eq!(
            update.device_classes[0].device_class(),
            wire::DeviceClass::UsbStorage
        );
        // The agent hashes and reports reads in the confidential folders.
        assert_eq!(update.confidential_folders, ["/srv/hr/**"]);
    }
}
