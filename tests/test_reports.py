"""`evalharness report`: the static site, opened in a real headless Chromium.

The stores are synthetic (tests/report_stores.py writes every task's real stored shapes
through RunStore), except one built by a real `evalharness run` of the tiny test model.
Screenshots of the main pages are saved under the test's tmp_path and their paths printed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from browser import chromium, open_page, screenshot
from report_stores import ALL_TASKS, UNKNOWN_TASK, XSS, build_store

from evalharness.cli import report
from evalharness.cli.parser import add_command
from evalharness.cli.report import cmd_report
from evalharness.errors import InputError
from evalharness.reports import charts
from evalharness.reports.data import js_json
from evalharness.reports.names import Names
from evalharness.reports.staging import MARKER
from evalharness.store.run_store import RunStore

SAMPLES_PER_TASK = 30
TASKS = (*ALL_TASKS, UNKNOWN_TASK)


def report_main(argv: Sequence[str]) -> int:
    """`evalharness report ...` through the real CLI once it is wired, else the same path."""
    from evalharness import cli

    if "report" in getattr(cli, "COMMANDS", {}):
        return cli.main(list(argv))
    parser = argparse.ArgumentParser(prog="evalharness")
    add_command(parser.add_subparsers(dest="command"), report.__doc__, report.add_arguments)
    try:
        return cmd_report(parser.parse_args(list(argv)))
    except InputError as exc:
        print(f"evalharness: error: {exc}", file=sys.stderr)
        return exc.exit_code


class Site:
    def __init__(self, root: Path, store: Path, run_ids: list[str], summary: dict) -> None:
        self.root, self.store, self.run_ids, self.summary = root, store, run_ids, summary

    def samples(self, run_index: int, task: str) -> Path:
        return self.root / Names.samples_page(self.run_ids[run_index], task)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """Three runs over every task plus one unregistered task, with XSS payloads in run 0."""
    base = tmp_path_factory.mktemp("report")
    store = base / "store.sqlite"
    run_ids, _ = build_store(
        store, n_runs=3, samples_per_task=SAMPLES_PER_TASK, tasks=TASKS, xss=True
    )
    out = base / "site"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = report_main(["report", "--store", str(store), "--out", str(out), "--json"])
    assert code == 0
    return Site(out, store, run_ids, json.loads(buffer.getvalue()))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def _open(browser: Any, path: Path) -> tuple[Any, Any]:
    """Open a page; pages that load data lazily are waited on by the tests themselves."""
    return open_page(browser, path)


# -- charts and escaping ------------------------------------------------------------------
def test_charts_are_wellformed_svg_with_escaped_text() -> None:
    hostile = 'run <b>&"quotes"</b>\x07' + XSS
    bars = charts.bar_chart(
        ["cat & dog", "<math>"],
        [
            charts.Series(hostile, [1.5, None], [(1.0, 2.0), None]),
            charts.Series("second", [-0.5, 3.0]),
        ],
        title="Scores <per> category & more",
        y_label="rating",
    )
    lines = charts.line_chart(
        ["round_1", "round_2", "round_3"],
        [charts.Series(hostile, [0.2, None, 0.6], [(0.1, 0.3), None, (0.5, 0.7)])],
        title="per round",
        domain=(0.0, 1.0),
    )
    ns = "{http://www.w3.org/2000/svg}"
    for svg in (bars, lines):
        root = ET.fromstring(svg)  # well-formed XML, or this raises
        assert root.tag == f"{ns}svg"
        assert not root.findall(f".//{ns}script") and not root.findall(".//script")
        assert "<b>" not in svg and "<img" not in svg and "<script>" not in svg
        texts = " ".join(t for t in root.itertext())
        assert "\x07" not in svg
        assert hostile.replace("\x07", "")[:20] in texts  # the text survives, as text
    bar_root = ET.fromstring(bars)
    assert "cat & dog" in "".join(bar_root.itertext())
    assert len(bar_root.findall(f".//{ns}rect")) >= 3  # 3 bars (one value missing) + legend
    assert any("M" in p.get("d", "") for p in bar_root.findall(f".//{ns}path"))  # a whisker
    line_root = ET.fromstring(lines)
    assert len(line_root.findall(f".//{ns}circle")) == 2  # the missing point is a gap
    assert ET.fromstring(charts.bar_chart([], [], title="empty")) is not None


def test_nice_ticks_cover_the_range() -> None:
    for low, high in ((0.0, 1.0), (0.0, 7.3), (-2.5, 13.0), (0.0, 98.3), (5.0, 5.0)):
        ticks = charts.nice_ticks(low, high)
        assert ticks[0] <= low and ticks[-1] >= high
        steps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:], strict=False)}
        assert len(steps) == 1


def test_js_json_cannot_close_a_script_or_break_the_parser() -> None:
    value = {"t": "</script><!-- & \u2028 \u2029 <img>", "n": float("nan"), "k": [float("inf")]}
    text = js_json(value)
    for raw in ("<", ">", "&", "\u2028", "\u2029", "NaN", "Infinity"):
        assert raw not in text
    assert json.loads(text) == {"t": value["t"], "n": None, "k": [None]}


_VERDICT_ORDER_SCRIPT = """
import json
from evalharness.reports.collect import SampleRecord
from evalharness.reports.data import sample_index
from evalharness.tasks.views import SampleView

labels = ["tie", "winner: a", "winner: b", "rating 1", "rating 7", "reward 0.5"]
views = [SampleView(["q"], {"a": "x"}, verdicts=[{"verdict": v} for v in labels])]
records = [SampleRecord(str(i), i, view, None) for i, view in enumerate(views)]
print(json.dumps(sample_index(records)[0]["verdicts"]))
"""


def test_sample_index_verdicts_do_not_depend_on_the_string_hash() -> None:
    """One sample's several verdict labels are numbered in sorted order in every process, so
    a report built twice from one store is byte for byte the same."""
    import os
    import subprocess

    orders = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", _VERDICT_ORDER_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        orders.add(tuple(json.loads(out)))
    assert orders == {
        ("rating 1", "rating 7", "reward 0.5", "tie", "winner: a", "winner: b"),
    }


# -- CLI ------------------------------------------------------------------------------------
def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = report_main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("evalharness: error: ") and err.count("\n") == 1, err
    return err


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store.sqlite"
    out = str(tmp_path / "site")
    assert "no run store" in _error(capsys, ["report", "--store", str(store), "--out", out])
    RunStore(store).close()
    assert "no runs stored" in _error(capsys, ["report", "--store", str(store), "--out", out])
    build_store(store, n_runs=1, samples_per_task=2, tasks=("driftcaps",))
    err = _error(capsys, ["report", "--store", str(store), "--runs", "nope", "--out", out])
    assert "no run 'nope'" in err
    a_file = tmp_path / "file.html"
    a_file.write_text("x")
    assert "is a file" in _error(capsys, ["report", "--store", str(store), "--out", str(a_file)])
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    err = _error(capsys, ["report", "--store", str(store), "--out", str(foreign)])
    assert "non-empty directory" in err and (foreign / "notes.txt").exists()
    not_a_store = tmp_path / "junk.sqlite"
    not_a_store.write_bytes(b"not sqlite at all" * 100)
    assert "not a run store" in _error(
        capsys, ["report", "--store", str(not_a_store), "--out", out]
    )


def test_runs_selection_and_rebuild(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store.sqlite"
    run_ids, _ = build_store(store, n_runs=2, samples_per_task=3, tasks=("driftcaps",))
    out = tmp_path / "site"
    argv = ["report", "--store", str(store), "--out", str(out), "--json"]
    assert report_main([*argv, "--runs", f"{run_ids[0][:6]},latest"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["runs"] == 2 and summary["samples"] == 6 and summary["out"] == str(out)
    assert (out / MARKER).exists()
    (out / "stale.html").write_text("old")
    assert report_main([*argv, "--runs", "latest"]) == 0  # replaces its own earlier report
    summary = json.loads(capsys.readouterr().out)
    assert summary["runs"] == 1 and summary["samples"] == 3
    assert not (out / "stale.html").exists()
    assert not (out / Names.run_page(run_ids[0])).exists()
    assert (out / Names.run_page(run_ids[1])).exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_unfinished_and_unscored_runs_still_report(tmp_path: Path) -> None:
    store_path = tmp_path / "store.sqlite"
    run_ids, _ = build_store(store_path, n_runs=1, samples_per_task=4, tasks=("mt_bench",))
    store = RunStore(store_path)
    try:  # a run killed after loading its data: samples, no responses, scores or metrics
        store.begin_run("interrupted1", "hf:/models/x", None, {}, {})
        store.put_task("interrupted1", "mt_bench", 2, {"settings": {}})
        store.put_samples("interrupted1", "mt_bench", [("1", {"turns": ["hi"]}), ("2", {})])
        store.finish_run("interrupted1", status="interrupted")
    finally:
        store.close()
    out = tmp_path / "site"
    assert report_main(["report", "--store", str(store_path), "--out", str(out)]) == 0
    index = (out / "index.html").read_text(encoding="utf-8")
    assert "interrupted1" in index and "status-interrupted" in index
    task_page = (out / Names.task_page("mt_bench")).read_text(encoding="utf-8")
    assert "no metrics for this task yet" in task_page
    chunk = (out / Names.sample_dir("interrupted1", "mt_bench") / "p00000.js").read_text()
    assert '"prompt":["hi"]' in chunk and '"responses":[]' in chunk
    compared = [p.name for p in (out / "data").rglob("*.js") if "compare" in p.parts]
    assert not any("interrupted1" in name for name in compared)  # nothing scored to compare


def test_interval_methods_are_shown_where_recorded(tmp_path: Path) -> None:
    store_path = tmp_path / "store.sqlite"
    run_ids, _ = build_store(store_path, n_runs=2, samples_per_task=4, tasks=("driftcaps",))
    store = RunStore(store_path)
    try:  # the first run records its methods, as runs do now; the second is an older run
        (entry,) = store.get_tasks(run_ids[0])
        metrics = entry["metrics"]
        metrics["ci_method"] = dict.fromkeys(metrics["ci"], "wilson")
        store.put_task_metrics(run_ids[0], "driftcaps", metrics, entry["failures"])
    finally:
        store.close()
    out = tmp_path / "site"
    assert report_main(["report", "--store", str(store_path), "--out", str(out)]) == 0
    page = (out / Names.task_page("driftcaps")).read_text(encoding="utf-8")
    tooltip = 'title="95% CI, wilson: Wilson score interval of a proportion"'
    assert "Interval methods: wilson: Wilson score interval of a proportion." in page
    # One tooltip per interval of the recording run; the older run's intervals have none.
    recorded = len(metrics["ci"])
    assert page.count(tooltip) == recorded
    assert page.count('<span class="ci"') > recorded


def test_pair_cap_keeps_the_newest_runs() -> None:
    from evalharness.reports.collect import RunInfo, TaskResult
    from evalharness.reports.comparisons import plan_pairs

    def run(k: int) -> RunInfo:
        info = RunInfo(f"r{k}", float(k), float(k), "complete", "m", None, {}, {})
        info.tasks = {"t": TaskResult("t", 1, 0, {}, {}, {}, {}, [], True, True)}
        return info

    runs = [run(k) for k in range(5)]
    plan = plan_pairs(runs, limit=4)
    assert plan.possible == 10 and plan.capped
    assert [(a.run_id, b.run_id) for a, b in plan.pairs] == [
        ("r3", "r4"),
        ("r2", "r4"),
        ("r1", "r4"),
        ("r0", "r4"),
    ]
    assert not plan_pairs(runs).capped


def test_file_names_are_safe_and_distinct() -> None:
    from evalharness.reports.names import slug

    assert slug("fa6e9aa7e938") == "fa6e9aa7e938" and slug("mt_bench") == "mt_bench"
    names = {slug(n) for n in ("a/b", "a_b", "a b", "../a", "..", "", XSS)}
    assert len(names) == 7
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", n) for n in names)


# -- the written site -----------------------------------------------------------------------
def test_site_files(site: Site) -> None:
    summary = site.summary
    assert summary["runs"] == 3 and summary["samples"] == 3 * len(TASKS) * SAMPLES_PER_TASK
    pages = sorted(p.name for p in site.root.glob("*.html"))
    assert summary["pages"] == len(pages) == 2 + 3 + len(TASKS) + 3 * len(TASKS)
    for task in TASKS:
        assert Names.task_page(task) in pages
    chunks = list((site.root / "data").rglob("*.js"))
    assert chunks
    for chunk in chunks:
        text = chunk.read_text(encoding="utf-8")
        assert text.startswith("window.EH.receive(")
        assert "<" not in text and ">" not in text and "\u2028" not in text
    for page in site.root.glob("*.html"):
        html = page.read_text(encoding="utf-8")
        assert "<script>window.__pwned" not in html and "<img src=x" not in html, page.name
        assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert "https://" not in html
    index = (site.root / "index.html").read_text(encoding="utf-8")
    assert "rules:&lt;script&gt;window.__pwned=1&lt;/script&gt;" in index
    task_page = (site.root / Names.task_page("mt_bench")).read_text(encoding="utf-8")
    assert task_page.count("<svg") == 2
    drift = (site.root / Names.task_page("driftcaps")).read_text(encoding="utf-8")
    assert "Safety drift" in drift and drift.count("McNemar p") == 2  # runs 1 and 2 vs run 0
    legacy = (site.root / Names.task_page(UNKNOWN_TASK)).read_text(encoding="utf-8")
    assert "not registered in this installation" in legacy
    assert "Headline metrics" in legacy and "legacy format" in legacy and "<svg" in legacy


def test_every_page_renders_without_errors(site: Site, browser: Any) -> None:
    pages = sorted(site.root.glob("*.html"))
    for path in pages:
        page, errors = _open(browser, path)
        if path.name.startswith("samples-"):
            page.wait_for_selector("#sample-rows tr.sample-row")
        if path.name == "compare.html":
            page.wait_for_selector("#compare-result table")
        assert page.evaluate("window.__pwned") is None, path.name
        assert errors.all == [], f"{path.name}: {errors.all}"
        if path.name in ("index.html", "compare.html", Names.task_page("mt_bench")):
            screenshot(page, f"report-{path.stem}.png")
        page.close()


def test_leaderboard_sorts_by_clicked_column(site: Site, browser: Any) -> None:
    page, errors = _open(browser, site.root / "index.html")
    header = page.locator("th[data-col]", has_text=re.compile(r"^score$"))
    col = int(header.get_attribute("data-col"))

    def column() -> list[float]:
        values = page.eval_on_selector_all(
            "#leaderboard tbody tr", f"rows => rows.map(r => r.cells[{col}].dataset.v)"
        )
        return [float(v) for v in values]

    def run_order() -> list[str]:
        return page.eval_on_selector_all(
            "#leaderboard tbody tr", "rows => rows.map(r => r.cells[0].dataset.v)"
        )

    before = run_order()
    assert before == list(reversed(site.run_ids))  # newest first by default
    header.click()
    assert header.get_attribute("aria-sort") == "descending"
    assert column() == sorted(column(), reverse=True)
    descending = run_order()
    header.click()
    assert header.get_attribute("aria-sort") == "ascending"
    assert column() == sorted(column())
    assert run_order() == list(reversed(descending))
    # Run 1 is the weakest: sorting by score is not the default (date) order.
    assert descending == [site.run_ids[2], site.run_ids[0], site.run_ids[1]] != before
    page.locator("th[data-col='0']").click()
    assert run_order() == sorted(site.run_ids)
    assert errors.all == []


def _visible_ids(page: Any) -> list[str]:
    return page.eval_on_selector_all(
        "#sample-rows tr.sample-row", "rows => rows.map(r => r.dataset.sample)"
    )


def _loaded_chunks(page: Any) -> list[str]:
    return page.eval_on_selector_all(
        "head script[src]", "nodes => nodes.map(n => n.getAttribute('src'))"
    )


def test_samples_search_filter_and_lazy_details(site: Site, browser: Any) -> None:
    store = RunStore(site.store)
    try:
        responses = store.get_run_responses(site.run_ids[1], "driftcaps")
        samples = store.get_samples(site.run_ids[1], "driftcaps")
    finally:
        store.close()
    page, errors = _open(browser, site.samples(1, "driftcaps"))
    page.wait_for_selector("#sample-rows tr.sample-row")
    assert len(_visible_ids(page)) == SAMPLES_PER_TASK
    assert not any("p00000.js" in src for src in _loaded_chunks(page))  # details not loaded yet

    # Full-text search: words from the end of the longest response, beyond the list's snippet.
    target = max(samples, key=lambda s: len(responses[s["sample_id"]]["answer"]["text"]))
    target = target["sample_id"]
    words = responses[target]["answer"]["text"].lower().split()
    phrase = " ".join(words[-3:]).rstrip(".")
    expected = {
        s["sample_id"]
        for s in samples
        if phrase
        in " ".join([s["data"]["prompt"], responses[s["sample_id"]]["answer"]["text"]]).lower()
    }
    page.fill("#sample-search", f'"{phrase}"')
    page.wait_for_function("document.querySelectorAll('#sample-rows tr.sample-row').length < 30")
    page.wait_for_function(
        "!document.getElementById('sample-status').textContent.includes('loading')"
    )
    assert target in expected
    assert set(_visible_ids(page)) == expected
    assert any(src.endswith("search.js") for src in _loaded_chunks(page))

    # Tag filter: only unsafe prompts.
    page.click("#reset-filters")
    page.select_option("select[data-tag='label']", label="unsafe")
    shown = _visible_ids(page)
    unsafe = [s["sample_id"] for s in samples if s["data"]["label"] == "unsafe"]
    assert shown == unsafe
    # Verdict filter and score range on top of it.
    page.select_option("#verdict-filter", label="full_compliance")
    complied = [
        s["sample_id"]
        for s in samples
        if s["data"]["label"] == "unsafe" and s["scores"]["verdict"] == "full_compliance"
    ]
    assert _visible_ids(page) == complied
    page.select_option("#verdict-filter", value="")
    page.fill("#score-min", "0.5")
    refused = len(unsafe) - len(complied)
    rows = "document.querySelectorAll('#sample-rows tr.sample-row').length"
    page.wait_for_function(f"{rows} == {refused}")

    # Lazy details: opening a sample loads its chunk and shows its full text.
    page.click("#reset-filters")
    row = page.locator(f"tr.sample-row[data-sample='{target}']")
    row.click()
    detail = page.locator(".sample-detail")
    detail.wait_for()
    assert any(src.endswith("p00000.js") for src in _loaded_chunks(page))
    assert responses[target]["answer"]["text"] in detail.inner_text()
    screenshot(page, "report-samples-driftcaps.png", full_page=False)
    row.click()
    assert page.locator(".sample-detail").count() == 0
    assert errors.all == []


def test_model_and_judge_text_is_inert(site: Site, browser: Any) -> None:
    for task in ("mt_bench", "alpaca_eval", "driftcaps", UNKNOWN_TASK):
        page, errors = _open(browser, site.samples(0, task))
        page.wait_for_selector("#sample-rows tr.sample-row")
        assert page.evaluate("window.__pwned") is None
        first = page.locator("#sample-rows tr.sample-row").first
        assert XSS[:30] in first.inner_text()  # the snippet shows the markup as text
        first.click()
        detail = page.locator(".sample-detail")
        detail.wait_for()
        text = detail.evaluate("node => node.textContent")
        assert text.count(XSS) >= 2, task  # prompt/response/rationale, literally
        assert page.locator("img[src='x']").count() == 0
        assert (
            page.evaluate(
                "Array.from(document.scripts).filter(s => s.textContent.includes('__pwned')).length"
            )
            == 0
        )
        page.wait_for_timeout(50)
        assert page.evaluate("window.__pwned") is None, task
        assert errors.all == [], f"{task}: {errors.all}"
        page.close()
    for name in ("index.html", Names.run_page(site.run_ids[0]), "compare.html"):
        page, errors = _open(browser, site.root / name)
        assert page.locator("img[src='x']").count() == 0
        assert page.evaluate("window.__pwned") is None
        assert errors.all == []
        page.close()


def test_compare_page_shows_deltas(site: Site, browser: Any) -> None:
    pytest.importorskip("evalharness.stats.comparison")
    store = RunStore(site.store)
    try:
        metrics = {r: {t["task"]: t["metrics"] for t in store.get_tasks(r)} for r in site.run_ids}
    finally:
        store.close()
    first, last = site.run_ids[0], site.run_ids[2]
    expected = (
        metrics[last]["mt_bench"]["metrics"]["score"]
        - metrics[first]["mt_bench"]["metrics"]["score"]
    )
    page, errors = _open(browser, site.root / "compare.html")
    page.select_option("#run-a", first)
    page.select_option("#run-b", last)
    row = page.locator("section[data-task='mt_bench'] tr[data-metric='score']")
    row.wait_for()
    delta = row.locator("td.delta").inner_text().replace("−", "-")
    assert float(delta) == pytest.approx(expected, abs=1e-3)
    ci = row.locator("td").nth(3).inner_text()
    assert ci.startswith("[") and "," in ci
    assert row.locator("td").nth(5).inner_text() == "wilcoxon-clustered"  # by question
    page.locator("section[data-task='mt_bench'] details.sample-diffs summary").click()
    diffs = page.locator("section[data-task='mt_bench'] details.sample-diffs tbody tr")
    assert diffs.count() > 0
    screenshot(page, "report-compare.png")
    page.click("#swap-runs")
    page.wait_for_function(f"document.getElementById('run-a').value === {json.dumps(last)}")
    swapped = page.locator("section[data-task='mt_bench'] tr[data-metric='score'] td.delta")
    swapped.wait_for()
    assert float(swapped.inner_text().replace("−", "-")) == pytest.approx(-expected, abs=1e-3)
    page.select_option("#run-b", last)
    assert "two different runs" in page.locator("#compare-status").inner_text()
    assert errors.all == []


# -- big runs and real runs -----------------------------------------------------------------
def test_large_task_pages_load_lazily(tmp_path: Path, browser: Any) -> None:
    store = tmp_path / "store.sqlite"
    run_ids, total = build_store(store, n_runs=1, samples_per_task=1250, tasks=("mt_bench",))
    out = tmp_path / "site"
    assert report_main(["report", "--store", str(store), "--out", str(out)]) == 0
    chunks = sorted((out / Names.sample_dir(run_ids[0], "mt_bench").rstrip("/")).glob("p*.js"))
    assert len(chunks) == 13  # 100 samples per detail chunk
    page, errors = _open(browser, out / Names.samples_page(run_ids[0], "mt_bench"))
    page.wait_for_selector("#sample-rows tr.sample-row")
    assert "1250 samples" in page.locator("#sample-status").inner_text()
    assert len(_visible_ids(page)) == 50
    page.evaluate("location.hash = '#s=1201'")  # a deep link opens the sample, on its page
    page.locator(".sample-detail").wait_for()
    assert "1201" in page.locator("tr.sample-row.open").inner_text()
    loaded = [s for s in _loaded_chunks(page) if "/p0" in s]
    assert [Path(s).name for s in loaded] == ["p00012.js"]
    page.click("#prev-page")
    assert _visible_ids(page)[0] == "1151"
    assert errors.all == []


def test_report_of_a_real_tiny_model_run(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], browser: Any
) -> None:
    from cli_helpers import run_json, tiny_run_args

    store = tmp_path / "real.sqlite"
    run = run_json(capsys, *tiny_run_args(tiny_model_dir, store, "--limit", "2"))
    out = tmp_path / "site"
    code = report_main(["report", "--store", str(store), "--out", str(out), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["runs"] == 1 and summary["samples"] == 2
    run_page = (out / Names.run_page(run["run_id"])).read_text(encoding="utf-8")
    assert run["run_id"] in run_page and "Chat template" in run_page and "torch" in run_page
    page, errors = _open(browser, out / Names.samples_page(run["run_id"], "mt_bench"))
    page.locator("#sample-rows tr.sample-row").first.click()
    detail = page.locator(".sample-detail")
    detail.wait_for()
    assert "Turn 2" in detail.inner_text() and "rating" in detail.inner_text()
    assert errors.all == []
