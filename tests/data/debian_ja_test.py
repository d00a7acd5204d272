#!/usr/bin/env python3
"""Tests of tools/corpus/debian_ja.py, the extraction step of `tsumugi corpus debian-ja`."""
import importlib.util
import shutil
import sys
import unittest
from pathlib import Path

HELPER = Path(sys.argv.pop(1) if len(sys.argv) > 1 else Path(__file__).parents[2] / "tools/corpus/debian_ja.py")
spec = importlib.util.spec_from_file_location("debian_ja", HELPER)
debian_ja = importlib.util.module_from_spec(spec)
spec.loader.exec_module(debian_ja)


class HtmlTest(unittest.TestCase):
    def test_keeps_japanese_paragraphs_and_skips_page_chrome(self):
        html = """<html><head><title>題名</title><script>var 変数 = 1;</script></head><body>
        <div class="navheader">前へ 次へ</div>
        <nav>目次へ</nav>
        <div class="toc"><p>目次の項目</p></div>
        <h1>第一章 はじめに</h1>
        <p>これは最初の段落で、
        改行をまたいでいます。</p>
        <p>English only paragraph.</p>
        <pre>コード の 例</pre>
        <ul><li>項目 &amp; 記号</li><li>二つ目の項目</li></ul>
        <p>カ\u3099ラス</p>
        <div class="navfooter"><p>ホーム</p></div>
        </body></html>"""
        self.assertEqual(debian_ja.html_to_paragraphs(html.encode("utf-8")), [
            "第一章 はじめに", "これは最初の段落で、改行をまたいでいます。", "項目 & 記号", "二つ目の項目", "ガラス"])

    def test_decodes_declared_legacy_encodings(self):
        html = '<meta charset="euc-jp"><p>日本語の文章</p>'.encode("euc-jp")
        self.assertEqual(debian_ja.html_to_paragraphs(html), ["日本語の文章"])


class CleaningTest(unittest.TestCase):
    def test_html_line_breaks_between_japanese_characters_join_without_space(self):
        self.assertEqual(debian_ja.clean_paragraph("日本\n  語 と\nEnglish"), "日本語 と English")

    def test_roff_line_joins_lose_the_space_between_japanese_characters_only(self):
        self.assertEqual(debian_ja.join_roff_line("日本 語 と English words と 漢字"),
                         "日本語と English words と漢字")

    def test_drops_control_characters(self):
        self.assertEqual(debian_ja.clean_paragraph("制御\x07文字\x1b"), "制御文字")


@unittest.skipUnless(shutil.which("groff"), "groff is not installed")
class RoffTest(unittest.TestCase):
    def test_renders_paragraphs_without_header_and_footer(self):
        page = b""".TH TEST 1 2024 "tsumugi" "User Commands"
.SH \xe5\x90\x8d\xe5\x89\x8d
test \\- \xe3\x83\x86\xe3\x82\xb9\xe3\x83\x88\xe7\x94\xa8\xe3\x81\xae\xe3\x82\xb3\xe3\x83\x9e\xe3\x83\xb3\xe3\x83\x89
.SH \xe8\xaa\xac\xe6\x98\x8e
\xe4\xb8\x80\xe8\xa1\x8c\xe7\x9b\xae\xe3\x81\xae\xe6\x96\x87\xe3\x81\xa7\xe3\x81\x99\xe3\x80\x82
\xe4\xba\x8c\xe8\xa1\x8c\xe7\x9b\xae\xe3\x81\xae\xe6\x96\x87\xe3\x81\xa7\xe3\x81\x99\xe3\x80\x82
.PP
English only.
"""
        self.assertEqual(debian_ja.roff_to_paragraphs(page), [
            "名前", "test - テスト用のコマンド", "説明", "一行目の文です。二行目の文です。"])

    def test_skips_alias_pages(self):
        self.assertEqual(debian_ja.roff_to_paragraphs(b".so man1/other.1\n"), [])


class SelectionTest(unittest.TestCase):
    def test_takes_only_the_japanese_documentation(self):
        self.assertEqual(debian_ja.wanted("manpages-ja", "/usr/share/man/ja/man1/ls.1.gz"), "roff")
        self.assertIsNone(debian_ja.wanted("manpages-ja", "/usr/share/doc/manpages-ja/changelog.gz"))
        self.assertEqual(debian_ja.wanted("apache2-doc", "/usr/share/doc/apache2-doc/manual/ja/index.html"), "html")
        self.assertIsNone(debian_ja.wanted("apache2-doc", "/usr/share/doc/apache2-doc/manual/de/index.html"))
        self.assertEqual(debian_ja.wanted("lilypond-doc-html-ja", "/x/web/about.ja.html"), "html")
        self.assertIsNone(debian_ja.wanted("lilypond-doc-html-ja", "/x/web-big-page.ja.html"))
        self.assertEqual(debian_ja.wanted("scilab-doc-ja", "/usr/share/x/jar/scilab_ja_JP_help.jar"), "jar")


if __name__ == "__main__":
    unittest.main()
