//! The shape of Tinkerbell's `HardwareSpec` (api/v1alpha1/tinkerbell in the
//! tinkerbell/tinkerbell repository), as a table: each field's JSON name,
//! Go name, type and whether it is `omitempty`.
//!
//! One table gives the three things kiln needs from a Tinkerbell hardware:
//! the fields it knows (an unknown one is a warning, as Tinkerbell's API
//! drops it), the `.hardware.spec` view (Go's JSON of the struct: zero
//! `omitempty` fields left out, structs never), and the legacy `.Hardware`
//! view (the Go struct itself: every field present by its Go name, zero when
//! unset, `nil` for an unset pointer).

use serde_json::{Map, Value};

#[derive(Clone, Copy)]
pub(crate) enum Ty {
    Str,
    /// `*string`: left out of JSON only when nil; `""` in the Go view,
    /// where Tinkerbell dereferences it.
    PtrStr,
    Bool,
    /// `*bool`: nil when unset.
    PtrBool,
    Int,
    Strs,
    /// A struct held by value: never left out of Go's JSON.
    Struct(&'static [F]),
    /// A pointer to a struct: `nil` when unset.
    Ptr(&'static [F]),
    List(&'static [F]),
    /// `[]*T`: items may be null.
    PtrList(&'static [F]),
    /// `map[string]string`, or `resource.Quantity` values (a string or a
    /// number, kept as its text).
    StrMap,
    /// `map[string]T`.
    StructMap(&'static [F]),
}

#[derive(Clone, Copy)]
pub(crate) struct F {
    pub json: &'static str,
    pub go: &'static str,
    pub ty: Ty,
    pub omitempty: bool,
}

const fn f(json: &'static str, go: &'static str, ty: Ty) -> F {
    F { json, go, ty, omitempty: true }
}

const fn always(json: &'static str, go: &'static str, ty: Ty) -> F {
    F { json, go, ty, omitempty: false }
}

use Ty::*;

const IPXE: &[F] = &[f("url", "URL", Str), f("contents", "Contents", Str), f("binary", "Binary", Str)];
const OSIE: &[F] = &[
    f("baseURL", "BaseURL", Str),
    f("kernel", "Kernel", Str),
    f("initrd", "Initrd", Str),
    f("kernelParams", "KernelParams", Strs),
];
const PXELINUX: &[F] = &[f("config", "Config", Str)];
const RPI: &[F] =
    &[f("configTxt", "ConfigTxt", Str), f("firmwarePath", "FirmwarePath", Str), always("serialNum", "SerialNum", Str)];
const NETBOOT: &[F] = &[
    f("allowPXE", "AllowPXE", PtrBool),
    f("allowWorkflow", "AllowWorkflow", PtrBool),
    f("ipxe", "IPXE", Ptr(IPXE)),
    f("osie", "OSIE", Ptr(OSIE)),
    f("pxelinux", "PXELINUX", Ptr(PXELINUX)),
    f("rpi", "RPI", Ptr(RPI)),
];
const ISOBOOT: &[F] = &[f("sourceISO", "SourceISO", Str)];
const IP: &[F] = &[
    f("address", "Address", Str),
    f("netmask", "Netmask", Str),
    f("gateway", "Gateway", Str),
    f("family", "Family", Int),
];
const ROUTE: &[F] = &[always("destination_descriptor", "DestinationDescriptor", Str), always("router", "Router", Str)];
const DHCP: &[F] = &[
    f("mac", "MAC", Str),
    f("hostname", "Hostname", Str),
    f("domain_name", "DomainName", Str),
    f("lease_time", "LeaseTime", Int),
    f("name_servers", "NameServers", Strs),
    f("time_servers", "TimeServers", Strs),
    f("arch", "Arch", Str),
    f("uefi", "UEFI", Bool),
    f("iface_name", "IfaceName", Str),
    f("ip", "IP", Ptr(IP)),
    f("vlan_id", "VLANID", Str),
    f("classless_static_routes", "ClasslessStaticRoutes", List(ROUTE)),
    f("tftp_server_name", "TFTPServerName", Str),
    f("boot_file_name", "BootFileName", Str),
];
pub(crate) const INTERFACE: &[F] = &[
    f("netboot", "Netboot", Ptr(NETBOOT)),
    f("isoboot", "Isoboot", Ptr(ISOBOOT)),
    f("dhcp", "DHCP", Ptr(DHCP)),
    f("disableDhcp", "DisableDHCP", Bool),
];

const MANUFACTURER: &[F] = &[f("id", "ID", Str), f("slug", "Slug", Str)];
const OS: &[F] = &[
    f("slug", "Slug", Str),
    f("distro", "Distro", Str),
    f("version", "Version", Str),
    f("image_tag", "ImageTag", Str),
    f("os_slug", "OsSlug", Str),
];
const INSTANCE_IP: &[F] = &[
    f("address", "Address", Str),
    f("netmask", "Netmask", Str),
    f("gateway", "Gateway", Str),
    f("family", "Family", Int),
    f("public", "Public", Bool),
    f("management", "Management", Bool),
];
const PARTITION: &[F] = &[
    f("label", "Label", Str),
    f("number", "Number", Int),
    f("size", "Size", Int),
    f("start", "Start", Int),
    f("type_guid", "TypeGUID", Str),
];
const STORAGE_DISK: &[F] = &[
    f("device", "Device", Str),
    f("wipe_table", "WipeTable", Bool),
    f("partitions", "Partitions", PtrList(PARTITION)),
];
const RAID: &[F] =
    &[f("name", "Name", Str), f("level", "Level", Str), f("devices", "Devices", Strs), f("spare", "Spare", Int)];
const FILE: &[F] = &[
    f("path", "Path", Str),
    f("contents", "Contents", Str),
    f("mode", "Mode", Int),
    f("uid", "UID", Int),
    f("gid", "GID", Int),
];
const CREATE: &[F] = &[f("force", "Force", Bool), f("options", "Options", Strs)];
const MOUNT: &[F] = &[
    f("device", "Device", Str),
    f("format", "Format", Str),
    f("files", "Files", PtrList(FILE)),
    f("create", "Create", Ptr(CREATE)),
    f("point", "Point", Str),
];
const FILESYSTEM: &[F] = &[f("mount", "Mount", Ptr(MOUNT))];
const STORAGE: &[F] = &[
    f("disks", "Disks", PtrList(STORAGE_DISK)),
    f("raid", "Raid", PtrList(RAID)),
    f("filesystems", "Filesystems", PtrList(FILESYSTEM)),
];
const INSTANCE: &[F] = &[
    f("id", "ID", Str),
    f("state", "State", Str),
    f("hostname", "Hostname", Str),
    f("allow_pxe", "AllowPxe", Bool),
    f("rescue", "Rescue", Bool),
    f("operating_system", "OperatingSystem", Ptr(OS)),
    f("always_pxe", "AlwaysPxe", Bool),
    f("ipxe_script_url", "IpxeScriptURL", Str),
    f("ips", "Ips", PtrList(INSTANCE_IP)),
    f("userdata", "Userdata", Str),
    f("crypted_root_password", "CryptedRootPassword", Str),
    f("tags", "Tags", Strs),
    f("storage", "Storage", Ptr(STORAGE)),
    f("ssh_keys", "SSHKeys", Strs),
    f("network_ready", "NetworkReady", Bool),
];
const CUSTOM: &[F] = &[
    f("preinstalled_operating_system_version", "PreinstalledOperatingSystemVersion", Ptr(OS)),
    f("private_subnets", "PrivateSubnets", Strs),
];
const FACILITY: &[F] = &[
    f("plan_slug", "PlanSlug", Str),
    f("plan_version_slug", "PlanVersionSlug", Str),
    f("facility_code", "FacilityCode", Str),
];
pub(crate) const METADATA: &[F] = &[
    f("state", "State", Str),
    f("bonding_mode", "BondingMode", Int),
    f("manufacturer", "Manufacturer", Ptr(MANUFACTURER)),
    f("instance", "Instance", Ptr(INSTANCE)),
    f("custom", "Custom", Ptr(CUSTOM)),
    f("facility", "Facility", Ptr(FACILITY)),
];
const BMC_REF: &[F] =
    &[always("apiGroup", "APIGroup", PtrStr), always("kind", "Kind", Str), always("name", "Name", Str)];
const REFERENCE: &[F] = &[
    f("namespace", "Namespace", Str),
    f("name", "Name", Str),
    f("group", "Group", Str),
    f("version", "Version", Str),
    f("resource", "Resource", Str),
];
const DISK: &[F] = &[f("device", "Device", Str)];
const AUTO: &[F] = &[f("enrollmentEnabled", "EnrollmentEnabled", Bool)];
pub(crate) const SPEC: &[F] = &[
    f("agentID", "AgentID", Str),
    f("auto", "Auto", Struct(AUTO)),
    f("bmcRef", "BMCRef", Ptr(BMC_REF)),
    f("interfaces", "Interfaces", List(INTERFACE)),
    f("references", "References", StructMap(REFERENCE)),
    f("metadata", "Metadata", Ptr(METADATA)),
    f("tinkVersion", "TinkVersion", Int),
    f("disks", "Disks", List(DISK)),
    f("resources", "Resources", StrMap),
    f("userData", "UserData", PtrStr),
    f("vendorData", "VendorData", PtrStr),
];

/// An unknown field, or a value of the wrong type, at a field path.
pub(crate) struct Problem {
    pub path: String,
    pub message: String,
    /// Unknown fields are dropped (as Tinkerbell's API does); a wrong type
    /// is an error.
    pub unknown: bool,
}

/// The two views of one value.
pub(crate) struct Views {
    /// Go's JSON of it; `None` when `omitempty` leaves it out.
    pub json: Option<Value>,
    /// The Go value: every field by its Go name.
    pub go: Value,
}

/// Reads `v` (JSON from the document's YAML; `None` when absent) as a
/// struct with `fields`, reporting problems at `path`.
pub(crate) fn read_struct(fields: &'static [F], v: Option<&Value>, path: &str, problems: &mut Vec<Problem>) -> Views {
    read(Struct(fields), v, path, problems, false)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

fn wrong(problems: &mut Vec<Problem>, path: &str, want: &str, got: &Value) {
    let got = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    };
    problems.push(Problem { path: path.to_string(), message: format!("must be {want}, not {got}"), unknown: false });
}

fn read(ty: Ty, v: Option<&Value>, path: &str, problems: &mut Vec<Problem>, omitempty: bool) -> Views {
    // Kubernetes reads an explicit null as an absent field.
    let v = v.filter(|v| !v.is_null());
    let keep = |json: Value, empty: bool| if omitempty && empty { None } else { Some(json) };
    match ty {
        Str | PtrStr => {
            let s = match v {
                None => None,
                Some(Value::String(s)) => Some(s.clone()),
                // What a YAML writer meant by `vlan_id: 100`.
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(Value::Bool(b)) => Some(b.to_string()),
                Some(other) => {
                    wrong(problems, path, "a string", other);
                    None
                }
            };
            match (ty, s) {
                // A *string is left out only when nil.
                // A *string without omitempty is null in JSON when nil.
                (PtrStr, None) => Views { json: (!omitempty).then_some(Value::Null), go: Value::String(String::new()) },
                (PtrStr, Some(s)) => Views { json: Some(Value::String(s.clone())), go: Value::String(s) },
                (_, s) => {
                    let s = s.unwrap_or_default();
                    Views { json: keep(Value::String(s.clone()), s.is_empty()), go: Value::String(s) }
                }
            }
        }
        Bool | PtrBool => {
            let b = match v {
                None => None,
                Some(Value::Bool(b)) => Some(*b),
                Some(other) => {
                    wrong(problems, path, "true or false", other);
                    None
                }
            };
            match (ty, b) {
                (PtrBool, None) => Views { json: None, go: Value::Null },
                (PtrBool, Some(b)) => Views { json: Some(Value::Bool(b)), go: Value::Bool(b) },
                (_, b) => {
                    let b = b.unwrap_or(false);
                    Views { json: keep(Value::Bool(b), !b), go: Value::Bool(b) }
                }
            }
        }
        Int => {
            let n = match v {
                None => 0,
                Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64().unwrap_or(0),
                Some(other) => {
                    wrong(problems, path, "a whole number", other);
                    0
                }
            };
            Views { json: keep(Value::from(n), n == 0), go: Value::from(n) }
        }
        Strs => {
            let list: Vec<Value> = match v {
                None => Vec::new(),
                Some(Value::Array(items)) => items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| read(Str, Some(item), &format!("{path}[{i}]"), problems, false).go)
                    .collect(),
                Some(other) => {
                    wrong(problems, path, "a list of strings", other);
                    Vec::new()
                }
            };
            let empty = list.is_empty();
            Views { json: keep(Value::Array(list.clone()), empty), go: Value::Array(list) }
        }
        Struct(fields) | Ptr(fields) => {
            let map = match v {
                None => None,
                Some(Value::Object(m)) => Some(m),
                Some(other) => {
                    wrong(problems, path, "a mapping", other);
                    None
                }
            };
            if map.is_none() && matches!(ty, Ptr(_)) {
                return Views { json: None, go: Value::Null };
            }
            let empty = Map::new();
            let map = map.unwrap_or(&empty);
            for key in map.keys() {
                if !fields.iter().any(|f| f.json == key) {
                    problems.push(Problem {
                        path: join(path, key),
                        message: "unknown field, ignored".into(),
                        unknown: true,
                    });
                }
            }
            let (mut json, mut go) = (Map::new(), Map::new());
            for field in fields {
                let views = read(field.ty, map.get(field.json), &join(path, field.json), problems, field.omitempty);
                if let Some(j) = views.json {
                    json.insert(field.json.to_string(), j);
                }
                go.insert(field.go.to_string(), views.go);
            }
            // Go's omitempty never leaves out a struct, even an empty one.
            Views { json: Some(Value::Object(json)), go: Value::Object(go) }
        }
        List(fields) | PtrList(fields) => {
            let items = match v {
                None => Vec::new(),
                Some(Value::Array(items)) => items.iter().collect(),
                Some(other) => {
                    wrong(problems, path, "a list", other);
                    Vec::new()
                }
            };
            let (mut json, mut go) = (Vec::new(), Vec::new());
            for (i, item) in items.into_iter().enumerate() {
                let item_ty = if matches!(ty, PtrList(_)) { Ptr(fields) } else { Struct(fields) };
                let views = read(item_ty, Some(item), &format!("{path}[{i}]"), problems, false);
                json.push(views.json.unwrap_or(Value::Null));
                go.push(views.go);
            }
            let empty = go.is_empty();
            Views { json: keep(Value::Array(json), empty), go: Value::Array(go) }
        }
        StrMap => {
            let mut out = Map::new();
            match v {
                None => {}
                Some(Value::Object(m)) => {
                    for (k, item) in m {
                        out.insert(k.clone(), read(Str, Some(item), &join(path, k), problems, false).go);
                    }
                }
                Some(other) => wrong(problems, path, "a mapping", other),
            }
            let empty = out.is_empty();
            Views { json: keep(Value::Object(out.clone()), empty), go: Value::Object(out) }
        }
        StructMap(fields) => {
            let (mut json, mut go) = (Map::new(), Map::new());
            match v {
                None => {}
                Some(Value::Object(m)) => {
                    for (k, item) in m {
                        let views = read(Struct(fields), Some(item), &join(path, k), problems, false);
                        json.insert(k.clone(), views.json.unwrap_or(Value::Null));
                        go.insert(k.clone(), views.go);
                    }
                }
                Some(other) => wrong(problems, path, "a mapping", other),
            }
            let empty = go.is_empty();
            Views { json: keep(Value::Object(json), empty), go: Value::Object(go) }
        }
    }
}
