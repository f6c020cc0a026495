"""The plate viewer in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``, which .ci/run
installs) driven by selenium against a real ``phenoprint serve`` of the tiny synthetic preset, its held-out batches
onboarded and predicted by ``phenoprint predict``, with an API key on. One served instance for the whole module.

Screenshots of each page go to ``$PHENOPRINT_UI_SCREENSHOTS`` (default: a pytest temporary folder; never committed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "headless Chromium is not installed (apt-get install chromium chromium-driver; .ci/run installs them)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")

from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

KEY = "ui-test-key"
#: The plate page's confidence bins (phenoprint/api/ui/app.js CONFIDENCE_BINS): upper edge → colour, as RGB.
CONFIDENCE_BINS = ((0.0, (208, 28, 139)), (0.05, (68, 1, 84)), (0.1, (59, 82, 139)), (0.2, (33, 145, 140)))
CONFIDENCE_BINS += ((0.4, (94, 201, 98)), (float("inf"), (253, 231, 37)))
EMPTY = (217, 217, 217)


def expected_colour(confidence: float | None) -> tuple[int, int, int]:
    c = float("-inf") if confidence is None else confidence
    return next(colour for edge, colour in CONFIDENCE_BINS if c < edge)


@dataclass(frozen=True)
class Served:
    url: str
    root: Path  # the tiny preset's data root
    experiments: tuple[str, ...]  # the onboarded, predicted batches
    shots: Path


def _prepare(base: Path) -> tuple[Path, Path, Path, tuple[str, ...]]:
    """The tiny preset → a few training steps → its held-out experiments onboarded (a high open-set quantile, so
    that some wells are unknown) → ``phenoprint predict`` writing next to the indexes."""
    from phenoprint.data.source import open_source
    from phenoprint.embedder.inference import load_model
    from phenoprint.index.config import IndexConfig
    from phenoprint.onboard import onboard_experiment
    from phenoprint.pipeline import (
        DemoConfig,
        export_reference,
        generate,
        holdout_experiments,
        new_batch_root,
        pack_root,
        train_model,
    )

    config = DemoConfig(
        workdir=base,
        preset="tiny",
        image_size=32,
        epochs=1,
        max_steps=12,
        workers=1,
        embedding_dim=16,
        tta=1,
        serve=False,
        progress=False,
    )
    root = generate(config, oracle=False)
    pack = pack_root(config, root)
    holdout = holdout_experiments(root)
    run = train_model(config, root, pack, holdout)
    reference = export_reference(config, run, root, pack, holdout)
    model = load_model(run, "cpu")
    indexes = base / "indexes"
    queries = []
    for exp in holdout:
        query = base / "embeddings" / f"{exp}.parquet"
        onboard_experiment(
            model,
            open_source(new_batch_root(config, root, exp)),
            exp,
            reference,
            indexes / exp,
            IndexConfig(center="center", mode="centroid", open_set_quantile=0.5),
            queries_out=query,
            workers=0,
            progress=False,
        )
        queries.append(str(query))
    argv = ["predict", "--index", str(indexes), "--embeddings", *queries, "--out", str(indexes / "predictions")]
    subprocess.run([sys.executable, "-m", "phenoprint", *argv], check=True, capture_output=True)
    return root, run, indexes, holdout


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from phenoprint.launch import free_port, start_server, stop_server

    base = tmp_path_factory.mktemp("ui")
    root, run, indexes, holdout = _prepare(base)
    shots = Path(os.environ.get("PHENOPRINT_UI_SCREENSHOTS") or tmp_path_factory.mktemp("ui-screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    port = free_port()
    os.environ["PHENOPRINT_API_KEY"] = KEY  # inherited by the server process only
    try:
        server = start_server(run, indexes, port, base / "serve.log", extra_args=("--data", str(root)))
    finally:
        del os.environ["PHENOPRINT_API_KEY"]
    try:
        yield Served(f"http://127.0.0.1:{port}", root, holdout, shots)
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def browser(served: Served) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    driver.set_window_size(1280, 800)
    try:
        yield driver
    finally:
        driver.quit()


def api(served: Served, path: str) -> Any:
    response = httpx.get(served.url + path, headers={"X-API-Key": KEY}, timeout=30)
    response.raise_for_status()
    return response.json()


def wait(driver: Any, css: str, timeout: float = 20) -> Any:
    try:
        return WebDriverWait(driver, timeout).until(lambda d: d.find_element(By.CSS_SELECTOR, css))
    except TimeoutException:
        page = driver.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"{css} never appeared; the page says: {page}") from None


def open_page(driver: Any, served: Served, hash_path: str) -> None:
    driver.get(f"{served.url}/ui/#{hash_path}")
    WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.body.dataset.ready") is not None)


def rgb(driver: Any, element: Any) -> tuple[int, int, int]:
    value = driver.execute_script("return getComputedStyle(arguments[0]).backgroundColor", element)
    parts = value[value.index("(") + 1 : value.index(")")].split(",")
    return (int(parts[0]), int(parts[1]), int(parts[2]))


def shoot(driver: Any, served: Served, name: str) -> None:
    path = served.shots / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")


def test_the_ui_asks_for_the_key_once_and_lists_every_index(browser: Any, served: Served) -> None:
    listing = httpx.get(served.url + "/experiments", timeout=30)
    assert listing.status_code == 401  # the page's data calls get the API's own refusal
    browser.get(f"{served.url}/ui/#/")
    dialog = wait(browser, "#key-dialog[open]")
    assert "missing API key" in dialog.text
    browser.find_element(By.ID, "key-input").send_keys(KEY + Keys.ENTER)
    wait(browser, "#experiments tbody tr")
    shown = [
        r.get_attribute("data-experiment") for r in browser.find_elements(By.CSS_SELECTOR, "#experiments tbody tr")
    ]
    assert shown == [e["experiment"] for e in api(served, "/experiments")["experiments"]]
    assert set(shown) == set(served.experiments)
    predicted = browser.find_elements(By.CSS_SELECTOR, "#experiments td.predictions a")
    assert len(predicted) == len(shown)
    shoot(browser, served, "experiments")
    open_page(browser, served, "/")  # a reload in the same tab: the key is not asked again
    wait(browser, "#experiments tbody tr")
    assert browser.find_elements(By.CSS_SELECTOR, "#key-dialog[open]") == []


def test_the_plate_page_draws_each_plate_and_colours_known_wells(browser: Any, served: Served) -> None:
    experiment = served.experiments[0]
    data = api(served, f"/experiments/{experiment}/predictions")
    open_page(browser, served, f"/experiment/{experiment}")
    wait(browser, ".plate .well.predicted")
    sections = browser.find_elements(By.CSS_SELECTOR, "section.plate")
    assert [int(s.get_attribute("data-plate")) for s in sections] == [p["plate"] for p in data["plates"]]
    for section, plate in zip(sections, data["plates"], strict=True):
        assert len(section.find_elements(By.CSS_SELECTOR, ".well")) == data["rows"] * data["columns"] == 384
        assert len(section.find_elements(By.CSS_SELECTOR, ".well.predicted")) == plate["wells"]
        assert f"group {plate['group']}" in section.text
    wells = data["wells"]
    confident = max((w for w in wells if not w["unknown"] and w["well_type"] is None), key=lambda w: w["confidence"])
    unknown = next(w for w in wells if w["unknown"])
    control = next(w for w in wells if w["well_type"] is not None and not w["unknown"])

    def button(w: dict[str, Any]) -> Any:
        return browser.find_element(By.CSS_SELECTOR, f'.well[data-plate="{w["plate"]}"][data-well="{w["well"]}"]')

    for w in (confident, unknown, control):
        assert rgb(browser, button(w)) == expected_colour(w["confidence"]), w
    assert "unknown" in button(unknown).get_attribute("class").split()
    assert button(unknown).text == "?"
    assert button(control).text == {"positive_control": "+", "negative_control": "−"}[control["well_type"]]
    assert "control" in button(control).get_attribute("class").split()
    empty = browser.find_element(By.CSS_SELECTOR, ".well.empty")
    assert rgb(browser, empty) == EMPTY
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    ActionChains(browser).move_to_element(button(confident)).perform()
    tip = wait(browser, "#tooltip:not([hidden]) table.top3")
    assert len(tip.find_elements(By.TAG_NAME, "tr")) == 3
    assert all(str(c["sirna_id"]) in tip.text for c in confident["top_k"][:3])
    shoot(browser, served, "plates")
    if data["labelled"]:
        browser.find_element(By.ID, "colour-truth").click()
        labelled = next(w for w in wells if w["correct"] is not None)
        assert rgb(browser, button(labelled)) == ((26, 152, 80) if labelled["correct"] else (215, 48, 39))
        browser.find_element(By.ID, "colour-truth").click()
        assert rgb(browser, button(labelled)) == expected_colour(labelled["confidence"])


def test_a_well_opens_by_click_and_by_keyboard_with_the_apis_top_k(browser: Any, served: Served) -> None:
    experiment = served.experiments[0]
    data = api(served, f"/experiments/{experiment}/predictions")
    by_name = {(w["plate"], w["well"]): w for w in data["wells"]}
    open_page(browser, served, f"/experiment/{experiment}")
    first = wait(browser, ".well.predicted")
    first.click()
    title = wait(browser, "#detail-title")
    well = by_name[(int(first.get_attribute("data-plate")), first.get_attribute("data-well"))]
    assert title.text == f"Plate {well['plate']}, well {well['well']}"
    rows = browser.find_elements(By.CSS_SELECTOR, "#detail-topk tbody tr")
    assert [int(r.get_attribute("data-sirna")) for r in rows] == [c["sirna_id"] for c in well["top_k"]]
    assert [r.find_elements(By.TAG_NAME, "td")[2].text for r in rows] == [f"{c['score']:.4f}" for c in well["top_k"]]
    WebDriverWait(browser, 20).until(
        lambda d: d.execute_script("const i = document.querySelector('#composites img'); return i && i.naturalWidth")
    )
    WebDriverWait(browser, 20).until(lambda d: "indexed wells" in d.find_element(By.ID, "locations").text)
    shoot(browser, served, "well-detail")
    # keyboard only: Tab from the top of the page reaches a well, Enter opens it
    open_page(browser, served, f"/experiment/{experiment}")
    wait(browser, ".well.predicted")
    browser.find_element(By.TAG_NAME, "body").click()
    active = None
    for _ in range(40):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        active = browser.switch_to.active_element
        if "predicted" in (active.get_attribute("class") or ""):
            break
    assert active is not None
    assert "predicted" in active.get_attribute("class"), "no well is reachable with Tab"
    active.send_keys(Keys.ENTER)
    title = wait(browser, "#detail-title")
    assert title.text.endswith(f"well {active.get_attribute('data-well')}")


def test_dropping_a_wells_files_shows_its_classification(browser: Any, served: Served, tmp_path: Path) -> None:
    experiment = served.experiments[0]
    well = api(served, f"/experiments/{experiment}/predictions")["wells"][0]
    sources = sorted((served.root / "images" / experiment / f"Plate{well['plate']}").glob(f"{well['well']}_s*_w*.png"))
    assert len(sources) in (6, 12)
    files = []
    for src in sources:
        files.append(tmp_path / src.name)
        shutil.copy(src, files[-1])
    open_page(browser, served, "/classify")
    wait(browser, "#dropzone")
    browser.find_element(By.ID, "classify-plate").send_keys(str(well["plate"]))
    # a real drop: the files go into a detached input, then a drop event carrying them lands on the zone
    browser.execute_script(
        "const i = document.createElement('input'); i.type = 'file'; i.multiple = true; i.id = 'drop-source';"
        "i.style.position = 'fixed'; i.style.left = '-9999px';"
        "document.body.append(i);"
    )
    browser.find_element(By.ID, "drop-source").send_keys("\n".join(str(f) for f in files))
    browser.execute_script(
        "const t = new DataTransfer(); for (const f of document.getElementById('drop-source').files) t.items.add(f);"
        "document.getElementById('dropzone').dispatchEvent(new DragEvent('drop', {dataTransfer: t, bubbles: true}));"
    )
    top = wait(browser, "#classify-top", timeout=60)
    answer = httpx.post(
        served.url + "/classify",
        headers={"X-API-Key": KEY},
        data={"experiment": experiment, "plate": str(well["plate"])},
        files=[("files", (f.name, f.read_bytes(), "image/png")) for f in files],
        timeout=60,
    ).json()
    assert top.text.endswith(f"({answer['predictions'][0]['sirna_id']})") or top.text.endswith(
        f"siRNA {answer['predictions'][0]['sirna_id']}"
    )
    rows = browser.find_elements(By.CSS_SELECTOR, "#classify-topk tbody tr")
    assert [int(r.get_attribute("data-sirna")) for r in rows] == [p["sirna_id"] for p in answer["predictions"]]
    WebDriverWait(browser, 20).until(
        lambda d: d.execute_script("const i = document.getElementById('classify-image'); return i && i.naturalWidth")
    )
    shoot(browser, served, "classify")


def test_no_page_asks_anything_of_another_origin(browser: Any, served: Served) -> None:
    browser.get_log("performance")  # drop what earlier tests logged; their pages are visited again below
    for hash_path in ("/", f"/experiment/{served.experiments[0]}", "/classify"):
        open_page(browser, served, hash_path)
        time.sleep(0.5)
    browser.get(served.url + "/docs")
    wait(browser, ".swagger-ui .info .title", timeout=30)
    wait(browser, ".swagger-ui .opblock", timeout=30)
    shoot(browser, served, "docs")
    browser.get(served.url + "/redoc")
    wait(browser, ".api-content h1", timeout=30)
    time.sleep(1.0)  # ReDoc renders its side menu (and used to fetch a logo) after the title
    shoot(browser, served, "redoc")
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    assert len(urls) > 10
    outside = [u for u in urls if not u.startswith(served.url + "/") and not u.startswith(("data:", "blob:"))]
    assert outside == []
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "401" not in e["message"]]
    assert severe == []
