//! Finds the default boot entry in a grub.cfg, the way grub would, for what
//! grub-mkconfig generates: `set default=` (an index, a title or an id, or a
//! `>`-separated path into a submenu; `${saved_entry}`/`saved` use the
//! grubenv's saved_entry), `menuentry`/`submenu` blocks, the `linux` and
//! `initrd` lines inside them (with `(hd0,gpt2)`-style device prefixes), and
//! `function` or other brace blocks, which are skipped. Grub variables are
//! not expanded: a kernel argument that needs one (`$vt_handoff`) is left out.

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Entry {
    pub title: String,
    /// `$menuentry_id_option 'gnulinux-simple-UUID'` or `--id`.
    pub id: Option<String>,
    pub kernel: String,
    pub args: String,
    pub initrds: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Entry(Entry),
    Submenu { title: String, id: Option<String>, children: Vec<Node> },
}

impl Node {
    fn names(&self) -> (&str, Option<&str>) {
        match self {
            Node::Entry(e) => (&e.title, e.id.as_deref()),
            Node::Submenu { title, id, .. } => (title, id.as_deref()),
        }
    }

    fn is_named(&self, name: &str) -> bool {
        let (title, id) = self.names();
        title == name || id == Some(name)
    }
}

/// The entry grub boots by default. `saved_entry` is the grubenv's, used
/// when grub.cfg defers to it.
pub fn default_entry(cfg: &str, saved_entry: Option<&str>) -> Result<Entry, String> {
    let mut lines = cfg.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
    let (nodes, default) = parse_block(&mut lines, true)?;
    if nodes.is_empty() {
        return Err("grub.cfg has no menuentry".into());
    }
    let default = match default.as_deref() {
        Some("${saved_entry}" | "$saved_entry" | "saved") => saved_entry.unwrap_or("0").to_string(),
        Some(d) => d.to_string(),
        None => "0".to_string(),
    };
    let entry = select(&nodes, &default).ok_or_else(|| format!("grub.cfg's default {default:?} names no menuentry"))?;
    if entry.kernel.is_empty() {
        return Err(format!("menuentry {:?} has no linux line", entry.title));
    }
    Ok(entry)
}

/// Walks a `>`-separated path of indexes, titles or ids.
fn select(nodes: &[Node], default: &str) -> Option<Entry> {
    let parts: Vec<&str> = default.split('>').collect();
    let mut level = nodes;
    for (depth, part) in parts.iter().enumerate() {
        let node = match part.parse::<usize>() {
            Ok(i) => level.get(i),
            Err(_) => level.iter().find(|n| n.is_named(part)),
        };
        match (node, depth + 1 == parts.len()) {
            (Some(Node::Entry(e)), true) => return Some(e.clone()),
            (Some(Node::Submenu { children, .. }), false) => level = children,
            // A lone title of an entry inside a submenu: older grub.cfgs
            // (and people) name entries that way.
            (None, true) if parts.len() == 1 && part.parse::<usize>().is_err() => return find_anywhere(nodes, part),
            _ => return None,
        }
    }
    None
}

fn find_anywhere(nodes: &[Node], name: &str) -> Option<Entry> {
    nodes.iter().find_map(|n| match n {
        Node::Entry(e) if n.is_named(name) => Some(e.clone()),
        Node::Submenu { children, .. } => find_anywhere(children, name),
        Node::Entry(_) => None,
    })
}

/// Grub's quoting is close enough to the shell's; a line that does not
/// split is taken word by word.
fn words(line: &str) -> Vec<String> {
    shell_words::split(line).unwrap_or_else(|_| line.split_whitespace().map(str::to_string).collect())
}

/// The title and id of a `menuentry`/`submenu` line.
fn title_and_id(words: &[String]) -> (String, Option<String>) {
    let title = words.get(1).cloned().unwrap_or_default();
    let mut id = None;
    for (i, w) in words.iter().enumerate().skip(2) {
        if w == "$menuentry_id_option" || w == "--id" {
            id = words.get(i + 1).cloned();
        } else if let Some(v) = w.strip_prefix("--id=") {
            id = Some(v.to_string());
        }
    }
    (title, id)
}

fn parse_block<'a>(
    lines: &mut impl Iterator<Item = &'a str>,
    top: bool,
) -> Result<(Vec<Node>, Option<String>), String> {
    let mut nodes = Vec::new();
    let mut default = None;
    while let Some(line) = lines.next() {
        if line == "}" {
            if top {
                return Err("grub.cfg has an unmatched '}'".into());
            }
            return Ok((nodes, default));
        }
        let words = words(line);
        match words.first().map(String::as_str) {
            Some("set") if top => {
                if let Some(v) = words.get(1).and_then(|w| w.strip_prefix("default=")) {
                    // `set default="${next_entry}"` is a one-shot override
                    // (grub-reboot) set beside the real default.
                    if !v.is_empty() && v != "${next_entry}" {
                        default = Some(v.to_string());
                    }
                }
            }
            Some("menuentry") => {
                let (title, id) = title_and_id(&words);
                nodes.push(Node::Entry(parse_entry(lines, title, id)?));
            }
            Some("submenu") => {
                let (title, id) = title_and_id(&words);
                let (children, _) = parse_block(lines, false)?;
                nodes.push(Node::Submenu { title, id, children });
            }
            _ if line.ends_with('{') => skip_block(lines)?,
            _ => {}
        }
    }
    if top { Ok((nodes, default)) } else { Err("grub.cfg ends inside a submenu".into()) }
}

/// Skips to the `}` closing a block just opened (`function load_video {`).
fn skip_block<'a>(lines: &mut impl Iterator<Item = &'a str>) -> Result<(), String> {
    let mut depth = 0;
    for line in lines {
        if line == "}" {
            if depth == 0 {
                return Ok(());
            }
            depth -= 1;
        } else if line.ends_with('{') {
            depth += 1;
        }
    }
    Err("grub.cfg ends inside a block".into())
}

fn parse_entry<'a>(
    lines: &mut impl Iterator<Item = &'a str>,
    title: String,
    id: Option<String>,
) -> Result<Entry, String> {
    let mut e = Entry { title, id, ..Entry::default() };
    let mut depth = 0;
    for line in lines {
        if line == "}" {
            if depth == 0 {
                return Ok(e);
            }
            depth -= 1;
            continue;
        }
        if line.ends_with('{') {
            depth += 1;
        }
        let words = words(line);
        match words.first().map(String::as_str) {
            Some("linux" | "linux16" | "linuxefi") if words.len() >= 2 => {
                e.kernel = strip_device(&words[1]);
                e.args = words[2..].iter().filter(|w| !w.contains('$')).cloned().collect::<Vec<_>>().join(" ");
            }
            Some("initrd" | "initrd16" | "initrdefi") => {
                e.initrds = words[1..].iter().map(|w| strip_device(w)).collect()
            }
            _ => {}
        }
    }
    Err(format!("menuentry {:?} is not closed", e.title))
}

/// `(hd0,gpt2)/boot/vmlinuz` and `($root)/vmlinuz` → the path.
fn strip_device(path: &str) -> String {
    match path.strip_prefix('(').and_then(|p| p.split_once(')')) {
        Some((_, rest)) => rest.to_string(),
        None => path.to_string(),
    }
}

/// `saved_entry` from a grubenv file (`KEY=VALUE` lines, `#` padding).
pub fn saved_entry(grubenv: &str) -> Option<String> {
    grubenv.lines().find_map(|l| l.strip_prefix("saved_entry=")).filter(|v| !v.is_empty()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian 12's grub-mkconfig output, trimmed but with its structure.
    const DEBIAN: &str = r#"
#
# DO NOT EDIT THIS FILE
#
### BEGIN /etc/grub.d/00_header ###
insmod part_gpt
insmod ext2
if [ -s $prefix/grubenv ]; then
  set have_grubenv=true
  load_env
fi
if [ "${next_entry}" ] ; then
   set default="${next_entry}"
   set next_entry=
   save_env next_entry
   set boot_once=true
else
   set default="0"
fi

if [ x"${feature_menuentry_id}" = xy ]; then
  menuentry_id_option="--id"
else
  menuentry_id_option=""
fi

export menuentry_id_option

function savedefault {
  if [ -z "${boot_once}" ]; then
    saved_entry="${chosen}"
    save_env saved_entry
  fi
}
function load_video {
  if [ x$feature_all_video_module = xy ]; then
    insmod all_video
  else
    insmod efi_gop
  fi
}
### END /etc/grub.d/00_header ###

### BEGIN /etc/grub.d/10_linux ###
function gfxmode {
	set gfxpayload="${1}"
}
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class gnu --class os $menuentry_id_option 'gnulinux-simple-7f3c' {
	load_video
	insmod gzio
	if [ x$grub_platform = xxen ]; then insmod xzio; insmod lzopio; fi
	insmod part_gpt
	insmod ext2
	search --no-floppy --fs-uuid --set=root 7f3c
	echo	'Loading Linux 6.1.0-26-amd64 ...'
	linux	/boot/vmlinuz-6.1.0-26-amd64 root=UUID=7f3c ro  quiet
	echo	'Loading initial ramdisk ...'
	initrd	/boot/initrd.img-6.1.0-26-amd64
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-7f3c' {
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-26-amd64' --class debian $menuentry_id_option 'gnulinux-6.1.0-26-amd64-advanced-7f3c' {
		load_video
		linux	/boot/vmlinuz-6.1.0-26-amd64 root=UUID=7f3c ro  quiet
		initrd	/boot/initrd.img-6.1.0-26-amd64
	}
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-25-amd64 (recovery mode)' --class debian $menuentry_id_option 'gnulinux-6.1.0-25-amd64-recovery-7f3c' {
		linux	(hd0,gpt2)/boot/vmlinuz-6.1.0-25-amd64 root=UUID=7f3c ro single
		initrd	/boot/intel-ucode.img /boot/initrd.img-6.1.0-25-amd64
	}
}
### END /etc/grub.d/10_linux ###
### BEGIN /etc/grub.d/30_uefi-firmware ###
menuentry 'UEFI Firmware Settings' $menuentry_id_option 'uefi-firmware' {
	fwsetup
}
### END /etc/grub.d/30_uefi-firmware ###
"#;

    /// Ubuntu 22.04 with GRUB_DEFAULT=saved and a separate /boot partition
    /// (paths relative to it, `$vt_handoff`, recordfail).
    const UBUNTU: &str = r#"
if [ -s $prefix/grubenv ]; then
  set have_grubenv=true
  load_env
fi
if [ "${next_entry}" ] ; then
   set default="${next_entry}"
   set next_entry=
   save_env next_entry
   set boot_once=true
else
   set default="${saved_entry}"
fi
function recordfail {
  set recordfail=1
  if [ -n "${have_grubenv}" ]; then if [ -z "${boot_once}" ]; then save_env recordfail; fi; fi
}
menuentry 'Ubuntu' --class ubuntu --class gnu-linux --class gnu --class os $menuentry_id_option 'gnulinux-simple-c0ffee' {
	recordfail
	load_video
	gfxmode $linux_gfx_mode
	search --no-floppy --fs-uuid --set=root b007
	linux	/vmlinuz-5.15.0-91-generic root=UUID=c0ffee ro  quiet splash $vt_handoff
	initrd	/initrd.img-5.15.0-91-generic
}
submenu 'Advanced options for Ubuntu' $menuentry_id_option 'gnulinux-advanced-c0ffee' {
	menuentry 'Ubuntu, with Linux 5.15.0-91-generic' --class ubuntu $menuentry_id_option 'gnulinux-5.15.0-91-generic-advanced-c0ffee' {
		recordfail
		linux	/vmlinuz-5.15.0-91-generic root=UUID=c0ffee ro  quiet splash $vt_handoff
		initrd	/initrd.img-5.15.0-91-generic
	}
	menuentry 'Ubuntu, with Linux 5.15.0-88-generic' --class ubuntu $menuentry_id_option 'gnulinux-5.15.0-88-generic-advanced-c0ffee' {
		recordfail
		linux	($root)/vmlinuz-5.15.0-88-generic root=UUID=c0ffee ro "console=ttyS0,115200n8" console=tty0
		initrd	($root)/initrd.img-5.15.0-88-generic
	}
}
"#;

    #[test]
    fn debian_default_is_the_first_entry_despite_functions() {
        let e = default_entry(DEBIAN, None).unwrap();
        assert_eq!(e.title, "Debian GNU/Linux");
        assert_eq!(e.id.as_deref(), Some("gnulinux-simple-7f3c"));
        assert_eq!(e.kernel, "/boot/vmlinuz-6.1.0-26-amd64");
        assert_eq!(e.args, "root=UUID=7f3c ro quiet");
        assert_eq!(e.initrds, ["/boot/initrd.img-6.1.0-26-amd64"]);
    }

    #[test]
    fn submenu_paths_titles_ids_and_several_initrds() {
        let with = |d: &str| DEBIAN.replace("set default=\"0\"", &format!("set default=\"{d}\""));
        let e = default_entry(&with("1>1"), None).unwrap();
        assert_eq!(e.kernel, "/boot/vmlinuz-6.1.0-25-amd64", "device prefix stripped");
        assert_eq!(e.args, "root=UUID=7f3c ro single");
        assert_eq!(e.initrds, ["/boot/intel-ucode.img", "/boot/initrd.img-6.1.0-25-amd64"]);
        let e = default_entry(&with("Debian GNU/Linux, with Linux 6.1.0-26-amd64"), None).unwrap();
        assert_eq!(e.id.as_deref(), Some("gnulinux-6.1.0-26-amd64-advanced-7f3c"), "a title inside a submenu");
        let e = default_entry(&with("gnulinux-advanced-7f3c>gnulinux-6.1.0-25-amd64-recovery-7f3c"), None).unwrap();
        assert_eq!(e.kernel, "/boot/vmlinuz-6.1.0-25-amd64", "ids path");
        let e = default_entry(&with("Advanced options for Debian GNU/Linux>1"), None).unwrap();
        assert_eq!(e.kernel, "/boot/vmlinuz-6.1.0-25-amd64", "title then index");
    }

    #[test]
    fn ubuntu_saved_entry_and_grub_variables() {
        let e = default_entry(UBUNTU, None).unwrap();
        assert_eq!(e.title, "Ubuntu", "no grubenv: the first entry");
        assert_eq!(e.kernel, "/vmlinuz-5.15.0-91-generic");
        assert_eq!(e.args, "root=UUID=c0ffee ro quiet splash", "$vt_handoff is not passed on literally");
        let env = "# GRUB Environment Block\nsaved_entry=gnulinux-advanced-c0ffee>gnulinux-5.15.0-88-generic-advanced-c0ffee\n####\n";
        let saved = saved_entry(env);
        let e = default_entry(UBUNTU, saved.as_deref()).unwrap();
        assert_eq!(e.kernel, "/vmlinuz-5.15.0-88-generic");
        assert_eq!(e.initrds, ["/initrd.img-5.15.0-88-generic"]);
        assert_eq!(e.args, "root=UUID=c0ffee ro console=ttyS0,115200n8 console=tty0", "quotes removed");
        assert_eq!(saved_entry("saved_entry=\n"), None);
    }

    #[test]
    fn broken_configs_say_why() {
        assert!(default_entry("set default=0\n", None).unwrap_err().contains("no menuentry"));
        assert!(default_entry("menuentry 'x' {\n linux /vmlinuz\n", None).unwrap_err().contains("not closed"));
        let with = |d: &str| DEBIAN.replace("set default=\"0\"", &format!("set default=\"{d}\""));
        assert!(default_entry(&with("7"), None).unwrap_err().contains("\"7\" names no menuentry"));
        assert!(default_entry(&with("1"), None).unwrap_err().contains("\"1\" names no menuentry"), "a submenu");
        assert!(default_entry(&with("2"), None).unwrap_err().contains("\"UEFI Firmware Settings\" has no linux line"));
        assert!(default_entry("}\n", None).unwrap_err().contains("unmatched"));
        assert!(default_entry("function f {\n echo\n", None).unwrap_err().contains("ends inside a block"));
        assert!(default_entry("submenu 'a' {\n", None).unwrap_err().contains("ends inside a submenu"));
    }
}
