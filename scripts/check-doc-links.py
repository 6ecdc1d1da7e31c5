#!/usr/bin/env python3
"""Checks the relative links of README.md and docs/*.md: every target file
exists and every #anchor names a heading of its page (GitHub's slugs).

The reference lives on many pages that link to each other; a page renamed or
a heading reworded breaks links silently, so run this after editing them:
    python3 scripts/check-doc-links.py
"""
import glob
import os
import re
import sys

os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def slug(heading):
    # GitHub: lower case, punctuation dropped (but - and _), spaces to -.
    heading = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return heading.replace(" ", "-")


def anchors(path):
    found, in_code = set(), False
    for line in open(path, encoding="utf-8"):
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and re.match(r"#+ ", line):
            found.add(slug(line.lstrip("#")))
    return found


bad = 0
for page in ["README.md"] + sorted(glob.glob("docs/*.md")):
    text = re.sub(r"```.*?```", "", open(page, encoding="utf-8").read(), flags=re.S)
    for match in re.finditer(r"\]\(([^)\s]+)\)", text):
        target = match.group(1)
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not ours to check
        path, _, fragment = target.partition("#")
        full = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not os.path.exists(full):
            print(f"{page}: {target}: no such file")
            bad += 1
        elif fragment and full.endswith(".md") and fragment not in anchors(full):
            print(f"{page}: {target}: no such heading")
            bad += 1
print(f"doc links: {bad} broken")
sys.exit(1 if bad else 0)
