//! The metadata rootio reads: Equinix Metal's custom partitioning and RAID
//! (CPR) storage description, under `metadata.instance.storage`, with the
//! field names and types of the hub's Go structs. Unknown fields are
//! ignored as Go's `encoding/json` ignores them.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Wrapper {
    pub metadata: Metadata,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Metadata {
    pub instance: Instance,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Instance {
    pub hostname: String,
    pub storage: Storage,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Storage {
    #[serde(deserialize_with = "null_is_empty")]
    pub disks: Vec<Disk>,
    #[serde(deserialize_with = "null_is_empty")]
    pub filesystems: Vec<Filesystem>,
    #[serde(deserialize_with = "null_is_empty")]
    pub volume_groups: Vec<VolumeGroup>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Disk {
    pub device: String,
    #[serde(deserialize_with = "null_is_empty")]
    pub partitions: Vec<Partition>,
    pub wipe_table: bool,
}

#[derive(Debug, Default, Deserialize, PartialEq, Clone)]
#[serde(default)]
pub struct Partition {
    pub label: String,
    pub number: i64,
    /// In 512-byte sectors, as the hub uses it.
    #[serde(deserialize_with = "sectors")]
    pub size: u64,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Filesystem {
    pub mount: Mount,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Mount {
    pub create: Create,
    pub device: String,
    pub format: String,
    pub point: String,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Create {
    #[serde(deserialize_with = "null_is_empty")]
    pub options: Vec<String>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct VolumeGroup {
    pub name: String,
    #[serde(deserialize_with = "null_is_empty")]
    pub physical_volumes: Vec<String>,
    #[serde(deserialize_with = "null_is_empty")]
    pub logical_volumes: Vec<LogicalVolume>,
    #[serde(deserialize_with = "null_is_empty")]
    pub tags: Vec<String>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct LogicalVolume {
    pub name: String,
    /// In bytes; 0 takes the free space.
    pub size: u64,
    #[serde(deserialize_with = "null_is_empty")]
    pub tags: Vec<String>,
    #[serde(deserialize_with = "null_is_empty")]
    pub opts: Vec<String>,
}

/// Go decodes `null` into a slice as an empty slice.
fn null_is_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// A number, as the hub reads it; a string of digits too (CPR documents
/// write sizes both ways, the hub refuses the string form).
fn sectors<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(u64),
        Text(String),
    }
    match Option::<Size>::deserialize(d)? {
        None => Ok(0),
        Some(Size::Number(n)) => Ok(n),
        Some(Size::Text(t)) => t
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("size {t:?} is not a whole number of sectors"))),
    }
}

/// Parses the metadata document; errors name the field (`metadata.instance.storage.disks[0].partitions[1].size`).
pub fn parse(text: &[u8]) -> Result<Instance, String> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let wrapper: Wrapper =
        serde_path_to_error::deserialize(&mut de).map_err(|e| format!("at {}: {}", e.path(), e.inner()))?;
    Ok(wrapper.metadata.instance)
}

/// `GET http://HOST:PORT/metadata` with the hub's user agent and timeout.
/// As under the hub, the answer's status is not looked at: the body must
/// parse, and an error page does not.
pub fn fetch(host: &str, port: &str) -> Result<Instance, String> {
    let url = format!("http://{host}:{port}/metadata");
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .user_agent("bootkit")
        .build()
        .map_err(|e| e.to_string())?;
    let body = client.get(&url).send().and_then(|r| r.bytes()).map_err(|e| format!("GET {url}: {e}"))?;
    parse(&body).map_err(|e| format!("{url}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hub's own test document, rootio/test/standard.json (trimmed of
    /// the password hash).
    const STANDARD: &str = r#"{"metadata": {"instance": {
        "hostname": "server001",
        "operating_system_version": {"distro": "debian", "os_slug": "debian_11"},
        "storage": {
          "disks": [{"device": "/dev/sdb", "wipe_table": true, "partitions": [
              {"label": "BIOS", "number": 1, "size": 4096},
              {"label": "SWAP", "number": 2, "size": 3993600},
              {"label": "ROOT", "number": 3, "size": 0}]}],
          "filesystems": [
            {"mount": {"create": {"options": ["-L", "ROOT"]}, "device": "/dev/sdb3", "format": "ext4", "point": "/"}},
            {"mount": {"create": {"options": ["-L", "SWAP"]}, "device": "/dev/sdb2", "format": "swap", "point": "none"}}]}}}}"#;

    #[test]
    fn the_hubs_standard_document_parses() {
        let i = parse(STANDARD.as_bytes()).unwrap();
        assert_eq!(i.hostname, "server001");
        let d = &i.storage.disks[0];
        assert_eq!((d.device.as_str(), d.wipe_table, d.partitions.len()), ("/dev/sdb", true, 3));
        assert_eq!(d.partitions[1], Partition { label: "SWAP".into(), number: 2, size: 3993600 });
        assert_eq!(i.storage.filesystems[0].mount.create.options, ["-L", "ROOT"]);
        assert_eq!(i.storage.filesystems[1].mount.format, "swap");
        assert!(i.storage.volume_groups.is_empty());
    }

    #[test]
    fn go_json_leniencies_and_field_named_errors() {
        // The hub's mbr.json puts storage under metadata directly: Go reads no disks.
        let i = parse(br#"{"metadata": {"storage": {"disks": [{"device": "/dev/sdb"}]}}}"#).unwrap();
        assert!(i.storage.disks.is_empty());
        let i = parse(br#"{"metadata": {"instance": {"storage": {"disks": null, "filesystems": [{"mount": {"create": {"options": null}}}]}}}}"#).unwrap();
        assert!(i.storage.disks.is_empty() && i.storage.filesystems[0].mount.create.options.is_empty());
        let i = parse(
            br#"{"metadata": {"instance": {"storage": {"disks": [{"partitions": [{"number": 1, "size": "2048"}]}]}}}}"#,
        )
        .unwrap();
        assert_eq!(i.storage.disks[0].partitions[0].size, 2048);
        let err = parse(br#"{"metadata": {"instance": {"storage": {"disks": [{"partitions": [{"number": 1}, {"size": "512M"}]}]}}}}"#).unwrap_err();
        assert!(err.contains("disks[0].partitions[1].size") && err.contains("512M"), "{err}");
        let err = parse(br#"{"metadata": {"instance": {"storage": {"disks": [{"wipe_table": "yes"}]}}}}"#).unwrap_err();
        assert!(err.contains("disks[0].wipe_table"), "{err}");
        assert!(parse(b"<html>502</html>").is_err());
    }
}
