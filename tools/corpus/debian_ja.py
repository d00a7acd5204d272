#!/usr/bin/env python3
"""Extracts clean Japanese paragraphs from downloaded Debian documentation packages.

Called by `tsumugi corpus debian-ja`, which downloads the .deb files, then removes duplicate
paragraphs across packages and writes the final corpus. Standard library only.

    debian_ja.py --debs DIR --out DIR [--jobs N] PACKAGE...

For each PACKAGE it reads DIR/<package>_*.deb (without installing or unpacking it to disk) and
writes OUT/<package>.jsonl: one line per source file, {"text": paragraphs joined by "\\n",
"source": "<package>/<path inside the package>"}. A package whose .jsonl is newer than its .deb is
skipped, so re-running reuses earlier work.

Cleaning (docs/data.md): roff is rendered by groff into one filled line per paragraph; HTML skips
head, script, style, nav, header, footer, aside, pre and navigation/table-of-contents classes;
paragraphs are Unicode NFC, without control characters, and kept only when they hold kana or kanji.
"""
import argparse
import glob
import gzip
import html.parser
import io
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tarfile
import unicodedata
import zipfile

# Japanese letters: CJK punctuation, kana, CJK ideographs (incl. extension A), fullwidth forms.
CJK = "\u3000-\u303f\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
KANA_OR_KANJI = re.compile("[\u3041-\u3096\u30a1-\u30fa\u30fc\u3400-\u4dbf\u4e00-\u9fff]")
SINGLE_SPACE_BETWEEN_CJK = re.compile(f"(?<=[{CJK}]) (?=[{CJK}])")
NEWLINE_BETWEEN_CJK = re.compile(f"(?<=[{CJK}])[ \t\r]*\n[ \t\r\n]*(?=[{CJK}])")
WHITESPACE_RUN = re.compile(r"\s+")

GROFF = ["groff", "-k", "-Kutf-8", "-t", "-man", "-Tutf8", "-rLL=4000n", "-rHY=0", "-dAD=l",
         "-P-cbou"]

SKIP_TAGS = {"head", "script", "style", "nav", "header", "footer", "aside", "pre", "noscript",
             "template", "svg", "button", "select", "textarea"}
BLOCK_TAGS = {"p", "div", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "li", "ul", "ol", "dl",
              "dt", "dd", "table", "tr", "td", "th", "caption", "blockquote", "section",
              "article", "main", "figure", "figcaption", "title", "body", "html", "form",
              "fieldset", "legend", "address", "center", "details", "summary", "tbody", "thead"}
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
             "track", "wbr", "param"}
# Class or id tokens that mark navigation, tables of contents, and page chrome.
SKIP_CLASS = re.compile(
    r"^(nav.*|.*toc.*|toctree.*|menu|related|sphinxsidebar.*|headerlink|footer.*|header|"
    r"breadcrumbs?|search.*|.*lang.*|permalink|sr-only|prev-next.*|sidebar.*|leftside|rightside|"
    r"dropdowns|debug|contents-treeview|index-label|up|top)$", re.IGNORECASE)


def clean_paragraph(text):
    """NFC, no control characters, single spaces; a line break between two Japanese characters
    joins them without a space (HTML source lines wrap inside sentences)."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(c for c in text if c in "\n\t " or unicodedata.category(c)[0] != "C")
    text = NEWLINE_BETWEEN_CJK.sub("", text)
    return WHITESPACE_RUN.sub(" ", text).strip()


def join_roff_line(text):
    """groff joins source lines with one space: between two Japanese characters it is removed."""
    return SINGLE_SPACE_BETWEEN_CJK.sub("", clean_paragraph(text))


def keep(paragraphs):
    return [p for p in paragraphs if KANA_OR_KANJI.search(p) and "\ufffd" not in p]


def roff_to_paragraphs(data):
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    body = [ln for ln in data.split(b"\n") if ln.strip() and not ln.startswith(b'.\\"')]
    if len(body) <= 2 and body and body[0].startswith(b".so "):
        return []  # an alias of another page
    rendered = subprocess.run(GROFF, input=data, capture_output=True).stdout.decode(
        "utf-8", "replace")
    lines = [ln.strip() for ln in rendered.split("\n")]
    lines = [ln for ln in lines if ln]
    lines = lines[1:-1]  # the page header and footer
    return keep(join_roff_line(ln) for ln in lines)


class _TextExtractor(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.paragraphs = []
        self.current = []
        self.skip_tag = None
        self.skip_depth = 0

    def _flush(self):
        if self.current:
            self.paragraphs.append(clean_paragraph("".join(self.current)))
            self.current = []

    def _skipped(self, tag, attrs):
        if tag in SKIP_TAGS:
            return True
        for name, value in attrs:
            if name in ("class", "id", "role") and value:
                if any(SKIP_CLASS.match(token) for token in value.split()):
                    return True
        return False

    def handle_starttag(self, tag, attrs):
        if self.skip_tag is not None:
            if tag == self.skip_tag:
                self.skip_depth += 1
            return
        if tag not in VOID_TAGS and self._skipped(tag, attrs):
            self._flush()
            self.skip_tag, self.skip_depth = tag, 1
            return
        if tag in BLOCK_TAGS:
            self._flush()

    def handle_endtag(self, tag):
        if self.skip_tag is not None:
            if tag == self.skip_tag:
                self.skip_depth -= 1
                if self.skip_depth == 0:
                    self.skip_tag = None
            return
        if tag in BLOCK_TAGS:
            self._flush()

    def handle_data(self, data):
        if self.skip_tag is None:
            self.current.append(data)

    def close(self):
        super().close()
        self._flush()


def decode_html(data):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    match = re.search(rb"charset=[\"']?([A-Za-z0-9_-]+)", data[:4096])
    for encoding in ([match.group(1).decode()] if match else []) + ["euc-jp", "shift_jis"]:
        try:
            return data.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("utf-8", "replace")


def html_to_paragraphs(data):
    parser = _TextExtractor()
    parser.feed(decode_html(data))
    parser.close()
    return keep(parser.paragraphs)


def wanted(package, path):
    """Which files of a package hold its Japanese documentation, and how to read them."""
    if package.startswith("manpages-ja"):
        return "roff" if "/man/ja/" in path and path.endswith(".gz") else None
    if path.endswith(".jar") and "_ja_" in path:
        return "jar"
    if not path.endswith(".html") or "-big-page" in path:
        return None
    parts = path.split("/")
    if package.endswith("-ja") or "ja" in parts or path.endswith(".ja.html"):
        return "html"
    return None


def extract_member(task):
    """One file: (source, kind, bytes) -> list of (source, text)."""
    source, kind, data = task
    if kind == "roff":
        paragraphs = roff_to_paragraphs(data)
    elif kind == "html":
        paragraphs = html_to_paragraphs(data)
    else:
        return extract_jar(source, data)
    return [(source, "\n".join(paragraphs))] if paragraphs else []


def extract_jar(source, data):
    documents = []
    with zipfile.ZipFile(io.BytesIO(data)) as jar:
        for name in sorted(jar.namelist()):
            if name.endswith(".html"):
                paragraphs = html_to_paragraphs(jar.read(name))
                if paragraphs:
                    documents.append((f"{source}!{name}", "\n".join(paragraphs)))
    return documents


def package_tasks(package, deb):
    """Yields (source, kind, bytes) for each wanted file inside the .deb, read as a stream."""
    tar_stream = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE)
    with tarfile.open(fileobj=tar_stream.stdout, mode="r|") as archive:
        for member in archive:
            path = member.name.lstrip("./")
            kind = wanted(package, "/" + path)
            if member.isfile() and kind:
                yield f"{package}/{path}", kind, archive.extractfile(member).read()
    if tar_stream.wait() != 0:
        raise RuntimeError(f"dpkg-deb --fsys-tarfile {deb} failed")


def extract_package(package, deb, out_path, pool):
    documents = []
    for result in pool.imap_unordered(extract_member, package_tasks(package, deb), chunksize=8):
        documents.extend(result)
    documents.sort()
    temporary = out_path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as out:
        for source, text in documents:
            out.write(json.dumps({"text": text, "source": source}, ensure_ascii=False) + "\n")
    os.replace(temporary, out_path)
    return len(documents)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--debs", required=True, help="folder with the downloaded .deb files")
    parser.add_argument("--out", required=True, help="folder for <package>.jsonl")
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    parser.add_argument("packages", nargs="+")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with multiprocessing.Pool(args.jobs) as pool:
        for package in args.packages:
            debs = sorted(glob.glob(os.path.join(args.debs, glob.escape(package) + "_*.deb")))
            if not debs:
                sys.exit(f"debian_ja.py: no .deb for {package} in {args.debs}")
            out_path = os.path.join(args.out, package + ".jsonl")
            if os.path.exists(out_path) and os.path.getmtime(out_path) >= os.path.getmtime(debs[-1]):
                print(f"{package}: reusing {out_path}", flush=True)
                continue
            count = extract_package(package, debs[-1], out_path, pool)
            print(f"{package}: {count} documents", flush=True)


if __name__ == "__main__":
    main()
