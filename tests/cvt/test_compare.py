"""Blink and side-by-side compare of two exposures, looked at in a real offscreen window: A has
a dead amp at R22_S11_C03, B (same pixels otherwise, amp for amp) at R22_S11_C12."""

from __future__ import annotations

import numpy as np
import pytest

from tests.cvt.conftest import open_and_settle, wait_settled

pytestmark = pytest.mark.gui


def as_array(image) -> np.ndarray:
    """(h, w, 3) uint8 of a QImage."""
    from PySide6.QtGui import QImage

    img = image.convertToFormat(QImage.Format.Format_RGB32)
    h, w = img.height(), img.width()
    a = np.frombuffer(img.constBits(), dtype=np.uint8).reshape(h, img.bytesPerLine() // 4, 4)
    return a[:, :w, 2::-1].copy()  # BGRA in memory -> RGB


def both_settled(w):
    return w.is_settled() and w.compare.other is not None and w.compare.other.is_settled()


def open_compare(qtbot, w, a, b):
    open_and_settle(qtbot, w, a)
    with qtbot.waitSignal(w.compare.opened, timeout=20000):
        w.compare.open(b)
    qtbot.waitUntil(lambda: both_settled(w), timeout=20000)


def view_in_area(w, view):
    """The view's rectangle (x0, y0, x1, y1) in the compare area's pixels."""
    from PySide6.QtCore import QPoint

    p = view.mapTo(w.compare.area, QPoint(0, 0))
    return p.x(), p.y(), p.x() + view.width(), p.y() + view.height()


def box_mask(w, view, shape, boxes, margin=6):
    """True over the focal-plane boxes (in the view's pixels), grown by ``margin``."""
    mask = np.zeros(shape[:2], dtype=bool)
    for x0, y0, x1, y1 in boxes:
        p0, p1 = view.fp_to_widget(x0, y0), view.fp_to_widget(x1, y1)
        c0, c1 = sorted((round(p0.x()), round(p1.x())))
        r0, r1 = sorted((round(p0.y()), round(p1.y())))
        mask[max(0, r0 - margin) : r1 + margin, max(0, c0 - margin) : c1 + margin] = True
    return mask


def amp_mean(w, view, image, det, amp):
    """Mean RGB over the middle of an amp, as drawn."""
    x0, y0, x1, y1 = w.layout.amp_boxes[w.layout.amp_index(det, amp)]
    p0 = view.fp_to_widget(x0 + 0.3 * (x1 - x0), y0 + 0.3 * (y1 - y0))
    p1 = view.fp_to_widget(x0 + 0.7 * (x1 - x0), y0 + 0.7 * (y1 - y0))
    c0, c1 = sorted((round(p0.x()), round(p1.x())))
    r0, r1 = sorted((round(p0.y()), round(p1.y())))
    return image[r0:r1, c0:c1].reshape(-1, 3).mean(axis=0)


def test_blink_swaps_a_and_b_in_the_same_view(viewer, qtbot, sim_exposure, sim_exposure_b):
    from core.exposure import open_exposure

    a_path, _ = sim_exposure
    b_path, _ = sim_exposure_b
    w = viewer()
    open_compare(qtbot, w, a_path, b_path)
    b = w.compare.other
    assert w.compare.mode == "blink" and w.compare.shown == "A"
    assert w.centralWidget() is w.compare.area
    # a linear stretch between fixed limits: a pixel's colour depends on its value alone
    sky = float(np.median(open_exposure(b_path).detector("R22_S11").level(2)[:, :]))
    w.set_settings(stretch="linear", limits="manual", manual=(0.0, 2.0 * sky))
    assert b.settings.limits == "manual" and b.settings.manual == (0.0, 2.0 * sky)
    w.view.set_rect(w.layout.by_name["R22_S11"].bounds)
    qtbot.waitUntil(lambda: both_settled(w), timeout=20000)
    # same pan and zoom in B
    assert b.view.center_scale() == pytest.approx(w.view.center_scale(), rel=1e-6)
    assert "showing A" in w.windowTitle() and "showing A" in w.compare.state_label.text()
    x0, y0, x1, y1 = view_in_area(w, w.view)
    img_a = as_array(w.compare.area.grab().toImage())[y0:y1, x0:x1]
    w.compare.toggle()
    assert w.compare.shown == "B" and "showing B" in w.windowTitle()
    qtbot.wait(20)
    assert view_in_area(w, b.view) == (x0, y0, x1, y1)  # the very same place
    img_b = as_array(w.compare.area.grab().toImage())[y0:y1, x0:x1]
    # the dead amp is dark where it is dead and sky elsewhere
    a_c03, b_c03 = (amp_mean(w, w.view, img, "R22_S11", "C03") for img in (img_a, img_b))
    a_c12, b_c12 = (amp_mean(w, w.view, img, "R22_S11", "C12") for img in (img_a, img_b))
    assert a_c03.max() < 25 and b_c03.mean() > 80, (a_c03, b_c03)
    assert b_c12.max() < 25 and a_c12.mean() > 80, (a_c12, b_c12)
    # and the rest of the picture is the same, pixel for pixel
    boxes = [w.layout.amp_boxes[w.layout.amp_index("R22_S11", amp)] for amp in ("C03", "C12")]
    same = ~box_mask(w, w.view, img_a.shape, boxes)
    assert same.sum() > 0.5 * same.size
    assert np.array_equal(img_a[same], img_b[same])
    # the keyboard shortcut blinks back; auto-blink alternates on its own
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    w.view.setFocus()
    QTest.keyClick(w.view, Qt.Key.Key_B)
    assert w.compare.shown == "A"
    QTest.keyClick(w.view, Qt.Key.Key_O)  # B's pane has no shortcut of its own to clash with
    assert w.overscan.shown and not b.overscan.shown
    w.overscan.set_shown(False)
    w.compare.set_interval(0.1)
    w.compare.set_auto_blink(True)
    seen = set()
    qtbot.waitUntil(lambda: seen.add(w.compare.shown) or seen == {"A", "B"}, timeout=3000)
    w.compare.set_auto_blink(False)
    assert not w.compare.blink_timer.isActive()


def test_side_by_side_panes_stay_linked(viewer, qtbot, sim_exposure, sim_exposure_b):
    a_path, _ = sim_exposure
    b_path, _ = sim_exposure_b
    w = viewer(size=(1100, 600))
    open_compare(qtbot, w, a_path, b_path)
    b = w.compare.other
    w.compare.set_mode("side")
    assert w.compare.act_side.isChecked()
    w.view.set_rect(w.layout.by_name["R22_S11"].bounds)
    qtbot.waitUntil(lambda: both_settled(w), timeout=20000)
    xa0, _, xa1, _ = view_in_area(w, w.view)
    xb0, _, _, _ = view_in_area(w, b.view)
    assert xb0 >= xa1 - 1  # next to each other
    # a zoom and a pan in A are followed by B, and a pan in B by A
    w.view.zoom(1.7)
    w.view.pan(0.1, -0.05)
    qtbot.waitUntil(lambda: both_settled(w), timeout=20000)
    assert b.view.center_scale() == pytest.approx(w.view.center_scale(), rel=1e-6)
    b.view.pan(-0.2, 0.1)
    qtbot.waitUntil(lambda: both_settled(w), timeout=20000)
    assert w.view.center_scale() == pytest.approx(b.view.center_scale(), rel=1e-6)
    # each pane shows its own exposure: the dead amp is C03 in A, C12 in B (a linear stretch:
    # B's dead amp has a few cosmic rays, which histogram equalisation would spread to grey)
    w.set_settings(stretch="linear", limits="manual", manual=(0.0, 1500.0))
    w.view.set_rect(w.layout.by_name["R22_S11"].bounds)
    qtbot.waitUntil(lambda: both_settled(w), timeout=20000)
    img_a = as_array(w.view.grab().toImage())
    img_b = as_array(b.view.grab().toImage())
    assert amp_mean(w, w.view, img_a, "R22_S11", "C03").max() < 25
    assert amp_mean(w, b.view, img_b, "R22_S11", "C03").max() > 60
    assert amp_mean(w, b.view, img_b, "R22_S11", "C12").max() < 25
    assert amp_mean(w, w.view, img_a, "R22_S11", "C12").max() > 60
    # the hover readout of B says it is B's
    x0, y0, x1, y1 = b.layout.by_name["R22_S11"].bounds
    b.view.hovered.emit((x0 + x1) / 2, (y0 + y1) / 2)
    assert w.hover_label.text().startswith("[B] ") and "R22 S11" in w.hover_label.text()
    # and stopping puts A's view back alone
    w.compare.stop()
    assert w.centralWidget() is w.view and w.compare.other is None
    wait_settled(qtbot, w)


def test_a_compare_target_that_cannot_be_opened_is_named(viewer, qtbot, sim_exposure, tmp_path):
    a_path, _ = sim_exposure
    w = viewer()
    open_and_settle(qtbot, w, a_path)
    bad = tmp_path / "no-such-exposure.zarr"
    with qtbot.waitSignal(w.compare.failed, timeout=10000) as failed:
        w.compare.open(bad)
    assert str(bad) in failed.args[0] and "cannot compare with" in failed.args[0]
    assert str(bad) in w.statusBar().currentMessage()
    assert w.compare.other is None and w.centralWidget() is w.view
    assert not w.compare.act_blink.isEnabled()
    wait_settled(qtbot, w)  # A is still there and drawn


def test_view_command_compare_screenshot_and_bad_target(
    sim_exposure, sim_exposure_b, tmp_path, qapp
):
    from PySide6.QtGui import QImage

    from tests.cvt.conftest import damaged_copy
    from tests.cvt.test_viewer import _cvt

    out = tmp_path / "ab.png"
    a_path, _ = sim_exposure
    b_path = damaged_copy(sim_exposure_b[0], tmp_path, metrics=True)  # B's table unreadable
    res = _cvt("view", str(a_path), "--compare", str(b_path), "--screenshot", str(out),
               "--size", "640x300", "--goto", "R22_S11", "--timeout", "60")  # fmt: skip
    assert res.returncode == 0, res.stderr
    said = [line for line in res.stderr.splitlines() if line.startswith("cvt view: ")]
    assert said == [
        "cvt view: [B] could not read metrics table: metrics/read_noise_e cannot be read "
        "(RuntimeError: error during blosc decompression: -1)"
    ]
    img = QImage(str(out))
    assert img.width() >= 640 and img.height() >= 300  # both panes, side by side
    bad = tmp_path / "missing.zarr"
    res = _cvt("view", str(a_path), "--compare", str(bad), "--screenshot", str(out),
               "--timeout", "60")  # fmt: skip
    assert res.returncode == 2 and f"cannot compare with {bad}" in res.stderr, res.stderr
    res = _cvt("view", str(a_path), "--blink", "0.5")
    assert res.returncode == 2 and "--blink S needs --compare" in res.stderr


def test_what_b_cannot_read_is_said(viewer, qtbot, sim_exposure, sim_exposure_b, tmp_path):
    """B's pane has no status bar or summary dock of its own: what it cannot read is said in
    the window's status bar after [B], and the summary dock shows the shown exposure's."""
    import re

    from tests.cvt.conftest import damaged_copy
    from tests.cvt.test_viewer_exposure import corrupt_chunks

    a_path, _ = sim_exposure
    _, ov_chunk, _, _ = corrupt_chunks(sim_exposure_b[0])
    broken = damaged_copy(
        sim_exposure_b[0], tmp_path, detector="R22_S12", metrics=True, truncated=[ov_chunk]
    )
    w = viewer()
    w.summary_action.trigger()
    open_compare(qtbot, w, a_path, broken)
    b, label = w.compare.other, w.compare.b_damage_label
    qtbot.waitUntil(lambda: "overview chunks" in label.text(), timeout=10000)
    assert label.isVisible() and label.text().startswith("[B] unreadable: ")
    named = re.search(r"unreadable: (.*) \(View → Exposure summary\)", label.text()).group(1)
    assert sorted(named.split(", ")) == ["R22_S12", "metrics table", "overview chunks"]
    assert "unreadable" not in w.progress_label.text()  # A reads whole
    # the summary of the exposure shown: A's, then B's when blinked to, both side by side
    text = w.summary_panel.toPlainText()
    assert text.startswith("[A] MC_O_") and "[B]" not in text and "unreadable" not in text
    w.compare.toggle()
    text = w.summary_panel.toPlainText()
    assert text.startswith(f"[B] {b.exposure.obsid}   {broken}") and "[A]" not in text
    unreadable = [line[14:] for line in text.splitlines() if line.startswith("unreadable")]
    assert unreadable[0] == "R22_S12: metadata unreadable (KeyError: 'cvt')"
    assert sorted(u.split(":")[0] for u in unreadable[1:]) == ["metrics table", "overview chunks"]
    w.compare.set_mode("side")
    text = w.summary_panel.toPlainText()
    assert text.index("[A] ") < text.index("\n\n[B] ")
    assert sum(line.startswith("unreadable") for line in text.splitlines()) == 3
    # back to A alone: its own summary, nothing said of B
    w.compare.stop()
    assert not label.isVisible() and label.text() == ""
    assert w.summary_panel.toPlainText().startswith("exposure      MC_O_")
    wait_settled(qtbot, w)
