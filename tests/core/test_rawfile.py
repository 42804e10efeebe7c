"""core.rawfile: synthetic files made in tmp_path (always run) and the real Rubin raws (realdata)."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from core.layout import SEGMENTS_8, SEGMENTS_16
from core.rawfile import (
    GuiderStampFileError,
    RawFileError,
    camera_from_header,
    dayobs_from_header,
    detector_key_from_header,
    header_text,
    incomplete_reason,
    obsid_from_header,
    parse_datasec,
    read_raw,
    read_raw_header,
)

# ---------------------------------------------------------------------------------------------
# A small synthetic raw CCD file, written by astropy (sizes come from the headers, so small
# segments exercise the same code as 2048 x 576 ones)

SMALL = (40, 30)  # (ny, nx) of a synthetic segment
SMALL_DATASEC = "[4:24,1:35]"  # 21 x 35 data, 3 prescan, 6 serial and 5 parallel overscan


def make_raw(
    path: Path,
    *,
    vendor: str = "ITL",
    detector: tuple[str, str] = ("R01", "S01"),
    n_segments: int = 16,
    shape: tuple[int, int] = SMALL,
    datasec: str = SMALL_DATASEC,
    rice: bool = False,
    gzipped: bool = False,
    primary: dict | None = None,
    segment_cards: dict[str, dict] | None = None,
    drop: tuple[str, ...] = (),
    upper_extname: bool = False,
    extremes: bool = True,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write a raw file like the camera's; returns the pixels by EXTNAME."""
    rng = np.random.default_rng(seed)
    head = fits.PrimaryHDU()
    head.header.update(
        {
            "INSTRUME": "lsstCam",
            "OBSID": "MC_O_20250415_000060",
            "DAYOBS": "20250415",
            "SEQNUM": 60,
            "CONTRLLR": "O",
            "DATE-OBS": "2025-04-16T03:00:00.000",
            "MJD-OBS": 60781.125,
            "IMGTYPE": "FLAT",
            "EXPTIME": 15.0,
            "FILTER": "r_57",
            "RAFTBAY": detector[0],
            "CCDSLOT": detector[1],
            "CCD_MANU": vendor,
            "LSST_NUM": f"{vendor}-CCD-000",
        }
    )
    head.header.update(primary or {})
    for key in [k for k, v in (primary or {}).items() if v is None]:
        del head.header[key]
    hdus: list = [head]
    pixels = {}
    names = SEGMENTS_16 if n_segments == 16 else SEGMENTS_8
    for name in names:
        extname = "Segment" + name[1:]
        data = rng.integers(-100, 2**18, shape, dtype=np.int32)
        if extremes:  # the int32 extremes survive the byte swap
            data[0, 0] = 2**31 - 1
            data[0, 1] = -(2**31)
        pixels[extname] = data
        if extname in drop:
            continue
        if rice:
            hdu = fits.CompImageHDU(
                data, name=extname, compression_type="RICE_1", tile_shape=(1, shape[1])
            )
        else:
            hdu = fits.ImageHDU(data, name=extname)
        hdu.header["EXTNAME"] = extname.upper() if upper_extname else extname  # as the camera
        hdu.header["DATASEC"] = datasec
        hdu.header["DETSEC"] = "[1:1,1:1]"  # never used
        hdu.header.update((segment_cards or {}).get(extname, {}))
        hdus.append(hdu)
    cond = fits.BinTableHDU.from_columns([fits.Column("TEMP", "E", array=np.arange(3.0))])
    cond.name = "REB_COND"
    hdus.append(cond)
    buf = io.BytesIO()
    fits.HDUList(hdus).writeto(buf)
    content = buf.getvalue()
    path.write_bytes(gzip.compress(content, 1) if gzipped else content)
    return pixels


def astropy_segments(path: Path) -> dict[str, np.ndarray]:
    with fits.open(path) as hdul:
        return {"Segment" + h.name[-2:]: h.data for h in hdul if h.name.startswith("SEGMENT")}


def test_extname_case_does_not_matter(tmp_path):
    """astropy rewrites EXTNAME as SEGMENT10 when a file passes through it; still a raw."""
    path = tmp_path / "raw.fits"
    pixels = make_raw(path, upper_extname=True, rice=True)
    raw = read_raw(path)
    np.testing.assert_array_equal(raw.segments[0], pixels["Segment10"])
    assert raw.segment_headers[0]["EXTNAME"] == "SEGMENT10"


# ---------------------------------------------------------------------------------------------
# Synthetic files


@pytest.mark.parametrize(
    ("rice", "gzipped", "compression"),
    [(False, False, "none"), (False, True, "gzip"), (True, False, "rice"), (True, True, "rice")],
)
@pytest.mark.parametrize(
    ("vendor", "detector", "det_id"), [("ITL", ("R01", "S01"), 1), ("E2V", ("R22", "S11"), 94)]
)
def test_synthetic_file_reads_exactly(
    tmp_path, rice, gzipped, compression, vendor, detector, det_id
):
    path = tmp_path / "raw.fits"  # gzip is found by its magic bytes, not the name
    pixels = make_raw(path, vendor=vendor, detector=detector, rice=rice, gzipped=gzipped)
    raw = read_raw(path)
    info = raw.info
    assert (info.camera, info.instrument, info.obsid) == (
        "LSSTCam",
        "lsstCam",
        "MC_O_20250415_000060",
    )
    assert (info.dayobs, info.seqnum, info.image_type, info.filter) == (
        20250415,
        60,
        "FLAT",
        "r_57",
    )
    assert (info.exposure_time, info.mjd) == (15.0, 60781.125)
    assert (info.detector, info.detector_id, info.vendor) == ("_".join(detector), det_id, vendor)
    assert (info.compression, info.gzipped, info.n_segments) == (compression, gzipped, 16)
    assert info.primary_header["RAFTBAY"] == detector[0]
    assert raw.segments.dtype == np.int32 and raw.segments.dtype.isnative
    assert raw.segments.shape == (16, *SMALL)
    assert [p.name for p in raw.placements] == list(SEGMENTS_16)
    for i, p in enumerate(raw.placements):
        np.testing.assert_array_equal(raw.segments[i], pixels[p.extname])
        assert raw.segment_headers[i]["EXTNAME"] == p.extname
        assert raw.segment_headers[i]["NAXIS1"] == SMALL[1]  # the image's header, even if tiled
    ours = {p.extname: raw.segments[i] for i, p in enumerate(raw.placements)}
    for extname, data in astropy_segments(path).items():
        np.testing.assert_array_equal(ours[extname], data)
    assert raw.datasec == (3, 24, 0, 35)
    layout = raw.layout
    assert layout.data_shape == (35, 21)
    assert (layout.prescan_columns, layout.serial_overscan_columns) == (3, 6)
    assert layout.parallel_overscan_rows == 5
    assert read_raw_header(path) == info  # the cheap header-only path agrees


def test_wavefront_sensor_has_eight_segments(tmp_path):
    path = tmp_path / "MC_O_20250415_000060_R00_SW0.fits"
    pixels = make_raw(path, detector=("R00", "SW0"), n_segments=8, rice=True)
    raw = read_raw(path)
    assert raw.info.n_segments == 8 and raw.segments.shape[0] == 8
    assert raw.info.detector == "R00_SW0"
    assert [p.name for p in raw.placements] == list(SEGMENTS_8)
    for i, p in enumerate(raw.placements):
        np.testing.assert_array_equal(raw.segments[i], pixels[p.extname])
    assert read_raw_header(path).n_segments == 8


def test_file_like_object_and_fsspec_url(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    path = tmp_path / "raw.fits"
    pixels = make_raw(path, gzipped=True)
    with open(path, "rb") as f:
        raw = read_raw(f)
    np.testing.assert_array_equal(raw.segments[0], pixels["Segment10"])
    assert read_raw_header(io.BytesIO(path.read_bytes())).obsid == "MC_O_20250415_000060"
    memory = fsspec.filesystem("memory")
    memory.pipe("/cvt-test/raw.fits", path.read_bytes())
    try:
        raw = read_raw("memory://cvt-test/raw.fits")
        np.testing.assert_array_equal(raw.segments[-1], pixels["Segment00"])
        assert read_raw_header("memory://cvt-test/raw.fits").compression == "gzip"
    finally:
        memory.rm("/cvt-test", recursive=True)
    assert read_raw(f"file://{path}").info.detector == "R01_S01"


def test_bzero_is_applied_exactly_and_bscale_refused(tmp_path):
    path = tmp_path / "raw.fits"
    pixels = make_raw(path, extremes=False)
    data = bytearray(path.read_bytes())
    # put BZERO = 1000 in front of Segment13's data (the header has room: replace DETSEC)
    start = data.index(b"EXTNAME = 'Segment13'")
    at = data.index(b"DETSEC  =", start)
    data[at : at + 80] = f"{'BZERO':8}= {1000:>20}".ljust(80).encode()
    path.write_bytes(bytes(data))
    raw = read_raw(path)
    i = [p.extname for p in raw.placements].index("Segment13")
    assert np.array_equal(raw.segments[i], pixels["Segment13"].astype(np.int64) + 1000)
    with fits.open(path) as hdul:  # astropy (float64 here) agrees
        assert np.array_equal(raw.segments[i], hdul["Segment13"].data)

    at = data.index(b"BZERO   =", start)
    data[at : at + 80] = f"{'BSCALE':8}= {2:>20}".ljust(80).encode()
    path.write_bytes(bytes(data))
    with pytest.raises(RawFileError, match="Segment13: BSCALE=2"):
        read_raw(path)


def test_bzero_overflow_is_an_error(tmp_path):
    path = tmp_path / "raw.fits"
    make_raw(path, segment_cards={"Segment13": {"BZERO": 0}})  # with int32 extremes
    data = bytearray(path.read_bytes())
    start = data.index(b"EXTNAME = 'Segment13'")
    at = data.index(b"BZERO   =", start)
    data[at : at + 80] = f"{'BZERO':8}= {1000:>20}".ljust(80).encode()
    path.write_bytes(bytes(data))
    with pytest.raises(RawFileError, match="do not fit in int32"):
        read_raw(path)


def check_error(path, *words: str) -> RawFileError:
    with pytest.raises(RawFileError) as caught:
        read_raw(path)
    err = caught.value
    assert err.path == str(path)
    assert str(err) == f"{path}: {err.reason}"
    assert "\n" not in err.reason
    for word in words:
        assert word in err.reason
    return err


def test_not_fits_and_empty(tmp_path):
    text = tmp_path / "notes.fits"
    text.write_text("these are not pixels\n")
    check_error(text, "not a FITS file")
    empty = tmp_path / "empty.fits"
    empty.write_bytes(b"")
    check_error(empty, "not a FITS file")
    check_error(tmp_path / "absent.fits", "cannot open", "No such file")
    with pytest.raises(RawFileError, match="not a FITS file"):
        read_raw_header(text)


@pytest.mark.parametrize("gzipped", [False, True])
def test_truncated(tmp_path, gzipped):
    path = tmp_path / "raw.fits"
    make_raw(path, gzipped=gzipped)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    check_error(path, "truncated")


@pytest.mark.parametrize("gzipped", [False, True])
def test_incomplete_reason_follows_a_file_being_written(tmp_path, gzipped):
    """A file written in pieces is incomplete (with the reason) until its last byte lands."""
    whole = tmp_path / "whole.fits"
    make_raw(whole)
    info = read_raw_header(whole)
    assert incomplete_reason(whole, info) is None
    content = whole.read_bytes()
    growing = tmp_path / ("growing.fits.gz" if gzipped else "growing.fits")
    reasons = []
    for frac in (0.3, 0.6, 0.97):
        part = content[: int(len(content) * frac)]
        growing.write_bytes(gzip.compress(part) if gzipped else part)
        reasons.append(incomplete_reason(growing, dataclasses.replace(info, gzipped=gzipped)))
    assert all(r and ("truncated" in r or "segments so far" in r) for r in reasons), reasons
    growing.write_bytes(gzip.compress(content) if gzipped else content)
    assert incomplete_reason(growing, dataclasses.replace(info, gzipped=gzipped)) is None


def test_missing_segment(tmp_path):
    path = tmp_path / "raw.fits"
    make_raw(path, drop=("Segment03",))
    check_error(path, "missing segment HDUs Segment03", "found 15 of 16")


@pytest.mark.parametrize(
    ("datasec", "words"),
    [
        ("[4:24;1:35]", ("Segment12", "malformed DATASEC")),
        ("", ("Segment12", "malformed DATASEC")),
        ("[24:4,1:35]", ("does not fit",)),
        ("[4:31,1:35]", ("does not fit",)),
        ("[4:23,1:35]", ("different DATASECs", "[4:23,1:35]", "[4:24,1:35]")),
    ],
)
def test_bad_datasec(tmp_path, datasec, words):
    path = tmp_path / "raw.fits"
    make_raw(path, segment_cards={"Segment12": {"DATASEC": datasec}})
    check_error(path, *words)


def test_unknown_detector_and_instrument(tmp_path):
    path = tmp_path / "raw.fits"
    make_raw(path, detector=("R99", "S11"))
    check_error(path, "unknown detector R99_S11 for LSSTCam")
    with pytest.raises(RawFileError, match="unknown detector R99_S11"):
        read_raw_header(path)
    make_raw(path, primary={"INSTRUME": "FooCam", "OBSID": "XX_C_20250101_000001"})
    check_error(path, "unknown instrument", "FooCam")


def test_other_tile_compression_is_refused(tmp_path):
    path = tmp_path / "raw.fits"
    make_raw(path, rice=True)
    data = bytearray(path.read_bytes())
    path.write_bytes(patched(data, b"EXTNAME = 'Segment04'", "ZCMPTYPE", "'GZIP_1  '"))
    check_error(path, "Segment04: tile compression GZIP_1 (raws are RICE_1)")


def test_e2v_wavefront_is_refused(tmp_path):
    path = tmp_path / "raw.fits"
    make_raw(path, vendor="E2V", detector=("R00", "SW1"), n_segments=8)
    check_error(path, "only ITL wavefront sensors have 8 segments")


def test_segments_of_different_sizes(tmp_path):
    path = tmp_path / "raw.fits"
    make_raw(path)
    data = bytearray(path.read_bytes())
    start = data.index(b"EXTNAME = 'Segment05'")
    at = data.rindex(b"NAXIS2  =", 0, start)
    data[at : at + 80] = f"{'NAXIS2':8}= {SMALL[0] - 1:>20}".ljust(80).encode()
    path.write_bytes(bytes(data))
    check_error(path, "segments differ in size")


def make_guider(path: Path, n: int = 5, gzipped: bool = False) -> None:
    head = fits.PrimaryHDU()
    head.header.update({"INSTRUME": "lsstCam", "OBSID": "MC_C_20240918_000013"})
    head.header.update({"RAFTBAY": "R00", "CCDSLOT": "SG0", "CCD_MANU": "ITL"})
    stamps = [
        fits.CompImageHDU(np.full((100, 50), 13000 + i, np.int32), name="IMAGE") for i in range(n)
    ]
    buf = io.BytesIO()
    fits.HDUList([head, *stamps]).writeto(buf)
    path.write_bytes(gzip.compress(buf.getvalue()) if gzipped else buf.getvalue())


@pytest.mark.parametrize("gzipped", [False, True])
def test_guider_stamp_file_is_recognised(tmp_path, gzipped):
    path = tmp_path / "MC_C_20240918_000013_R00_SG0_guider.fits"
    make_guider(path, 7, gzipped)
    for reader in (read_raw, read_raw_header):
        with pytest.raises(GuiderStampFileError) as caught:
            reader(path)
        assert caught.value.n_stamps == 7
        assert caught.value.stamp_shape == (100, 50)
        assert "guider stamp file with 7 stamps" in str(caught.value)
        assert isinstance(caught.value, RawFileError)  # an ingest skipping bad files skips it too


def test_parse_datasec():
    assert parse_datasec("[4:512,1:2000]", (2048, 576)) == (3, 512, 0, 2000)
    assert parse_datasec(" [11:522,1:2002] ", (2048, 576)) == (10, 522, 0, 2002)
    for bad in ("[4:512,1:2000", "4:512,1:2000", "[a:512,1:2000]", "[0:512,1:2000]", None, 7):
        with pytest.raises(ValueError):
            parse_datasec(bad, (2048, 576))
    with pytest.raises(ValueError, match="does not fit"):
        parse_datasec("[4:577,1:2000]", (2048, 576))


# ---------------------------------------------------------------------------------------------
# Identification from headers (plain dicts work as well as astropy Headers)


@pytest.mark.parametrize(
    ("header", "camera", "instrument", "test_stand"),
    [
        ({"INSTRUME": "lsstCam", "OBSID": "MC_C_20190319_000001"}, "LSSTCam", "lsstCam", False),
        ({"INSTRUME": "LSSTCam"}, "LSSTCam", "LSSTCam", False),
        ({"INSTRUME": "COMCAM"}, "ComCam", "COMCAM", False),
        ({"INSTRUME": "LSSTComCam"}, "ComCam", "LSSTComCam", False),
        ({"INSTRUME": "LSST_ATISS"}, "LATISS", "LSST_ATISS", False),
        ({"INSTRUME": "LATISS"}, "LATISS", "LATISS", False),
        ({"INSTRUME": "LSST-UCDCam", "OBSID": "TS_C_20231031_000227"}, "LSSTCam", "LSST-UCDCam", True),
        ({"TSTAND": "TS8", "SEQNUM": 17}, "LSSTCam", "TS8", True),
        ({"TSTAND": "BNL-TS3-2-Janeway", "INSTRUME": "ArchonCCDController"}, "LSSTCam", "ArchonCCDController", True),
        ({"OBSID": "CC_O_20241024_000010"}, "ComCam", "CC", False),
        ({"OBSID": "AT_O_20220405_000348"}, "LATISS", "AT", False),
        ({"OBSID": "TS_C_20230512_000021"}, "LSSTCam", "TS", True),
        # ComCam wrote the generic INSTRUME 'LSST_CAMERA' in 2019: the OBSID code wins
        ({"INSTRUME": "LSST_CAMERA", "OBSID": "CC_C_20190526_000223"}, "ComCam", "LSST_CAMERA", False),
    ],
)  # fmt: skip
def test_camera_from_header(header, camera, instrument, test_stand):
    got = camera_from_header(header)
    assert (got.camera, got.instrument, got.test_stand) == (camera, instrument, test_stand)


def test_unknown_instrument():
    with pytest.raises(ValueError, match="unknown instrument"):
        camera_from_header({"INSTRUME": "imSim", "OBSID": "204595"})


def test_obsid_and_dayobs_fallbacks():
    ts8 = {"TSTAND": "TS8", "DATE-OBS": "2018-07-24T10:28:45.342", "SEQNUM": 17}
    # the observing day rolls over at 12:00 (as Rubin's DAYOBS does), not at midnight
    assert dayobs_from_header(ts8) == 20180723
    assert obsid_from_header(ts8, camera_from_header(ts8)) == "TS_C_20180723_000017"
    latiss = {"INSTRUME": "LSST_ATISS", "DATE-OBS": "2018-09-21T06:12:18.210", "SEQNUM": 65}
    assert obsid_from_header(latiss, camera_from_header(latiss)) == "AT_C_20180920_000065"
    main = {"INSTRUME": "lsstCam", "DAYOBS": "20250415", "SEQNUM": 60, "CONTRLLR": "O"}
    assert obsid_from_header(main, camera_from_header(main)) == "MC_O_20250415_000060"
    with pytest.raises(ValueError, match="no OBSID"):
        obsid_from_header({"INSTRUME": "lsstCam"}, camera_from_header(main))


def test_detector_key_fallbacks():
    assert detector_key_from_header({"RAFTBAY": "R22", "CCDSLOT": "S11"}, "LSSTCam") == "R22_S11"
    assert detector_key_from_header({}, "LATISS", "x-det000.fits") == "RXX_S00"
    assert (
        detector_key_from_header({}, "LSSTCam", "/a/MC_O_20250415_000060_R00_SG1.fits") == "R00_SG1"
    )
    assert detector_key_from_header({}, "LSSTCam", "3019031900001-R22-S21-det097.fits") == "R22_S21"
    assert detector_key_from_header({}, "LSSTCam", "201807241028453-RTM-010-S11-det067.fits") == 67
    with pytest.raises(ValueError, match="no RAFTBAY"):
        detector_key_from_header({}, "LSSTCam", "E2V-CCD250-179_lambda_bias.fits")


# ---------------------------------------------------------------------------------------------
# The real Rubin files

REAL = {
    # file: (camera, instrument, obsid, detector, id, vendor, compression, datasec)
    "3019031900001-R22-S21-det097.fits": ("LSSTCam", "lsstCam", "MC_C_20190319_000001", "R22_S21", 97, "ITL", "gzip", (3, 512, 0, 2000)),
    "3019031900001-R10-S02-det029.fits": ("LSSTCam", "lsstCam", "MC_C_20190319_000001", "R10_S02", 29, "ITL", "gzip", (3, 512, 0, 2000)),
    "30211212000310-R22-S22-det098.fits": ("LSSTCam", "lsstCam", "MC_C_20211212_000310", "R22_S22", 98, "E2V", "rice", (10, 522, 0, 2002)),
    "3019053000001-R22-S00-det000.fits": ("ComCam", "COMCAM", "CC_C_20190530_000001", "R22_S00", 0, "ITL", "gzip", (3, 512, 0, 2000)),
    "3018092000065-det000.fits": ("LATISS", "LSST_ATISS", "AT_C_20180920_000065", "RXX_S00", 0, "ITL", "gzip", (3, 512, 0, 2000)),
    # UCD's own camera calls this det010; in LSSTCam, R21_S01 is detector 82
    "2023103100227-R21-S01-det010.fits": ("LSSTCam", "LSST-UCDCam", "TS_C_20231031_000227", "R21_S01", 82, "E2V", "gzip", (10, 522, 0, 2002)),
    # no INSTRUME, OBSID, RAFTBAY or CCDSLOT: LSSTCam detector 67 from the file name
    "201807241028453-RTM-010-S11-det067.fits": ("LSSTCam", "TS8", "TS_C_20180723_000017", "R14_S11", 67, "E2V", "gzip", (10, 522, 0, 2002)),
}  # fmt: skip


@pytest.mark.realdata
def test_every_real_raw_file_is_covered(obs_lsst):
    assert set(os.listdir(obs_lsst / "raw")) == set(REAL)


@pytest.mark.realdata
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_raw_file(obs_lsst, name):
    camera, instrument, obsid, det, det_id, vendor, compression, datasec = REAL[name]
    path = obs_lsst / "raw" / name
    raw = read_raw(path)
    info = raw.info
    assert (info.camera, info.instrument, info.obsid) == (camera, instrument, obsid)
    assert (info.detector, info.detector_id, info.vendor) == (det, det_id, vendor)
    assert (info.compression, info.gzipped) == (compression, True)  # all are gzipped on disk
    assert raw.datasec == datasec
    assert raw.segments.shape == (16, 2048, 576)
    layout = raw.layout
    if vendor == "ITL":
        assert layout.data_shape == (2000, 509)
        assert (layout.prescan_columns, layout.serial_overscan_columns) == (3, 64)
        assert layout.parallel_overscan_rows == 48
    else:
        assert layout.data_shape == (2002, 512)
        assert (layout.prescan_columns, layout.serial_overscan_columns) == (10, 54)
        assert layout.parallel_overscan_rows == 46
    assert read_raw_header(path) == info


@pytest.mark.realdata
@pytest.mark.parametrize("name", [*sorted(REAL), "../assembly/e2v_spot.fits.gz"])
def test_real_segments_equal_astropy(obs_lsst, name):
    path = obs_lsst / "raw" / name
    raw = read_raw(path)
    # astropy reads a gzipped file through a slow stream (2-4 s here): hand it the bytes instead
    with fits.open(io.BytesIO(gzip.decompress(path.read_bytes()))) as hdul:
        for i, p in enumerate(raw.placements):
            ref = hdul[p.extname]
            assert np.array_equal(raw.segments[i], ref.data), p.extname
            assert raw.segment_headers[i]["DATASEC"] == ref.header["DATASEC"]
            assert list(raw.segment_headers[i].items()) == list(ref.header.items())
            # the text the store keeps, cut from the file's bytes without astropy, reads back
            text = raw.segment_header_texts[i]
            assert text.endswith("END".ljust(80)) and all(len(c) == 80 for c in text.split("\n"))
            again = fits.Header.fromstring(text, sep="\n")
            assert list(again.items()) == list(ref.header.items())
        assert list(raw.info.primary_header.items()) == list(hdul[0].header.items())
        again = fits.Header.fromstring(header_text(raw.info.primary_header), sep="\n")
        assert list(again.items()) == list(hdul[0].header.items())


@pytest.mark.realdata
def test_real_vendor_comes_from_the_file(obs_lsst):
    """R22 is an E2V raft in the camera table, but this 2019 test-bench raw holds an ITL CCD."""
    info = read_raw_header(obs_lsst / "raw" / "3019031900001-R22-S21-det097.fits")
    assert info.vendor == "ITL"
    assert any("camera table has E2V" in note for note in info.notes)


@pytest.mark.realdata
def test_real_ts8_segment00_levels(obs_lsst):
    """Segment00 of the ts8 flat holds real pixels: bias about 27026 ADU, flat about 47803."""
    raw = read_raw(obs_lsst / "raw" / "201807241028453-RTM-010-S11-det067.fits")
    c00 = raw.segments[[p.name for p in raw.placements].index("C00")]
    layout = raw.layout
    assert abs(np.median(c00[layout.serial_overscan]) - 27026) < 20
    assert abs(np.median(c00[layout.data]) - 47803) < 20
    assert 5 < np.std(c00[layout.serial_overscan][:, 3:]) < 8  # read noise about 6.5 ADU
    others = np.delete(raw.segments, [p.name for p in raw.placements].index("C00"), axis=0)
    assert not others.any()  # the other 15 amps were zeroed


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("name", "n_stamps", "shape"),
    [("MC_C_20230616_000013_R04_SG0.fits", 92, (50, 50)),
     ("MC_C_20240918_000013_R00_SG0_guider.fits", 102, (100, 50))],
)  # fmt: skip
def test_real_guider_stamp_files(obs_lsst, name, n_stamps, shape):
    for reader in (read_raw, read_raw_header):
        with pytest.raises(GuiderStampFileError) as caught:
            reader(obs_lsst / "guider" / name)
        assert (caught.value.n_stamps, caught.value.stamp_shape) == (n_stamps, shape)


@pytest.fixture(scope="module")
def real_plain(obs_lsst, tmp_path_factory) -> bytearray:
    """The decompressed bytes of a real ITL raw, to break in different ways."""
    src = obs_lsst / "raw" / "3019031900001-R10-S02-det029.fits"
    return bytearray(gzip.decompress(src.read_bytes()))


def patched(data: bytearray, after: bytes, key: str, value: str) -> bytes:
    """A copy with card ``key`` of the HDU whose header holds ``after`` set to ``value``."""
    out = bytearray(data)
    where = out.index(after)
    hdu_start = max(out.rfind(b"XTENSION=", 0, where), 0)
    at = out.index(f"{key:8}=".encode(), hdu_start)
    out[at : at + 80] = f"{key:8}= {value}".ljust(80).encode()
    return bytes(out)


@pytest.mark.realdata
def test_real_file_uncompressed_reads_too(real_plain, tmp_path):
    path = tmp_path / "3019031900001-R10-S02-det029.fits"
    path.write_bytes(bytes(real_plain))
    raw = read_raw(path)
    assert raw.info.compression == "none" and not raw.info.gzipped
    assert raw.info.detector == "R10_S02"


@pytest.mark.realdata
def test_real_file_broken(real_plain, tmp_path):
    path = tmp_path / "broken.fits"
    path.write_bytes(bytes(real_plain[: len(real_plain) // 2]))
    check_error(path, "truncated")
    path.write_bytes(patched(real_plain, b"Segment03", "EXTNAME", "'Segment3X'"))
    check_error(path, "missing segment HDUs Segment03")
    path.write_bytes(patched(real_plain, b"Segment12", "DATASEC", "'[4:512,1:2000'"))
    check_error(path, "Segment12: malformed DATASEC")
    path.write_bytes(patched(real_plain, b"SIMPLE", "RAFTBAY", "'R99     '"))
    check_error(path, "unknown detector R99_S02 for LSSTCam")


# The header dumps: identification across a decade of formats

try:
    import yaml
except ImportError:  # pragma: no cover
    yaml = None


def load_header_dump(path: Path) -> dict:
    text = path.read_text()
    if path.suffix == ".json":
        return json.loads(text)

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor(
        "lsst.daf.base.PropertyList", lambda loader, node: loader.construct_sequence(node, True)
    )
    data = yaml.load(text, Loader=Loader)  # a SafeLoader subclass
    if isinstance(data, list):  # a PropertyList dump: [key, type, value(s), comment]
        out: dict = {}
        for key, _type, value, *_ in data:
            out.setdefault(key, value[-1] if isinstance(value, list) else value)
        return out
    return data


@pytest.mark.realdata
def test_header_dumps_identify(obs_lsst):
    if yaml is None:
        pytest.skip("PyYAML is not installed")
    expect = {"lsstCam": "LSSTCam", "comCam": "ComCam", "latiss": "LATISS", "UCD": "LSSTCam",
              "ts3": "LSSTCam", "ts8": "LSSTCam"}  # fmt: skip
    seen = 0
    for path in sorted((obs_lsst / "headers").iterdir()):
        header = load_header_dump(path)
        prefix = path.name.split("-")[0].split("_")[0]
        if prefix.startswith(("imsim", "phosim")):  # simulations without INSTRUME or OBSID
            with pytest.raises(ValueError, match="unknown instrument"):
                camera_from_header(header)
            continue
        camera = expect[prefix.removesuffix("Sim")]
        instrument = camera_from_header(header)
        assert instrument.camera == camera, path.name
        obsid = obsid_from_header(header, instrument)
        assert obsid[:2] in ("MC", "CC", "AT", "TS", "IM"), path.name
        seen += 1
    assert seen >= 45


def _structure_reference(header: fits.Header) -> dict:
    """What ``_structure_cards`` must give: astropy's value of each structural key present."""
    from core.rawfile import _STRUCTURE_KEYS

    out = {}
    for card in header.cards:
        if card.keyword in _STRUCTURE_KEYS and card.keyword not in out:
            out[card.keyword] = card.value
    return out


def test_structure_cards_and_end_card_against_astropy():
    """The quick card scan finds the structural keys as astropy reads them, not keys that only
    start alike or text that looks like a key or END inside another card."""
    from core.rawfile import BLOCK, _has_end, _structure_cards

    h = fits.Header()
    h["SIMPLE"] = True
    h["BITPIX"] = 32
    h["NAXIS"] = 2
    h["NAXIS1X"] = 7  # starts like NAXIS1, and comes first
    h["COMMENTS"] = "NAXIS1  = 99 END     and BITPIX  = 8"
    h["NAXIS1"] = 576
    h["NAXIS2"] = 2048
    h["EXTNAME"] = "Segment10"
    h["BZERO"] = 131072.0
    raw = h.tostring().encode()
    assert _structure_cards(raw) == _structure_reference(h)
    assert _has_end(raw[-BLOCK:]) and not _has_end(b"X" * 3 + b"END     " + b" " * (BLOCK - 11))


@pytest.mark.realdata
@pytest.mark.parametrize("name", sorted(REAL)[:3])
def test_structure_cards_of_real_headers(obs_lsst, name):
    from core.rawfile import _structure_cards

    data = gzip.decompress((obs_lsst / "raw" / name).read_bytes())
    with fits.open(io.BytesIO(data)) as hdul:
        for hdu in hdul:
            raw = hdu.header.tostring().encode()
            assert _structure_cards(raw) == _structure_reference(hdu.header), hdu.name
