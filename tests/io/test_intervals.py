from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

import chromtools as ct


def test_bed_roundtrip_with_header_and_gzip(tmp_path):
    p = tmp_path / "a.bed"
    p.write_text("track name=x\n#comment\nchr1\t10\t20\tp1\t5\t+\nchr2\t0\t5\tp2\t7\t-\n")
    df = ct.io.read_bed(p)
    assert df.columns.tolist() == ["chrom", "start", "end", "name", "score", "strand"]
    assert df["start"].dtype == np.int64 and df.loc[1, "end"] == 5
    out = ct.io.write_bed(df, tmp_path / "b.bed.gz")
    with gzip.open(out, "rt") as fh:
        assert fh.read().splitlines()[0] == "chr1\t10\t20\tp1\t5\t+"
    pd.testing.assert_frame_equal(ct.io.read_bed(out), df)


def test_bed3_and_blank_lines(tmp_path):
    p = tmp_path / "a.bed"
    p.write_text("chr1\t10\t20\n\nchr1\t30\t40\n")
    df = ct.io.read_bed(p)
    assert df[["start", "end"]].to_numpy().tolist() == [[10, 20], [30, 40]]


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("chr1\t20\t10", r"line 2: interval chr1:20-10 is empty or inverted"),
        ("chr1\t-5\t10", r"line 2: start -5 is negative"),
        ("chr1\tabc\t10", r"line 2: start 'abc' is not an integer"),
        ("chr1\t10", r"line 2: expected at least 3 tab-separated columns"),
    ],
)
def test_bad_bed_lines_name_file_and_line(tmp_path, line, match):
    p = tmp_path / "bad.bed"
    p.write_text(f"chr1\t1\t2\n{line}\n")
    with pytest.raises(ValueError, match=match) as err:
        ct.io.read_bed(p)
    assert "bad.bed" in str(err.value)


def test_empty_and_missing_files(tmp_path):
    p = tmp_path / "empty.bed"
    p.write_text("")
    with pytest.raises(ValueError, match="contains no intervals"):
        ct.io.read_bed(p)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ct.io.read_narrowpeak(tmp_path / "nope.narrowPeak")


def test_empty_peaks_round_trip(tmp_path):
    p = tmp_path / "none.narrowPeak"
    ct.io.write_narrowpeak(pd.DataFrame({"chrom": [], "start": [], "end": []}), p)
    assert p.read_text() == ""
    with pytest.warns(UserWarning, match="contains no peaks"):
        peaks = ct.io.read_peaks(p)
    assert len(peaks) == 0 and list(peaks.columns)[:3] == ["chrom", "start", "end"]
    assert peaks["start"].dtype == np.int64 and "qValue" in peaks
    with pytest.warns(UserWarning, match="contains no peaks"):
        assert ct.metrics.peak_overlap(p, peaks)["n_predicted"] == 0


def test_chrom_sizes_check(tmp_path):
    p = tmp_path / "a.bed"
    p.write_text("chr1\t10\t20\nchr7\t0\t5\n")
    with pytest.raises(KeyError, match=r"chromosomes \['chr7'\] that are not in the chromosome sizes"):
        ct.io.read_bed(p, chrom_sizes={"chr1": 100})
    with pytest.raises(ValueError, match="runs past the chromosome end"):
        ct.io.read_bed(p, chrom_sizes={"chr1": 15, "chr7": 100})


def test_narrowpeak_roundtrip_and_defaults(tmp_path):
    peaks = pd.DataFrame({"chrom": ["chr1", "chr1"], "start": [100, 500], "end": [200, 900], "score": [1500.0, 3.4]})
    out = ct.io.write_narrowpeak(peaks, tmp_path / "p.narrowPeak")
    back = ct.io.read_narrowpeak(out)
    assert back["name"].tolist() == ["peak_1", "peak_2"]
    assert back["score"].tolist() == [1000, 3]  # clipped to the narrowPeak range and rounded
    assert back["peak"].tolist() == [-1, -1] and back["pValue"].tolist() == [-1, -1]
    assert ct.io.read_peaks(out).shape[1] == 10
    bed = ct.io.write_bed(peaks[["chrom", "start", "end"]], tmp_path / "p.bed")
    assert ct.io.read_peaks(bed).shape[1] == 3


def test_narrowpeak_wrong_columns(tmp_path):
    p = tmp_path / "x.narrowPeak"
    p.write_text("chr1\t1\t5\tp\t0\t.\t1\t1\t1\n")
    with pytest.raises(ValueError, match=r"line 1: expected 10 tab-separated columns"):
        ct.io.read_narrowpeak(p)


def test_bedgraph_roundtrip_and_bad_value(tmp_path):
    df = pd.DataFrame({"chrom": ["chr1"] * 2, "start": [0, 10], "end": [10, 30], "value": [1.5, 2.25]})
    out = ct.io.write_bedgraph(df, tmp_path / "x.bedGraph")
    back = ct.io.read_bedgraph(out)
    assert back["value"].tolist() == [1.5, 2.25]
    p = tmp_path / "bad.bedGraph"
    p.write_text("chr1\t0\t10\tfoo\n")
    with pytest.raises(ValueError, match="value 'foo' is not a number"):
        ct.io.read_bedgraph(p)


def test_writers_validate_and_leave_no_partial_file(tmp_path):
    bad = pd.DataFrame({"chrom": ["chr1", "chr1"], "start": [10, 50], "end": [20, 40]})
    for writer, name in ((ct.io.write_bed, "o.bed"), (ct.io.write_narrowpeak, "o.narrowPeak")):
        with pytest.raises(ValueError, match="empty or inverted"):
            writer(bad, tmp_path / name)
    with pytest.raises(KeyError, match="need a 'value' column"):
        ct.io.write_bedgraph(bad.iloc[:1], tmp_path / "o.bedGraph")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeyError, match="lack the columns"):
        ct.io.validate_intervals(pd.DataFrame({"chrom": ["chr1"]}))


def test_corrupt_gzip_bed(tmp_path, leftovers):
    good = tmp_path / "g.bed.gz"
    with gzip.open(good, "wt") as fh:
        fh.write("chr1\t1\t2\n" * 10_000)
    bad = tmp_path / "c.bed.gz"
    bad.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="could not be read"):
        ct.io.read_bed(bad)
    assert leftovers(tmp_path) == []


def test_real_peaks(shared_data):
    hsc = ct.datasets.hsc_bulk(shared_data)
    peaks = ct.io.read_bed(hsc.peaks, chrom_sizes=hsc.chrom_sizes)
    assert len(peaks) == 1_088 and set(peaks["chrom"]) == {"chr1", "chr2"}
    assert (peaks["end"] - peaks["start"]).min() >= 200
