"""metadata.csv and caption files."""
import pytest

from lora_native.captions import format_metadata_csv, read_caption_file, read_metadata_csv, with_trigger
from lora_native.errors import DatasetError


def test_read_metadata_csv_variants(tmp_path):
    p = tmp_path / "metadata.csv"
    p.write_bytes("\ufefffilename,prompt\nsub\\a.png,\"a, b\"\n\nb.jpg,plain\n".encode("utf-8"))
    assert read_metadata_csv(p) == {"sub/a.png": "a, b", "b.jpg": "plain"}
    p.write_text("file_name,text\nx.png,hello\n")
    assert read_metadata_csv(p) == {"x.png": "hello"}


def test_metadata_csv_errors_name_file_and_line(tmp_path):
    p = tmp_path / "metadata.csv"
    p.write_text("image,label\na.png,x\n")
    with pytest.raises(DatasetError, match=r"metadata.csv:1: header must name"):
        read_metadata_csv(p)
    p.write_text("filename,prompt\na.png,x\nb.png\n")
    with pytest.raises(DatasetError, match=r"metadata.csv:3: expected 2 columns"):
        read_metadata_csv(p)
    p.write_bytes(b"filename,prompt\na.png,caf\xe9\n")
    with pytest.raises(DatasetError, match=r"metadata.csv:2: not UTF-8"):
        read_metadata_csv(p)


def test_write_round_trip(tmp_path):
    text = format_metadata_csv([("a.png", "sks, one, two"), ("b.png", 'with "quotes"')])
    p = tmp_path / "metadata.csv"
    p.write_text(text)
    assert text.splitlines()[0] == "filename,prompt"
    assert read_metadata_csv(p) == {"a.png": "sks, one, two", "b.png": 'with "quotes"'}


def test_caption_file_and_trigger(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("line one\n  line two  \n")
    assert read_caption_file(p) == "line one line two"
    assert read_caption_file(tmp_path / "missing.txt") is None
    assert with_trigger("a cat", "sks") == "sks, a cat"
    assert with_trigger("sks, a cat", "sks") == "sks, a cat"
    assert with_trigger("", "sks") == "sks"
    assert with_trigger("a cat", "") == "a cat"
    assert with_trigger("sks, woman, red dress", "sks, woman") == "sks, woman, red dress"
    assert with_trigger("sks, man", "sks, woman") == "sks, woman, sks, man"
    assert with_trigger("sksx, cat", "sks") == "sks, sksx, cat"
