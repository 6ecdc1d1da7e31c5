//! Finds the default boot entry in a grub.cfg, the way grub would, for the
//! subset distributions generate: `set default=` (index, `N>M` into a
//! submenu, or a title), `menuentry`/`submenu` blocks, and the
//! `linux`/`initrd` lines inside (with `(hd0,gpt2)`-style device prefixes).

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Entry {
    pub title: String,
    pub kernel: String,
    pub args: String,
    pub initrds: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Entry(Entry),
    Submenu(String, Vec<Node>),
}

pub fn default_entry(cfg: &str) -> Result<Entry, String> {
    let mut lines = cfg.lines().map(str::trim).peekable();
    let (nodes, default) = parse_block(&mut lines, true)?;
    if nodes.is_empty() {
        return Err("grub.cfg has no menuentry".into());
    }
    let default = default.unwrap_or_else(|| "0".into());
    let found = if default.split('>').all(|p| p.parse::<usize>().is_ok()) {
        let mut level = &nodes;
        let mut found = None;
        let path: Vec<usize> = default.split('>').map(|p| p.parse().expect("checked")).collect();
        for (depth, i) in path.iter().enumerate() {
            match level.get(*i) {
                Some(Node::Submenu(_, children)) if depth + 1 < path.len() => level = children,
                Some(Node::Entry(e)) if depth + 1 == path.len() => found = Some(e.clone()),
                _ => break,
            }
        }
        found
    } else {
        find_title(&nodes, &default)
    };
    let entry = found.ok_or_else(|| format!("grub.cfg's default {default:?} names no menuentry"))?;
    if entry.kernel.is_empty() {
        return Err(format!("menuentry {:?} has no linux line", entry.title));
    }
    Ok(entry)
}

fn find_title(nodes: &[Node], title: &str) -> Option<Entry> {
    nodes.iter().find_map(|n| match n {
        Node::Entry(e) if e.title == title => Some(e.clone()),
        Node::Submenu(_, children) => find_title(children, title),
        Node::Entry(_) => None,
    })
}

type Lines<'a, I> = std::iter::Peekable<I>;

fn parse_block<'a, I: Iterator<Item = &'a str>>(
    lines: &mut Lines<'a, I>,
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
        let words = shell_words::split(line).unwrap_or_default();
        match words.first().map(String::as_str) {
            Some("set") if top => {
                if let Some(v) = words.get(1).and_then(|w| w.strip_prefix("default=")) {
                    // `saved` needs grubenv, which we do not read: grub
                    // falls back to the first entry without it too.
                    if !v.is_empty() && !v.starts_with('$') && v != "saved" {
                        default = Some(v.trim_matches('"').to_string());
                    }
                }
            }
            Some("menuentry") => {
                let title = words.get(1).cloned().unwrap_or_default();
                nodes.push(Node::Entry(parse_entry(lines, title)?));
            }
            Some("submenu") => {
                let title = words.get(1).cloned().unwrap_or_default();
                let (children, _) = parse_block(lines, false)?;
                nodes.push(Node::Submenu(title, children));
            }
            _ => {}
        }
    }
    if top { Ok((nodes, default)) } else { Err("grub.cfg ends inside a block".into()) }
}

fn parse_entry<'a, I: Iterator<Item = &'a str>>(lines: &mut Lines<'a, I>, title: String) -> Result<Entry, String> {
    let mut e = Entry { title, ..Entry::default() };
    let mut depth = 0;
    for line in lines.by_ref() {
        if line.ends_with('{') {
            depth += 1; // `if ... {` blocks inside an entry
        }
        if line == "}" {
            if depth == 0 {
                return Ok(e);
            }
            depth -= 1;
            continue;
        }
        let mut words = line.split_whitespace();
        match words.next() {
            Some("linux" | "linux16" | "linuxefi") => {
                e.kernel = strip_device(words.next().unwrap_or_default());
                e.args = words.collect::<Vec<_>>().join(" ");
            }
            Some("initrd" | "initrd16" | "initrdefi") => e.initrds = words.map(strip_device).collect(),
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

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = r#"
### BEGIN /etc/grub.d/00_header ###
if [ -s $prefix/grubenv ]; then
  load_env
fi
if [ "${next_entry}" ] ; then
   set default="${next_entry}"
   set next_entry=
else
   set default="0"
fi
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux $menuentry_id_option 'gnulinux-simple-1234' {
	load_video
	insmod ext2
	if [ x$feature_platform_search_hint = xy ]; then
	  search --no-floppy --fs-uuid --set=root --hint-bios=hd0,gpt2  1234
	else
	  search --no-floppy --fs-uuid --set=root 1234
	fi
	echo	'Loading Linux 6.1.0-26-amd64 ...'
	linux	/boot/vmlinuz-6.1.0-26-amd64 root=UUID=1234 ro  quiet
	echo	'Loading initial ramdisk ...'
	initrd	/boot/initrd.img-6.1.0-26-amd64
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-1234' {
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-26-amd64' --class debian {
		linux	/boot/vmlinuz-6.1.0-26-amd64 root=UUID=1234 ro  quiet
		initrd	/boot/initrd.img-6.1.0-26-amd64
	}
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-25-amd64 (recovery mode)' --class debian {
		linux	(hd0,gpt2)/boot/vmlinuz-6.1.0-25-amd64 root=UUID=1234 ro single
		initrd	/boot/intel-ucode.img /boot/initrd.img-6.1.0-25-amd64
	}
}
"#;

    #[test]
    fn debian_default_is_the_first_entry() {
        let e = default_entry(DEBIAN).unwrap();
        assert_eq!(e.title, "Debian GNU/Linux");
        assert_eq!(e.kernel, "/boot/vmlinuz-6.1.0-26-amd64");
        assert_eq!(e.args, "root=UUID=1234 ro quiet");
        assert_eq!(e.initrds, ["/boot/initrd.img-6.1.0-26-amd64"]);
    }

    #[test]
    fn submenu_paths_titles_and_several_initrds() {
        let cfg = DEBIAN.replace("set default=\"0\"", "set default=\"1>1\"");
        let e = default_entry(&cfg).unwrap();
        assert_eq!(e.kernel, "/boot/vmlinuz-6.1.0-25-amd64");
        assert_eq!(e.initrds, ["/boot/intel-ucode.img", "/boot/initrd.img-6.1.0-25-amd64"]);
        let cfg = DEBIAN.replace("set default=\"0\"", "set default='Debian GNU/Linux, with Linux 6.1.0-26-amd64'");
        assert_eq!(default_entry(&cfg).unwrap().title, "Debian GNU/Linux, with Linux 6.1.0-26-amd64");
    }

    #[test]
    fn broken_configs_say_why() {
        assert!(default_entry("set default=0\n").unwrap_err().contains("no menuentry"));
        assert!(default_entry("menuentry 'x' {\n linux /vmlinuz\n").unwrap_err().contains("not closed"));
        assert!(
            default_entry(&DEBIAN.replace("set default=\"0\"", "set default=\"7\"")).unwrap_err().contains("\"7\"")
        );
        assert!(default_entry("menuentry 'x' {\n echo hi\n}\n").unwrap_err().contains("no linux line"));
    }
}
