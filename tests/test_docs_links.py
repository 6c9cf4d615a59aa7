"""Every relative link of the Markdown documentation points at a file that exists, and at an anchor that exists.

Checked files: README.md, docs/*.md, notebooks/README.md and benchmarks/*.md. For each ``[text](path)``,
``[text](path#anchor)``, ``[text](#anchor)``, ``![alt](path)``, reference definition ``[ref]: path`` and
``<a href="...">`` outside fenced code blocks and inline code: the target (relative to the linking file) must
exist, and an anchor into a Markdown file must be one GitHub generates for it (the slug of a heading: lowercase,
punctuation but ``-`` and ``_`` removed, each space a ``-``, inline code backticks and link syntax dropped,
duplicates ``-1``, ``-2``, ...; or an explicit ``<a id="...">`` / ``<a name="...">``). Absolute URLs are not
followed, but one that points into this repository on GitHub should have been a relative link (it would point
at another revision) and is reported too. All problems are reported in one failure, as ``file:line: link``.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]

FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
INLINE_CODE = re.compile(r"(?<!`)(`+)(?!`)((?:(?!\n[ \t]*\n).)+?)(?<!`)\1(?!`)", re.S)
HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
#: ``[text](dest)`` and ``![alt](dest)``; the text may span lines and hold ``[...]`` one level deep.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>\n]*>|[^\s()]*)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]\n]+\]:[ \t]*(<[^>\n]*>|\S+)", re.M)
HTML_HREF = re.compile(r"<a\s[^>]*?href\s*=\s*[\"']([^\"']*)[\"']", re.I)
EXPLICIT_ANCHOR = re.compile(r"<a\s[^>]*?\b(?:id|name)\s*=\s*[\"']?([^\"'\s>]+)", re.I)
URL = re.compile(r"https?://[^\s)<>\"'`\]]+")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
#: GitHub file URLs: github.com/OWNER/REPO/(blob|tree|raw|edit)/... and raw.githubusercontent.com/OWNER/REPO/...
GITHUB_FILE = re.compile(r"^https?://(?:www\.)?github\.com/([^/\s]+)/([^/\s#?]+)/(?:blob|tree|raw|edit)/"
                         r"|^https?://raw\.githubusercontent\.com/([^/\s]+)/([^/\s#?]+)/", re.I)


@dataclass(frozen=True)
class Link:
    """One link found in a Markdown file: where (file, 1-based line) and its destination as written."""

    file: Path
    line: int
    target: str

    def where(self) -> str:
        return f"{self.file.relative_to(ROOT).as_posix() if self.file.is_relative_to(ROOT) else self.file}:" \
               f"{self.line}: {self.target}"


def doc_files(root: Path = ROOT) -> list[Path]:
    """The Markdown files whose links are checked."""
    files = [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "notebooks" / "README.md",
             *sorted((root / "benchmarks").glob("*.md"))]
    return [f for f in files if f.is_file()]


def _blank(text: str) -> str:
    """``text`` with every character but newlines replaced by spaces (keeps offsets and line numbers)."""
    return re.sub(r"[^\n]", " ", text)


def prose_lines(text: str) -> list[str]:
    """The file's lines with fenced code blocks blanked (so line numbers stay)."""
    lines, out = text.split("\n"), []
    fence: str | None = None
    for line in lines:
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            out.append("")
        elif fence is not None:
            closing = re.match(r"^\s*(`{3,}|~{3,})\s*$", line)
            if closing and closing.group(1)[0] == fence[0] and len(closing.group(1)) >= len(fence):
                fence = None
            out.append("")
        else:
            out.append(line)
    return out


def prose(text: str) -> str:
    """The file without fenced code, HTML comments and inline code spans (same length and line breaks)."""
    body = "\n".join(prose_lines(text))
    body = HTML_COMMENT.sub(lambda m: _blank(m.group(0)), body)
    return INLINE_CODE.sub(lambda m: _blank(m.group(0)), body)


def heading_text(markdown: str) -> str:
    """The rendered text of a heading's Markdown: code spans, links, images, emphasis and HTML reduced to text."""
    text = INLINE_CODE.sub(lambda m: m.group(2).strip(), markdown)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"(?<![\w\\])(\*{1,3}|_{1,3})(?=\S)(.+?)(?<=\S)\1(?![\w])", r"\2", text)
    return text.strip()


def github_slug(text: str) -> str:
    """GitHub's anchor for a heading text (github-slugger): lowercase, drop what is not a letter, digit, ``_``,
    ``-`` or space, then each space becomes ``-``."""
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub generates for a Markdown file: heading slugs (duplicates -1, -2, ...) and explicit ones."""
    lines = prose_lines(path.read_text(encoding="utf-8"))
    headings: list[str] = []
    for i, line in enumerate(lines):
        atx = ATX_HEADING.match(line)
        if atx:
            headings.append(atx.group(2) or "")
            continue
        previous = lines[i - 1] if i else ""
        if i and SETEXT_UNDERLINE.match(line) and previous.strip() and not ATX_HEADING.match(previous) \
                and not re.match(r"^\s*([-*+]|\d+[.)]|>|\|)", previous) and not SETEXT_UNDERLINE.match(previous):
            headings.append(previous.strip())
    found: set[str] = set()
    counts: dict[str, int] = {}
    for heading in headings:
        original = slug = github_slug(heading_text(heading))
        while slug in found:
            counts[original] = counts.get(original, 0) + 1
            slug = f"{original}-{counts[original]}"
        found.add(slug)
    found.update(EXPLICIT_ANCHOR.findall(prose(path.read_text(encoding="utf-8"))))
    return found


def links(path: Path) -> list[Link]:
    """Every link destination of a Markdown file outside code, with its line."""
    body = prose(path.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    for pattern in (INLINE_LINK, REFERENCE_DEF, HTML_HREF):
        for match in pattern.finditer(body):
            target = match.group(1).strip()
            if target.startswith("<") and target.endswith(">"):
                target = target[1:-1]
            found.append((match.start(), target))
    return [Link(path, body.count("\n", 0, offset) + 1, target) for offset, target in sorted(found)]


def own_repositories(root: Path = ROOT) -> set[str]:
    """Lower-case names (``repo`` and ``owner/repo``) under which this repository may be published on GitHub."""
    names = set()
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    names.add(str(project["name"]).lower())
    candidates = list((project.get("urls") or {}).values())
    try:
        remotes = subprocess.run(["git", "-C", str(root), "remote", "-v"], capture_output=True, text=True,
                                 timeout=10, check=False).stdout
        candidates += remotes.split()
    except (OSError, subprocess.SubprocessError):
        pass
    for url in candidates:
        match = re.search(r"github\.com[:/]([^/\s]+)/([^/\s]+?)(?:\.git)?/?$", str(url))
        if match:
            names.update({match.group(2).lower(), f"{match.group(1)}/{match.group(2)}".lower()})
    return names


def absolute_links_into_repo(path: Path, own: set[str]) -> list[Link]:
    """Absolute GitHub file URLs (outside code) that point into this repository."""
    body = prose(path.read_text(encoding="utf-8"))
    problems = []
    for match in URL.finditer(body):
        github = GITHUB_FILE.match(match.group(0))
        if not github:
            continue
        owner, repo = (github.group(1), github.group(2)) if github.group(1) else (github.group(3), github.group(4))
        repo = repo.removesuffix(".git").lower()
        if repo in own or f"{owner}/{repo}".lower() in own:
            problems.append(Link(path, body.count("\n", 0, match.start()) + 1, match.group(0)))
    return problems


def check_link(link: Link, anchor_cache: dict[Path, set[str]]) -> str | None:
    """Why the link is broken, or None when it is fine (absolute URLs are not followed)."""
    target = link.target
    if not target or SCHEME.match(target) or target.startswith("//"):
        return None if target else "empty link"
    path_part, _, fragment = target.partition("#")
    path_part = unquote(path_part.split("?", 1)[0])
    if path_part.startswith("/"):
        resolved = (ROOT / path_part.lstrip("/")).resolve()
    else:
        resolved = (link.file.parent / path_part).resolve() if path_part else link.file
    if path_part and not resolved.exists():
        return f"no such file {resolved.relative_to(ROOT) if resolved.is_relative_to(ROOT) else resolved}"
    if not fragment or resolved.suffix.lower() != ".md":
        if fragment and resolved.is_file() and not re.fullmatch(r"L\d+(-L\d+)?", fragment) \
                and resolved.suffix.lower() not in {".ipynb", ".html"}:
            return f"anchor #{fragment} into a file that is not Markdown"
        return None
    if resolved not in anchor_cache:
        anchor_cache[resolved] = anchors(resolved)
    if unquote(fragment) not in anchor_cache[resolved]:
        return f"no anchor #{fragment} in {resolved.relative_to(ROOT) if resolved.is_relative_to(ROOT) else resolved}"
    return None


def broken_links(files: list[Path], own: set[str]) -> list[str]:
    """``file:line: link -> why`` for every broken relative link and every absolute link into the repository."""
    cache: dict[Path, set[str]] = {}
    problems = []
    for path in files:
        for link in links(path):
            why = check_link(link, cache)
            if why:
                problems.append(f"{link.where()} -> {why}")
        problems.extend(f"{link.where()} -> an absolute link into this repository: make it relative"
                        for link in absolute_links_into_repo(path, own))
    return problems


# --------------------------------------------------------------------------------------------------- tests
def test_every_relative_link_and_anchor_resolves() -> None:
    files = doc_files()
    assert ROOT / "README.md" in files and len(files) > 5
    problems = broken_links(files, own_repositories())
    if problems:
        pytest.fail(f"{len(problems)} broken documentation link(s):\n" + "\n".join(problems), pytrace=False)


@pytest.mark.parametrize(("heading", "slug"), [
    ("Validation: 4xx naming the field, never 5xx", "validation-4xx-naming-the-field-never-5xx"),
    ("Multimodal RSI model (`MultimodalRSI`)", "multimodal-rsi-model-multimodalrsi"),
    ("pyRadPlan: the downstream optimizer", "pyradplan-the-downstream-optimizer"),
    ("objectives.json", "objectivesjson"),
    ("`radiogenomics predict`", "radiogenomics-predict"),
    ("Dependencies, and the pins to know about", "dependencies-and-the-pins-to-know-about"),
    ("snake_case and kebab-case -- both kept", "snake_case-and-kebab-case----both-kept"),
    ("A **bold** [link](x.md) heading", "a-bold-link-heading"),
    ("Die Größe & the émigré", "die-größe--the-émigré"),
])
def test_github_slug(heading: str, slug: str) -> None:
    assert github_slug(heading_text(heading)) == slug


def test_the_checker_finds_what_is_broken(tmp_path: Path) -> None:
    """Each kind of problem is found with its line; code blocks, inline code and good links are not reported."""
    (tmp_path / "other.md").write_text("# Other\n\n## Same\n\n## Same\n\nSetext heading\n--------------\n\n"
                                       '<a id="explicit-anchor"></a>\n')
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Title\n\n"
        "[ok](other.md) [ok](other.md#same-1) [ok](other.md#setext-heading) [ok](#title) "
        "[ok](other.md#explicit-anchor)\n"                          # line 3
        "[missing file](nowhere.md)\n"                              # line 4
        "[missing anchor](other.md#same-2) and [self](#nothing)\n"  # line 5
        "```markdown\n[in a fence](nowhere.md)\n```\n"               # lines 6-8
        "`[inline code](nowhere.md)` and [a link\nover two lines](other.md#no)\n"  # lines 9-10
        "[absolute](https://github.com/someone/radiogenomics/blob/main/docs/cli.md)"  # line 11
        " [elsewhere](https://github.com/e0404/pyRadPlan/blob/main/README.md)\n")
    problems = broken_links([doc], {"radiogenomics"})
    shown = [p.split(f"{tmp_path}/", 1)[-1] for p in problems]
    assert [p.split(" -> ")[0] for p in shown] == [
        "doc.md:4: nowhere.md", "doc.md:5: other.md#same-2", "doc.md:5: #nothing", "doc.md:9: other.md#no",
        "doc.md:11: https://github.com/someone/radiogenomics/blob/main/docs/cli.md"], problems
