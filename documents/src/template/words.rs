//! Sprig's word functions, with the semantics of the Go libraries Sprig
//! 3.2.3 calls: `camelcase`, `snakecase`, `kebabcase` (huandu/xstrings
//! 1.3), `wrap`, `wrapWith` and `abbrevboth` (Masterminds/goutils 1.1).
//!
//! Go's `unicode` package classifies by general category (`IsUpper` is
//! `Lu`, `IsLetter` is `L`, `IsPunct` is `P`), which is not what Rust's
//! `char::is_uppercase` or `is_alphabetic` test (they take derived
//! properties), so the categories come from the regex crate's tables.

use std::sync::LazyLock;

use regex::Regex;

/// What Go's `utf8.DecodeRuneInString` calls an invalid rune; a Rust
/// string holds it only as the replacement character itself, which
/// xstrings skips as it skips invalid bytes.
const RUNE_ERROR: char = '\u{FFFD}';

fn category(c: char, re: &LazyLock<Regex>) -> bool {
    let mut buf = [0u8; 4];
    re.is_match(c.encode_utf8(&mut buf))
}

static UPPER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\p{Lu}$").expect("regex"));
static LETTER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\p{L}$").expect("regex"));
static PUNCT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\p{P}$").expect("regex"));

/// Go's `unicode.IsUpper`: category Lu.
fn is_upper(c: char) -> bool {
    if c.is_ascii() { c.is_ascii_uppercase() } else { category(c, &UPPER) }
}

/// Go's `unicode.IsPunct`: category P.
fn is_punct(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_punctuation() && !matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '`' | '|' | '~')
    } else {
        category(c, &PUNCT)
    }
}

/// Go's `unicode.IsNumber` (category N; Rust's `is_numeric` is the same).
fn is_number(c: char) -> bool {
    c.is_numeric()
}

/// Go's `unicode.ToUpper`: the simple (one rune) mapping. Rust gives the
/// full one; where that is more than one rune the simple one is the rune
/// itself (ß), but for Greek letters with a iota subscript, whose simple
/// upper case is the title-case letter (ᾳ is ᾼ, not ΑΙ).
fn to_upper(c: char) -> char {
    let mut up = c.to_uppercase();
    match (up.next(), up.next()) {
        (Some(u), None) => u,
        _ => match u32::from(c) {
            n @ (0x1F80..=0x1F87 | 0x1F90..=0x1F97 | 0x1FA0..=0x1FA7) => char::from_u32(n + 8).unwrap_or(c),
            0x1FB3 => '\u{1FBC}',
            0x1FC3 => '\u{1FCC}',
            0x1FF3 => '\u{1FFC}',
            _ => c,
        },
    }
}

/// Go's `unicode.ToLower`: the simple (one rune) mapping.
fn to_lower(c: char) -> char {
    let mut low = c.to_lowercase();
    match (low.next(), low.next()) {
        (Some(l), None) => l,
        // İ: the full mapping is i and a combining dot; the simple one is i.
        (Some(l), Some(_)) => l,
        _ => c,
    }
}

/// xstrings' connector: `-`, `_` or white space (Go's `unicode.IsSpace`
/// is the White_Space property, as Rust's `is_whitespace`).
fn is_connector(c: char) -> bool {
    c == '-' || c == '_' || c.is_whitespace()
}

/// xstrings' `isAlphabet`: a letter, but not a CJK ideograph.
fn is_alphabet(c: char) -> bool {
    let letter = if c.is_ascii() { c.is_ascii_alphabetic() } else { category(c, &LETTER) };
    letter && !matches!(c, '\u{4E00}'..='\u{9FCC}' | '\u{3400}'..='\u{4D85}' | '\u{20000}'..='\u{2B81D}')
}

/// `camelcase`: words split at connectors, each capitalised and the rest of
/// it lower-cased; leading connectors are kept, and a run of connectors
/// keeps all but its last.
pub fn camel_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    let mut r0 = None;
    // Leading connectors appear in the output.
    for c in chars.by_ref() {
        if !is_connector(c) {
            r0 = Some(to_upper(c));
            break;
        }
        out.push(c);
        r0 = Some(c);
    }
    let rest = chars.as_str();
    let Some(mut r0) = r0 else { return out };
    if rest.is_empty() {
        // xstrings writes the last rune once more here, even when it was a
        // connector already written ("_" gives "__").
        out.push(r0);
        return out;
    }
    for c in rest.chars() {
        let r1 = r0;
        r0 = c;
        if is_connector(r0) && is_connector(r1) {
            out.push(r1);
            continue;
        }
        if is_connector(r1) {
            r0 = to_upper(r0);
        } else {
            r0 = to_lower(r0);
            out.push(r1);
        }
    }
    out.push(r0);
    out
}

/// `snakecase`.
pub fn snake_case(s: &str) -> String {
    to_lower_case(s, '_')
}

/// `kebabcase`.
pub fn kebab_case(s: &str) -> String {
    to_lower_case(s, '-')
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Word {
    Invalid,
    Number,
    Upper,
    Alphabet,
    Connector,
    Punct,
    Other,
}

/// The next rune that is not invalid and the bytes up to its end; `prev`
/// and all the bytes when there is none (xstrings' `nextValidRune`).
fn next_valid(s: &str, prev: char) -> (char, usize) {
    let mut size = 0;
    for c in s.chars() {
        size += c.len_utf8();
        if c != RUNE_ERROR {
            return (c, size);
        }
    }
    (prev, size)
}

/// xstrings' `nextWord`: the kind of the word `s` starts with, the word,
/// and what follows it. An upper-case run followed by a lower-case letter
/// leaves its last capital to the next word ("HTTPServer": "HTTP").
fn next_word(s: &str) -> (Word, &str, &str) {
    if s.is_empty() {
        return (Word::Invalid, "", "");
    }
    let mut remaining = s;
    let (mut r, mut size) = next_valid(remaining, RUNE_ERROR);
    let mut offset = size;
    if r == RUNE_ERROR {
        return (Word::Invalid, &s[..offset], &s[offset..]);
    }
    // Takes runes while `keep` holds of the next valid one.
    let take = |remaining: &mut &str, offset: &mut usize, r: &mut char, keep: &dyn Fn(char) -> bool| {
        while !remaining.is_empty() {
            let (next, size) = next_valid(remaining, *r);
            *r = next;
            if !keep(next) {
                break;
            }
            *offset += size;
            *remaining = &remaining[size..];
        }
    };
    let kind;
    if is_connector(r) {
        kind = Word::Connector;
        remaining = &remaining[size..];
        take(&mut remaining, &mut offset, &mut r, &is_connector);
    } else if is_punct(r) {
        kind = Word::Punct;
        remaining = &remaining[size..];
        take(&mut remaining, &mut offset, &mut r, &is_punct);
    } else if is_upper(r) {
        kind = Word::Upper;
        remaining = &remaining[size..];
        if !remaining.is_empty() {
            (r, size) = next_valid(remaining, r);
            if is_upper(r) {
                let mut prev_size = size;
                offset += size;
                remaining = &remaining[size..];
                while !remaining.is_empty() {
                    (r, size) = next_valid(remaining, r);
                    if !is_upper(r) {
                        break;
                    }
                    prev_size = size;
                    offset += size;
                    remaining = &remaining[size..];
                }
                if !remaining.is_empty() && is_alphabet(r) {
                    offset -= prev_size;
                    remaining = &s[offset..];
                }
            } else if is_alphabet(r) {
                offset += size;
                remaining = &remaining[size..];
                take(&mut remaining, &mut offset, &mut r, &|c| is_alphabet(c) && !is_upper(c));
            }
        }
    } else if is_alphabet(r) {
        kind = Word::Alphabet;
        remaining = &remaining[size..];
        take(&mut remaining, &mut offset, &mut r, &|c| is_alphabet(c) && !is_upper(c));
    } else if is_number(r) {
        kind = Word::Number;
        remaining = &remaining[size..];
        take(&mut remaining, &mut offset, &mut r, &is_number);
    } else {
        kind = Word::Other;
        remaining = &remaining[size..];
        take(&mut remaining, &mut offset, &mut r, &|c| {
            !(is_connector(c) || is_alphabet(c) || is_number(c) || is_punct(c))
        });
    }
    (kind, &s[..offset], remaining)
}

/// xstrings' `toLower`: upper-case and connector words are lower-cased and
/// their connectors replaced; other words are copied.
fn push_lower(out: &mut String, kind: Word, word: &str, connector: char) {
    if kind != Word::Upper && kind != Word::Connector {
        out.push_str(word);
        return;
    }
    for c in word.chars() {
        if is_connector(c) {
            out.push(connector);
        } else if is_upper(c) {
            out.push(to_lower(c));
        } else {
            out.push(c);
        }
    }
}

/// xstrings' `camelCaseToLowerCase`: words lower-cased and joined by
/// `connector`; a number stays with the word before it unless lower-case
/// letters follow it ("Bld4Floor" is "bld4_floor", "HTTP2xx" "http_2xx").
fn to_lower_case(s: &str, connector: char) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 2);
    if s.is_empty() {
        return out;
    }
    let (mut wt, mut word, mut remaining) = next_word(s);
    while !remaining.is_empty() {
        if wt != Word::Connector {
            push_lower(&mut out, wt, word, connector);
        }
        let prev = wt;
        let last = word;
        (wt, word, remaining) = next_word(remaining);
        match prev {
            Word::Number => {
                while wt == Word::Alphabet || wt == Word::Number {
                    push_lower(&mut out, wt, word, connector);
                    (wt, word, remaining) = next_word(remaining);
                }
                if !matches!(wt, Word::Invalid | Word::Punct | Word::Connector) {
                    out.push(connector);
                }
            }
            Word::Connector => push_lower(&mut out, prev, last, connector),
            Word::Punct => {}
            _ => {
                if wt != Word::Number {
                    if wt != Word::Connector && wt != Word::Punct {
                        out.push(connector);
                    }
                    continue;
                }
                if remaining.is_empty() {
                    continue;
                }
                let number = word;
                (wt, word, remaining) = next_word(remaining);
                // A number is part of the word before it ("Bld4Floor"
                // gives "bld4_floor")...
                if wt != Word::Alphabet {
                    push_lower(&mut out, Word::Number, number, connector);
                    if wt != Word::Connector && wt != Word::Punct {
                        out.push(connector);
                    }
                    continue;
                }
                // ... unless lower-case letters follow it ("HTTP2xx" gives
                // "http_2xx").
                out.push(connector);
                push_lower(&mut out, Word::Number, number, connector);
                while wt == Word::Alphabet || wt == Word::Number {
                    push_lower(&mut out, wt, word, connector);
                    (wt, word, remaining) = next_word(remaining);
                }
                if !matches!(wt, Word::Invalid | Word::Connector | Word::Punct) {
                    out.push(connector);
                }
            }
        }
    }
    push_lower(&mut out, wt, word, connector);
    out
}

/// goutils' `WrapCustom`: lines of at most `width` bytes (less than 1 is 1)
/// broken at spaces and joined by `newline` ("" is "\n"); the space at a
/// break is dropped, as are spaces that would start a line. A word longer
/// than a line is cut when `long_words`, else left whole. Go counts bytes,
/// so a cut can fall inside a character (printed as U+FFFD here).
pub fn wrap(s: &str, width: i64, newline: &str, long_words: bool) -> String {
    if s.is_empty() {
        return String::new();
    }
    let newline = if newline.is_empty() { "\n" } else { newline };
    let width = usize::try_from(width.max(1)).unwrap_or(usize::MAX);
    let b = s.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut offset = 0;
    while b.len() - offset > width {
        if b[offset] == b' ' {
            offset += 1;
            continue;
        }
        // The last space within the next width+1 bytes.
        let window = &b[offset..offset + width + 1];
        if let Some(space) = window.iter().rposition(|&c| c == b' ') {
            out.extend_from_slice(&b[offset..offset + space]);
            out.extend_from_slice(newline.as_bytes());
            offset += space + 1;
        } else if long_words {
            out.extend_from_slice(&b[offset..offset + width]);
            out.extend_from_slice(newline.as_bytes());
            offset += width;
        } else {
            let end = offset + width;
            match b[end..].iter().position(|&c| c == b' ') {
                None => {
                    out.extend_from_slice(&b[offset..]);
                    offset = b.len();
                }
                Some(i) => {
                    out.extend_from_slice(&b[offset..end + i]);
                    out.extend_from_slice(newline.as_bytes());
                    offset = end + i + 1;
                }
            }
        }
    }
    out.extend_from_slice(&b[offset..]);
    String::from_utf8_lossy(&out).into_owned()
}

/// Sprig's `abbrevboth LEFT RIGHT S`: goutils' `AbbreviateFull`, `S` cut to
/// at most RIGHT bytes around the byte offset LEFT with "..." marking what
/// was cut; `S` unchanged when RIGHT is below 4, or below 7 with LEFT above
/// 0.
pub fn abbrev_both(left: i64, right: i64, s: &str) -> String {
    if right < 4 || left > 0 && right < 7 {
        return s.to_string();
    }
    String::from_utf8_lossy(&abbreviate_full(s.as_bytes(), left, right)).into_owned()
}

fn abbreviate_full(s: &[u8], offset: i64, max_width: i64) -> Vec<u8> {
    let len = s.len() as i64;
    if s.is_empty() || max_width < 4 {
        return Vec::new();
    }
    if len <= max_width {
        return s.to_vec();
    }
    let mut offset = offset.min(len);
    // Go's int arithmetic wraps (an offset of math.MinInt64 included).
    if len.wrapping_sub(offset) < max_width - 3 {
        offset = len - (max_width - 3);
    }
    let marker = b"...";
    if offset <= 4 {
        return [&s[..(max_width - 3) as usize], marker].concat();
    }
    if max_width < 7 {
        return Vec::new();
    }
    if offset + max_width - 3 < len {
        return [marker.as_slice(), &abbreviate_full(&s[offset as usize..], 0, max_width - 3)].concat();
    }
    [marker.as_slice(), &s[(len - (max_width - 3)) as usize..]].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xstrings_examples() {
        for (input, snake) in [
            ("FirstName", "first_name"),
            ("HTTPServer", "http_server"),
            ("NoHTTPS", "no_https"),
            ("GO_PATH", "go_path"),
            ("GO PATH", "go_path"),
            ("GO-PATH", "go_path"),
            ("http2xx", "http_2xx"),
            ("HTTP20xOK", "http_20x_ok"),
            ("Duration2m3s", "duration_2m3s"),
            ("Bld4Floor3rd", "bld4_floor_3rd"),
        ] {
            assert_eq!(snake_case(input), snake, "{input}");
            assert_eq!(kebab_case(input), snake.replace('_', "-"), "{input}");
        }
        assert_eq!(camel_case("some_words"), "SomeWords");
        assert_eq!(camel_case("_complex__case_"), "_Complex_Case_");
        assert_eq!(camel_case("some words"), "SomeWords");
    }

    #[test]
    fn goutils_examples() {
        assert_eq!(
            wrap("Here is one line of text that is going to be wrapped after 20 columns.", 20, "\n", false),
            "Here is one line of\ntext that is going\nto be wrapped after\n20 columns."
        );
        assert_eq!(abbrev_both(10, 10, "abcdefghijklmno"), "...ijklmno");
        assert_eq!(abbrev_both(5, 10, "abcdefghijklmno"), "...fghi...");
        assert_eq!(abbrev_both(0, 10, "abcdefghijklmno"), "abcdefg...");
    }
}
