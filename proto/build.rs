//! Compiles the .proto files with protox (pure Rust, no system protoc),
//! generates prost messages and tonic services from the descriptor set, and
//! generates the event schema tables (`schema_tables.rs`, included by
//! `src/schema.rs`) from the options in `events.proto`
//! (`options.proto`): bounds, subjects and kinds are written down once.

use std::fmt::Write as _;
use std::path::PathBuf;

use protox::prost_reflect::{
    DescriptorPool, DynamicMessage, ExtensionDescriptor, FieldDescriptor, Kind, MessageDescriptor,
};

type BuildResult<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> BuildResult<()> {
    let files = [
        "mamori/agent/v1/options.proto",
        "mamori/agent/v1/agent.proto",
        "mamori/agent/v1/events.proto",
        "mamori/policy/v1/policy.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let mut compiler = protox::Compiler::new(["."])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(files)?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("schema_tables.rs"),
        schema_tables(&compiler.descriptor_pool())?,
    )?;
    // The descriptor set feeds gRPC reflection and the gateway's decoding
    // of stored events.
    std::fs::write(
        out.join("mamori_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    // The RPC is named `Connect`; the generated `connect` constructor of the
    // client would clash with it, so clients build a Channel themselves.
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

/// The custom options of options.proto.
struct Options {
    max_bytes: ExtensionDescriptor,
    max_items: ExtensionDescriptor,
    exact_bytes: ExtensionDescriptor,
    max_value: ExtensionDescriptor,
    subject: ExtensionDescriptor,
    kind: ExtensionDescriptor,
    body_kind: ExtensionDescriptor,
}

impl Options {
    fn new(pool: &DescriptorPool) -> BuildResult<Self> {
        let ext = |name: &str| {
            pool.get_extension_by_name(&format!("mamori.agent.v1.{name}"))
                .ok_or_else(|| format!("options.proto defines no option {name}"))
        };
        Ok(Self {
            max_bytes: ext("max_bytes")?,
            max_items: ext("max_items")?,
            exact_bytes: ext("exact_bytes")?,
            max_value: ext("max_value")?,
            subject: ext("subject")?,
            kind: ext("kind")?,
            body_kind: ext("body_kind")?,
        })
    }
}

fn u32_option(options: &DynamicMessage, ext: &ExtensionDescriptor) -> Option<u32> {
    options
        .has_extension(ext)
        .then(|| options.get_extension(ext).as_u32())
        .flatten()
}

fn str_option(options: &DynamicMessage, ext: &ExtensionDescriptor) -> Option<String> {
    options
        .has_extension(ext)
        .then(|| options.get_extension(ext).as_str().map(str::to_owned))
        .flatten()
}

/// `file_create` → `FileCreate`.
fn camel(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The `Check` (src/schema.rs) of one field, as Rust source.
fn check(field: &FieldDescriptor, o: &Options) -> BuildResult<String> {
    let opts = field.options();
    let name = field.full_name();
    let max_bytes = u32_option(&opts, &o.max_bytes);
    Ok(match (field.kind(), field.is_list()) {
        (Kind::String, false) => {
            let max = max_bytes.ok_or_else(|| format!("{name}: a string needs (max_bytes)"))?;
            format!("Check::Text {{ max_bytes: {max} }}")
        }
        (Kind::String, true) => {
            let max = max_bytes.ok_or_else(|| format!("{name}: a string needs (max_bytes)"))?;
            let items = u32_option(&opts, &o.max_items)
                .ok_or_else(|| format!("{name}: a repeated field needs (max_items)"))?;
            format!("Check::Texts {{ max_bytes: {max}, max_items: {items} }}")
        }
        (Kind::Bytes, false) => {
            let exact = u32_option(&opts, &o.exact_bytes)
                .ok_or_else(|| format!("{name}: bytes need (exact_bytes)"))?;
            format!("Check::Digest {{ bytes: {exact} }}")
        }
        (Kind::Uint32, false) => {
            let max = u32_option(&opts, &o.max_value).unwrap_or(u32::MAX);
            format!("Check::U32 {{ max: {max} }}")
        }
        (Kind::Int32 | Kind::Int64 | Kind::Uint64 | Kind::Bool | Kind::Enum(_), false) => {
            "Check::Varint".to_owned()
        }
        (kind, list) => {
            return Err(format!(
                "{name}: {kind:?} (repeated: {list}) is not a kind of field an event body may have"
            )
            .into());
        }
    })
}

/// The kinds of a body: its fixed kind, or one per value of its `action`.
fn kinds(body: &MessageDescriptor, o: &Options) -> BuildResult<Vec<(Option<i32>, String)>> {
    if let Some(kind) = str_option(&body.options(), &o.body_kind) {
        return Ok(vec![(None, kind)]);
    }
    let action = body
        .get_field(1)
        .filter(|f| f.name() == "action")
        .ok_or_else(|| {
            format!(
                "{}: a body needs (body_kind) or an action in field 1",
                body.full_name()
            )
        })?;
    let Kind::Enum(actions) = action.kind() else {
        return Err(format!("{}: the action must be an enum", body.full_name()).into());
    };
    let mut out = Vec::new();
    for value in actions.values().filter(|v| v.number() != 0) {
        let kind = str_option(&value.options(), &o.kind)
            .ok_or_else(|| format!("{}: an action needs (kind)", value.full_name()))?;
        out.push((Some(value.number()), kind));
    }
    Ok(out)
}

fn schema_tables(pool: &DescriptorPool) -> BuildResult<String> {
    let o = Options::new(pool)?;
    let event = pool
        .get_message_by_name("mamori.agent.v1.Event")
        .ok_or("events.proto has no Event")?;
    let oneof = event
        .oneofs()
        .find(|o| o.name() == "kind")
        .ok_or("Event has no oneof kind")?;
    let mut s = String::from("// Generated by proto/build.rs from events.proto. Do not edit.\n\n");
    let mut bodies = String::new();
    let mut kind_arms = String::new();
    let mut fit_arms = String::new();
    let mut parts_arms = String::new();
    let mut body_numbers = String::new();
    let mut max = String::new();
    let mut numbers = String::new();
    let mut min_max = (u32::MAX, 0);
    for f in event.fields() {
        let upper = f.name().to_uppercase();
        writeln!(numbers, "    pub const {upper}: u32 = {};", f.number())?;
        if let Some(max_bytes) = u32_option(&f.options(), &o.max_bytes) {
            writeln!(max, "    pub const EVENT_{upper}: usize = {max_bytes};")?;
        }
    }
    for f in oneof.fields() {
        let Kind::Message(body) = f.kind() else {
            return Err(format!("Event.{} must be a message", f.name()).into());
        };
        let number = f.number();
        min_max = (min_max.0.min(number), min_max.1.max(number));
        let mut subject = None;
        let mut specs = String::new();
        let mut fits = String::new();
        writeln!(body_numbers, "    pub mod {} {{", f.name())?;
        for field in body.fields() {
            writeln!(
                body_numbers,
                "        pub const {}: u32 = {};",
                field.name().to_uppercase(),
                field.number()
            )?;
            let opts = field.options();
            if opts.has_extension(&o.subject) {
                if subject.is_some() {
                    return Err(format!("{}: two (subject) fields", body.full_name()).into());
                }
                if field.kind() != Kind::String || field.is_list() {
                    return Err(
                        format!("{}: the subject must be a string", field.full_name()).into(),
                    );
                }
                subject = Some(field.number());
            }
            let check = check(&field, &o)?;
            writeln!(
                specs,
                "            FieldSpec {{ number: {}, name: {:?}, check: {check} }},",
                field.number(),
                field.name()
            )?;
            let rust_field = match field.name() {
                "type" | "ref" | "match" | "mod" | "use" => format!("r#{}", field.name()),
                n => n.to_owned(),
            };
            let name_upper = format!(
                "{}_{}",
                camel_to_upper(body.name().trim_end_matches("Event")),
                field.name().to_uppercase()
            );
            if let Some(m) = u32_option(&opts, &o.max_bytes) {
                writeln!(max, "    pub const {name_upper}: usize = {m};")?;
            }
            if let Some(items) = u32_option(&opts, &o.max_items) {
                writeln!(max, "    pub const {name_upper}_ITEMS: usize = {items};")?;
            }
            match field.kind() {
                Kind::String if field.is_list() => writeln!(
                    fits,
                    "            fit_texts(&mut b.{rust_field}, max::{name_upper}, max::{name_upper}_ITEMS);"
                )?,
                Kind::String => writeln!(
                    fits,
                    "            fit_text(&mut b.{rust_field}, max::{name_upper});"
                )?,
                Kind::Bytes => {
                    let exact = u32_option(&opts, &o.exact_bytes).unwrap_or(0);
                    writeln!(
                        fits,
                        "            fit_digest(&mut b.{rust_field}, {exact});"
                    )?;
                }
                Kind::Uint32 => {
                    if let Some(m) = u32_option(&opts, &o.max_value) {
                        writeln!(
                            fits,
                            "            b.{rust_field} = b.{rust_field}.min({m});"
                        )?;
                    }
                }
                _ => {}
            }
        }
        writeln!(body_numbers, "    }}")?;
        let subject =
            subject.ok_or_else(|| format!("{}: no field is the (subject)", body.full_name()))?;
        let subject_name = body
            .get_field(subject)
            .map(|f| f.name().to_owned())
            .unwrap_or_default();
        let body_kinds = kinds(&body, &o)?;
        let action = if body_kinds.iter().any(|(a, _)| a.is_some()) {
            "b.action"
        } else {
            "0"
        };
        writeln!(
            parts_arms,
            "        Kind::{}(b) => ({number}, {action}, &b.{subject_name}),",
            camel(f.name())
        )?;
        let variant = camel(f.name());
        writeln!(
            bodies,
            "    BodySpec {{\n        field: {number},\n        name: {:?},\n        subject: {subject},\n        fields: &[\n{specs}        ],\n    }},",
            f.name()
        )?;
        writeln!(
            fit_arms,
            "        Kind::{variant}(b) => {{\n{fits}        }}"
        )?;
        for (action, kind) in body_kinds {
            let action = action.map_or_else(|| "_".to_owned(), |a| a.to_string());
            writeln!(
                kind_arms,
                "        ({number}, {action}) => EventKind::{},",
                camel(&kind)
            )?;
        }
    }
    if min_max.1 - min_max.0 + 1 != oneof.fields().len() as u32 {
        return Err("Event's bodies must have consecutive field numbers".into());
    }
    write!(
        s,
        "/// The field numbers of `Event`: its own fields and its bodies.\npub mod field {{\n{numbers}}}\n\n\
         /// The field numbers of each body's fields.\npub mod body {{\n{body_numbers}}}\n\n\
         /// The field numbers of `Event`'s bodies (`oneof kind`).\n\
         pub const EVENT_BODIES: std::ops::RangeInclusive<u32> = {}..={};\n\n\
         /// Every body, in field order.\npub const BODIES: &[BodySpec] = &[\n{bodies}];\n\n\
         /// The longest text (bytes) and most items each field may have.\npub mod max {{\n{max}}}\n\n\
         /// The kind of an event whose body is the `Event` field `field` with\n\
         /// `action` in its field 1 (0 when it has none).\n\
         pub fn kind(field: u32, action: u64) -> Option<EventKind> {{\n    \
         let action = i32::try_from(action).ok();\n    \
         Some(match (field, action.unwrap_or(-1)) {{\n{kind_arms}        _ => return None,\n    }})\n}}\n\n\
         /// A body's field in `Event`, its action (0 without one) and its subject.\n\
         pub fn parts(kind: &Kind) -> (u32, i32, &str) {{\n    match kind {{\n{parts_arms}    }}\n}}\n\n\
         /// Fits every field of an event body within its bounds.\n\
         pub fn fit(kind: &mut Kind) {{\n    match kind {{\n{fit_arms}    }}\n}}\n",
        min_max.0, min_max.1
    )?;
    Ok(s)
}

/// `EnvironmentChange` → `ENVIRONMENT_CHANGE`.
fn camel_to_upper(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}
