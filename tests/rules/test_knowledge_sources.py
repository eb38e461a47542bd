"""Citations that resolve: every knowledge source points at one document over https, never at a search page;
unverified sources say so; every source id the knowledge and the rules cite exists."""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
import yaml

from cds_service.errors import ConfigurationError
from cds_service.knowledge import DATA_DIR, load_knowledge

REPO = Path(__file__).resolve().parents[2]
K = load_knowledge()

# query keys that make a URL a search, not a document (PubMed ?term=, DailyMed ?query=, site searches)
SEARCH_KEYS = {"term", "terms", "query", "q", "qs", "search", "searchdb", "searchterm", "search_api_fulltext",
               "keyword", "keywords", "text", "find", "s"}
# path segments of search and result-list pages
SEARCH_PATH = re.compile(r"(^|/)(e?search|results?|find|query)(\.(cfm|aspx?|php|html?|jsp))?(/|$)", re.IGNORECASE)
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
PROJECT_HOST = urlsplit(K.topic_system).netloc


def citation_problems(url: str) -> list[str]:
    """Why ``url`` is not a link to one document (empty when it is)."""
    parts = urlsplit(url)
    host = parts.netloc.lower()
    problems = []
    if parts.scheme != "https":
        problems.append("not https")
    if not host:
        problems.append("no host")
    if parts.path in ("", "/"):
        problems.append("a site's front page, not a document")
    query = parse_qsl(parts.query, keep_blank_values=True)
    keys = {k.lower() for k, _ in query}
    if keys & SEARCH_KEYS:
        problems.append(f"a search (query keys {sorted(keys & SEARCH_KEYS)})")
    if SEARCH_PATH.search(parts.path):
        problems.append("a search or result-list page")
    if host == "pubmed.ncbi.nlm.nih.gov" and not re.fullmatch(r"/\d+/?", parts.path):
        problems.append("a PubMed URL that is not one record (/<PMID>/)")
    if host in {"doi.org", "dx.doi.org"} and not re.fullmatch(r"/10\.\d{4,9}/\S+", unquote(parts.path)):
        problems.append("a doi.org URL without a DOI")
    if host.endswith("dailymed.nlm.nih.gov") and not UUID.match(dict(query).get("setid", "")):
        problems.append("a DailyMed URL without a label setid")
    return problems


@pytest.mark.parametrize("url", [
    "https://pubmed.ncbi.nlm.nih.gov/?term=refractory+hypomagnesemia+management",
    "https://pubmed.ncbi.nlm.nih.gov/?term=Cockcroft+Gault+prediction+of+creatinine+clearance+from+serum+creatinine",
    "https://dailymed.nlm.nih.gov/dailymed/search.cfm?query=magnesium+sulfate+injection",
    "https://dailymed.nlm.nih.gov/dailymed/search.cfm?labeltype=all&query=magnesium",
    "https://www.ncbi.nlm.nih.gov/pubmed?term=hypomagnesemia",
    "https://www.google.com/search?q=hypomagnesemia",
    "https://example.org/site-search?keywords=magnesium",
    "https://pubmed.ncbi.nlm.nih.gov/",
    "https://www.fda.gov/",
    "https://doi.org/",
    "http://pubmed.ncbi.nlm.nih.gov/20081299/",
    "pubmed.ncbi.nlm.nih.gov/20081299/",
])
def test_search_pages_and_plain_http_are_refused(url):
    assert citation_problems(url), url


@pytest.mark.parametrize("url", [
    "https://pubmed.ncbi.nlm.nih.gov/20081299/",
    "https://doi.org/10.1159/000180580",
    "https://dailymed.nlm.nih.gov/dailymed/drugInfo.cfm?setid=e921a46b-9a5b-4163-9c88-224247541f14",
    "https://www.fda.gov/drugs/drug-safety-and-availability/fda-drug-safety-communication-low-magnesium-levels-can-be-associated-long-term-use-proton-pump",
])
def test_one_document_urls_pass(url):
    assert citation_problems(url) == []


def test_every_source_points_at_one_document():
    problems = {key: citation_problems(src.url) for key, src in K.model.sources.items()}
    assert {k: v for k, v in problems.items() if v} == {}


def test_unverified_sources_say_so_where_the_card_shows_it():
    """The citation is the card's footer: an unverified source says "unverified" there; a verified one does not."""
    for key, src in K.model.sources.items():
        said = "unverified" in src.citation.lower()
        assert said == (not src.verified), f"{key}: verified={src.verified} but citation {src.citation!r}"


def _anchors(text: str) -> set[str]:
    explicit = set(re.findall(r'<a id="([^"]+)"', text))
    headings = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"^#+\s+(.+)$", text, re.MULTILINE)}
    return explicit | headings


def test_project_pages_exist_with_their_anchor():
    """URLs on the project's canonical host are pages of this repository: the file and the anchor exist."""
    cited = [(key, urlsplit(src.url)) for key, src in K.model.sources.items() if urlsplit(src.url).netloc == PROJECT_HOST]
    assert cited, "local-policy should cite this repository's policy page"
    for key, parts in cited:
        path = REPO / parts.path.lstrip("/")
        assert parts.path.startswith("/docs/") and path.is_file(), f"{key}: {parts.path} is not a file in docs/"
        assert parts.fragment and parts.fragment in _anchors(path.read_text(encoding="utf-8")), \
            f"{key}: no anchor #{parts.fragment} in {parts.path}"


def test_every_source_id_the_rules_cite_exists():
    """Rules and cards name sources by id in code; a typo would only show when that card fires."""
    cited = set()
    for path in (REPO / "cds_service").rglob("*.py"):
        cited |= set(re.findall(r'\bsource="([a-z0-9-]+)"', path.read_text(encoding="utf-8")))
    assert cited, "no source ids found in the rules: the pattern no longer matches the code"
    assert cited - set(K.model.sources) == set()


def test_knowledge_citing_an_unknown_source_is_refused(tmp_path):
    """The model check stays: a threshold, policy or drug class citing a missing source stops the load."""
    for name in ("knowledge.yaml", "drugs.yaml", "rxnorm-clinical-drugs.csv"):
        shutil.copy(DATA_DIR / name, tmp_path / name)
    load_knowledge(tmp_path)  # the unmodified copy loads
    data = yaml.safe_load((tmp_path / "knowledge.yaml").read_text(encoding="utf-8"))
    del data["sources"]["fda-ppi-2011"]  # cited by ppi_long_term_days and by the ppi class
    (tmp_path / "knowledge.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    with pytest.raises(ConfigurationError) as exc:
        load_knowledge(tmp_path)
    assert "unknown source 'fda-ppi-2011'" in str(exc.value)
    assert "thresholds.ppi_long_term_days" in str(exc.value) and "classes.ppi" in str(exc.value)
