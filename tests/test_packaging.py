"""packaging/: the PyInstaller recipe, the desktop entry and icon, the container recipe.

The fast checks always run. The opt-in ones (marker ``packaging``, ``CVT_TEST_PACKAGING=1``)
build the standalone app with ``bash packaging/build-desktop.sh`` (minutes, downloads the
dependencies into packaging/build/venv the first time) and run the frozen executable: ``cvt info``
on a real raw file, ``cvt view --screenshot`` offscreen, and a two-process ``cvt ingest``.
"""

from __future__ import annotations

import ast
import configparser
import importlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
import time
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
PYI = PACKAGING / "pyinstaller"
SPEC = PYI / "cvt.spec"
DESKTOP = PACKAGING / "linux" / "cvt.desktop"
ICONS = ROOT / "resources" / "icons"
CONTAINERFILE = PACKAGING / "container" / "Containerfile"
COMPOSE = PACKAGING / "container" / "compose.yaml"
APP = PACKAGING / "dist" / "cvt" / "cvt"


def _module_from(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------- PyInstaller recipe


def test_spec_is_python_and_its_files_exist():
    tree = ast.parse(SPEC.read_text(), str(SPEC))
    referenced = []
    for node in ast.walk(tree):
        # SPEC_DIR / "x.py" and ROOT / "resources"
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Div)
            and isinstance(node.left, ast.Name)
            and isinstance(node.right, ast.Constant)
        ):
            base = {"SPEC_DIR": PYI, "ROOT": ROOT}[node.left.id]
            referenced.append(base / node.right.value)
    names = {p.name for p in referenced}
    assert {"cvt_main.py", "rthook_cvt.py", "resources"} <= names
    for path in referenced:
        assert path.exists(), f"cvt.spec names {path}, which does not exist"
    assert (ROOT / "resources" / "cameras").is_dir()
    # the hidden import the runtime hook names must be a module beside the spec
    assert '"cvt_numba_locator"' in SPEC.read_text()
    assert (PYI / "cvt_numba_locator.py").is_file()
    for script in PYI.glob("*.py"):
        compile(script.read_text(), str(script), "exec")


def test_spec_excludes_what_no_command_needs():
    tree = ast.parse(SPEC.read_text())
    excludes = next(
        ast.literal_eval(n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "excludes"
    )
    assert {"tkinter", "matplotlib", "IPython", "pytest", "tests"} <= set(excludes)
    # nothing the program imports may be excluded
    for needed in ("numba", "llvmlite", "PySide6.QtSvg", "PySide6.QtOpenGLWidgets", "pyqtgraph"):
        assert needed not in excludes


def test_build_script_is_valid_bash():
    script = PACKAGING / "build-desktop.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert 'pip" install -q . "pyinstaller' in text
    assert "packaging/pyinstaller/cvt.spec" in text
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", str(script)], check=True)


def _run_rthook(env: dict[str, str]) -> dict[str, str]:
    code = (
        "import json, os, runpy, sys; runpy.run_path(sys.argv[1]); "
        "print(json.dumps({k: os.environ.get(k) for k in "
        "('NUMBA_CACHE_DIR', 'NUMBA_CACHE_LOCATOR_CLASSES')}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(PYI / "rthook_cvt.py")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def test_runtime_hook_puts_the_numba_cache_in_a_user_folder(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    got = _run_rthook(env)
    if sys.platform.startswith("linux"):
        assert got["NUMBA_CACHE_DIR"] == str(tmp_path / "cache" / "cvt" / "numba")
    assert Path(got["NUMBA_CACHE_DIR"]).is_dir()
    # a cache folder the user chose wins
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "mine")
    assert _run_rthook(env)["NUMBA_CACHE_DIR"] == str(tmp_path / "mine")

    # every locator the hook names exists (numba raises on an unknown name at the first kernel)
    caching = pytest.importorskip("numba.core.caching")
    for name in got["NUMBA_CACHE_LOCATOR_CLASSES"].split(","):
        if "." in name:
            module, cls = name.rsplit(".", 1)
            assert hasattr(_module_from(PYI / f"{module}.py"), cls)
        else:
            assert isinstance(getattr(caching, name, None), type), name


def test_frozen_numba_cache_does_not_depend_on_the_current_directory(tmp_path, monkeypatch):
    pytest.importorskip("numba")
    from numba.core import config

    locator = _module_from(PYI / "cvt_numba_locator.py").FrozenBundleLocator

    def kernel():
        return 1

    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path / "numba"))
    # not frozen: numba's own locators decide
    assert locator.from_function(kernel, "core/_isr_kernels.py") is None
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    paths = set()
    for cwd in (tmp_path, ROOT):
        monkeypatch.chdir(cwd)
        found = locator.from_function(kernel, os.path.join("core", "_isr_kernels.py"))
        paths.add(found.get_cache_path())
    (path,) = paths
    assert Path(path).parent == tmp_path / "numba" / "frozen"
    assert Path(path).name.startswith("core_")
    other = locator.from_function(kernel, os.path.join("cvt", "viewer", "tiles.py"))
    assert other.get_cache_path() != path
    # a real file outside the bundle (a plug-in, say) keeps numba's usual locators
    assert locator.from_function(kernel, __file__) is None


# ------------------------------------------------------------------------ desktop entry and icon


def test_desktop_entry():
    if shutil.which("desktop-file-validate"):
        result = subprocess.run(
            ["desktop-file-validate", str(DESKTOP)], capture_output=True, text=True
        )
        assert result.returncode == 0 and not result.stdout.strip(), result.stdout
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str
    parser.read_string(DESKTOP.read_text())
    entry = parser["Desktop Entry"]
    assert entry["Type"] == "Application"
    assert entry["Name"]
    assert shlex.split(entry["Exec"]) == ["cvt", "view", "%f"]
    assert entry["Icon"] == "cvt" and (ICONS / "cvt.png").is_file()
    assert entry["Categories"] == "Science;Astronomy;"
    assert entry.get("Terminal", "false") == "false"
    subprocess.run(
        ["bash", "-n", str(PACKAGING / "linux" / "install-desktop-entry.sh")], check=True
    )


def test_install_desktop_entry_points_exec_at_the_given_executable(tmp_path):
    exe = tmp_path / "my apps" / "cvt"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "share")}
    script = PACKAGING / "linux" / "install-desktop-entry.sh"
    subprocess.run(["bash", str(script), str(exe)], env=env, check=True, capture_output=True)
    installed = tmp_path / "share" / "applications" / "cvt.desktop"
    assert f'Exec="{exe}" view %f' in installed.read_text().splitlines()
    assert (tmp_path / "share" / "icons" / "hicolor" / "256x256" / "apps" / "cvt.png").is_file()
    assert (tmp_path / "share" / "icons" / "hicolor" / "scalable" / "apps" / "cvt.svg").is_file()
    bad = subprocess.run(["bash", str(script), str(tmp_path / "nothing")], env=env, check=False)
    assert bad.returncode != 0


def test_icon_png_is_256_px():
    data = (ICONS / "cvt.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert (width, height) == (256, 256)
    assert depth == 8 and colour == 6  # 8-bit RGBA: transparent corners


def test_icon_svg_is_the_focal_plane_its_script_draws():
    svg = (ICONS / "cvt.svg").read_text()
    maker = _module_from(PACKAGING / "icons" / "make_icon_svg.py")
    assert svg == maker.svg(), "resources/icons/cvt.svg is stale: run make_icon_svg.py"
    rects = ET.fromstring(svg).findall("{http://www.w3.org/2000/svg}rect")
    rafts = [r for r in rects if r.get("width") == str(maker.RAFT)]
    assert len(rafts) == 21  # 5 x 5 minus the corners
    cells = {
        (round((float(r.get("x")) - maker.MARGIN) / (maker.RAFT + maker.GAP)),
         round((float(r.get("y")) - maker.MARGIN) / (maker.RAFT + maker.GAP)))
        for r in rafts
    }  # fmt: skip
    assert not cells & {(0, 0), (0, 4), (4, 0), (4, 4)}


# -------------------------------------------------------------------------------- the container


def _containerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of each instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _cvt_commands() -> dict[str, str]:
    from cvt.cli import COMMANDS

    return COMMANDS


def _check_cvt_argv(argv: list[str]) -> None:
    """``argv`` (after ``cvt``) is a real sub-command with options its parser accepts."""
    commands = _cvt_commands()
    name = argv[0]
    assert name in commands, f"cvt has no command {name!r}"
    import argparse

    module = importlib.import_module(f"cvt.commands.{commands[name]}")
    parser = argparse.ArgumentParser(prog=f"cvt {name}", exit_on_error=False)
    module.add_arguments(parser)
    parser.parse_args(argv[1:])


def test_containerfile():
    instructions = _containerfile()
    bases = [args for word, args in instructions if word == "FROM"]
    assert bases and all(re.match(r"python:\$\{PYTHON_VERSION\}-slim", b) for b in bases)
    for word, args in instructions:
        if word == "COPY" and not args.startswith("--from"):
            *sources, _ = args.split()
            for source in sources:
                assert (ROOT / source).exists(), f"Containerfile copies missing {source}"
    users = [args for word, args in instructions if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    entry = json.loads(next(args for word, args in instructions if word == "ENTRYPOINT"))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entry == ["cvt"] and "cvt" in scripts
    volumes = json.loads(next(args for word, args in instructions if word == "VOLUME"))
    assert "/repo" in volumes
    assert any(
        "pip install" in args and '".[${EXTRAS}]"' in args
        for word, args in instructions
        if word == "RUN"
    )
    extras = next(args for word, args in instructions if word == "ARG" and "EXTRAS=" in args)
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for extra in extras.split("=", 1)[1].split(","):
        assert extra in optional["optional-dependencies"], f"pyproject has no extra {extra!r}"
    # whatever the build copies is let through the ignore file
    ignore = (CONTAINERFILE.parent / "Containerfile.dockerignore").read_text()
    for source in ("pyproject.toml", "README.md", "core/**", "cvt/**", "resources/**"):
        assert f"!{source}" in ignore


DOCUMENTED = [
    line.split(" cvt:0.1.0 ", 1)[1].split()
    for line in CONTAINERFILE.read_text().splitlines()
    if line.startswith("#   docker run") and "--entrypoint" not in line
]


@pytest.mark.parametrize("argv", DOCUMENTED, ids=[" ".join(a[:2]) for a in DOCUMENTED])
def test_containerfile_documented_uses_are_real_commands(argv):
    _check_cvt_argv(argv)


def _compose() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_services():
    doc = _compose()
    services = doc["services"]
    assert set(services) == {"scheduler", "worker", "watcher", "server"}
    assert services["worker"]["deploy"]["replicas"] == 2
    for name, service in services.items():
        build = service["build"]
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == ROOT, name
        assert (context / build["dockerfile"]).resolve() == CONTAINERFILE
        mounts = {v.split(":")[1] for v in service["volumes"]}
        assert "/repo" in mounts, name
    for name in ("scheduler", "worker"):
        assert services[name]["entrypoint"] == ["dask"]
    assert services["scheduler"]["command"][0] == "scheduler"
    scheduler = "tcp://scheduler:8786"
    assert services["scheduler"]["command"][1:3] == ["--port", "8786"]
    assert services["worker"]["command"][:2] == ["worker", scheduler]
    assert services["watcher"]["command"][-2:] == ["--scheduler", scheduler]
    for name in ("worker", "watcher"):  # the Dask tasks read /raw and write /repo
        assert "repo:/repo" in services[name]["volumes"]
        assert any(v.endswith(":/raw:ro") for v in services[name]["volumes"])
    assert "repo:/repo:ro" in services["server"]["volumes"]
    assert set(doc["volumes"]) >= {"repo"}


@pytest.mark.parametrize("service", ["watcher", "server"])
def test_compose_cvt_services_run_real_commands(service):
    spec = _compose()["services"][service]
    assert "entrypoint" not in spec  # the image's: cvt
    _check_cvt_argv(spec["command"])


# ------------------------------------------------- opt-in: build the standalone app and run it

OPT_IN = os.environ.get("CVT_TEST_PACKAGING") == "1"
opt_in = [
    pytest.mark.packaging,
    pytest.mark.slow,
    pytest.mark.skipif(not OPT_IN, reason="builds the desktop app: set CVT_TEST_PACKAGING=1"),
    pytest.mark.timeout(3600),
]


def _run(argv: list, env: dict, cwd: Path, timeout: float = 900) -> tuple[str, float]:
    t0 = time.perf_counter()
    result = subprocess.run(
        [str(a) for a in argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    seconds = time.perf_counter() - t0
    assert result.returncode == 0, (
        f"{argv} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout, seconds


@pytest.fixture(scope="module")
def frozen(tmp_path_factory):
    """Builds the app once; returns (executable, environment, scratch folder, timings)."""
    t0 = time.perf_counter()
    build = subprocess.run(
        ["bash", str(PACKAGING / "build-desktop.sh")], capture_output=True, text=True, timeout=3000
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    timings = {"build_s": time.perf_counter() - t0}
    assert APP.is_file() and os.access(APP, os.X_OK)
    size = sum(
        f.stat().st_size for f in APP.parent.rglob("*") if f.is_file() and not f.is_symlink()
    )
    timings["bundle_mb"] = size / 1e6
    work = tmp_path_factory.mktemp("frozen")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "NUMBA_", "VIRTUAL_ENV"))
    }
    env["QT_QPA_PLATFORM"] = "offscreen"
    env["NUMBA_CACHE_DIR"] = str(work / "numba")  # empty: the first kernels compile
    env["PATH"] = "/usr/bin:/bin"  # no Python of ours on the way
    yield APP, env, work, timings
    report = json.dumps({k: round(v, 2) for k, v in timings.items()})
    (PACKAGING / "build" / "frozen-timings.json").write_text(report + "\n")
    print("\nfrozen app:", report)


def _opt_in(test):
    for mark in opt_in:
        test = mark(test)
    return test


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def exposure(tmp_path_factory) -> tuple[Path, str]:
    """(store, a detector in it) of one exposure made with core.ingest (in this process, not
    the frozen app) from a simulated CCD with stars: the real raw files here have zero pixels."""
    from core.ingest import ingest
    from core.simulate import simulate_exposure

    folder = tmp_path_factory.mktemp("exposure")
    raw = folder / "raw"
    simulate_exposure(raw, detectors=["R22_S11"], seed=3, workers=1)
    reports, bad = ingest([raw], folder / "repo", workers=1)
    assert not bad and len(reports) == 1 and reports[0].path is not None
    return reports[0].path, reports[0].detectors[0]


@_opt_in
def test_frozen_version(frozen):
    app, env, work, timings = frozen
    out, timings["version_s"] = _run([app, "--version"], env, work)
    from core import __version__

    assert out.strip() == f"cvt {__version__}"


@_opt_in
def test_frozen_info_on_a_real_raw_file(frozen, obs_lsst):
    app, env, work, timings = frozen
    raw = sorted((obs_lsst / "raw").glob("*.fits*"))
    if not raw:
        pytest.skip("no raw files in obs_lsst/raw")
    out, timings["info_s"] = _run([app, "info", raw[0]], env, work)
    lines = out.splitlines()
    assert lines[0] == str(raw[0])
    assert any(line.split()[:1] == ["instrument"] for line in lines)
    assert any(line.split()[:1] == ["segments"] for line in lines)


def _screenshot(frozen, exposure, tmp_path, name: str, min_colours: int, *extra: str) -> None:
    app, env, work, timings = frozen
    store, _ = exposure
    shot = tmp_path / f"{name}.png"
    argv = [app, "view", store, "--screenshot", shot, "--size", "640x480", "--timeout", "120"]
    argv += extra
    out, timings[f"view_{name}_first_s"] = _run(argv, env, work)
    assert "wrote" in out and _png_size(shot) == (640, 480)
    # again, from another folder: the kernels come from the cache
    shot.unlink()
    _, timings[f"view_{name}_again_s"] = _run(argv, env, tmp_path)
    assert _png_size(shot) == (640, 480)
    keep = PACKAGING / "build" / f"frozen-{name}.png"
    keep.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, keep)
    QtGui = pytest.importorskip("PySide6.QtGui")
    image = QtGui.QImage(str(shot))
    colours = {image.pixel(x, y) for x in range(0, 640, 7) for y in range(0, 480, 7)}
    assert len(colours) >= min_colours, f"{len(colours)} colours: a blank screenshot?"


@_opt_in
def test_frozen_view_screenshot_of_a_detector(frozen, exposure, tmp_path):
    # the CCD fills the view: its sky noise alone makes hundreds of colours
    _screenshot(frozen, exposure, tmp_path, "detector", 100, "--goto", exposure[1])


@_opt_in
def test_frozen_view_screenshot_of_the_focal_plane(frozen, exposure, tmp_path):
    _screenshot(frozen, exposure, tmp_path, "plane", 20)


@_opt_in
def test_frozen_ingest_in_worker_processes(frozen, tmp_path):
    """simulate + ingest --workers 2 in the frozen app: the forkserver workers are the frozen
    executable again; their numba kernels go to one cache folder whatever the current folder."""
    app, env, work, timings = frozen
    raw, repo = tmp_path / "raw", tmp_path / "repo"
    _run(
        [app, "simulate", raw, "--detectors", "R22_S11", "R22_S12", "--compress", "rice"], env, work
    )
    _, timings["ingest_2ccd_first_s"] = _run(
        [app, "ingest", raw, "--repo", repo, "--workers", "2"], env, work
    )
    stores = list(repo.glob("*.zarr"))
    assert len(stores) == 1 and (stores[0] / "zarr.json").is_file()
    cache = Path(env["NUMBA_CACHE_DIR"]) / "frozen"
    folders = sorted(p.name for p in cache.iterdir())
    compiled = sorted(p.name for p in cache.rglob("*.nbc"))
    assert folders and all(f.startswith(("core_", "cvt_")) for f in folders)
    assert compiled
    _, timings["ingest_2ccd_again_s"] = _run(
        [app, "ingest", raw, "--repo", repo, "--workers", "2", "--replace"], env, tmp_path
    )
    assert sorted(p.name for p in cache.iterdir()) == folders
    assert sorted(p.name for p in cache.rglob("*.nbc")) == compiled  # nothing compiled again


@_opt_in
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ldd")
def test_frozen_bundle_drops_no_library_it_needs(frozen):
    """The libraries the spec leaves out (DROP_LIBS) are needed by nothing that stays."""
    tree = ast.parse(SPEC.read_text())
    dropped = next(
        ast.literal_eval(n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "DROP_LIBS"
    )
    internal = APP.parent / "_internal"
    env = {**os.environ, "LD_LIBRARY_PATH": f"{internal}:{internal / 'PySide6' / 'Qt' / 'lib'}"}
    missing = set()
    for lib in internal.rglob("*.so*"):
        if lib.is_symlink() or not lib.is_file():
            continue
        out = subprocess.run(["ldd", str(lib)], env=env, capture_output=True, text=True).stdout
        missing |= {line.split()[0] for line in out.splitlines() if "not found" in line}
    assert not {m for m in missing if m.startswith(dropped)}, missing
