//! Finds the line of a field path such as `tasks[0].actions[1].image` in
//! YAML text.
//!
//! serde reports where the *syntax* or a *type* is wrong, but the checks made
//! after deserialising (a duplicate name, a bad image reference) know only
//! the field path. Operators write block-style YAML, so following the
//! indentation finds the line; where it cannot (flow style `{a: [..]}`,
//! anchors), the deepest line found is still the right neighbourhood, and
//! when nothing is found the error simply has no line.

/// 1-based line of `path` in `yaml`, or of its deepest ancestor found.
pub(crate) fn line_of(yaml: &str, path: &str) -> Option<usize> {
    locate(yaml, path).map(|(line, _)| line)
}

/// 1-based line of `path` in `yaml` only when the whole path was found.
pub(crate) fn exact_line_of(yaml: &str, path: &str) -> Option<usize> {
    locate(yaml, path).filter(|(_, exact)| *exact).map(|(line, _)| line)
}

/// The line of the deepest segment of `path` found, and whether that was
/// the last one.
fn locate(yaml: &str, path: &str) -> Option<(usize, bool)> {
    let lines: Vec<Line<'_>> = yaml.lines().map(Line::new).collect();
    let first = lines.iter().position(|l| !l.skip())?;
    let segments = segments(path)?;
    let mut node = Some(Node { first, col: lines[first].indent, end: lines.len() });
    let mut found = None;
    for (n, seg) in segments.iter().enumerate() {
        let Some(current) = node else { break };
        let next = match seg {
            Segment::Key(key) => current.key(&lines, key),
            Segment::Index(i) => current.item(&lines, *i),
        };
        let Some((line, value)) = next else { break };
        found = Some((line + 1, n + 1 == segments.len()));
        node = value;
    }
    found
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// `a.b[2].c` → `a`, `b`, `2`, `c`; `None` for anything else.
fn segments(path: &str) -> Option<Vec<Segment<'_>>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        while !rest.is_empty() {
            let close = rest.find(']')?;
            out.push(Segment::Index(rest.get(1..close)?.parse().ok()?));
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return None;
            }
        }
    }
    Some(out)
}

struct Line<'a> {
    indent: usize,
    text: &'a str,
}

impl<'a> Line<'a> {
    fn new(text: &'a str) -> Self {
        Self { indent: text.len() - text.trim_start_matches(' ').len(), text }
    }

    /// Blank and comment lines say nothing about structure.
    fn skip(&self) -> bool {
        let t = self.text.trim();
        t.is_empty() || t.starts_with('#')
    }

    /// The text from column `col` (within the indentation or after it).
    fn from(&self, col: usize) -> &'a str {
        self.text.get(col..).unwrap_or("")
    }
}

/// A block node: its content starts at column `col` of line `first` (after
/// a `- ` perhaps) and continues on the lines before `end` indented by
/// `col` or more.
#[derive(Clone, Copy)]
struct Node {
    first: usize,
    col: usize,
    end: usize,
}

/// A found entry: its line, and its value when that is a block node.
type Found = (usize, Option<Node>);

fn is_dash(s: &str) -> bool {
    s == "-" || s.starts_with("- ")
}

impl Node {
    /// Lines where entries of this node start: the first line, and lines
    /// indented exactly at its column.
    fn entries<'a>(&self, lines: &'a [Line<'a>]) -> impl Iterator<Item = (usize, &'a str)> + 'a {
        let (first, col) = (self.first, self.col);
        (self.first..self.end)
            .filter(move |&i| !lines[i].skip() && (i == first || lines[i].indent == col))
            .map(move |i| (i, lines[i].from(col)))
    }

    fn key(&self, lines: &[Line<'_>], key: &str) -> Option<Found> {
        let (line, rest) = self.entries(lines).find_map(|(i, text)| {
            [format!("{key}:"), format!("\"{key}\":"), format!("'{key}':")]
                .iter()
                .find_map(|k| text.strip_prefix(k.as_str()))
                .filter(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
                .map(|rest| (i, rest))
        })?;
        let rest = rest.trim();
        let inline = !(rest.is_empty() || rest.starts_with('#') || rest.starts_with(['|', '>', '&', '!']));
        if inline {
            return Some((line, None));
        }
        // The value: the following lines indented more than the key, or a
        // sequence at the key's own indentation (`key:\n- a`).
        let key_col = self.col;
        let mut end = line + 1;
        while end < self.end {
            let l = &lines[end];
            if !l.skip() && (l.indent < key_col || (l.indent == key_col && !is_dash(l.text.trim_start()))) {
                break;
            }
            end += 1;
        }
        let first = (line + 1..end).find(|&i| !lines[i].skip());
        Some((line, first.map(|f| Node { first: f, col: lines[f].indent, end })))
    }

    fn item(&self, lines: &[Line<'_>], index: usize) -> Option<Found> {
        let starts: Vec<usize> = self.entries(lines).filter(|(_, t)| is_dash(t)).map(|(i, _)| i).collect();
        let line = *starts.get(index)?;
        let end = starts.get(index + 1).copied().unwrap_or(self.end);
        let after_dash = &lines[line].from(self.col)[1..];
        let content = after_dash.trim_start_matches(' ');
        if content.is_empty() || content.starts_with('#') {
            // `-` alone: the item's content is on the next lines.
            let first = (line + 1..end).find(|&i| !lines[i].skip());
            return Some((line, first.map(|f| Node { first: f, col: lines[f].indent, end })));
        }
        if content.starts_with(['[', '{']) {
            return Some((line, None));
        }
        let col = self.col + 1 + (after_dash.len() - content.len());
        Some((line, Some(Node { first: line, col, end })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"version: "0.1"
name: ubuntu
# a comment
tasks:
  - name: "os-installation"
    worker: "{{.device_1}}"
    volumes:
      - /dev:/dev

      - /statedir:/statedir
    actions:
      - name: "stream-image"
        image: quay.io/a/b:v1
        environment: {DEST_DISK: /dev/sda}
      -
        name: kexec
        "image": quay.io/a/kexec:v1
        pid: host
  - name: second
    actions:
    - name: a
      image: x
    - name: b
      command:
        - /bin/sh
        - -c
      script: |
        tasks:
          - name: inside a block scalar
"#;

    #[test]
    fn finds_block_style_fields() {
        for (path, line) in [
            ("version", 1),
            ("name", 2),
            ("tasks", 4),
            ("tasks[0]", 5),
            ("tasks[0].name", 5),
            ("tasks[0].worker", 6),
            ("tasks[0].volumes[1]", 10),
            ("tasks[0].actions[0].image", 13),
            ("tasks[0].actions[1]", 15),
            ("tasks[0].actions[1].name", 16),
            ("tasks[0].actions[1].image", 17),
            ("tasks[0].actions[1].pid", 18),
            ("tasks[1].name", 19),
            ("tasks[1].actions[1].name", 23),
            ("tasks[1].actions[1].command[1]", 26),
            ("tasks[1].actions[0].image", 22),
        ] {
            assert_eq!(line_of(YAML, path), Some(line), "{path}");
        }
    }

    #[test]
    fn stops_at_the_deepest_line_it_can_find() {
        // Inside a flow mapping: the line of the mapping.
        assert_eq!(line_of(YAML, "tasks[0].actions[0].environment.DEST_DISK"), Some(14));
        // A field that is not there: its parent.
        assert_eq!(line_of(YAML, "tasks[0].actions[0].timeout"), Some(12));
        assert_eq!(line_of(YAML, "tasks[5].name"), Some(4));
        assert_eq!(line_of(YAML, "nothing"), None);
        assert_eq!(line_of("", "a"), None);
        assert_eq!(line_of("a: 1", "a[0"), None);
        assert_eq!(exact_line_of(YAML, "tasks[0].actions[0].timeout"), None);
        assert_eq!(exact_line_of(YAML, "tasks[0].actions[0].image"), Some(13));
        // Block scalar content is not structure.
        assert_eq!(line_of(YAML, "tasks[1].actions[1].script"), Some(27));
    }

    #[test]
    fn never_panics() {
        let paths = ["a", "a[0]", "a[0].b", "[0]", "a[x]", "a[0]b", "a.", ".a", "a[99999999999999999999]", ""];
        let texts = [
            "- ",
            "-",
            "a:",
            "a: [",
            "  - b:\n-\n - c",
            "a:\n-\n  -\n   - x",
            "\u{e9}: 1\n  - \u{e9}",
            "a:\n  b: 1\n c: 2",
        ];
        for t in texts {
            for p in paths {
                let _ = line_of(t, p);
            }
        }
    }
}
