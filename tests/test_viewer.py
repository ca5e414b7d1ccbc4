"""`maskstore view` (spec section 9): real `maskstore view` processes, driven through the DOM contract's
data-testids in headless Debian Chromium (pytest-playwright), canvas bytes compared with
`maskstore.render`; the safety points over raw HTTP against the same processes."""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from maskstore import Archive, FrameGroup, QueryError, SingleFrame
from maskstore.records import FORMAT_VERSION
from viewer_helpers import (CITY, MAIN, REPO, ViewerProcess, build_large, canvas_rgb, chromium_launch_args,
                            compose, kinds_version, rendered, wait_shown)

SHARED_DATA = REPO.parent / "shared" / "data"
pytest.importorskip("pytest_playwright", reason="the browser tests need pytest-playwright (pip install -e '.[test]')")


# ---------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict[str, Any]:
    """pytest-playwright launches Debian's chromium (Playwright cannot download its own here)."""
    if shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium; .ci/run does it)")
    return chromium_launch_args()


@pytest.fixture(scope="session")
def browser_context_args() -> dict[str, Any]:
    return {"viewport": {"width": 1400, "height": 800}}


@pytest.fixture(scope="module")
def data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real-image fixtures not found at {SHARED_DATA} (the shared/ folder beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def kinds(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ViewerProcess]:
    """Every mask kind of ../shared/data in one version; nothing writes to it."""
    path = tmp_path_factory.mktemp("kinds") / "kinds.maskstore"
    with Archive(path) as archive:
        kinds_version(archive, data)
    viewer = ViewerProcess(path)
    viewer.archive = path  # type: ignore[attr-defined]
    yield viewer
    viewer.close()


@pytest.fixture(scope="module")
def colours(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A draft and a published version, each with its viewer, and a --readonly viewer of the draft."""
    path = tmp_path_factory.mktemp("colours") / "colours.maskstore"
    with Archive(path) as archive:
        kinds_version(archive, data, "v1")
        kinds_version(archive, data, "published").publish()
    viewers = {"path": path, "draft": ViewerProcess(path, "-V", "v1"),
               "published": ViewerProcess(path, "-V", "published"),
               "readonly": ViewerProcess(path, "-V", "v1", "--readonly")}
    yield viewers
    for name in ("draft", "published", "readonly"):
        viewers[name].close()


def nav_frames(data: Path) -> list[Any]:
    """25 frames on the Cityscapes pair, a frame group (front: Cityscapes, rear: lemur matte) and ROIs."""
    city = data / "mmsegmentation_cityscapes"
    image, mask = str(city / f"{CITY}_leftImg8bit.png"), str(city / f"{CITY}_gtFine_labelIds.png")
    frames: list[Any] = [SingleFrame(source=image, mask_source=mask, id=f"f{i:03d}", context_id=f"drive_{i % 3}",
                                     timestamp=1000 + i, metadata={"n": i, "city": "frankfurt"}) for i in range(25)]
    frames[0].add_annotation(box2d_xywh=[10, 20, 60, 40], labels=["car"], confidence=0.3)
    frames[0].add_annotation(poly2d_xy=[100, 10, 140, 10, 140, 90, 100, 90], labels=["person"], confidence=0.9)
    frames[0].add_annotation(frame_class=["daytime"])
    group = FrameGroup(id="group", context_id="rig", timestamp=5)
    group["front"] = SingleFrame(source=image, mask_source=mask)
    group["rear"] = SingleFrame(source=str(data / "pymatting_lemur/lemur.png"),
                                mask_source=str(data / "pymatting_lemur/lemur_alpha.png"))
    return [*frames, group]


@pytest.fixture(scope="module")
def nav(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ViewerProcess]:
    path = tmp_path_factory.mktemp("nav") / "nav.maskstore"
    with Archive(path) as archive:
        version = archive.create_version(dataset_name="nav", version_name="v1")
        version.set_masks_labels({(7, 7, 7): ["road"], (26, 26, 26): ["car"], (24, 24, 24): ["person"]})
        version.add_frames(nav_frames(data))
    viewer = ViewerProcess(path)
    viewer.archive = path  # type: ignore[attr-defined]
    yield viewer
    viewer.close()


def open_version(path: Path, name: str | None = None) -> Any:
    archive = Archive(path, readonly=True)
    versions = [v for v in archive.versions() if name is None or v.version_name == name]
    return archive, versions[0]


def mask_row(page: Any, mask_id: str) -> Any:
    return page.locator(f'[data-testid="mask-row"][data-mask-id="{mask_id}"]')


def open_frame(page: Any, viewer: ViewerProcess, frame_id: str, **query: str) -> None:
    page.goto(viewer.page_url(frame=frame_id, **query))
    wait_shown(page, frame_id, query.get("source"))


def set_mask(page: Any, frame_id: str, mask_id: str, *, visible: bool | None = None, mode: str | None = None,
             opacity: int | None = None, tint: str | None = None) -> None:
    row = mask_row(page, mask_id)
    if visible is not None:
        row.get_by_test_id("mask-visible").set_checked(visible)
    if mode is not None:
        row.get_by_test_id("mask-mode").select_option(mode)
    if opacity is not None:
        row.get_by_test_id("mask-opacity").fill(str(opacity))
    if tint is not None:
        row.get_by_test_id("mask-tint").fill(tint)
    wait_shown(page, frame_id)


# ---------------------------------------------------------------------------------------- exact pixels

KIND_IDS = ["city-labelIds", "voc-palette", "deeplab-rgb", "lemur-alpha", "rembg-rgba"]


@pytest.mark.parametrize("frame_id", KIND_IDS)
def test_canvas_holds_render_bytes_in_both_modes(page: Any, kinds: ViewerProcess, frame_id: str) -> None:
    archive, version = open_version(kinds.archive)  # type: ignore[attr-defined]
    with archive:
        frame = version.get_frame(frame_id)
        first, *others = [m.id for m in frame.sources[0].masks]
        open_frame(page, kinds, frame_id)
        for other in others:
            set_mask(page, frame_id, other, visible=False)
        assert page.get_by_test_id("frame-canvas").evaluate("c => [c.width, c.height]") == \
            list(version.open_image(frame.sources[0].uri).size)
        np.testing.assert_array_equal(canvas_rgb(page), rendered(frame, version, mode="segmentation", opacity=0.5))

        set_mask(page, frame_id, first, opacity=73)
        np.testing.assert_array_equal(canvas_rgb(page), rendered(frame, version, mode="segmentation", opacity=0.73))

        set_mask(page, frame_id, first, mode="alpha", opacity=100)
        np.testing.assert_array_equal(canvas_rgb(page), rendered(frame, version, mode="alpha", tint="#000000",
                                                                 opacity=1.0))
        set_mask(page, frame_id, first, opacity=37, tint="#3a80c1")
        np.testing.assert_array_equal(canvas_rgb(page), rendered(frame, version, mode="alpha", tint="#3a80c1",
                                                                 opacity=0.37))


@pytest.mark.slow
def test_every_opacity_percent_matches_render(page: Any, nav: ViewerProcess) -> None:
    """The page's a = floor(p / 100 * 255 + 0.5) and integer blends agree with render at every slider stop."""
    archive, version = open_version(nav.archive)  # type: ignore[attr-defined]
    with archive:
        frame = version.get_frame("f001")
        open_frame(page, nav, "f001")
        for percent in range(101):
            set_mask(page, "f001", "00", opacity=percent)
            np.testing.assert_array_equal(canvas_rgb(page), rendered(frame, version, opacity=percent / 100))
        set_mask(page, "f001", "00", mode="alpha", tint="#c0ffee")
        for percent in range(0, 101, 9):
            set_mask(page, "f001", "00", opacity=percent)
            np.testing.assert_array_equal(canvas_rgb(page), rendered(frame, version, mode="alpha", tint="#c0ffee",
                                                                     opacity=percent / 100))


def test_two_masks_apply_in_order_each_over_the_last(page: Any, kinds: ViewerProcess) -> None:
    archive, version = open_version(kinds.archive)  # type: ignore[attr-defined]
    with archive:
        frame = version.get_frame("city-labelIds")
        open_frame(page, kinds, "city-labelIds")
        both = [("labelIds", "segmentation", 0.5, "#000000"), ("trainIds", "segmentation", 0.5, "#000000")]
        np.testing.assert_array_equal(canvas_rgb(page), compose(frame, version, "0", both))
        assert not np.array_equal(compose(frame, version, "0", both), rendered(frame, version))

        set_mask(page, "city-labelIds", "labelIds", opacity=30)
        set_mask(page, "city-labelIds", "trainIds", mode="alpha", opacity=60, tint="#204060")
        np.testing.assert_array_equal(canvas_rgb(page), compose(frame, version, "0", [
            ("labelIds", "segmentation", 0.3, ""), ("trainIds", "alpha", 0.6, "#204060")]))

        set_mask(page, "city-labelIds", "labelIds", mode="alpha", opacity=90, tint="#ffffff")
        set_mask(page, "city-labelIds", "trainIds", mode="segmentation", opacity=45)
        np.testing.assert_array_equal(canvas_rgb(page), compose(frame, version, "0", [
            ("labelIds", "alpha", 0.9, "#ffffff"), ("trainIds", "segmentation", 0.45, "")]))


# ---------------------------------------------------------------------------------------- colours

def test_colour_picker_saves_to_a_draft_version_and_redraws(page: Any, colours: dict[str, Any]) -> None:
    viewer = colours["draft"]
    open_frame(page, viewer, "city-labelIds")
    page.locator('[data-testid="legend-item"][data-label="road"] input[type=color]').fill("#ff0000")
    page.wait_for_function('document.querySelector(\'[data-testid="color-status"]\').dataset.saved === "road=#ff0000"')
    archive, version = open_version(colours["path"], "v1")
    with archive:
        assert version.get_label_colors()["road"] == (255, 0, 0)
        frame = version.get_frame("city-labelIds")
        layers = [("labelIds", "segmentation", 0.5, ""), ("trainIds", "segmentation", 0.5, "")]
        np.testing.assert_array_equal(canvas_rgb(page), compose(frame, version, "0", layers))
    open_frame(page, viewer, "city-labelIds")  # a new page reads the saved colour back
    assert page.locator('[data-testid="legend-item"][data-label="road"] input').input_value() == "#ff0000"
    labels = page.get_by_test_id("legend-item").evaluate_all("items => items.map(i => i.dataset.label)")
    assert set(labels) >= {"road", "car", "person", "building"} and "rider" not in labels  # present ones only


@pytest.mark.parametrize("which", ["published", "readonly"])
def test_colour_is_page_only_on_a_published_version_or_readonly_viewer(page: Any, colours: dict[str, Any],
                                                                       which: str) -> None:
    name = "published" if which == "published" else "v1"
    archive, version = open_version(colours["path"], name)
    with archive:
        before = version.get_label_colors()
        open_frame(page, colours[which], "city-labelIds")
        status = page.get_by_test_id("color-status")
        assert "page only" in status.inner_text()
        page.locator('[data-testid="legend-item"][data-label="car"] input[type=color]').fill("#00ff00")
        page.wait_for_timeout(600)  # past the page's save debounce: nothing may have been sent
        assert "page only" in status.inner_text()
        assert version.get_label_colors() == before
        frame = version.get_frame("city-labelIds")
        layers = [("labelIds", "segmentation", 0.5, ""), ("trainIds", "segmentation", 0.5, "")]
        np.testing.assert_array_equal(canvas_rgb(page), compose(frame, version, "0", layers, colors={"car": "#00ff00"}))


# ---------------------------------------------------------------------------------------- list, query, links

def frame_ids_listed(page: Any) -> list[str]:
    return page.get_by_test_id("frame-item").evaluate_all("items => items.map(i => i.dataset.frameId)")


def test_query_box_count_list_and_query_errors(page: Any, nav: ViewerProcess) -> None:
    archive, version = open_version(nav.archive)  # type: ignore[attr-defined]
    with archive:
        page.goto(nav.url)
        wait_shown(page, version.ids()[0])
        assert page.get_by_test_id("frame-count").inner_text() == str(version.count())
        assert frame_ids_listed(page) == version.ids()
        assert page.get_by_test_id("query-error").is_hidden()

        bad = 'meta.n >= and label == "car"'
        with pytest.raises(QueryError) as caught:
            version.count(bad)
        page.get_by_test_id("query-input").fill(bad)
        page.get_by_test_id("query-input").press("Enter")
        error = page.get_by_test_id("query-error")
        error.wait_for(state="visible")
        assert error.inner_text() == str(caught.value) and "^" in error.inner_text()

        query = 'meta.n >= 7 and context_id == "drive_1"'
        page.get_by_test_id("query-input").fill(query)
        page.get_by_test_id("query-input").press("Enter")
        wait_shown(page, version.ids(query)[0])
        assert error.is_hidden()
        assert page.get_by_test_id("frame-count").inner_text() == str(version.count(query))
        assert frame_ids_listed(page) == version.ids(query)


def test_previous_next_ten_keys_and_list_clicks(page: Any, nav: ViewerProcess) -> None:
    archive, version = open_version(nav.archive)  # type: ignore[attr-defined]
    with archive:
        ids = version.ids()
    page.goto(nav.url)
    wait_shown(page, ids[0])
    steps = [("next-frame", 1), ("next-10", 11), ("prev-frame", 10), ("prev-10", 0), ("prev-frame", 0)]
    for button, index in steps:
        page.get_by_test_id(button).click()
        wait_shown(page, ids[index])
        assert page.get_by_test_id("frame-id").inner_text() == ids[index]
    for key, index in [("ArrowRight", 1), ("Shift+ArrowRight", 11), ("ArrowLeft", 10), ("PageDown", 20),
                       ("End", len(ids) - 1), ("ArrowRight", len(ids) - 1), ("Home", 0)]:
        page.keyboard.press(key)
        wait_shown(page, ids[index])
    page.locator(f'[data-testid="frame-item"][data-frame-id="{ids[7]}"]').click()
    wait_shown(page, ids[7])
    assert page.locator('[data-testid="frame-item"][aria-current="true"]').get_attribute("data-frame-id") == ids[7]


def test_steps_through_a_video_context_frame_by_frame(page: Any, tmp_path: Path) -> None:
    """Spec section 10: frames ingested from a video step in timestamp order, each canvas the bytes
    ``render`` gives for that video frame (decoded forward by the server's readers)."""
    pytest.importorskip("av", reason="the video viewer test needs PyAV (pip install -e '.[test]' brings it)")
    from video_helpers import make_videos
    videos = make_videos(tmp_path)
    path = tmp_path / "video.maskstore"
    subprocess.run([MAIN, "ingest", str(path), "--video", str(videos["clip"]), "--mask-video", str(videos["seg"])],
                   check=True, capture_output=True)
    with Archive(path) as archive:
        archive.versions()[0].set_masks_labels({(1, 1, 1): ["road"], (2, 2, 2): ["car"]})
    viewer = ViewerProcess(path)
    try:
        archive, version = open_version(path)
        with archive:
            ids = version.ids("order by timestamp")
            open_frame(page, viewer, ids[0], q="order by timestamp")
            for n in range(12):
                if n:
                    page.get_by_test_id("next-frame").click()
                    wait_shown(page, ids[n])
                np.testing.assert_array_equal(canvas_rgb(page), rendered(version.get_frame(ids[n]), version))
    finally:
        viewer.close()


def test_deep_link_reopens_the_same_view(page: Any, nav: ViewerProcess) -> None:
    query = "meta.n >= 10"
    archive, version = open_version(nav.archive)  # type: ignore[attr-defined]
    with archive:
        ids = version.ids(query)
    page.goto(nav.page_url(q=query))
    wait_shown(page, ids[0])
    page.get_by_test_id("next-frame").click()
    wait_shown(page, ids[1])
    link = page.url
    assert f"frame={ids[1]}" in link and "q=meta.n" in link

    fresh = page.context.new_page()
    fresh.goto(f"{nav.base}/?frame={ids[1]}&q={query}")  # without the token: reading needs none
    wait_shown(fresh, ids[1])
    assert fresh.get_by_test_id("query-input").input_value() == query
    assert fresh.get_by_test_id("frame-count").inner_text() == str(len(ids))
    assert fresh.locator('[data-testid="frame-item"][aria-current="true"]').get_attribute("data-frame-id") == ids[1]
    fresh.get_by_test_id("next-frame").click()
    wait_shown(fresh, ids[2])


def test_source_selector_for_frame_groups(page: Any, nav: ViewerProcess) -> None:
    archive, version = open_version(nav.archive)  # type: ignore[attr-defined]
    with archive:
        group = version.get_frame("group")
        open_frame(page, nav, "group")
        select = page.get_by_test_id("source-select")
        assert select.evaluate("s => [...s.options].map(o => o.value)") == ["front", "rear"]
        np.testing.assert_array_equal(canvas_rgb(page), rendered(group, version, source_id="front"))
        select.select_option("rear")
        wait_shown(page, "group", "rear")
        assert page.get_by_test_id("mask-row").evaluate_all("rows => rows.map(r => r.dataset.maskId)") == ["00"]
        np.testing.assert_array_equal(canvas_rgb(page), rendered(group, version, source_id="rear"))
        set_mask(page, "group", "00", mode="alpha", opacity=100)
        np.testing.assert_array_equal(canvas_rgb(page), rendered(group, version, source_id="rear", mode="alpha",
                                                                 tint="#000000", opacity=1.0))


def test_rois_details_and_minimum_confidence(page: Any, nav: ViewerProcess) -> None:
    archive, version = open_version(nav.archive)  # type: ignore[attr-defined]
    with archive:
        frame = version.get_frame("f000")
        open_frame(page, nav, "f000")
        items = page.get_by_test_id("roi-item")
        assert items.all_inner_texts() == ["car 0.30", "person 0.90"]
        assert page.locator('[data-testid="roi-layer"] polygon').count() == 2
        page.get_by_test_id("roi-min-confidence").fill("0.5")
        assert items.all_inner_texts() == ["person 0.90"]
        # ROIs live on their own layer: the frame canvas is still render's image
        np.testing.assert_array_equal(canvas_rgb(page), rendered(frame, version))
        details = page.get_by_test_id("frame-meta").inner_text()
        for text in ["f000", "drive_0", "1000", frame.sources[0].uri, frame.sources[0].masks[0].uri,
                     '"city": "frankfurt"', "daytime"]:
            assert text in details


def test_zoom_and_pan_are_css_only(page: Any, nav: ViewerProcess) -> None:
    open_frame(page, nav, "f001")
    canvas = page.get_by_test_id("frame-canvas")
    before = canvas_rgb(page)
    page.get_by_test_id("zoom-1").click()
    assert page.locator("#zoom-level").inner_text() == "100%"
    box = page.get_by_test_id("viewport").bounding_box()
    page.mouse.move(box["x"] + 200, box["y"] + 150)
    page.mouse.wheel(0, -400)
    assert page.locator("#zoom-level").inner_text() != "100%"
    page.mouse.down()
    page.mouse.move(box["x"] + 260, box["y"] + 190)
    page.mouse.up()
    assert canvas.evaluate("c => [c.width, c.height]") == [256, 128]
    np.testing.assert_array_equal(canvas_rgb(page), before)


# ---------------------------------------------------------------------------------------- safety (raw HTTP)

def send(viewer: ViewerProcess, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One request with the path sent exactly as written (no client-side normalisation of '..')."""
    host, port = viewer.base.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def color_post(viewer: ViewerProcess, label: str, hex_color: str, **headers: str) -> int:
    body = json.dumps({"colors": {label: hex_color}}).encode()
    return send(viewer, "POST", "/api/colors", body, {"Content-Type": "application/json", **headers})[0]


def test_writes_need_the_token_and_a_same_origin_request(colours: dict[str, Any]) -> None:
    viewer = colours["draft"]
    own = viewer.base
    refused = [
        {},                                                          # no token
        {"X-Maskstore-Token": "not-the-token", "Origin": own},       # wrong token
        {"X-Maskstore-Token": viewer.token, "Origin": "http://evil.example"},  # cross-origin page
        {"X-Maskstore-Token": viewer.token},                         # no Origin at all
        {"X-Maskstore-Token": viewer.token, "Origin": own, "Sec-Fetch-Site": "cross-site"},
        {"X-Maskstore-Token": viewer.token, "Origin": "http://evil.example:1", "Host": "evil.example:1"},  # rebinding
    ]
    archive, version = open_version(colours["path"], "v1")
    with archive:
        for headers in refused:
            assert color_post(viewer, "sky", "#010203", **headers) in (400, 403), headers
            assert version.get_label_colors()["sky"] != (1, 2, 3)
        assert color_post(viewer, "sky", "#010203", **{"X-Maskstore-Token": viewer.token, "Origin": own}) == 200
        assert version.get_label_colors()["sky"] == (1, 2, 3)


def test_readonly_viewer_and_published_version_refuse_writes(colours: dict[str, Any]) -> None:
    for which, name, status in [("readonly", "v1", 403), ("published", "published", 409)]:
        viewer = colours[which]
        archive, version = open_version(colours["path"], name)
        with archive:
            before = version.get_label_colors()
            assert color_post(viewer, "terrain", "#0a0b0c", **{"X-Maskstore-Token": viewer.token,
                                                                "Origin": viewer.base}) == status
            assert version.get_label_colors() == before


def test_reads_need_a_host_the_server_answers_to(kinds: ViewerProcess) -> None:
    assert send(kinds, "GET", "/api/version", headers={"Host": "evil.example"})[0] == 400
    assert send(kinds, "GET", "/api/version")[0] == 200


TRAVERSALS = [
    "/static/../../pyproject.toml", "/static/%2e%2e/%2e%2e/pyproject.toml", "/static/..%2f..%2fpyproject.toml",
    "/..%2f..%2f..%2fetc%2fpasswd", "/static/index.html", "/static/../app.py", "/etc/passwd",
    "/api/pixels?frame=../../../../etc/passwd&source=0&kind=source",
    "/api/pixels?frame=city-labelIds&source=../../../../etc/passwd&kind=source",
    "/api/pixels?frame=city-labelIds&source=0&mask=/etc/passwd&kind=labels",
    "/api/pixels?frame=city-labelIds&source=0&mask=labelIds&kind=../../../etc/passwd",
    "/api/frame?id=/etc/passwd", "/api/frame?id=../../pyproject.toml",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_url_reaches_the_file_system(kinds: ViewerProcess, path: str) -> None:
    status, body = send(kinds, "GET", path)
    assert status in (400, 404, 422), (status, body[:200])
    assert b"root:" not in body and b"[project]" not in body and b"import" not in body


def test_only_the_archive_media_are_served(kinds: ViewerProcess, data: Path) -> None:
    status, body = send(kinds, "GET", "/api/pixels?frame=lemur-alpha&source=0&kind=source")
    assert status == 200 and len(body) == 680 * 440 * 3


def test_binds_loopback_by_default_and_port_zero_picks_a_free_port(kinds: ViewerProcess) -> None:
    assert kinds.url.startswith("http://127.0.0.1:") and "/?token=" in kinds.url
    port = int(kinds.base.rsplit(":", 1)[1])
    assert port != 0
    listening = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    local = {fields[1] for fields in listening if fields[3] == "0A"}  # state LISTEN
    assert f"0100007F:{port:04X}" in local and f"00000000:{port:04X}" not in local


# ---------------------------------------------------------------------------------------- command line

def test_cli_errors_are_one_line(kinds: ViewerProcess) -> None:
    archive = kinds.archive  # type: ignore[attr-defined]
    result = subprocess.run([MAIN, "view", str(archive), "-V", "nope", "--port", "0", "--no-browser"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("Error: no matching version") and len(result.stderr.splitlines()) == 1
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([MAIN, "view", str(archive), "--port", str(port), "--no-browser"],
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"Error: cannot listen on 127.0.0.1 port {port}")


# ---------------------------------------------------------------------------------------- a million frames

@pytest.fixture(scope="module")
def million(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ViewerProcess]:
    """1,000,000 metadata-only frames from the benchmark generator, kept in pytest's cache between runs
    (keyed by the archive format and the generator's source) because building it takes a minute."""
    generator = (REPO / "benchmarks" / "ingest.py").read_bytes()
    key = f"viewer-1m-format{FORMAT_VERSION}-{hash_bytes(generator)}"
    cache = getattr(request.config, "cache", None)
    folder = Path(cache.mkdir(key)) if cache is not None else tmp_path_factory.mktemp("million")
    path = folder / "million.maskstore"
    if not (folder / "complete").exists():
        for stale in folder.glob("million.maskstore*"):
            stale.unlink()
        build_large(path, 1_000_000)
        (folder / "complete").write_text("built\n")
    viewer = ViewerProcess(path)
    viewer.archive = path  # type: ignore[attr-defined]
    yield viewer
    viewer.close()


def hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@pytest.mark.slow
def test_a_million_frame_version_opens_a_page_at_a_time(page: Any, million: ViewerProcess) -> None:
    archive, version = open_version(million.archive)  # type: ignore[attr-defined]
    with archive:
        every = version.ids()
        person = version.ids('label == "person"')
    sizes: list[int] = []
    page.on("response", lambda r: sizes.append(len(r.body())) if "/api/frames" in r.url else None)
    page.goto(million.url)
    page.get_by_test_id("frame-id").filter(has_text=every[0]).wait_for()
    assert page.get_by_test_id("frame-count").inner_text() == "1000000"
    assert frame_ids_listed(page) == every[:100]  # one page of ids, never all of them
    assert max(sizes) < 20_000
    page.get_by_test_id("next-10").click()
    page.get_by_test_id("frame-id").filter(has_text=every[10]).wait_for()
    page.keyboard.press("End")  # a page far away: fetched by its offset
    page.get_by_test_id("frame-id").filter(has_text=every[-1]).wait_for()
    assert frame_ids_listed(page) == every[-100:]

    page.get_by_test_id("query-input").fill('label == "person"')
    page.get_by_test_id("query-input").press("Enter")
    page.get_by_test_id("frame-count").filter(has_text=str(len(person))).wait_for()
    assert frame_ids_listed(page) == person[:100]
    page.keyboard.press("End")
    page.get_by_test_id("frame-id").filter(has_text=person[-1]).wait_for()
    assert frame_ids_listed(page) == person[(len(person) - 1) // 100 * 100:]  # its page, fetched by position
