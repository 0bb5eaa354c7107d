"""report.html in headless Chromium: what its DOM shows after its scripts ran, and a screenshot."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from connectors.report import embed_json, render_report
from tests.support.browser import dump_dom, screenshot

PEOPLE = [
    {"identity": "iv-1", "name": "Morgan", "role": "interviewer"},
    {"identity": "cand-1", "name": "Riley </script><b>x</b>", "role": "candidate"},
]
IV_RGB, CAND_RGB = (0x34, 0x68, 0xC0), (0xD2, 0x69, 0x1E)  # the page's first two lane colours


def transcript(identity: str, text: str, start: float, end: float) -> dict[str, Any]:
    who = next(p for p in PEOPLE if p["identity"] == identity)
    return {"participant": identity, "speaker": who["role"], "name": who["name"], "text": text,
            "start": start, "end": end, "is_final": True}  # fmt: skip


TRANSCRIPTS = [
    transcript("iv-1", "What is the expected value of a die?", 0.5, 3.0),
    transcript("cand-1", "Three point five. <img src=x onerror=alert(1)>", 4.0, 6.0),
    transcript("iv-1", "Good. Now two dice?", 8.0, 9.5),
    transcript("cand-1", "Seven.", 12.0, 13.0),
]
WINDOWS = [{"seq": 0, "start": 0.5, "end": 6.0}, {"seq": 1, "start": 4.0, "end": 13.0}]


class Dom(HTMLParser):
    """Just enough of the DOM: elements with their attributes, and text by element class."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.texts: dict[str, list[str]] = {}
        self._stack: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.elements.append((tag, a))
        self._stack.append(a.get("class", ""))

    def handle_endtag(self, tag: str) -> None:
        if self._stack:
            self._stack.pop()

    def handle_data(self, data: str) -> None:
        if self._stack and self._stack[-1]:
            self.texts.setdefault(self._stack[-1], []).append(data)

    def all(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [a for t, a in self.elements if t == tag and all(a.get(k) == v for k, v in attrs.items())]


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    html = render_report(room="mock-42", session_id="S1", participants=PEOPLE, transcripts=TRANSCRIPTS,
                         windows=WINDOWS, metrics=None)  # fmt: skip
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(html, encoding="utf-8")
    return path


def test_page_is_self_contained(page: Path) -> None:
    html = page.read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
    assert "<script src" not in html and "<link" not in html


def test_dom_shows_lanes_share_answers_and_windows(page: Path) -> None:
    dom = Dom(dump_dom(page.as_uri()))
    assert dom.all("body", **{"data-rendered": "4"}), "the page's script did not render"
    assert dom.texts["lane-label"] == ["Morgan", "Riley </script><b>x</b>"]  # names as text, not markup
    rects = dom.all("rect")
    assert [r["data-identity"] for r in rects] == ["iv-1", "iv-1", "cand-1", "cand-1"]
    shares = [float(a["data-share"]) for a in dom.all("span") if "data-share" in a]
    assert shares == pytest.approx([100 * 4.0 / 7.0, 100 * 3.0 / 7.0], abs=0.1)  # talk 4.0 s and 3.0 s
    assert len(dom.all("tr", **{"class": "answer"})) == 3  # three speaker changes
    assert len(dom.all("line", **{"class": "window-mark"})) == 2
    assert len(dom.texts["boundary"]) == 1  # window 0 ends before the third utterance
    assert not dom.all("img"), "transcript text was rendered as HTML"


def test_screenshot_shows_both_speakers_lanes(page: Path, tmp_path: Path) -> None:
    image = Image.open(screenshot(page.as_uri(), tmp_path / "report.png")).convert("RGB")
    colours = {rgb for _count, rgb in image.getcolors(maxcolors=1 << 20)}
    assert IV_RGB in colours and CAND_RGB in colours


def test_embedded_json_cannot_close_the_script() -> None:
    assert "</script>" not in embed_json({"t": "</script><script>alert(1)</script>"})
