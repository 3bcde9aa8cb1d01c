"""Readers: normalization, and every bad-input case names file, line, value and a fix."""

import dataclasses

import pandas as pd
import pytest

from graphrec.ingest.readers import InputError, read_source


def test_long_format_normalizes_aliases_dedupes_and_keeps_earliest_ts(tiny_csv):
    data = read_source(tiny_csv)
    assert data.behaviors.order == ("view", "cart", "buy")
    assert data.has_timestamps and not data.has_test_file
    f = data.frame
    assert len(f) == 16  # 17 rows, u1-a-view twice (once as the alias pv)
    row = f[(f.user == "u1") & (f.item == "a") & (f.behavior == "view")].iloc[0]
    assert row["count"] == 2 and row["ts"] == 1


def test_per_user_folder_reads_behaviors_present_and_test_file(tiny_folder):
    data = read_source(tiny_folder)
    assert data.behaviors.order == ("cart", "buy")
    assert data.has_test_file
    f = data.frame
    assert sorted(f[f.split == "test"][["user", "item"]].itertuples(index=False, name=None)) == [
        ("0", "3"), ("1", "2"), ("2", "1")]
    assert (f.behavior == "cart").sum() == 6 and (f.behavior == "buy").sum() == 7


def _err(path, **kw) -> InputError:
    with pytest.raises(InputError) as e:
        read_source(path, **kw)
    return e.value


def test_malformed_line_in_per_user_file(tiny_folder):
    (tiny_folder / "cart.txt").write_text("0 1 2\n1 x7 2\n")
    e = _err(tiny_folder)
    assert e.path.name == "cart.txt" and e.line == 2 and e.value == "x7"
    assert "item id is not a non-negative integer" in str(e) and "--skip-bad-rows" in str(e)


def test_bad_user_id_in_per_user_file(tiny_folder):
    (tiny_folder / "train.txt").write_text("0 1\n-3 2\n")
    e = _err(tiny_folder)
    assert (e.path.name, e.line, e.value) == ("train.txt", 2, "-3")


def test_unknown_behavior(tiny_csv):
    tiny_csv.write_text(tiny_csv.read_text() + "u3,a,wishlist,4\n")
    e = _err(tiny_csv, behaviors=["view", "cart", "buy"])
    assert e.line == 19 and e.value == "wishlist"
    assert "unknown behavior" in str(e) and "view, cart, buy" in str(e)


def test_empty_id(tiny_csv):
    tiny_csv.write_text("user,item,behavior\nu1,a,buy\n,b,buy\n")
    e = _err(tiny_csv)
    assert (e.line, e.value) == (3, "") and "empty user id" in str(e)


def test_bad_timestamp(tiny_csv):
    tiny_csv.write_text("user,item,behavior,timestamp\nu1,a,buy,yesterday-ish\n")
    e = _err(tiny_csv)
    assert (e.line, e.value) == (2, "yesterday-ish")


def test_wrong_columns(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("uid,sid,behavior\n1,2,buy\n")
    e = _err(p)
    assert "missing column(s) 'user', 'item'" in str(e) and e.value == ["uid", "sid", "behavior"]
    assert "ingest.columns.user" in e.fix
    # ... and the documented fix works
    data = read_source(p, columns={"user": "uid", "item": "sid"})
    assert list(data.frame[["user", "item"]].iloc[0]) == ["1", "2"]


def test_malformed_csv_row(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("user,item,behavior\nu1,a,buy\nu1,b,buy,extra,fields\n")
    e = _err(p)
    assert e.line == 3 and "5 fields, the header has 3" in str(e)


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_empty_files(tmp_path, tiny_folder, content):
    (tiny_folder / "cart.txt").write_text(content)
    e = _err(tiny_folder)
    assert e.path.name == "cart.txt" and "file is empty" in str(e)
    p = tmp_path / "empty.csv"
    p.write_text(content)
    assert "empty" in str(_err(p))


def test_missing_files(tmp_path, tiny_folder):
    e = _err(tmp_path / "nope")
    assert "does not exist" in str(e)
    (tiny_folder / "train.txt").unlink()
    e = _err(tiny_folder)
    assert e.path.name == "train.txt" and "missing" in str(e)
    e = _err(tiny_folder, behaviors=["view", "buy"])
    assert e.path.name == "pv.txt"


def test_parquet_round_trip_and_bad_row(tmp_path, tiny_csv):
    import pandas as pd

    df = pd.read_csv(tiny_csv)
    p = tmp_path / "tiny.parquet"
    df.to_parquet(p)
    assert len(read_source(p).frame) == 16
    df.loc[3, "behavior"] = "teleport"
    df.to_parquet(p)
    e = _err(p)
    assert e.line == 4 and e.value == "teleport" and "row 4" in str(e)


def test_skip_bad_rows_collects_every_rejected_row(tiny_csv):
    tiny_csv.write_text(tiny_csv.read_text() + "u3,a,wishlist,4\n,b,buy,5\nu3,d,buy,soon\n")
    data = read_source(tiny_csv, skip_bad_rows=True)
    assert list(data.rejected["line"]) == [19, 20, 21]
    assert list(data.rejected["value"]) == ["wishlist", "", "soon"]
    assert len(data.frame) == 16


def test_fingerprint_ignores_row_order(tiny_csv, tmp_path):
    lines = tiny_csv.read_text().splitlines()
    shuffled = tmp_path / "shuffled.csv"
    shuffled.write_text("\n".join([lines[0]] + lines[1:][::-1]) + "\n")
    assert read_source(tiny_csv).fingerprint() == read_source(shuffled).fingerprint()
    changed = tmp_path / "changed.csv"
    changed.write_text(tiny_csv.read_text().replace("u3,c,cart,3", "u3,d,cart,3"))
    assert read_source(changed).fingerprint() != read_source(tiny_csv).fingerprint()


@pytest.mark.parametrize("value, seconds", [("2014-12-06 02", 1417831200), ("2014-12-06T02:00:00", 1417831200),
                                            ("1417831200", 1417831200), ("2014-12-06 02:30:15", 1417833015)])
def test_common_time_forms_parse_to_unix_seconds(tmp_path, value, seconds):
    p = tmp_path / "log.csv"
    p.write_text(f"user,item,behavior,timestamp\nu1,a,buy,{value}\n")
    assert read_source(p).frame["ts"].tolist() == [seconds]


def test_an_explicit_time_format_is_exact_and_names_the_line_and_the_fix(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("user,item,behavior,timestamp\nu1,a,buy,06/12/2014 02\nu1,b,buy,2014-12-06 02\n")
    with pytest.raises(InputError) as exc:
        read_source(p, time_format="%d/%m/%Y %H")
    e = exc.value
    assert (e.line, e.value) == (3, "2014-12-06 02") and "does not match the format '%d/%m/%Y %H'" in str(e)
    assert "ingest.time_format" in e.fix
    p.write_text("user,item,behavior,timestamp\nu1,a,buy,06/12/2014 02\n")
    assert read_source(p, time_format="%d/%m/%Y %H").frame["ts"].tolist() == [1417831200]


def test_behavior_values_map_codes_and_the_order_is_the_users(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("u,i,b\n1,10,1\n1,10,1\n1,11,3\n1,10,4\n2,11,9\n")
    data = read_source(p, behaviors=["click", "cart", "buy"], columns={"user": "u", "item": "i", "behavior": "b"},
                       behavior_values={"1": "click", "3": "cart", "4": "buy"}, skip_bad_rows=True)
    f = data.frame.set_index(["behavior", "user", "item"])["count"].to_dict()
    assert f == {("buy", "1", "10"): 1, ("cart", "1", "11"): 1, ("click", "1", "10"): 2}
    assert data.rejected[["line", "value"]].values.tolist() == [[6, "9"]]


def test_a_separate_test_file_needs_the_log_columns_and_becomes_the_test_split(tmp_path):
    log, test = tmp_path / "log.csv", tmp_path / "test.csv"
    log.write_text("user,item,behavior,timestamp\nu1,a,buy,5\nu1,b,view,6\n")
    test.write_text("user,item\nu1,c\n")
    data = read_source(log, behaviors=["view", "buy"], test_file=test)
    assert data.has_test_file and data.files == [log, test]
    rows = data.frame.sort_values("item")[["item", "behavior", "split"]].fillna("-").values.tolist()
    assert rows == [["a", "buy", "-"], ["b", "view", "-"], ["c", "buy", "test"]]
    # the test file has its own format: a Parquet log with a CSV test file
    pq = tmp_path / "log.parquet"
    data.frame[data.frame.split.isna()][["user", "item", "behavior"]].to_parquet(pq)
    assert read_source(pq, behaviors=["view", "buy"], test_file=test).frame.split.eq("test").sum() == 1
    test.write_text("customer,item\nu1,c\n")
    with pytest.raises(InputError, match="missing column.*'user' in the test file"):
        read_source(log, behaviors=["view", "buy"], test_file=test)


@pytest.mark.parametrize("rows, line, says", [
    ("u1,a,buy,1\nu1,b,buy\n", 3, "3 fields, the header has 4"),  # a missing trailing timestamp field
    ("u1,a,buy,1,x\nu1,b,buy,2,y\n", 2, "5 fields, the header has 4"),  # one extra field in every row
    ("u1,a,buy,1e20\n", 2, "timestamp out of range"),
    ("u1,a,buy,inf\n", 2, "timestamp is not a finite number"),
    ("u1,a,buy,123456789012345678901234\n", 2, "timestamp out of range"),
    ("u1,a,buy,now\n", 2, "timestamp is relative"),
    ("u1,a,buy,today\n", 2, "timestamp is relative"),
    ("u1,a,buy,1417806000\nu1,b,buy,1417806000000\nu2,a,buy,1417806001\n", 3, "another unit than the column's seconds"),
    ('"u\n1",a,buy,1\n', 2, "user id contains a control character"),
    ("u1,a\x00b,buy,1\n", 2, "item id contains a control character"),
    (f"u1,a,buy,{'9' * 1_000_000}\n", 2, "timestamp longer than 40 characters"),
])
def test_long_format_rows_accepted_wrongly_before_are_refused(tmp_path, rows, line, says):
    p = tmp_path / "log.csv"
    p.write_text("user,item,behavior,timestamp\n" + rows)
    e = _err(p)
    assert e.line == line and says in str(e) and "fix:" in str(e)
    assert len(str(e)) < 1000  # a huge field is not echoed back


def test_unix_milliseconds_and_nanoseconds_are_read_as_such(tmp_path):
    for scale in (1_000, 1_000_000_000):
        p = tmp_path / f"log{scale}.csv"
        p.write_text(f"user,item,behavior,timestamp\nu1,a,buy,{1417806000 * scale}\nu1,b,buy,{1417806005 * scale}\n")
        assert sorted(read_source(p).frame["ts"].tolist()) == [1417806000, 1417806005]


def test_bytes_that_are_not_utf8_gzip_that_is_not_gzip_and_skipping_malformed_rows(tmp_path):
    p = tmp_path / "log.csv"
    p.write_bytes(b"user,item,behavior\nu1,a,buy\nu\xff2,b,buy\n")
    e = _err(p)
    assert e.line == 3 and "not UTF-8 text" in str(e) and "iconv" in str(e)
    gz = tmp_path / "log.csv.gz"
    gz.write_text("user,item,behavior\nu1,a,buy\n")
    e = _err(gz)
    assert "cannot be read" in str(e) and "gzip" in str(e)
    bad = tmp_path / "mixed.csv"
    bad.write_bytes(b"user,item,behavior\nu1,a,buy\nu1,b,buy,extra\nu\xff2,b,buy\nu3,c,buy\n")
    data = read_source(bad, skip_bad_rows=True)
    assert sorted(data.frame["user"]) == ["u1", "u3"]
    assert sorted(zip(data.rejected["line"], data.rejected["reason"])) == [
        (3, "4 fields, the header has 3"), (4, "not UTF-8 text")]


def test_a_utf8_bom_before_the_header_is_not_part_of_the_first_column(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes(b"\xef\xbb\xbfuser,item,behavior\n1,2,buy\n3,4,buy\n")
    assert sorted(read_source(p).frame["user"]) == ["1", "3"]


def test_the_fingerprint_skips_sorting_a_sorted_log_and_keeps_its_value(tiny_csv):
    from graphrec.ingest import readers

    data = readers.read_source(tiny_csv)
    keys = ["behavior", "user", "item"]
    assert readers._is_sorted(data.frame, keys)
    shuffled = data.frame.sample(frac=1.0, random_state=1).reset_index(drop=True)
    assert not readers._is_sorted(shuffled, keys)
    tied = data.frame.iloc[[0, 0, 1]].reset_index(drop=True)
    assert readers._is_sorted(tied, keys) and not readers._is_sorted(tied.iloc[[2, 0, 1]], keys)
    # ties on the first keys decided by a later one
    assert not readers._is_sorted(pd.DataFrame({"behavior": ["a", "a"], "user": ["u", "u"], "item": ["b", "a"]}), keys)
    again = dataclasses.replace(data, frame=shuffled)
    assert again.fingerprint() == data.fingerprint()


def test_a_parquet_log_read_in_chunks_is_the_log_read_whole(tmp_path):
    from graphrec.ingest.readers import read_long

    # 9 of the 12 timestamps are in seconds, but rows 1-4 are mostly ms: a chunk of 4 rows judged
    # alone would take ms as its unit and refuse the seconds rows
    ts = ["1700000000000", "1700000001000", "1700000002000", "1700000003",
          "1700000004", "1700000005", "1700000006", "1700000007",
          "1700000008", "1700000009", "1700000010", "1700000011"]
    beh = ["view", "cart", "buy", "pv", "view", "buy", "cart", "view", "buy", "buy", " view ", "cart"]
    df = pd.DataFrame({"user": [f"u{i % 3}" for i in range(12)], "item": [f"i{i % 5}" for i in range(12)],
                       "behavior": beh, "timestamp": ts})
    p = tmp_path / "log.parquet"
    df.to_parquet(p)
    whole = read_long(p, "parquet", None, {}, True, chunk_rows=1000)
    for rows in (1, 4, 5):
        part = read_long(p, "parquet", None, {}, True, chunk_rows=rows)
        assert part.behaviors == whole.behaviors and part.raw_rows == whole.raw_rows == 12
        pd.testing.assert_frame_equal(part.frame, whole.frame)
        pd.testing.assert_frame_equal(part.rejected, whole.rejected)
    assert list(whole.rejected["line"]) == [1, 2, 3]  # the three ms values, numbered in the file
    assert whole.rejected["reason"].str.contains("another unit than the column's s").all()
    with pytest.raises(InputError, match=r"log\.parquet.*row 1: timestamp in another unit"):
        read_long(p, "parquet", None, {}, False, chunk_rows=1)
    df.loc[9, "user"] = ""
    df.loc[0:2, "timestamp"] = "1700000000"
    df.to_parquet(p)
    with pytest.raises(InputError, match=r"row 10: empty user id"):
        read_long(p, "parquet", None, {}, False, chunk_rows=4)
