//! The device path of a disk's partition, named as the kernel and udev name
//! it. One implementation for both sides of a workflow: the template
//! function `formatPartition` (kiln-documents, rendering on the server) and
//! the partition action (waiting for the nodes it made, on the machine), so
//! that a template's `formatPartition .disk 2` names the node the action
//! formats.
//!
//! A crate of its own, without dependencies, because neither side should
//! carry the other's: the action kit brings HTTP, decompression and mounts,
//! the documents crate JSON Schema and YAML.

/// The path of partition `number` of `disk`, following Tinkerbell's
/// `formatPartition`, which follows the kernel: `/dev/sda` → `/dev/sda1`;
/// a name ending in a digit takes a `p` (`/dev/nvme0n1p1`, `/dev/mmcblk0p1`,
/// `/dev/loop0p1`); udev's links under `/dev/disk/` (`by-id`, `by-path`, ...)
/// take `-partN` (`/dev/disk/by-id/wwn-0x5000-part1`).
pub fn partition_path(disk: &str, number: u64) -> String {
    if disk.starts_with("/dev/disk/") {
        format!("{disk}-part{number}")
    } else if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{number}")
    } else {
        format!("{disk}{number}")
    }
}

#[cfg(test)]
mod tests {
    use super::partition_path;

    #[test]
    fn kernel_and_udev_names() {
        for (disk, n, want) in [
            ("/dev/sda", 1, "/dev/sda1"),
            ("/dev/vda", 3, "/dev/vda3"),
            ("/dev/nvme0n1", 1, "/dev/nvme0n1p1"),
            ("/dev/mmcblk0", 2, "/dev/mmcblk0p2"),
            ("/dev/loop7", 3, "/dev/loop7p3"),
            ("/dev/disk/by-id/wwn-0x5000", 1, "/dev/disk/by-id/wwn-0x5000-part1"),
            ("/dev/disk/by-path/pci-0000:00:1f.2-ata-1", 2, "/dev/disk/by-path/pci-0000:00:1f.2-ata-1-part2"),
            // An image file (the partition action's tests) is named like a disk.
            ("/tmp/disk.img", 1, "/tmp/disk.img1"),
        ] {
            assert_eq!(partition_path(disk, n), want, "{disk} {n}");
        }
    }
}
